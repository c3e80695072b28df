"""Export a trained (Ghost) network to deployable forms, with the offsets fixed at argmax W'.

    python -m ghostsr_plugin.export -opt options/train_GhostCARN_M_x2.yml --ckpt net_g_latest.pth \\
        --out deploy/GhostCARN_M_x2 [--format onnx|pt2|both] [--scale S] [--opset 18] [--shift_form conv|slice] \\
        [--check ../shared/data/benchmark/Set5/LR_bicubic/X2]
    python -m ghostsr_plugin.export --bench [--size 128] [--threads 2] [--reps 12]

* ``onnx``: ``<out>.onnx``, the ghost move in standard ONNX ops (opset >= 17, dynamic batch/height/width, input
  ``lq`` RGB in [0, 1], output ``sr``); any ONNX runtime runs it.
* ``pt2``: ``<out>.pt2``, a ``torch.export`` program calling the compiled ghost op; load it with
  ``import ghostsr_plugin; torch.export.load(path).module()``.

``--out`` is a file stem (a trailing ``.onnx``/``.pt2`` is dropped) or an existing folder (the files are named
``<arch>_x<scale>``). Before anything is written, every form is run on a random odd-sized input and, with
``--check DIR``, on every image of DIR, against the PyTorch network (onnxruntime within ``--atol``, default 1e-4);
a form that does not pass is not written. Files are written atomically.

``--bench`` measures onnxruntime's CPU latency of GhostEDSR-baseline x2 against EDSR-baseline x2 next to eager
PyTorch's, interleaved in one run (see :func:`ghostsr_plugin.deploy.export.bench_onnx`).
"""
import argparse
import io
import os
import sys
import tempfile

import torch

from ghostsr_plugin.utils.cli import UserInputError, run_command

FORMATS = ('onnx', 'pt2', 'both')


def output_stem(out, net, scale):
    """File stem of the outputs; an existing folder (or one ending in '/') gets ``<arch>_x<scale>``."""
    if out.endswith(('/', os.sep)) or os.path.isdir(out):
        return os.path.join(out, f'{type(net).__name__}_x{scale}')
    root, ext = os.path.splitext(out)
    return root if ext in ('.onnx', '.pt2') else out


