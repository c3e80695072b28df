"""Timing helpers every measurement shares (the report, ``ghostsr bench``, the calibrated start's time budget):
:class:`Timer`, :func:`interleaved`, :func:`ratio_stats`."""
import statistics
import time

import torch

from ghostsr_plugin.utils.malloc import tune_malloc

__all__ = ['Timer', 'interleaved', 'ratio_stats']


class Timer:
    """Milliseconds of one call: CUDA events on a GPU, wall clock on the CPU."""

    def __init__(self, device):
        self.cuda = device.type == 'cuda'

    def __call__(self, fn):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        begin = time.perf_counter()
        fn()
        return (time.perf_counter() - begin) * 1e3


def interleaved(timer, fns, reps, warmup, progress=None):
    """Time every function of ``fns`` (name -> callable) once per repetition, alternating the order, after
    ``warmup`` untimed calls of each. ``progress`` (e.g. a tqdm bar) is updated once per call.

    First applies the project's glibc malloc settings (:func:`~ghostsr_plugin.utils.malloc.tune_malloc`, a no-op
    elsewhere or with ``GHOSTSR_MALLOC_TUNING=0``): with glibc's defaults a call's large tensors are mapped and faulted
    in again or not depending on what the call before it freed, so a network's time depended on its place in the
    order. Measured (2-core AMD EPYC, Ghost Compact x4 fused / unfused PReLU, 5 networks, 2 threads): the same two
    networks swapped ranks when their places were swapped, and the original ran at 200-234 ms against 152-158 ms
    with the settings, which gave stable ranks in both orders."""
    tune_malloc()
    for fn in fns.values():
        for _ in range(warmup):
            fn()
            if progress is not None:
                progress.update()
    names = list(fns)
    times = {name: [] for name in names}
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            times[name].append(timer(fns[name]))
            if progress is not None:
                progress.update()
    return times


def ratio_stats(times, num, den):
    """(ratio of the medians, median of the per-repetition ratios) of ``times[num]`` over ``times[den]``."""
    med = statistics.median(times[num]) / statistics.median(times[den])
    paired = statistics.median(a / b for a, b in zip(times[num], times[den]))
    return med, paired
