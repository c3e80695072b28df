"""The Gumbel-softmax schedule of the learnable shift (Nie et al., §3.1, Eq. 3-5), as a function of the iteration.

BasicSR has no epoch hook, so the epoch t of Eq. 3 is derived from the iteration:
``t = 1 + (iter - 1) // iters_per_epoch``. The noise of Eq. 3 is drawn from a generator seeded by
``(seed, iter)`` so that every DDP rank draws the same noise at the same iteration.
"""
import math
from dataclasses import dataclass

import torch

__all__ = ['GumbelState', 'noise_scale', 'gumbel_schedule', 'sample_offsets', 'hard_offsets']


@dataclass(frozen=True)
class GumbelState:
    iteration: int
    epoch: int
    noise_scale: float  # a^(t-1) of Eq. 3
    tau: float  # temperature of Eq. 4
    seed: int  # seed of this iteration's noise


def noise_scale(epoch, a):
    """a^(t-1) of Eq. 3."""
    return math.pow(a, epoch - 1)


def gumbel_schedule(current_iter, iters_per_epoch, a=0.97, tau=1.0, seed=0):
    """State of the schedule at iteration ``current_iter`` (1-based, as BasicSR counts)."""
    if iters_per_epoch < 1:
        raise ValueError(f'iters_per_epoch must be >= 1, got {iters_per_epoch}')
    epoch = 1 + (max(current_iter, 1) - 1) // iters_per_epoch
    return GumbelState(current_iter, epoch, noise_scale(epoch, a), tau, (seed * 1_000_003 + current_iter) % (2**63 - 1))


def sample_offsets(logits, state):
    """Eq. 3-5 for L layers at once.

    Args:
        logits (Tensor): proxy weights W', [L, K].
        state (GumbelState): schedule state of this iteration.

    Returns:
        (list[int], Tensor): the argmax offsets (Eq. 5) and the soft weights S(W') (Eq. 4), [L, K], which carry
        the gradient to W'.
    """
    generator = torch.Generator().manual_seed(state.seed)
    uniform = torch.rand(logits.shape, generator=generator, dtype=torch.float64)
    uniform = uniform.clamp(torch.finfo(torch.float64).tiny, 1 - torch.finfo(torch.float64).eps)
    noise = (-torch.log(-torch.log(uniform)) * state.noise_scale).to(device=logits.device, dtype=logits.dtype)
    probs = torch.softmax((logits + noise) / state.tau, dim=-1)
    return probs.argmax(dim=-1).tolist(), probs


def hard_offsets(logits):
    """Offsets without noise (evaluation, Eq. 5 on W'): argmax of each row, [L, K] -> list[int]."""
    return logits.argmax(dim=-1).tolist()
