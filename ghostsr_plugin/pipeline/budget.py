"""A training budget in minutes turned into iterations from this machine's measured speed (the main job and
``compress`` size their fine-tunes this way)."""
import time

import torch

from basicsr.data import build_dataset
from ghostsr_plugin.utils.malloc import tune_malloc

__all__ = ['seconds_per_step', 'timing_seconds', 'iterations_for']


def timing_seconds(minutes, share=0.02, low=5.0, high=30.0):
    """How long to time training steps before a ``minutes`` budget: ``share`` of it, within [low, high] seconds."""
    return max(low, min(high, share * minutes * 60))


def seconds_per_step(net, teacher, dataset_opt, min_steps=8, min_seconds=20.0, max_steps=1000, lr=1e-4):
    """Seconds of one GhostSRModel training step as BasicSR's pipeline runs it here: batches of the real training
    set (``dataset_opt``, with its batch size and worker processes), the teacher's forward, ``net``'s forward and
    backward (L1 to the teacher, plus L1 to ``gt`` when the set has ground truth) and Adam.

    The first step (which pays the loader's start) is not counted; after it, steps run until at least ``min_steps``
    of them and ``min_seconds`` have passed (at most ``max_steps``), and their mean is returned: the rate a run
    goes at, slow steps (a loader that falls behind, the allocator) included, where the median of three steps used
    before could hide them. The steps run under the project's malloc settings, as the training subprocess does
    (without them a CARN_M step timed 35 % slower). ``net`` is trained on a copy of its weights' state: they are
    restored afterwards."""
    tune_malloc()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    if hasattr(net, 'ghost_schedule'):
        net.ghost_schedule.set_iteration(1)
    net.train()
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr)
    dataset = build_dataset({**dataset_opt, 'phase': 'train'})
    batch_size = dataset_opt['batch_size_per_gpu']
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=batch_size * (max_steps + 1))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                                         num_workers=dataset_opt.get('num_worker_per_gpu', 0))
    stamps = []
    for batch in loader:
        optimizer.zero_grad()
        with torch.no_grad():
            target = teacher(batch['lq'])
        out = net(batch['lq'])
        loss = (out - target).abs().mean()
        if 'gt' in batch:
            loss = loss + (out - batch['gt']).abs().mean()
        loss.backward()
        optimizer.step()
        stamps.append(time.perf_counter())  # stamps[0]: the end of the first step
        timed = len(stamps) - 1
        if timed >= max_steps or (timed >= min_steps and stamps[-1] - stamps[0] >= min_seconds):
            break
    net.load_state_dict(state)
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def iterations_for(minutes, seconds, low=20, high=100000):
    """Iterations of ``seconds`` each that fit ``minutes``, within [low, high]."""
    return int(max(low, min(high, minutes * 60 / seconds)))
