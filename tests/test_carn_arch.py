"""CARN, CARN_M and their Ghost versions: shapes, key names, the official CARN-M checkpoint, ghosted layers,
parameter counts, copy mode, sharing, errors."""
import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import ghostsr_plugin  # noqa: F401  (before basicsr: registers the archs, torchvision compat)
from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.archs.carn_arch import CARN, CARN_M, GhostCARN, GhostCARN_M
from ghostsr_plugin.ops import GhostConv2d, ghost_layers
from arch_helpers import (GHOST_EXTRA, assert_copy_equals_plain, assert_learnable_trains, conv_params, ghost_params,
                          num_params)

CARN_M_CKPT = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'weights', 'carn_m.pth')
ALL = (CARN, GhostCARN, CARN_M, GhostCARN_M)
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def authors_keys(mobile, heads):
    """State-dict keys of the authors' CARN-pytorch networks (carn.py / carn_m.py); ``heads``: {name: scale}."""
    convs = ['sub_mean.shifter', 'add_mean.shifter', 'entry', 'exit']
    for i in (1, 2, 3):
        blocks = ['b1'] if mobile else ['b1', 'b2', 'b3']
        for b in blocks:
            convs += [f'b{i}.{b}.body.0', f'b{i}.{b}.body.2'] + ([f'b{i}.{b}.body.4'] if mobile else [])
        convs += [f'b{i}.c{j}.body.0' for j in (1, 2, 3)]
    convs += [f'c{j}.body.0' for j in (1, 2, 3)]
    for head, scale in heads.items():
        convs += [f'upsample.{head}.body.0'] + ([f'upsample.{head}.body.3'] if scale == 4 else [])
    return {f'{conv}.{kind}' for conv in convs for kind in ('weight', 'bias')}


def carn_params(f, mobile, scales, ghost, group=4):
    """Parameter count of CARN / CARN-M with upsampling heads for ``scales``."""
    g = group if mobile else 1
    conv3 = (lambda: ghost_params(f, f, groups=g)) if ghost else (lambda: conv_params(f, f, groups=g))
    fusions = sum(conv_params(k * f, f, 1) for k in (2, 3, 4))
    if mobile:
        residual = 2 * conv3() + conv_params(f, f, 1)  # one shared efficient block
    else:
        residual = 3 * 2 * conv3()
    up = {
        2: conv_params(f, 4 * f, groups=g),
        3: conv_params(f, 9 * f, groups=g),
        4: 2 * conv_params(f, 4 * f, groups=g)
    }
    return (2 * conv_params(3, 3, 1) + conv_params(3, f) + 3 * (residual + fusions) + fusions +
            sum(up[s] for s in scales) + conv_params(f, 3))


