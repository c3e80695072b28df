"""GhostConv2d and GhostSchedule: the ghost module of §3.1 and the per-network Gumbel driver."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghostsr_plugin.ops.ghost_conv import FusedPReLU, GhostConv2d, ghost_offsets
from ghostsr_plugin.ops.schedule import GhostSchedule
from ghostsr_plugin.ops.shift import centre_offset, shift2d, shift_to_offset


def test_intrinsic_conv_then_shifted_ghosts():
    """Y = [I, G]: I = conv(x) with (1-λ)c_o filters, G = I moved by the layer's offset (fixed mode)."""
    torch.manual_seed(0)
    layer = GhostConv2d(4, 8, 3, ratio=0.5, shift_mode='fixed', offset=(1, 0))
    assert layer.weight.shape == (4, 4, 3, 3) and layer.bias.shape == (4, )
    assert set(layer.state_dict()) == {'weight', 'bias', 'ghost_index'}  # plain conv names + the channel map
    x = torch.randn(2, 4, 6, 6)
    intrinsic = F.conv2d(x, layer.weight, layer.bias, padding=1)
    out = layer(x)
    assert torch.equal(out[:, :4], intrinsic)
    assert torch.equal(out[:, 4:], shift2d(intrinsic, 1, 0))


def test_copy_mode_is_unshifted_copy():
    layer = GhostConv2d(3, 6, 3, shift_mode='copy')
    x = torch.randn(1, 3, 5, 5)
    out = layer(x)
    assert torch.equal(out[:, 3:], out[:, :3]) and layer.shift_logits is None


@pytest.mark.parametrize('ratio,intrinsic', [(0.25, 12), (0.5, 8), (0.75, 4)])
def test_ratio_sets_intrinsic_count(ratio, intrinsic):
    layer = GhostConv2d(16, 16, 3, ratio=ratio, groups=4)
    assert layer.out_channels == intrinsic and layer.full_out_channels == 16
    assert layer(torch.randn(1, 16, 4, 4)).shape == (1, 16, 4, 4)


def test_eval_uses_argmax_of_logits_without_noise():
    layer = GhostConv2d(2, 4, 3).eval()
    with torch.no_grad():
        layer.shift_logits.zero_()
        layer.shift_logits[shift_to_offset(-1, 1, 1)] = 1.0
    x = torch.randn(1, 2, 5, 5)
    out = layer(x)
    assert torch.equal(out[:, 2:], shift2d(out[:, :2], -1, 1))
    assert ghost_offsets(torch.nn.Sequential(layer)) == {'0': (-1, 1)}


def test_training_gives_logits_a_gradient():
    layer = GhostConv2d(2, 4, 3).train()
    layer(torch.randn(2, 2, 6, 6)).square().sum().backward()
    assert layer.shift_logits.grad is not None and layer.shift_logits.grad.abs().sum() > 0


