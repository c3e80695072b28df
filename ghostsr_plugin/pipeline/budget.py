"""A training budget in minutes turned into iterations from this machine's measured speed (the main job and
``compress`` size their fine-tunes this way)."""
import statistics
import time

import torch

from basicsr.data import build_dataset

__all__ = ['seconds_per_step', 'iterations_for']


def seconds_per_step(net, teacher, dataset_opt, steps=5, lr=1e-4):
    """Seconds of one GhostSRModel training step as BasicSR's pipeline runs it here: batches of the real training
    set (``dataset_opt``, with its batch size and worker processes), the teacher's forward, ``net``'s forward and
    backward (L1 to the teacher, plus L1 to ``gt`` when the set has ground truth) and Adam. Times ``steps`` (>= 3)
    steps and returns the median of all but the first (which pays the loader's start). ``net`` is trained on a
    copy of its weights' state: they are restored afterwards."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    if hasattr(net, 'ghost_schedule'):
        net.ghost_schedule.set_iteration(1)
    net.train()
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr)
    dataset = build_dataset({**dataset_opt, 'phase': 'train'})
    batch_size = dataset_opt['batch_size_per_gpu']
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=batch_size * steps)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                                         num_workers=dataset_opt.get('num_worker_per_gpu', 0))
    stamps = [time.perf_counter()]
    for _, batch in zip(range(steps), loader):
        optimizer.zero_grad()
        with torch.no_grad():
            target = teacher(batch['lq'])
        out = net(batch['lq'])
        loss = (out - target).abs().mean()
        if 'gt' in batch:
            loss = loss + (out - batch['gt']).abs().mean()
        loss.backward()
        optimizer.step()
        stamps.append(time.perf_counter())
    net.load_state_dict(state)
    return statistics.median(b - a for a, b in zip(stamps[1:-1], stamps[2:]))


def iterations_for(minutes, seconds, low=20, high=100000):
    """Iterations of ``seconds`` each that fit ``minutes``, within [low, high]."""
    return int(max(low, min(high, minutes * 60 / seconds)))
