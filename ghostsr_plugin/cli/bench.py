"""Speed of the compiled ghost op and of GhostEDSR against EDSR, measured side by side in one run (issue 4).

    ghostsr bench speed [--device cpu|cuda] [--quick] [--threads N] [--json FILE]
    ghostsr bench breakdown [--device cpu|cuda] [--layout NCHW|channels_last] [--threads N]
    ghostsr bench ghostify [--threads 2] [--reps 20] [--size 128] [--timer wall|thread]

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

``ghostify`` times ``ghostify(EDSR)`` against the GhostEDSR arch (:mod:`ghostsr_plugin.measure.ghostify_speed`).
The benchmarks live in :mod:`ghostsr_plugin.measure.speed`; this module is the command.
"""
import argparse

import torch

from ghostsr_plugin.measure import ghostify_speed, speed


def main(argv=None):
    parser = argparse.ArgumentParser(prog='ghostsr bench', description=__doc__.split('\n\n')[0])
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
    speed_parser.add_argument('--compile', choices=tuple(speed.COMPILE_KINDS), default='both',
                              help='GPU: run the torch.compile modes too (both), not (skip), or only them (only), '
                              'e.g. to split a time-limited run in two')
    breakdown_parser = commands.add_parser('breakdown', parents=[common],
                                           help='per-op time of EDSR and GhostEDSR (torch.profiler)')
    breakdown_parser.add_argument('--device', choices=('cpu', 'cuda'),
                                  default='cuda' if torch.cuda.is_available() else 'cpu')
    breakdown_parser.add_argument('--layout', choices=('NCHW', 'channels_last'), default='channels_last')
    breakdown_parser.add_argument('--threads', type=int, default=2, help='CPU threads (default 2)')
    breakdown_parser.add_argument('--rows', type=int, default=8, help='ops listed per network (default 8)')
    ghostify_parser = commands.add_parser('ghostify', parents=[common],
                                          help='ghostify(EDSR) against the GhostEDSR arch, same weights (CPU)')
    ghostify_parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (2)')
    ghostify_parser.add_argument('--reps', type=int, default=20, help='timed repetitions of each network (20)')
    ghostify_parser.add_argument('--size', type=int, default=128, help='LR input side (128)')
    ghostify_parser.add_argument('--timer', choices=('wall', 'thread'), default='wall',
                                 help='wall clock, or CPU time of this thread (needs --threads 1)')
    args = parser.parse_args(argv)
    if args.command == 'speed':
        speed.speed(args)
    elif args.command == 'breakdown':
        speed.breakdown(args)
    else:
        ghostify_speed.run(args.threads, args.reps, args.size, args.timer)

