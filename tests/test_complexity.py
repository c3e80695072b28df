"""``measure.complexity`` counts what a by-hand count gives: the multiply-adds of a tiny EDSR and GhostEDSR (every
3x3 conv: H·W·c_out·c_in·9, the ghosted ones with their intrinsic c_out only), a shift counts zero (the compiled op
and the plain-PyTorch reference alike), the multi-scale CARN_M runs the head of the scale asked for, the paper's
EDSR-L x2 at 3x512x512 is 10678 G (Table 1: 10679 G), and shared modules count their parameters once."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import ghostsr_plugin  # noqa: F401  (registers the archs; BasicSR compat)
from basicsr.archs.edsr_arch import EDSR
from ghostsr_plugin.archs.carn_arch import CARN_M
from ghostsr_plugin.archs.edsr_arch import GhostEDSR
from ghostsr_plugin.measure.complexity import count_macs, count_params, forward_kwargs
from ghostsr_plugin.ops import backend
from ghostsr_plugin.ops.shift import default_index, ghost_shift_reference, shift_to_offset
from tiny_options_helpers import conv_macs

F, BLOCKS, H, W = 8, 2, 12, 16  # tiny EDSR x2: num_feat 8, 2 residual blocks, a 12x16 LR input


def edsr_macs_by_hand(ghost_share):
    """conv_first, 2 convs per block, conv_after_body (these 2·BLOCKS+1 ghosted in GhostEDSR), the x2 upsampler's
    conv to 4F channels at LR size, conv_last at HR size. Bias adds, the mean shift and the pixel shuffle: 0."""
    body_out = F - int(F * ghost_share)
    lr = conv_macs(H, W, 3, F) + (2 * BLOCKS + 1) * conv_macs(H, W, F, body_out) + conv_macs(H, W, F, 4 * F)
    return lr + conv_macs(2 * H, 2 * W, F, 3)


@pytest.mark.parametrize('cls, ghost_share', [(EDSR, 0), (GhostEDSR, 0.5)])
def test_edsr_and_ghost_edsr_macs_match_the_count_by_hand(cls, ghost_share):
    net = cls(num_in_ch=3, num_out_ch=3, num_feat=F, num_block=BLOCKS, upscale=2)
    assert count_macs(net, (1, 3, H, W), cpu_fallback=False) == edsr_macs_by_hand(ghost_share)  # on meta
    assert count_macs(net, (1, 3, H, W), device='cpu') == edsr_macs_by_hand(ghost_share)  # meta == a real run


def test_the_count_leaves_the_network_as_it_was():
    net = GhostEDSR(3, 3, num_feat=F, num_block=BLOCKS, upscale=2)
    count_macs(net, (1, 3, H, W))
    assert all(not m.offset_frozen for m in net.modules() if hasattr(m, 'offset_frozen'))
    assert next(net.parameters()).device.type == 'cpu'


def test_ghost_edsr_saves_half_the_body_macs():
    plain = count_macs(EDSR(3, 3, num_feat=F, num_block=BLOCKS, upscale=2), (1, 3, H, W))
    ghost = count_macs(GhostEDSR(3, 3, num_feat=F, num_block=BLOCKS, upscale=2), (1, 3, H, W))
    assert plain - ghost == (2 * BLOCKS + 1) * conv_macs(H, W, F, F // 2)


@pytest.mark.parametrize('shift', [backend.ghost_shift, ghost_shift_reference])
def test_a_shift_counts_zero(shift):
    x = torch.randn(1, 4, 8, 8)
    with FlopCounterMode(display=False) as counter:
        out = shift(x, default_index(8, 4), shift_to_offset(1, -1, 1), 1)
    assert out.shape == (1, 8, 8, 8) and counter.get_total_flops() == 0


def test_multi_scale_carn_m_counts_the_head_of_the_scale():
    net = CARN_M(multi_scale=True)
    assert forward_kwargs(net, 3) == {'scale': 3} and forward_kwargs(EDSR(3, 3), 3) == {}
    single = {s: count_macs(CARN_M(upscale=s), (1, 3, 8, 8)) for s in (2, 3)}
    assert {s: count_macs(net, (1, 3, 8, 8), scale=s) for s in (2, 3)} == single


def test_edsr_l_x2_at_512_is_table_1s_count():
    net = EDSR(3, 3, num_feat=256, num_block=32, upscale=2, res_scale=0.1)
    assert round(count_macs(net, (1, 3, 512, 512)) / 1e9, 1) == 10677.8  # paper: 10679 G


def test_shared_modules_count_once():
    block = torch.nn.Conv2d(4, 4, 3)
    net = torch.nn.Sequential(block, block)
    assert count_params(net) == 4 * 4 * 9 + 4
    net.register_buffer('mean', torch.zeros(3))
    assert count_params(net, include_buffers=True) == 4 * 4 * 9 + 4 + 3
