"""Speed of a ghostified network against the registered Ghost arch of the same network, timed side by side.

    ghostsr bench ghostify [--threads 2] [--reps 20] [--size 128] [--timer wall|thread]

GhostEDSR-baseline x2 (num_feat 64, num_block 16) against ``ghostify(EDSR-baseline x2)`` with the same weights (and
``ghostify(..., fuse=False)``, to show what the fused epilogues give), eval, fp32, 1x3xSxS on the CPU, NCHW and
channels_last, interleaved with :func:`ghostsr_plugin.measure.speed.interleaved`; prints medians, the ratio of the
medians, the median of the per-repetition ratios and the ratio of the best times. ``--timer thread`` (with
``--threads 1``) times the CPU time of the calling thread, which time slices given to other processes do not
inflate: the steadier measure on a shared machine.
"""
import statistics
import time

import torch


def build_nets():
    import ghostsr_plugin  # noqa: F401
    from basicsr.archs.edsr_arch import EDSR
    from ghostsr_plugin.archs.edsr_arch import GhostEDSR
    from ghostsr_plugin.compress.ghostifier import ghostify
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


def run(threads=2, reps=20, size=128, timer='wall', log=print):
    """``ghostsr bench ghostify``: time the three networks of :func:`build_nets`, interleaved, in NCHW and
    channels_last, and log the ratios against GhostEDSR."""
    from ghostsr_plugin.measure.speed import Timer, device_name, interleaved, ratio_stats
    from ghostsr_plugin.utils.errors import UserInputError
    if timer == 'thread' and threads != 1:
        raise UserInputError('--timer thread measures one thread: use it with --threads 1')
    clock = Timer(torch.device('cpu')) if timer == 'wall' else thread_timer
    torch.set_num_threads(threads)
    nets = build_nets()
    device = torch.device('cpu')
    log(f'{device_name(device)}; EDSR-baseline x2, 1x3x{size}x{size}, fp32, eval, {reps} reps, '
          f'{timer} time')
    for layout, fmt in (('NCHW', torch.contiguous_format), ('channels_last', torch.channels_last)):
        x = torch.rand(1, 3, size, size).contiguous(memory_format=fmt)
        for net in nets.values():
            net.to(memory_format=fmt)
        with torch.inference_mode():
            first = {k: net(x) for k, net in nets.items()}
            assert all(torch.allclose(first['GhostEDSR'], y, atol=1e-4) for y in first.values())
            times = interleaved(clock, {k: (lambda net=net: net(x)) for k, net in nets.items()}, reps, 2)
        base = statistics.median(times['GhostEDSR'])
        for name in ('ghostify', 'ghostify_unfused'):
            med, paired = ratio_stats(times, name, 'GhostEDSR')
            best = min(times[name]) / min(times['GhostEDSR'])
            log(f'{layout:<14} {name:<17} / GhostEDSR: {statistics.median(times[name]):8.2f} / {base:8.2f} ms  '
                f'ratio {med:.3f}  paired {paired:.3f}  best {best:.3f}')

