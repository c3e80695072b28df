"""The calibrated start (ghostsr_plugin.compress.calibration): its options and state dict rebuild the same network
(also for a re-parameterised one); on a small EDSR trained here for a few seconds it reproduces the plain network far
better than §3.2's clustering at the same FLOPs; its per-layer ratios meet the FLOPs budget (and the knapsack is
exact); where a layer's filters come in copied or shifted pairs it reproduces the plain network exactly."""
import copy
import itertools
import json
import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

import ghostsr_plugin  # noqa: F401
from basicsr.archs import build_network
from ghostsr_plugin.compress.calibration import _allocate, _saving, calibrated_ghost
from ghostsr_plugin.compress.clustering import cluster_init
from ghostsr_plugin.compress.ghostifier import ghostify
from ghostsr_plugin.measure.complexity import count_macs
from ghostsr_plugin.ops import GhostConv2d

EDSR_OPTIONS = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 2, 'upscale': 2}
ECBSR_OPTIONS = {'type': 'ECBSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_block': 2, 'num_channel': 8,
                 'with_idt': False, 'act_type': 'prelu', 'scale': 2}


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One thread: the tensors here are tiny, and on a shared machine two threads mostly wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(count, size, seed):
    """``count`` generated RGB images [count, 3, size, size] in [0, 1]: smooth stripes plus sharp-edged squares."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(count):
        img = np.stack([np.sin(2 * np.pi * (rng.uniform(1, 4) * x + rng.uniform(1, 4) * y) + rng.uniform(0, 6))
                        for _ in range(3)]) * 0.3 + 0.5
        for _ in range(3):
            top, left, side = rng.integers(0, size // 2, 3)
            img[:, top:top + side + 2, left:left + side + 2] = rng.uniform(0, 1, (3, 1, 1))
        out.append(img)
    return torch.tensor(np.stack(out), dtype=torch.float32)


def psnr(net, reference, inputs):
    with torch.no_grad():
        return 10 * math.log10(1 / float(((net(inputs) - reference(inputs))**2).mean()))


@pytest.fixture(scope='module')
def trained():
    """A small EDSR x2 trained for a few seconds on generated images (LR: 2x2 means), its calibration inputs (12
    crops, a list as the command gives them) and 4 held-out ones."""
    torch.manual_seed(0)
    net = build_network(dict(EDSR_OPTIONS))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    hr = images(64, 48, seed=1)
    lr = F.avg_pool2d(hr, 2)
    for step in range(80):
        pick = torch.arange(8) + 8 * (step % 8)
        loss = F.l1_loss(net(lr[pick]), hr[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    lr = F.avg_pool2d(images(16, 48, seed=2), 2)
    return net, list(lr[:12].split(1)), lr[12:]


def test_options_and_state_dict_rebuild_the_same_network(trained):
    """``build_network`` of the returned options (through YAML) + the returned state dict, strictly loaded, gives the
    returned network's outputs; the report is JSON. Also for ECBSR, whose re-parameterised blocks are matched in their
    merged form (the calibration fits the deploy 3x3 convs the Ghost network has)."""
    net, inputs, held_out = trained
    torch.manual_seed(0)
    ecbsr = build_network(dict(ECBSR_OPTIONS)).eval()
    for plain, network in ((net, EDSR_OPTIONS), (ecbsr, ECBSR_OPTIONS)):
        ghost, options, report = calibrated_ghost(plain, {'type': 'Ghost', 'network': dict(network)}, inputs,
                                                  progress=False, log=lambda line: None)
        json.dumps(report)
        rebuilt = build_network(yaml.safe_load(yaml.safe_dump(options))).eval()
        rebuilt.load_state_dict(ghost.state_dict())
        with torch.no_grad():
            assert torch.equal(rebuilt(held_out), ghost(held_out))
        assert psnr(ghost, plain, held_out) > 40, network['type']
        ghosted = [n for n, e in report['layers'].items() if e.get('intrinsic')]
        assert ghosted == [n for n, m in ghost.named_modules() if isinstance(m, GhostConv2d)]


def test_reproduces_the_plain_network_better_than_clustering(trained):
    """At the FLOPs of uniform λ = 0.5 (the default budget), the calibrated start's outputs on held-out inputs are
    more than 15 dB closer to the plain network's than those of §3.2's clustering start at λ = 0.5 (measured here:
    about 49 dB against 25 dB)."""
    net, inputs, held_out = trained
    clustered = ghostify(net, ghost_ratio=0.5).eval()
    cluster_init(clustered, net.state_dict(), n_init=2, init_offset='centre', progress=False)
    ghost, _, report = calibrated_ghost(net, {'type': 'Ghost', 'network': EDSR_OPTIONS}, inputs, progress=False,
                                        log=lambda line: None)
    size = (1, 3, 24, 24)
    assert report['flops_ratio'] <= count_macs(clustered, size) / count_macs(net, size) + 1e-4
    assert psnr(ghost, net, held_out) > psnr(clustered, net, held_out) + 15
    errors = [e for e in report['layers'].values() if 'error_after' in e]
    assert all(e['error_after'] <= e['error_before'] + 1e-6 for e in errors if 'intrinsic' not in e)


def test_ratios_meet_the_flops_budget(trained):
    """A budget below uniform λ = 0.5 is met (the FLOPs ratio counted on the returned network), with per-layer
    ratios; a loose one leaves layers plain through ``exclude`` (and the options still rebuild the network); one
    out of reach is an error saying how low it can go. The dynamic programme is exact against brute force."""
    net, inputs, _ = trained
    options = {'type': 'Ghost', 'network': EDSR_OPTIONS}
    size = (1, 3, 24, 24)
    for budget in (0.65, 0.9):
        ghost, chosen, report = calibrated_ghost(net, options, inputs, flops_budget=budget, progress=False,
                                                 log=lambda line: None)
        assert count_macs(ghost, size) / count_macs(net, size) == pytest.approx(report['flops_ratio'])
        assert report['flops_ratio'] <= budget + 1e-4
        ratios = {n: e['ratio'] for n, e in report['layers'].items() if 'ratio' in e}
        assert {n for n, r in ratios.items() if r == 0} == set(chosen.get('exclude', []))
        build_network(copy.deepcopy(chosen)).load_state_dict(ghost.state_dict())
    assert len(set(ratios.values())) > 1 and 0 in ratios.values()  # the loose budget: some plain, some ghosted
    with pytest.raises(ValueError, match='out of reach; ghosting every eligible layer at λ=0.75 gives 0.62'):
        calibrated_ghost(net, options, inputs, flops_budget=0.2, progress=False, log=lambda line: None)

    rng = np.random.default_rng(0)
    for _ in range(20):
        layers = {n: {'macs': float(rng.integers(100, 1000)), 'out_channels': 8, 'groups': 1,
                      'errors': {r: float(rng.random() * r) for r in (0.25, 0.5, 0.75)}} for n in 'abcd'}
        total = sum(layer['macs'] for layer in layers.values())
        need, tolerance = float(rng.random()) * 0.6 * total, 1e-4 * total
        chosen = _allocate(layers, need, tolerance)
        best = min(sum(layers[n]['errors'].get(r, 0.0) for n, r in zip('abcd', combo))
                   for combo in itertools.product((0, 0.25, 0.5, 0.75), repeat=4)
                   if sum(_saving(layers[n], r) for n, r in zip('abcd', combo)) >= need)
        assert sum(_saving(layers[n], r) for n, r in chosen.items()) >= need - tolerance
        assert sum(layers[n]['errors'].get(r, 0.0) for n, r in chosen.items()) <= best + 1e-12



def test_time_budget_keeps_the_conv_time_of_uniform_ratio(trained, monkeypatch):
    """cost='time' chooses the λ from each layer's measured conv times. With the timer replaced by a table where a
    conv of 16 filters costs 10, of 9 to 15 also 10 and of 8 or fewer 6 (time is not proportional to filters: a CPU
    can run 4 as slowly as 8), every layer needs λ >= 0.5 to save anything, and λ = 0.625 / 0.75 save no more than 0.5
    but lose more: every layer gets 0.5, and the chosen convs' time equals uniform λ = 0.5's. The options rebuild the
    network. A bad ``cost``, and a FLOPs budget with cost='time', are errors naming what is allowed."""
    from ghostsr_plugin.compress import calibration

    def table(conv, x, ratios, calls, reps=calibration.TIME_REPS):
        widths = {r: calibration.num_intrinsic_channels(conv.out_channels, r, conv.groups) for r in ratios}
        return {0: 10.0 * calls, **{r: calls * (10.0 if n > 8 else 6.0) for r, n in widths.items()}}

    monkeypatch.setattr(calibration, '_conv_times', table)
    net, inputs, held_out = trained
    options = {'type': 'Ghost', 'network': EDSR_OPTIONS}
    ghost, chosen, report = calibrated_ghost(net, options, inputs, cost='time', progress=False, log=lambda line: None)
    ratios = {n: e['ratio'] for n, e in report['layers'].items() if 'ratio' in e}
    assert set(ratios.values()) == {0.5} and report['cost'] == 'time' and report['budget'] is None
    assert report['conv_ms']['chosen'] == report['conv_ms']['uniform']
    assert report['conv_ms']['uniform'] == pytest.approx(6.0 * len(ratios))
    build_network(copy.deepcopy(chosen)).load_state_dict(ghost.state_dict())
    with pytest.raises(ValueError, match="cost must be one of flops, time, got 'latency'"):
        calibrated_ghost(net, options, inputs, cost='latency', progress=False)
    with pytest.raises(ValueError, match="flops_budget is for cost='flops'"):
        calibrated_ghost(net, options, inputs, cost='time', flops_budget=0.5, progress=False)



def test_time_budget_falls_back_to_flops_when_ghosting_saves_no_time(trained, monkeypatch):
    """Convolutions too small to time (every width measured the same) leave the time budget nothing to spend: the λ
    are then budgeted by FLOPs (at uniform λ's), it says so, and the report's ``cost`` is 'flops'."""
    from ghostsr_plugin.compress import calibration
    monkeypatch.setattr(calibration, '_conv_times', lambda conv, x, ratios, calls, reps=0: {0: 1.0, **{r: 1.0 for r in
                                                                                                      ratios}})
    net, inputs, _ = trained
    lines = []
    ghost, _, report = calibrated_ghost(net, {'type': 'Ghost', 'network': EDSR_OPTIONS}, inputs, cost='time',
                                        progress=False, log=lines.append)
    assert any('saves no measurable conv time' in line for line in lines) and report['cost'] == 'flops'
    assert report['flops_ratio'] <= report['uniform_flops_ratio'] + 1e-4 and 'conv_ms' not in report


def test_conv_times_are_measured_per_width():
    """The timer returns a positive time for the full conv (λ = 0) and for each λ, scaled by the number of calls."""
    from ghostsr_plugin.compress.calibration import _conv_times
    conv = nn.Conv2d(8, 16, 3, padding=1)
    times = _conv_times(conv, torch.rand(2, 8, 24, 24), [0.25, 0.5], calls=3, reps=3)
    assert set(times) == {0, 0.25, 0.5} and all(t > 0 for t in times.values())


class Pairs(nn.Module):
    """conv1 (3 -> 8, no bias) whose filters 4..7 are filters 0..3 moved one column (so their outputs are the first
    four moved one pixel, where the input has a zero border), ReLU, conv2 (8 -> 8) whose filters 4..7 copy 0..3,
    ReLU, conv3 (8 -> 3)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 3, 3, padding=1)
        with torch.no_grad():
            self.conv1.weight[:4, :, :, 0] = 0
            self.conv1.weight[4:] = 0
            self.conv1.weight[4:, :, :, :-1] = self.conv1.weight[:4, :, :, 1:]
            self.conv2.weight[4:], self.conv2.bias[4:] = self.conv2.weight[:4], self.conv2.bias[:4]

    def forward(self, x):
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))


