"""Speed of a ghostified network against its hand-written Ghost twin (issue 11, item 6), timed side by side.

    python -m ghostsr_plugin.measure.ghostify_speed [--threads 2] [--reps 20] [--size 128] [--timer wall|thread]

GhostEDSR-baseline x2 (num_feat 64, num_block 16) against ``ghostify(EDSR-baseline x2)`` with the same weights (and
``ghostify(..., fuse=False)``, to show what the fused epilogues give), eval, fp32, 1x3xSxS on the CPU, NCHW and
channels_last, interleaved with :func:`ghostsr_plugin.measure.bench.interleaved`; prints medians, the ratio of the
medians, the median of the per-repetition ratios and the ratio of the best times. ``--timer thread`` (with
``--threads 1``) times the CPU time of the calling thread, which time slices given to other processes do not
inflate: the steadier measure on a shared machine.
"""
import argparse
import statistics
import sys
import time

import torch

from ghostsr_plugin.utils.cli import run_command


def build_nets():
    import ghostsr_plugin  # noqa: F401
    from basicsr.archs.edsr_arch import EDSR
    from ghostsr_plugin.archs.edsr_arch import GhostEDSR
    from ghostsr_plugin.compress.ghostify import ghostify
    torch.manual_seed(0)
    args = dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=2)
    hand = GhostEDSR(**args)
    fused, unfused = ghostify(EDSR(**args)), ghostify(EDSR(**args), fuse=False)
    fused.load_state_dict(hand.state_dict())
    unfused.load_state_dict(hand.state_dict())
    return {'GhostEDSR': hand.eval(), 'ghostify': fused.eval(), 'ghostify_unfused': unfused.eval()}


def thread_timer(fn):
    """Milliseconds of CPU time of the calling thread spent in ``fn()``."""
    begin = time.thread_time()
    fn()
    return (time.thread_time() - begin) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m ghostsr_plugin.measure.ghostify_speed', description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (2)')
    parser.add_argument('--reps', type=int, default=20, help='timed repetitions of each network (20)')
    parser.add_argument('--size', type=int, default=128, help='LR input side (128)')
    parser.add_argument('--timer', choices=('wall', 'thread'), default='wall',
                        help='wall clock, or CPU time of this thread (needs --threads 1)')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an input error')
    args = parser.parse_args(argv)
    from ghostsr_plugin.measure.bench import Timer, device_name, interleaved, ratio_stats
    from ghostsr_plugin.utils.cli import UserInputError
    if args.timer == 'thread' and args.threads != 1:
        raise UserInputError('--timer thread measures one thread: use it with --threads 1')
    timer = Timer(torch.device('cpu')) if args.timer == 'wall' else thread_timer
    torch.set_num_threads(args.threads)
    nets = build_nets()
    device = torch.device('cpu')
    print(f'{device_name(device)}; EDSR-baseline x2, 1x3x{args.size}x{args.size}, fp32, eval, {args.reps} reps, '
          f'{args.timer} time')
    for layout, fmt in (('NCHW', torch.contiguous_format), ('channels_last', torch.channels_last)):
        x = torch.rand(1, 3, args.size, args.size).contiguous(memory_format=fmt)
        for net in nets.values():
            net.to(memory_format=fmt)
        with torch.inference_mode():
            first = {k: net(x) for k, net in nets.items()}
            assert all(torch.allclose(first['GhostEDSR'], y, atol=1e-4) for y in first.values())
            times = interleaved(timer, {k: (lambda net=net: net(x)) for k, net in nets.items()}, args.reps, 2)
        base = statistics.median(times['GhostEDSR'])
        for name in ('ghostify', 'ghostify_unfused'):
            med, paired = ratio_stats(times, name, 'GhostEDSR')
            best = min(times[name]) / min(times['GhostEDSR'])
            print(f'{layout:<14} {name:<17} / GhostEDSR: {statistics.median(times[name]):8.2f} / {base:8.2f} ms  '
                  f'ratio {med:.3f}  paired {paired:.3f}  best {best:.3f}')
    return 0


if __name__ == '__main__':
    sys.exit(run_command('ghostsr_plugin.measure.ghostify_speed', main))
