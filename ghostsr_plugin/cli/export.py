"""Export a trained (Ghost) network to deployable forms, with the offsets fixed at argmax W'.

    ghostsr export -opt options/train_GhostCARN_M_x2.yml --ckpt net_g_latest.pth \\
        --out deploy/GhostCARN_M_x2 [--format onnx|pt2|both] [--scale S] [--opset 18] [--shift_form conv|slice] \\
        [--check ../shared/data/benchmark/Set5/LR_bicubic/X2]
    ghostsr export --bench [--size 128] [--threads 2] [--reps 12]

* ``onnx``: ``<out>.onnx``, the ghost move in standard ONNX ops (opset >= 17, dynamic batch/height/width, input
  ``lq`` RGB in [0, 1], output ``sr``); any ONNX runtime runs it.
* ``pt2``: ``<out>.pt2``, a ``torch.export`` program calling the compiled ghost op; load it with
  ``import ghostsr_plugin; torch.export.load(path).module()``.

``--out`` is a file stem (a trailing ``.onnx``/``.pt2`` is dropped) or an existing folder (the files are named
``<arch>_x<scale>``). Before anything is written, every form is run on a random odd-sized input and, with
``--check DIR``, on every image of DIR, against the PyTorch network (onnxruntime within ``--atol``, default 1e-4);
a form that does not pass is not written. Files are written atomically.

``--bench`` measures onnxruntime's CPU latency of GhostEDSR-baseline x2 against EDSR-baseline x2 next to eager
PyTorch's, interleaved in one run (see :func:`ghostsr_plugin.deploy.exporters.bench_onnx`).
"""
import argparse

from ghostsr_plugin.deploy.exporters import FORMATS, bench_onnx_table, export_network
from ghostsr_plugin.utils.errors import UserInputError


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='ghostsr export',
        description='Export a trained (Ghost) network to ONNX (the ghost move in standard ONNX ops) and/or a '
        'torch.export program (the compiled ghost op), with the offsets fixed at argmax W\'.')
    parser.add_argument('-opt', help='BasicSR option file whose network_g (or --network_key) is the network')
    parser.add_argument('--ckpt', help='trained checkpoint (BasicSR params/params_ema or a bare state dict)')
    parser.add_argument('--param_key', default='params', help="state-dict key in the checkpoint ('params')")
    parser.add_argument('--network_key', default='network_g', help='option section of the network (network_g)')
    parser.add_argument('--out', help='output file stem, or an existing folder')
    parser.add_argument('--format', default='both', choices=FORMATS, help='what to write (both)')
    parser.add_argument('--scale', type=int, default=None,
                        help='scale of a multi-scale CARN/CARN_M (default: its upscale); the export is fixed to it')
    parser.add_argument('--opset', type=int, default=None, help='ONNX opset, >= 17 (default 18)')
    parser.add_argument('--shift_form', default='conv', choices=('conv', 'slice'),
                        help="ONNX form of the move: 'conv' one-hot depth-wise Conv (fastest in onnxruntime), "
                        "'slice' zero Pad + Slice")
    parser.add_argument('--check', metavar='DIR', help='also compare on every image of DIR (LR images)')
    parser.add_argument('--atol', type=float, default=1e-4, help='allowed |ONNX - PyTorch| (1e-4)')
    parser.add_argument('--bench', action='store_true',
                        help='measure onnxruntime vs eager latency of GhostEDSR/EDSR x2 instead of exporting')
    parser.add_argument('--size', type=int, default=128, help='--bench: LR size (128)')
    parser.add_argument('--threads', type=int, default=2, help='--bench: threads of torch and onnxruntime (2)')
    parser.add_argument('--reps', type=int, default=12, help='--bench: timed repetitions of each (12)')
    parser.add_argument('--num_feat', type=int, default=64, help='--bench: num_feat (64)')
    parser.add_argument('--num_block', type=int, default=16, help='--bench: num_block (16)')
    parser.add_argument('--debug', action='store_true', help='show tracebacks of errors')
    args = parser.parse_args(argv)
    if args.bench:
        bench_onnx_table(args.size, args.threads, args.reps, args.num_feat, args.num_block)
        return 0
    missing = [name for name in ('opt', 'ckpt', 'out') if getattr(args, name) is None]
    if missing:
        raise UserInputError(f'{", ".join("-" * (1 + (m != "opt")) + m for m in missing)} required; allowed: '
                             '-opt OPTIONS --ckpt CHECKPOINT --out STEM_OR_FOLDER, or --bench')
    export_network(args.opt, args.ckpt, args.out, args.format, args.scale, args.opset, args.shift_form, args.check,
                   args.atol, args.param_key, args.network_key)
    return 0