def test_exact_where_filters_come_in_copied_or_shifted_pairs():
    """At λ = 0.5 each pair is one intrinsic filter and one ghost: the k-medoids pick one of each pair, conv1's
    offset is the one-column move (dx = ±1), conv2's ghosts are unshifted copies, and the least squares have nothing
    left to fit: the Ghost network reproduces the plain one to 1e-5."""
    torch.manual_seed(0)
    plain = Pairs().eval()
    inputs = [F.pad(torch.rand(1, 3, 12, 12), (2, 2, 2, 2)) for _ in range(12)]
    ghost, options, report = calibrated_ghost(plain, {'type': 'Ghost', 'network': {'type': 'Pairs'},
                                                      'include': ['conv1']}, inputs, progress=False,
                                              log=lambda line: None)
    assert 'layer_ratios' not in options and 'exclude' not in options
    layers = report['layers']
    assert layers['conv1']['offset'] in ([0, 1], [0, -1]) and layers['conv2']['offset'] == [0, 0]
    assert sorted(i % 4 for i in layers['conv2']['intrinsic_of']) == [0, 1, 2, 3]
    assert all(layers[n]['error_after'] < 1e-10 for n in ('conv1', 'conv2', 'conv3'))
    x = torch.cat(inputs)
    with torch.no_grad():
        assert torch.allclose(ghost(x), plain(x), atol=1e-5)
