"""RDN and GhostRDN: shapes, wiring vs a functional reference, ghosted layers, parameter counts, copy mode, errors."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import ghostsr_plugin  # noqa: F401  (before basicsr: registers the archs, torchvision compat)
from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.archs.rdn_arch import RDN, GhostRDN
from ghostsr_plugin.ops import GhostConv2d, ghost_layers
from arch_helpers import (GHOST_EXTRA, assert_copy_equals_plain, assert_learnable_trains, conv_params, ghost_params,
                          num_params)

TINY = dict(num_feat=8, num_block=2, num_layer=3, num_grow_ch=4)


def rdn_params(g0, d, c, g, scale, ghost):
    conv3 = ghost_params if ghost else conv_params
    dense_layers = sum(conv3(g0 + i * g, g) for i in range(c))
    block = dense_layers + conv_params(g0 + c * g, g0, 1)
    if scale == 4:
        up = conv_params(g0, 4 * g) + conv_params(g, 4 * g)
    else:
        up = conv_params(g0, scale * scale * g)
    return (conv_params(3, g0) + conv3(g0, g0) + d * block + conv_params(d * g0, g0, 1) + conv3(g0, g0) + up +
            conv_params(g, 3))


def rdn_reference(sd, x, num_block, num_layer, scale, img_range=255., mean=(0.4488, 0.4371, 0.4040)):
    """RDN forward assembled by hand from a state dict (F.conv2d)."""

    def conv(h, key):
        w = sd[f'{key}.weight']
        return F.conv2d(h, w, sd[f'{key}.bias'], padding=w.shape[-1] // 2)

    mean = torch.tensor(mean).view(1, 3, 1, 1)
    f_minus1 = conv((x - mean) * img_range, 'SFENet1')
    h = conv(f_minus1, 'SFENet2')
    outs = []
    for i in range(num_block):
        feats = h
        for c in range(num_layer):
            feats = torch.cat([feats, F.relu(conv(feats, f'RDBs.{i}.convs.{c}.conv.0'))], 1)
        h = conv(feats, f'RDBs.{i}.LFF') + h
        outs.append(h)
    h = conv(conv(torch.cat(outs, 1), 'GFF.0'), 'GFF.1') + f_minus1
    if scale == 4:
        h = F.pixel_shuffle(conv(F.pixel_shuffle(conv(h, 'UPNet.0'), 2), 'UPNet.2'), 2)
        h = conv(h, 'UPNet.4')
    else:
        h = conv(F.pixel_shuffle(conv(h, 'UPNet.0'), scale), 'UPNet.2')
    return h / img_range + mean


def test_registered():
    assert ARCH_REGISTRY.get('RDN') is RDN and ARCH_REGISTRY.get('GhostRDN') is GhostRDN


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_output_shape(scale):
    x = torch.rand(1, 3, 8, 8)
    for net in (RDN(**TINY, upscale=scale), GhostRDN(**TINY, upscale=scale)):
        with torch.no_grad():
            assert net.eval()(x).shape == (1, 3, 8 * scale, 8 * scale)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_forward_matches_functional_reference(scale):
    torch.manual_seed(0)
    net = RDN(**TINY, upscale=scale).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        expected = rdn_reference(net.state_dict(), x, TINY['num_block'], TINY['num_layer'], scale)
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)


def test_ghost_layers_are_the_documented_ones():
    net = GhostRDN(**TINY, upscale=2)
    names = [name for name, m in net.named_modules() if isinstance(m, GhostConv2d)]
    expected = ['SFENet2'] + [f'RDBs.{i}.convs.{c}.conv.0' for i in range(2) for c in range(3)] + ['GFF.1']
    assert names == expected
    assert len(ghost_layers(net)) == 2 * 3 + 2
    modules = dict(net.named_modules())
    for name in ('SFENet1', 'RDBs.0.LFF', 'RDBs.1.LFF', 'GFF.0', 'UPNet.0', 'UPNet.2'):
        assert type(modules[name]) is nn.Conv2d


def test_state_dict_names_match_rdn():
    ghost_keys = {k for k in GhostRDN(**TINY, upscale=4).state_dict() if not k.endswith(GHOST_EXTRA)}
    assert ghost_keys == set(RDN(**TINY, upscale=4).state_dict())
    assert 'RDBs.1.convs.2.conv.0.weight' in ghost_keys and 'UPNet.4.bias' in ghost_keys


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_param_count_formula_tiny(scale):
    assert num_params(RDN(**TINY, upscale=scale)) == rdn_params(8, 2, 3, 4, scale, ghost=False)
    assert num_params(GhostRDN(**TINY, upscale=scale)) == rdn_params(8, 2, 3, 4, scale, ghost=True)


def test_param_count_full_size():
    """RDN x2 (D=16, C=8, G=G0=64): 22.12M plain (paper: 22.11M), 11.47M Ghost (paper: 11.54M)."""
    plain, ghost = num_params(RDN(upscale=2)), num_params(GhostRDN(upscale=2))
    assert plain == rdn_params(64, 16, 8, 64, 2, ghost=False) == 22_123_395
    assert ghost == rdn_params(64, 16, 8, 64, 2, ghost=True)
    assert abs(plain / 1e6 - 22.11) < 0.05 and abs(ghost / 1e6 - 11.54) < 0.1


@pytest.mark.parametrize('scale', [2, 4])
def test_copy_mode_equals_plain_with_duplicated_filters(scale):
    torch.manual_seed(0)
    assert_copy_equals_plain(GhostRDN(**TINY, upscale=scale, shift_mode='copy'), RDN(**TINY, upscale=scale),
                             torch.rand(1, 3, 8, 8))


def test_learnable_train_and_eval():
    torch.manual_seed(0)
    assert_learnable_trains(GhostRDN(**TINY, upscale=2), torch.rand(2, 3, 8, 8))


@pytest.mark.parametrize('cls', [RDN, GhostRDN])
@pytest.mark.parametrize('upscale', [1, 8])
def test_bad_upscale_raises(cls, upscale):
    with pytest.raises(ValueError, match=r'upscale 2, 3 or 4.*upscale='):
        cls(**TINY, upscale=upscale)
