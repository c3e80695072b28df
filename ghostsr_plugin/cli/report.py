"""Table-1 report: params, FLOPs (3x512x512), latency and, with checkpoints, Y-PSNR/SSIM of networks given by
option files, each Ghost network next to its plain twin; markdown, JSON and a PNG plot.

    ghostsr report options/test_CARN_M_x2.yml:CARN_M_x2.pth \\
        options/test_GhostCARN_M_x2.yml:GhostCARN_M_x2.pth --set Set5 Set14 --out results/report_carn_m_x2
    ghostsr report options/test_{,Ghost}{EDSR,RDN,CARN,CARN_M}_x{2,3,4}.yml --no-latency --paper \\
        --out results/params_flops

Each network is an option file, or ``option file:checkpoint``; PSNR/SSIM are measured for those with a checkpoint
on the ``--set`` benchmark sets (EDSR layout under ``--data``). A Ghost network (``GhostX``) is paired with the
plain ``X`` of the same scale and arguments: they are timed interleaved in one run and its rows give the ratios.
Writes ``<out>.md``, ``<out>.json`` and ``<out>.png`` and prints the table; see
:mod:`ghostsr_plugin.measure.comparison` for what each figure is.
"""
import argparse

from ghostsr_plugin.data.benchmark import DEFAULT_BENCHMARK
from ghostsr_plugin.measure.comparison import DTYPES, run_report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='ghostsr report', description=__doc__.split('\n\n')[0])
    parser.add_argument('networks', nargs='+', metavar='OPT[:CKPT]',
                        help='option file, or option file:checkpoint (PSNR/SSIM only with a checkpoint)')
    parser.add_argument('--labels', nargs='+', default=None, help='one label per network (default: type, scale, '
                        'checkpoint name)')
    parser.add_argument('--set', nargs='+', default=['Set5', 'Set14'], help='benchmark sets (default Set5 Set14)')
    parser.add_argument('--data', default=DEFAULT_BENCHMARK,
                        help='benchmark root, or the data folder holding it as benchmark/ (../shared/data/benchmark)')
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
    run_report(args.networks, args.labels, args.set, args.data, args.out, args.device, args.latency_size,
               args.flops_size, args.repeats, args.warmup, args.threads, args.dtype, args.channels_last,
               not args.no_latency, args.paper, args.param_key)
    return 0