@pytest.mark.parametrize('kwargs,message', [
    ({'ratio': 0.0}, 'ghost_ratio'),
    ({'ratio': 1.0}, 'ghost_ratio'),
    ({'d': 0}, 'ghost_d'),
    ({'shift_mode': 'jump'}, 'shift_mode must be one of learnable, fixed, copy'),
    ({'ratio': 0.1, 'name': 'body.3.conv1'}, 'body.3.conv1: ghost_ratio=0.1 leaves 4 intrinsic of 4'),
    ({'shift_mode': 'fixed', 'offset': (2, 0)}, 'outside the window'),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message.replace('(', '\\(')):
        GhostConv2d(4, 4, 3, **kwargs)


def test_set_index_validates():
    layer = GhostConv2d(4, 4, 3, name='conv')
    layer.set_index([3, 0, 2, 1])
    assert layer.ghost_index.tolist() == [3, 0, 2, 1]
    with pytest.raises(ValueError, match='conv: channel map must hold 4 values in \\[0, 3\\]'):
        layer.set_index([0, 1, 2, 4])


class _TwoLayers(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.a = GhostConv2d(3, 6, 3)
        self.b = GhostConv2d(6, 6, 3)
        self.ghost_schedule = GhostSchedule(a=0.5, iters_per_epoch=2, seed=1)

    def forward(self, x):
        self.ghost_schedule.plan(self, self.training)
        return self.b(self.a(x))


def test_schedule_driven_by_iteration_is_reproducible():
    """Two nets at the same iteration choose the same sampled offsets (what keeps DDP ranks in step)."""
    torch.manual_seed(0)
    net1 = _TwoLayers()
    net2 = _TwoLayers()
    net2.load_state_dict(net1.state_dict())
    chosen = []
    for net in (net1, net2):
        net.ghost_schedule.set_iteration(3)
        net(torch.randn(1, 3, 4, 4))
        chosen.append([net.a._plan[0], net.b._plan[0]])
    assert chosen[0] == chosen[1]
    assert net1.ghost_schedule.state().epoch == 2 and net1.ghost_schedule.state().noise_scale == 0.5


def test_schedule_advances_alone_without_ghostsrmodel():
    net = _TwoLayers().train()
    with pytest.warns(UserWarning, match='GhostSRModel'):
        net(torch.randn(1, 3, 4, 4))
    net(torch.randn(1, 3, 4, 4))
    assert int(net.ghost_schedule.iteration) == 2
    net.eval()(torch.randn(1, 3, 4, 4))
    assert int(net.ghost_schedule.iteration) == 2  # evaluation does not advance it
    assert net.a._plan == (int(net.a.shift_logits.argmax()), None)


def test_logits_start_unbiased():
    """W' starts (near) zero: no direction is favoured, and the argmax over many layers is spread out."""
    torch.manual_seed(0)
    layers = [GhostConv2d(2, 4, 3) for _ in range(300)]
    assert max(float(layer.shift_logits.detach().abs().max()) for layer in layers) < 0.01
    counts = torch.bincount(torch.tensor([int(layer.shift_logits.detach().argmax()) for layer in layers]), minlength=9)
    assert counts.min() > 10 and counts[centre_offset(1)] < 100


@pytest.mark.parametrize('backend', ['auto', 'reference'])
def test_fused_relu_equals_conv_then_relu(backend, monkeypatch):
    """``relu=True`` (used by CARN, CARN_M and RDN for their conv+ReLU pairs) gives exactly relu(Y), forward and
    backward."""
    monkeypatch.setenv('GHOSTSR_BACKEND', backend)
    torch.manual_seed(0)
    fused = GhostConv2d(6, 8, groups=2, shift_mode='fixed', offset=(1, -1), relu=True)
    plain = GhostConv2d(6, 8, groups=2, shift_mode='fixed', offset=(1, -1))
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 6, 7, 5, requires_grad=True)
    out = fused(x)
    assert torch.equal(out, torch.relu(plain(x)))
    grad = torch.randn_like(out)
    (g_fused, ) = torch.autograd.grad(out, x, grad)
    (g_plain, ) = torch.autograd.grad(torch.relu(plain(x)), x, grad)
    assert torch.equal(g_fused, g_plain)


@pytest.mark.parametrize('slope', [0.2, 0.01])
@pytest.mark.parametrize('backend', ['auto', 'reference'])
def test_fused_leaky_relu_equals_conv_then_leaky_relu(backend, slope, monkeypatch):
    """``relu=True, negative_slope=s`` (ESRGAN's conv + LeakyReLU pairs) gives exactly ``leaky_relu(Y, s)``, alone
    and before ``residual + scale *``, forward and backward (x, the weights, the residual), NCHW and channels_last."""
    monkeypatch.setenv('GHOSTSR_BACKEND', backend)
    torch.manual_seed(0)
    fused = GhostConv2d(6, 8, shift_mode='fixed', offset=(1, -1), relu=True, negative_slope=slope)
    plain = GhostConv2d(6, 8, shift_mode='fixed', offset=(1, -1))
    plain.load_state_dict(fused.state_dict())
    assert f'relu=True, negative_slope={slope}' in repr(fused)
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 6, 7, 5).contiguous(memory_format=layout).requires_grad_()
        for residual, scale in ((None, 1.0), (torch.randn(2, 8, 7, 5, requires_grad=True), 0.2)):
            out = fused(x, residual, scale)
            expected = F.leaky_relu(plain(x), slope)
            if residual is not None:
                expected = residual + expected * scale
            assert torch.equal(out, expected)
            inputs = [x, fused.weight, fused.bias] + ([residual] if residual is not None else [])
            ref_inputs = [x, plain.weight, plain.bias] + ([residual] if residual is not None else [])
            grad = torch.randn_like(out)
            ours, ref = torch.autograd.grad(out, inputs, grad), torch.autograd.grad(expected, ref_inputs, grad)
            assert all(torch.equal(a, b) for a, b in zip(ours, ref))


