"""The Gumbel-softmax schedule (Eq. 3-5) as a function of the iteration."""
import math

import pytest
import torch

from ghostsr_plugin.ops.gumbel import gumbel_schedule, hard_offsets, noise_scale, sample_offsets


def test_epoch_and_noise_decay():
    """t = 1 + (iter-1)//iters_per_epoch; noise scale a^(t-1) (Eq. 3)."""
    assert [gumbel_schedule(i, 10).epoch for i in (1, 10, 11, 20, 21)] == [1, 1, 2, 2, 3]
    assert gumbel_schedule(1, 10).noise_scale == 1.0
    assert math.isclose(gumbel_schedule(21, 10, a=0.97).noise_scale, 0.97**2)
    assert math.isclose(noise_scale(301, 0.97), 0.97**300)
    with pytest.raises(ValueError, match='iters_per_epoch'):
        gumbel_schedule(1, 0)


def test_sampling_matches_eq3_eq4_by_hand():
    """S = softmax((W' + N)/τ) with N = -log(-log U)·a^(t-1), U from the generator seeded by the state."""
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0]], dtype=torch.float64)
    state = gumbel_schedule(25, 10, a=0.9, tau=0.5, seed=3)
    offsets, probs = sample_offsets(logits, state)
    uniform = torch.rand((1, 4), generator=torch.Generator().manual_seed(state.seed), dtype=torch.float64)
    noise = -torch.log(-torch.log(uniform)) * 0.9**2
    expected = torch.softmax((logits + noise) / 0.5, -1)
    assert torch.allclose(probs, expected) and offsets == [int(expected.argmax())]


def test_same_iteration_same_noise_other_iteration_other_noise():
    logits = torch.zeros(50, 9)
    a, _ = sample_offsets(logits, gumbel_schedule(7, 5))
    b, _ = sample_offsets(logits, gumbel_schedule(7, 5))
    c, _ = sample_offsets(logits, gumbel_schedule(8, 5))
    assert a == b and a != c


def test_noise_fades_to_argmax():
    """Late in training (tiny noise) the sampled offset is argmax W' (Eq. 5 without noise)."""
    logits = torch.randn(20, 9)
    offsets, _ = sample_offsets(logits, gumbel_schedule(10**6, 1, a=0.97))
    assert offsets == hard_offsets(logits)
