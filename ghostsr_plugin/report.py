"""Table-1 report: params, FLOPs (3x512x512), latency and, with checkpoints, Y-PSNR/SSIM of networks given by
option files, each Ghost network next to its plain twin; markdown, JSON and a PNG plot.

    python -m ghostsr_plugin.report options/test_CARN_M_x2.yml:CARN_M_x2.pth \\
        options/test_GhostCARN_M_x2.yml:GhostCARN_M_x2.pth --set Set5 Set14 --out results/report_carn_m_x2
    python -m ghostsr_plugin.report options/test_{,Ghost}{EDSR,RDN,CARN,CARN_M}_x{2,3,4}.yml --no-latency --paper \\
        --out results/params_flops

Each network is an option file, or ``option file:checkpoint``; PSNR/SSIM are measured for those with a checkpoint
on the ``--set`` benchmark sets (EDSR layout under ``--data``). A Ghost network (``GhostX``) is paired with the
plain ``X`` of the same scale and arguments: they are timed interleaved in one run and its rows give the ratios.
Writes ``<out>.md``, ``<out>.json`` and ``<out>.png`` and prints the table; see
:mod:`ghostsr_plugin.measure.report` for what each figure is.
"""
import argparse
import sys

from ghostsr_plugin.utils.cli import UserInputError, run_command

DTYPES = ('float32', 'float16', 'bfloat16')


def parse_size(text, option, dims):
    """``1x3x128x128`` -> (1, 3, 128, 128); a UserInputError naming ``option`` otherwise."""
    try:
        size = tuple(int(v) for v in text.lower().split('x'))
    except ValueError:
        size = ()
    if len(size) != dims or min(size) < 1:
        example = '1x3x128x128' if dims == 4 else '3x512x512'
        raise UserInputError(f'{option} {text!r}: allowed {dims} positive sizes joined by x, e.g. {example}')
    return size


def parse_args(argv=None):
    from ghostsr_plugin.evaluate import DEFAULT_DATA
    parser = argparse.ArgumentParser(prog='python -m ghostsr_plugin.report', description=__doc__.split('\n\n')[0])
    parser.add_argument('networks', nargs='+', metavar='OPT[:CKPT]',
                        help='option file, or option file:checkpoint (PSNR/SSIM only with a checkpoint)')
    parser.add_argument('--labels', nargs='+', default=None, help='one label per network (default: type, scale, '
                        'checkpoint name)')
    parser.add_argument('--set', nargs='+', default=['Set5', 'Set14'], help='benchmark sets (default Set5 Set14)')
    parser.add_argument('--data', default=DEFAULT_DATA, help='benchmark root (default ../shared/data/benchmark)')
    parser.add_argument('--out', default='results/report', help='output prefix: <out>.md/.json/.png')
    parser.add_argument('--device', default='cpu', help='cpu (default), cuda or cuda:N')
    parser.add_argument('--latency-size', default=None,
                        help='latency input NxCxHxW (default 1x3x128x128 on the CPU, 1x3x512x512 on a GPU)')
    parser.add_argument('--flops-size', default='3x512x512', help='FLOPs input CxHxW (default 3x512x512, Table 1)')
    parser.add_argument('--repeats', type=int, default=10, help='timed runs of each network (default 10)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs first (default 2)')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (default: torch\'s)')
    parser.add_argument('--dtype', choices=DTYPES, default='float32', help='latency dtype (default float32)')
    parser.add_argument('--channels-last', action='store_true', help='time in channels_last memory layout')
    parser.add_argument('--no-latency', action='store_true', help='params and FLOPs (and PSNR) only')
    parser.add_argument('--paper', action='store_true', help="add Table 1's params / FLOPs for the paper's networks")
    parser.add_argument('--param_key', default='params', help='checkpoint key (params or params_ema)')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from ghostsr_plugin.deploy.tiling import resolve_device
    from ghostsr_plugin.measure import report
    device = resolve_device(args.device)
    if args.repeats < 1 or args.warmup < 0:
        raise UserInputError(f'--repeats {args.repeats} / --warmup {args.warmup}: allowed repeats >= 1, warmup >= 0')
    if args.threads is not None:
        if args.threads < 1:
            raise UserInputError(f'--threads {args.threads}: allowed 1 or more')
        torch.set_num_threads(args.threads)
    latency_size = parse_size(args.latency_size or ('1x3x128x128' if device.type == 'cpu' else '1x3x512x512'),
                              '--latency-size', 4)
    flops_size = (1, *parse_size(args.flops_size, '--flops-size', 3))
    entries = report.load_entries(args.networks, args.labels)
    settings = report.measure(entries, args.set, args.data, latency_size, flops_size, args.repeats, args.warmup,
                              device, getattr(torch, args.dtype), args.channels_last, not args.no_latency,
                              args.paper, args.param_key)
    paths = report.write_report(entries, settings, args.out)
    print(report.markdown(entries, settings))
    print('wrote ' + ', '.join(paths))
    return 0


if __name__ == '__main__':
    sys.exit(run_command('ghostsr_plugin.report', main))
