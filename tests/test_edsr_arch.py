"""EDSR (BasicSR) and GhostEDSR: shapes, ghosted layers, parameter counts, copy-mode equivalence, errors."""

import pytest
import torch
from torch import nn

import ghostsr_plugin  # noqa: F401  (before basicsr: registers the archs, torchvision compat)
from basicsr.archs.edsr_arch import EDSR
from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.archs.edsr_arch import GhostEDSR
from ghostsr_plugin.ops import GhostConv2d, ghost_layers
from arch_helpers import (GHOST_EXTRA, assert_copy_equals_plain, assert_learnable_trains, conv_params, ghost_params,
                          num_params)

TINY = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2)


@pytest.mark.parametrize('scale', [2, 3, 4, 8])
def test_output_shape(scale):
    x = torch.rand(1, 3, 8, 8)
    for net in (EDSR(**TINY, upscale=scale), GhostEDSR(**TINY, upscale=scale)):
        with torch.no_grad():
            assert net.eval()(x).shape == (1, 3, 8 * scale, 8 * scale)


def test_registered():
    assert ARCH_REGISTRY.get('GhostEDSR') is GhostEDSR


def test_ghost_layers_are_the_documented_ones():
    net = GhostEDSR(3, 3, num_feat=8, num_block=3, upscale=2)
    names = [name for name, m in net.named_modules() if isinstance(m, GhostConv2d)]
    expected = [f'body.{i}.conv{j}' for i in range(3) for j in (1, 2)] + ['conv_after_body']
    assert names == expected
    assert len(ghost_layers(net)) == 7
    for name in ('conv_first', 'upsample.0', 'conv_last'):
        assert type(dict(net.named_modules())[name]) is nn.Conv2d


def test_state_dict_names_match_edsr():
    ghost_keys = {k for k in GhostEDSR(**TINY, upscale=2).state_dict() if not k.endswith(GHOST_EXTRA)}
    assert ghost_keys == set(EDSR(**TINY, upscale=2).state_dict())


def edsr_params(f, blocks, scale, ghost):
    body_conv = (lambda: ghost_params(f, f)) if ghost else (lambda: conv_params(f, f))
    up = conv_params(f, 9 * f) if scale == 3 else {2: 1, 4: 2, 8: 3}[scale] * conv_params(f, 4 * f)
    return conv_params(3, f) + (2 * blocks + 1) * body_conv() + up + conv_params(f, 3)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_param_count_formula_tiny(scale):
    assert num_params(EDSR(**TINY, upscale=scale)) == edsr_params(8, 2, scale, ghost=False)
    assert num_params(GhostEDSR(**TINY, upscale=scale)) == edsr_params(8, 2, scale, ghost=True)


def test_param_count_edsr_l_full_size():
    """EDSR-L x2 (num_feat 256, 32 blocks): 40.73M plain (paper: 40.72M), 21.55M Ghost (paper: 21.63M)."""
    plain = num_params(EDSR(3, 3, num_feat=256, num_block=32, upscale=2, res_scale=0.1))
    ghost = num_params(GhostEDSR(3, 3, num_feat=256, num_block=32, upscale=2, res_scale=0.1))
    assert plain == edsr_params(256, 32, 2, ghost=False) == 40_729_603
    assert ghost == edsr_params(256, 32, 2, ghost=True)
    assert abs(plain / 1e6 - 40.72) < 0.05 and abs(ghost / 1e6 - 21.63) < 0.1


@pytest.mark.parametrize('scale', [2, 3])
def test_copy_mode_equals_plain_with_duplicated_filters(scale):
    torch.manual_seed(0)
    assert_copy_equals_plain(GhostEDSR(**TINY, upscale=scale, shift_mode='copy'), EDSR(**TINY, upscale=scale),
                             torch.rand(1, 3, 8, 8))


def test_learnable_train_and_eval():
    torch.manual_seed(0)
    assert_learnable_trains(GhostEDSR(**TINY, upscale=2), torch.rand(2, 3, 8, 8))


def test_bad_upscale_raises():
    with pytest.raises(ValueError, match='upscale'):
        GhostEDSR(**TINY, upscale=5)