def check_writable(folder):
    """Create ``folder`` if needed and prove a file can be written there; else one clear error."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise PermissionError(f'--out: cannot write to the folder {folder} ({err.strerror or err}); allowed: a '
                              'writable folder') from err


def _max_diff(results):
    """(largest difference, image) over a check result {image: difference}."""
    image = max(results, key=results.get)
    return results[image], image


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m ghostsr_plugin.export',
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
        return bench(args)
    missing = [name for name in ('opt', 'ckpt', 'out') if getattr(args, name) is None]
    if missing:
        raise UserInputError(f'{", ".join("-" * (1 + (m != "opt")) + m for m in missing)} required; allowed: '
                             '-opt OPTIONS --ckpt CHECKPOINT --out STEM_OR_FOLDER, or --bench')
    return export(args)


def export(args):
    from ghostsr_plugin.deploy import export as deploy
    from ghostsr_plugin.ops.ghost_conv import ghost_offsets
    from ghostsr_plugin.utils.checkpoint import atomic_write
    from ghostsr_plugin.utils.network import load_network

    if args.opset is not None and args.opset < 17:
        raise UserInputError(f'--opset {args.opset}: allowed: an ONNX opset >= 17')
    if args.check is not None:
        images = deploy.read_images(args.check)
    net = load_network(args.opt, args.ckpt, args.param_key, args.network_key)
    frozen = deploy.frozen_copy(net, args.scale)  # validates --scale; the reference the forms are checked against
    scale = deploy.output_scale(frozen)
    stem = output_stem(args.out, net, scale)
    check_writable(os.path.dirname(os.path.abspath(stem)))

    in_channels = next(m.in_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    if args.check is not None and in_channels != 3:
        raise UserInputError(f'--check: {type(net).__name__} takes {in_channels}-channel input; --check reads RGB '
                             'images, allowed only for 3-channel networks')
    probe = [('random 1x{}x23x37'.format(in_channels), torch.rand(1, in_channels, 23, 37))]
    inputs = probe + (images if args.check is not None else [])
    formats = ('onnx', 'pt2') if args.format == 'both' else (args.format, )
    offsets = ghost_offsets(net)
    print(f'{type(net).__name__} from {args.ckpt}: {len(offsets)} ghost layers, offsets (dy,dx) fixed at argmax '
          f'W\': ' + (' '.join(f'{k}={v[0]:+d},{v[1]:+d}' for k, v in offsets.items()) or 'none'))

    for form in formats:
        if form == 'onnx':
            model = deploy.export_onnx(net, None, args.scale, args.opset or deploy.DEFAULT_OPSET, args.shift_form,
                                       metadata={'ghostsr.arch': type(net).__name__, 'ghostsr.scale': scale})
            session = deploy.onnx_session(model)
            result = deploy.check_outputs(frozen, {'onnx': lambda x: deploy.run_onnx(session, x)}, inputs)['onnx']
            data, path, atol = model.SerializeToString(), f'{stem}.onnx', args.atol
            note = f'; opset {next(e.version for e in model.opset_import if e.domain in ("", "ai.onnx"))}'
        else:
            program = deploy.export_program(net, None, args.scale)
            data = deploy.program_bytes(program)
            reloaded = torch.export.load(io.BytesIO(data)).module()
            result = deploy.check_outputs(frozen, {'pt2': reloaded}, inputs)['pt2']
            path, atol = f'{stem}.pt2', args.atol
            note = f'; calls the compiled ghost op {deploy.program_ghost_ops(program)} times'
        worst, image = _max_diff(result)
        if not worst <= atol:
            print(f'ghostsr_plugin.export: error: the {form} output differs from PyTorch by {worst:.3g} on {image} '
                  f'(allowed: <= {atol:g}); {path} not written', file=sys.stderr)
            return 1
        atomic_write(path, lambda file, data=data: file.write(data))
        print(f'wrote {path} ({len(data) / 2**20:.2f} MiB); max |{form} - PyTorch| over {len(result)} inputs: '
              f'{worst:.3g} ({image}){note}')
    return 0


def bench(args):
    from tqdm import tqdm

    from ghostsr_plugin.deploy.export import SHIFT_FORMS, bench_onnx
    from ghostsr_plugin.measure.bench import device_name

    for name in ('size', 'threads', 'reps', 'num_feat', 'num_block'):
        if getattr(args, name) < 1:
            raise UserInputError(f'--{name} {getattr(args, name)}: allowed: a positive integer')
    warmup = 2
    with tqdm(total=(warmup + args.reps) * (3 + len(SHIFT_FORMS)), desc='bench', leave=False) as bar:
        result = bench_onnx(args.size, args.threads, args.reps, warmup, args.num_feat, args.num_block,
                            progress=bar)
    torch.set_num_threads(args.threads)
    med = result['medians']
    print(f'GhostEDSR vs EDSR x2 (num_feat {args.num_feat}, num_block {args.num_block}), 1x3x{args.size}x{args.size}'
          f', fp32, {args.threads} threads, {args.reps} interleaved repetitions; {device_name(torch.device("cpu"))}')
    print(f'{"runtime":<34} {"EDSR ms":>9} {"Ghost ms":>9} {"ratio":>6} {"paired":>7} {"best":>6}')
    rows = [('PyTorch eager', 'edsr_eager', 'ghost_eager', 'eager')]
    rows += [(f'onnxruntime, move as {form}', 'edsr_onnx', f'ghost_onnx_{form}', f'onnx_{form}') for form in SHIFT_FORMS]
    for label, edsr, ghost, key in rows:
        ratio, paired = result['ratios'][key]
        best = min(result['times'][ghost]) / min(result['times'][edsr])
        print(f'{label:<34} {med[edsr]:9.2f} {med[ghost]:9.2f} {ratio:6.3f} {paired:7.3f} {best:6.3f}')
    eager, onnx = result['ratios']['eager'][0], result['ratios']['onnx_conv'][0]
    print(f'target (ratios of medians): onnxruntime <= eager + 0.05 = {eager + 0.05:.3f}: '
          f'{"met" if onnx <= eager + 0.05 else "NOT met"} ({onnx:.3f}, default form conv); best: the ratio of '
          'the fastest runs (on a shared machine, where load only adds time, the steadiest)')
    return 0


if __name__ == '__main__':
    sys.exit(run_command('ghostsr_plugin.export', main))