@pytest.mark.parametrize('count', [8, 1])
@pytest.mark.parametrize('backend', ['auto', 'reference'])
def test_fused_prelu_equals_conv_then_prelu(backend, count, monkeypatch):
    """A layer with a fused ``nn.PReLU`` (Compact's conv + PReLU pairs; per-channel or one slope) gives exactly
    ``F.prelu(Y, weight)``, forward and backward (x, conv weights, the slopes), NCHW and channels_last; the PReLU
    module keeps its weight (trained) and passes its input through."""
    monkeypatch.setenv('GHOSTSR_BACKEND', backend)
    torch.manual_seed(0)
    prelu = FusedPReLU.from_prelu(nn.PReLU(count, init=-0.1))
    with torch.no_grad():
        prelu.weight.uniform_(-0.5, 0.5)
    fused = GhostConv2d(6, 8, shift_mode='fixed', offset=(1, -1))
    fused.fuse_prelu(prelu)
    plain = GhostConv2d(6, 8, shift_mode='fixed', offset=(1, -1))
    plain.load_state_dict(fused.state_dict())
    assert 'prelu=True' in repr(fused) and 'fused_prelu' not in fused.state_dict()
    weight = prelu.weight
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 6, 7, 5).contiguous(memory_format=layout).requires_grad_()
        out = prelu(fused(x))
        expected = F.prelu(plain(x), weight)
        assert torch.equal(out, expected)
        grad = torch.randn_like(out)
        ours = torch.autograd.grad(out, [x, fused.weight, fused.bias, weight], grad)
        ref = torch.autograd.grad(expected, [x, plain.weight, plain.bias, weight], grad)
        assert all(torch.equal(a, b) for a, b in zip(ours, ref))
    assert torch.equal(fused(x, relu=False), plain(x))  # an explicit relu= overrides the layer's activation
    with pytest.raises(ValueError, match='fuse_prelu needs a FusedPReLU of 1 or 8 slopes'):
        fused.fuse_prelu(FusedPReLU(4))


def test_network_deepcopies_after_a_training_forward():
    """An EMA/SWA copy (``copy.deepcopy``) made after a training step works: before, the layers' per-forward plan
    held Gumbel probabilities inside the autograd graph and deepcopy raised. The copy computes the same eval output."""
    import copy
    from basicsr.archs import build_network
    net = build_network({'type': 'GhostEDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                         'upscale': 2})
    net.ghost_schedule.driven = True  # as under GhostSRModel (no warning)
    net.train()(torch.rand(1, 3, 8, 8)).mean().backward()
    twin = copy.deepcopy(net)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(twin.eval()(x), net.eval()(x))


@pytest.mark.parametrize('options', [
    {'type': 'GhostEDSR', 'num_feat': 8, 'num_block': 1},
    {'type': 'GhostRDN', 'num_feat': 8, 'num_block': 1, 'num_layer': 2, 'num_grow_ch': 8},
    {'type': 'GhostCARN', 'num_feat': 8},
    {'type': 'GhostCARN_M', 'num_feat': 8}])
def test_ghost_networks_build_on_the_meta_device(options):
    """Shapes without memory (option checks, big configs): the channel map is checked on the CPU and the archs make
    no CPU tensor of their own (before: ``Tensor.item() cannot be called on meta tensors``, and RDN's mean was a CPU
    tensor that failed the trace)."""
    from basicsr.archs import build_network
    with torch.device('meta'):
        net = build_network({**options, 'num_in_ch': 3, 'num_out_ch': 3, 'upscale': 2})
    assert {p.device.type for p in net.parameters()} == {'meta'}
    assert {b.device.type for b in net.buffers()} == {'meta'}
