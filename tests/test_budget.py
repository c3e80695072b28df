"""pipeline/budget.py: a minutes budget turned into iterations. The step timer counts every timed step, slow ones
included (its mean, not a median), runs for the time and steps asked, and leaves the network's weights as they were."""
import time

import pytest
import torch

from conftest import train_options
from ghostsr_plugin.pipeline.budget import iterations_for, seconds_per_step, timing_seconds


class SlowTeacher(torch.nn.Module):
    """A x2 nearest-neighbour 'teacher' that sleeps ``pauses[i]`` seconds on its i-th call (0.01 s after them)."""

    def __init__(self, pauses):
        super().__init__()
        self.pauses, self.calls = list(pauses), 0

    def forward(self, x):
        time.sleep(self.pauses[self.calls] if self.calls < len(self.pauses) else 0.01)
        self.calls += 1
        return torch.nn.functional.interpolate(x, scale_factor=2, mode='nearest')


def _dataset(tiny_data):
    train_set = train_options('budget', {'type': 'GhostCARN_M', 'upscale': 2}, tiny_data)['datasets']['train']
    return {**train_set, 'scale': 2}


def _net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))


def test_iterations_fit_the_minutes():
    assert iterations_for(60, 0.9) == 4000          # 3600 s / 0.9 s
    assert iterations_for(1, 10) == 20              # at least `low`
    assert iterations_for(600, 0.001, high=5000) == 5000


def test_timing_takes_a_share_of_the_budget():
    assert timing_seconds(15) == pytest.approx(18.0)  # 2 % of 900 s
    assert timing_seconds(60) == 30.0                 # capped
    assert timing_seconds(1) == 5.0                   # at least 5 s


def test_a_slow_step_counts_in_the_mean(tiny_data):
    """Steps after the first take 0.01 s but one takes 0.3 s: the mean of the 8 timed steps is above
    (0.3 + 7 x 0.01) / 8 = 0.046 s, where their median (about 0.01 s) would hide the stall."""
    teacher = SlowTeacher([0.0, 0.01, 0.01, 0.3])
    seconds = seconds_per_step(_net(), teacher, _dataset(tiny_data), min_steps=8, min_seconds=0)
    assert teacher.calls == 9                         # the untimed first step + 8
    assert 0.046 <= seconds < 0.2


def test_it_times_at_least_min_seconds(tiny_data):
    teacher = SlowTeacher([])
    began = time.perf_counter()
    seconds_per_step(_net(), teacher, _dataset(tiny_data), min_steps=2, min_seconds=0.5)
    assert time.perf_counter() - began >= 0.5
    assert teacher.calls > 3                          # past min_steps: each step sleeps 0.01 s and does little else
    teacher = SlowTeacher([])
    seconds_per_step(_net(), teacher, _dataset(tiny_data), min_steps=2, min_seconds=100, max_steps=6)
    assert teacher.calls == 7                         # max_steps ends it first


def test_the_weights_are_restored(tiny_data):
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seconds_per_step(net, SlowTeacher([]), _dataset(tiny_data), min_steps=3, min_seconds=0, lr=0.1)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_steps_run_under_the_training_malloc_settings(tiny_data, monkeypatch):
    """The training subprocess tunes glibc's malloc (utils.malloc); the timer does too, so it times the same steps."""
    from ghostsr_plugin.pipeline import budget
    calls = []
    monkeypatch.setattr(budget, 'tune_malloc', lambda: calls.append(True))
    seconds_per_step(_net(), SlowTeacher([]), _dataset(tiny_data), min_steps=1, min_seconds=0)
    assert calls