def carn_m_reference(sd, x, scale, group=4):
    """The official CARN-M forward assembled by hand from its checkpoint tensors (F.conv2d)."""

    def conv(h, key, groups=1, relu=False):
        w = sd[f'{key}.weight']
        out = F.conv2d(h, w, sd[f'{key}.bias'], padding=w.shape[-1] // 2, groups=groups)
        return F.relu(out) if relu else out

    def eres(h, key):
        out = conv(h, f'{key}.body.0', group, relu=True)
        out = conv(out, f'{key}.body.2', group, relu=True)
        return F.relu(conv(out, f'{key}.body.4') + h)

    def cascade(h, blocks, prefix):
        cat = out = h
        for j, block in enumerate(blocks, 1):
            cat = torch.cat([cat, block(out)], 1)
            out = conv(cat, f'{prefix}c{j}.body.0', relu=True)
        return out

    h = conv(conv(x, 'sub_mean.shifter'), 'entry')
    h = cascade(h, [lambda o, i=i: cascade(o, [lambda p, i=i: eres(p, f'b{i}.b1')] * 3, f'b{i}.') for i in (1, 2, 3)],
                '')
    if scale == 4:
        h = F.pixel_shuffle(conv(h, 'upsample.up4.body.0', group, relu=True), 2)
        h = F.pixel_shuffle(conv(h, 'upsample.up4.body.3', group, relu=True), 2)
    else:
        h = F.pixel_shuffle(conv(h, f'upsample.up{scale}.body.0', group, relu=True), scale)
    return conv(conv(h, 'exit'), 'add_mean.shifter')


@pytest.fixture(scope='module')
def carn_m_state():
    if not os.path.isfile(CARN_M_CKPT):
        pytest.skip(f'official CARN-M checkpoint not found at {os.path.abspath(CARN_M_CKPT)}')
    # saved from a CUDA model: map to the CPU
    return torch.load(CARN_M_CKPT, map_location='cpu', weights_only=False)


def test_registered():
    for cls in ALL:
        assert ARCH_REGISTRY.get(cls.__name__) is cls


@pytest.mark.parametrize('cls', ALL)
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_output_shape_single_and_multi_scale(cls, scale):
    x = torch.rand(1, 3, 8, 8)
    single = cls(num_feat=8, upscale=scale).eval()
    multi = cls(num_feat=8, upscale=2, multi_scale=True).eval()
    with torch.no_grad():
        assert single(x).shape == (1, 3, 8 * scale, 8 * scale)
        assert multi(x, scale).shape == (1, 3, 8 * scale, 8 * scale)
        assert multi(x).shape == (1, 3, 16, 16)  # scale=None: upscale


@pytest.mark.parametrize('cls', ALL)
def test_scale_without_head_raises(cls):
    net = cls(num_feat=8, upscale=3).eval()
    with torch.no_grad(), pytest.raises(ValueError, match='scale=2'):
        net(torch.rand(1, 3, 8, 8), 2)


@pytest.mark.parametrize('cls, mobile', [(CARN, False), (GhostCARN, False), (CARN_M, True), (GhostCARN_M, True)])
def test_state_dict_names_are_the_authors(cls, mobile):
    multi = {k for k in cls(multi_scale=True, num_feat=8).state_dict() if not k.endswith(GHOST_EXTRA)}
    assert multi == authors_keys(mobile, {'up2': 2, 'up3': 3, 'up4': 4})
    for scale in (2, 4):
        single = {k for k in cls(upscale=scale, num_feat=8).state_dict() if not k.endswith(GHOST_EXTRA)}
        assert single == authors_keys(mobile, {'up': scale})


def test_official_carn_m_loads_strictly_and_matches_functional_forward(carn_m_state):
    net = CARN_M(multi_scale=True).eval()
    net.load_state_dict(carn_m_state, strict=True)
    assert num_params(net) == sum(v.numel() for v in carn_m_state.values()) == 414_811
    torch.manual_seed(0)
    x = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        for scale in (2, 3, 4):
            out = net(x, scale)
            assert out.shape == (1, 3, 10 * scale, 10 * scale)
            torch.testing.assert_close(out, carn_m_reference(carn_m_state, x, scale), rtol=1e-5, atol=1e-5)
        net.upscale = 3  # scale=None uses upscale
        torch.testing.assert_close(net(x), carn_m_reference(carn_m_state, x, 3), rtol=1e-5, atol=1e-5)


def test_mean_shifters_equal_the_official_ones(carn_m_state):
    state = CARN_M(multi_scale=True).state_dict()
    for key in ('sub_mean.shifter.weight', 'sub_mean.shifter.bias', 'add_mean.shifter.weight', 'add_mean.shifter.bias'):
        torch.testing.assert_close(state[key], carn_m_state[key])


def test_mean_shifters_are_frozen_div2k_mean():
    net = CARN(num_feat=8, upscale=2)
    torch.testing.assert_close(net.add_mean.shifter.bias, torch.tensor(DIV2K_MEAN))
    torch.testing.assert_close(net.sub_mean.shifter.bias, -torch.tensor(DIV2K_MEAN))
    assert not any(p.requires_grad for p in [*net.sub_mean.parameters(), *net.add_mean.parameters()])


def test_ghost_layers_carn():
    net = GhostCARN(num_feat=8, upscale=2, multi_scale=True)
    names = [name for name, m in net.named_modules() if isinstance(m, GhostConv2d)]
    assert names == [f'b{i}.b{j}.body.{k}' for i in (1, 2, 3) for j in (1, 2, 3) for k in (0, 2)]
    modules = dict(net.named_modules())
    for name in ('entry', 'exit', 'c1.body.0', 'b1.c3.body.0', 'upsample.up2.body.0', 'upsample.up4.body.3'):
        assert type(modules[name]) is nn.Conv2d


def test_ghost_layers_carn_m_are_the_six_shared_group_convs():
    net = GhostCARN_M(num_feat=16, upscale=4)
    names = [name for name, m in net.named_modules() if isinstance(m, GhostConv2d)]
    assert names == [f'b{i}.b1.body.{k}' for i in (1, 2, 3) for k in (0, 2)]
    assert len(ghost_layers(net)) == 6
    assert all(m.groups == 4 for m in ghost_layers(net))
    modules = dict(net.named_modules())
    for name in ('entry', 'exit', 'b1.b1.body.4', 'b2.c1.body.0', 'upsample.up.body.0', 'upsample.up.body.3'):
        assert type(modules[name]) is nn.Conv2d
    # the shared block is applied three times per forward, with its ghost layers
    calls = []
    net.b2.b1.body[0].register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        net.eval()(torch.rand(1, 3, 8, 8))
    assert len(calls) == 3


def test_param_count_formula_tiny():
    for scales, kwargs in (([2], dict(upscale=2)), ([3], dict(upscale=3)), ([4], dict(upscale=4)),
                           ([2, 3, 4], dict(multi_scale=True))):
        assert num_params(CARN(num_feat=8, **kwargs)) == carn_params(8, False, scales, ghost=False)
        assert num_params(GhostCARN(num_feat=8, **kwargs)) == carn_params(8, False, scales, ghost=True)
        assert num_params(CARN_M(num_feat=16, **kwargs)) == carn_params(16, True, scales, ghost=False)
        assert num_params(GhostCARN_M(num_feat=16, **kwargs)) == carn_params(16, True, scales, ghost=True)


def test_param_count_full_size():
    """Multi-scale: CARN 1.59M (paper 1.59M), CARN-M 0.41M (paper 0.41M); Ghost: 1.26M / 0.39M (paper 1.19 / 0.33)."""
    counts = {cls.__name__: num_params(cls(multi_scale=True)) for cls in ALL}
    assert counts['CARN'] == carn_params(64, False, [2, 3, 4], ghost=False) == 1_591_963
    assert counts['GhostCARN'] == carn_params(64, False, [2, 3, 4], ghost=True)
    assert counts['CARN_M'] == carn_params(64, True, [2, 3, 4], ghost=False) == 414_811
    assert counts['GhostCARN_M'] == carn_params(64, True, [2, 3, 4], ghost=True)
    assert round(counts['CARN'] / 1e6, 2) == 1.59 and round(counts['CARN_M'] / 1e6, 2) == 0.41
    assert num_params(CARN(upscale=2)) == carn_params(64, False, [2], ghost=False)


@pytest.mark.parametrize('scale', [2, 4])
def test_copy_mode_equals_plain_with_duplicated_filters(scale):
    torch.manual_seed(0)
    x = torch.rand(1, 3, 8, 8)
    pairs = [
        (GhostCARN(num_feat=8, upscale=scale, shift_mode='copy'), CARN(num_feat=8, upscale=scale)),
        # a ghost group conv copies intrinsic channels across groups: compare with the dense (group=1) CARN-M
        (GhostCARN_M(num_feat=16, upscale=scale, shift_mode='copy'), CARN_M(num_feat=16, upscale=scale, group=1)),
    ]
    for ghost, plain in pairs:
        assert_copy_equals_plain(ghost, plain, x)


@pytest.mark.parametrize('cls', [GhostCARN, GhostCARN_M])
def test_learnable_train_and_eval(cls):
    torch.manual_seed(0)
    assert_learnable_trains(cls(num_feat=16, upscale=2, multi_scale=True), torch.rand(2, 3, 8, 8), 3)


@pytest.mark.parametrize('cls', ALL)
@pytest.mark.parametrize('upscale', [1, 8])
def test_bad_upscale_raises(cls, upscale):
    with pytest.raises(ValueError, match=r'upscale 2, 3 or 4.*upscale='):
        cls(num_feat=8, upscale=upscale)


def test_mean_channel_mismatch_raises():
    with pytest.raises(ValueError, match='rgb_mean'):
        CARN(num_in_ch=1, num_out_ch=1, num_feat=8)
