"""Speed of the compiled ghost op and of GhostEDSR against EDSR, measured side by side in one run (issue 4).

    python -m ghostsr_plugin.bench speed [--device cpu|cuda] [--quick] [--threads N] [--json FILE]
    python -m ghostsr_plugin.bench breakdown [--device cpu|cuda] [--layout NCHW|channels_last] [--threads N]

Prints, with the device it ran on:

* **op bandwidth**: bytes read + written by one ghost layer's shift (intrinsic features read once, full output
  written once, λ = 0.5, move (dy, dx) = (1, -1)) per second, next to the device's copy bandwidth (a same-sized
  ``copy_``, read + write) and the plain-PyTorch reference, all timed in the same run;
* **network latency** GhostEDSR / EDSR (``ghostsr_plugin.archs.edsr_arch.GhostEDSR`` in eval mode against BasicSR's
  ``EDSR``, same arguments). CPU: EDSR-baseline x2 (num_feat 64, num_block 16) at 1x3x128x128, ``--threads``
  threads (default 2). GPU: EDSR-L x2 (num_feat 256, num_block 32, res_scale 0.1) at 1x3x512x512 in fp32 with TF32
  off and on, fp16 channels_last eager and ``torch.compile``, and the fastest ghost mode against the fastest
  EDSR mode;
* GPU: the **training iteration** (batch 16 of 48x48 LR, bf16 autocast, L1 loss, Adam), eager and compiled.

The two networks (or op and copy) of a comparison are timed alternately, repetition by repetition, in alternating
order, so that load changes on the machine hit both alike. Reported: median and best time of each, the ratio of
the medians, the median of the per-repetition ratios and the ratio of the best times (on a shared machine, where
other load only adds time, the steadiest). ``--quick`` runs few repetitions (a smoke test).

``breakdown`` profiles the same two networks (torch.profiler, eval, the ``speed`` sizes) and prints, per network,
the self time of each op and input shape per forward: where the time goes and what bounds the ratio.

The benchmarks live in :mod:`ghostsr_plugin.measure.bench`; this module is the command.
"""
import argparse
import sys

import torch

from ghostsr_plugin.measure import bench
from ghostsr_plugin.utils.cli import run_command


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m ghostsr_plugin.bench', description=__doc__.split('\n\n')[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--debug', action='store_true', help='show the traceback of an error')
    commands = parser.add_subparsers(dest='command', required=True)
    speed_parser = commands.add_parser('speed', parents=[common],
                                       help='op bandwidth and GhostEDSR / EDSR latency ratios')
    speed_parser.add_argument('--device', choices=('cpu', 'cuda'),
                              default='cuda' if torch.cuda.is_available() else 'cpu')
    speed_parser.add_argument('--quick', action='store_true', help='few repetitions (smoke test)')
    speed_parser.add_argument('--threads', type=int, default=2, help='CPU threads (default 2)')
    speed_parser.add_argument('--json', help='also write the numbers to this JSON file')
    speed_parser.add_argument('--compile', choices=tuple(bench.COMPILE_KINDS), default='both',
                              help='GPU: run the torch.compile modes too (both), not (skip), or only them (only), '
                              'e.g. to split a time-limited run in two')
    breakdown_parser = commands.add_parser('breakdown', parents=[common],
                                           help='per-op time of EDSR and GhostEDSR (torch.profiler)')
    breakdown_parser.add_argument('--device', choices=('cpu', 'cuda'),
                                  default='cuda' if torch.cuda.is_available() else 'cpu')
    breakdown_parser.add_argument('--layout', choices=('NCHW', 'channels_last'), default='channels_last')
    breakdown_parser.add_argument('--threads', type=int, default=2, help='CPU threads (default 2)')
    breakdown_parser.add_argument('--rows', type=int, default=8, help='ops listed per network (default 8)')
    args = parser.parse_args(argv)
    if args.command == 'speed':
        bench.speed(args)
    else:
        bench.breakdown(args)


if __name__ == '__main__':
    sys.exit(run_command('ghostsr_plugin.bench', main))
