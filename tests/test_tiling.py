"""``deploy.tiling``: tiled inference equals the untiled one when the tile margin covers the receptive field (EDSR
and GhostEDSR with a moving shift) and differs without a margin; the tiles cover the image exactly once; grey,
BGR/RGBA and 16-bit images round-trip with their kind, channel order, alpha (network or bicubic) and bit depth;
bad tile options name the option and what is allowed; with tiles the network sees and returns one tile at a time and
no float image of the output's size is held."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ghostsr_plugin  # noqa: F401  (registers the archs; BasicSR compat)
from basicsr.archs.edsr_arch import EDSR
from ghostsr_plugin.archs.edsr_arch import GhostEDSR
from ghostsr_plugin.deploy.tiling import Upscaler, check_tiling, tile_boxes
from ghostsr_plugin.utils.errors import UserInputError
from tiny_options_helpers import TINY, smooth_image


class NearestProbe(nn.Module):
    """x2 nearest upsampling that halves the red channel: the output tells whether the network saw RGB."""

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode='nearest') * x.new_tensor([0.5, 1, 1]).view(1, 3, 1, 1)


def nearest(img):
    return img.repeat(2, axis=0).repeat(2, axis=1)


def test_tile_boxes_cover_the_image_once():
    cover = np.zeros((23, 17), int)
    for y0, y1, x0, x1 in tile_boxes(23, 17, 8):
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all() and len(tile_boxes(23, 17, 8)) == 9


@pytest.mark.parametrize('net, pad', [
    (EDSR(**TINY, upscale=2), 6),  # receptive radius: 5 LR convs + conv_last at HR -> 5.5 LR px
    (GhostEDSR(**TINY, upscale=2, shift_mode='fixed', fixed_offset=(1, -1)), 9),  # + 1 px for each of 3 shifts
])
def test_tiles_with_a_margin_over_the_receptive_field_equal_no_tiles(net, pad):
    torch.manual_seed(0)
    lq = torch.rand(1, 3, 29, 23)
    whole = Upscaler(net, 2, 'cpu').run(lq)
    tiled = Upscaler(net, 2, 'cpu', tile=2 * pad, tile_pad=pad).run(lq)
    assert tiled.shape == whole.shape == (1, 3, 58, 46)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
    no_margin = Upscaler(net, 2, 'cpu', tile=2 * pad, tile_pad=0).run(lq)
    assert (no_margin - whole).abs().max() > 1e-3  # the margin is what makes them equal


def test_tiles_larger_than_the_image_run_it_whole():
    net = EDSR(**TINY, upscale=2)
    lq = torch.rand(1, 3, 10, 12)
    torch.testing.assert_close(Upscaler(net, 2, 'cpu', tile=16, tile_pad=4).run(lq), Upscaler(net, 2, 'cpu').run(lq))


def test_bgr_comes_back_bgr_with_the_network_seeing_rgb():
    img = smooth_image((6, 5))
    out = Upscaler(NearestProbe(), 2, 'cpu').enhance(img)
    expected = nearest(img).astype(np.float32)
    expected[:, :, 2] *= 0.5  # red is BGR's channel 2
    assert out.dtype == np.uint8 and np.array_equal(out, np.round(expected).astype(np.uint8))


def test_grey_comes_back_grey():
    img = smooth_image((6, 5), channels=1)
    out = Upscaler(nn.Upsample(scale_factor=2), 2, 'cpu').enhance(img)
    assert out.shape == (12, 10) and np.array_equal(out, nearest(img))


def test_sixteen_bit_comes_back_sixteen_bit_exactly():
    img = (smooth_image((6, 5)).astype(np.uint16) * 257 + np.arange(30, dtype=np.uint16).reshape(6, 5, 1))
    out = Upscaler(nn.Upsample(scale_factor=2), 2, 'cpu').enhance(img)
    assert out.dtype == np.uint16 and np.array_equal(out, nearest(img))


def test_rgba_keeps_its_alpha_upscaled_by_the_network_or_bicubic():
    img = smooth_image((6, 5), channels=4)
    out = Upscaler(nn.Upsample(scale_factor=2), 2, 'cpu').enhance(img)
    assert out.shape == (12, 10, 4) and np.array_equal(out, nearest(img))
    bicubic = Upscaler(nn.Upsample(scale_factor=2), 2, 'cpu', alpha_upsampler='bicubic').enhance(img)
    assert np.array_equal(bicubic[:, :, :3], out[:, :, :3])
    expected = cv2.resize(img[:, :, 3].astype(np.float32) / 255, (10, 12), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(bicubic[:, :, 3], np.round(np.clip(expected, 0, 1) * 255).astype(np.uint8))
    assert not np.array_equal(bicubic[:, :, 3], out[:, :, 3])


class Recorder(nn.Module):
    """x4 nearest upsampling that records the largest tensor it is called with and the largest it returns."""

    def __init__(self):
        super().__init__()
        self.largest_in = self.largest_out = 0

    def forward(self, x):
        y = F.interpolate(x, scale_factor=4, mode='nearest')
        self.largest_in, self.largest_out = max(self.largest_in, x.numel()), max(self.largest_out, y.numel())
        return y


@pytest.mark.parametrize('channels', [1, 3, 4])
@pytest.mark.parametrize('depth', [8, 16])
def test_tiles_bound_the_device_and_no_float_output_is_held(channels, depth):
    """With --tile the network (the device) sees one padded tile at a time and returns one tile's output, and the
    output image is assembled tile by tile in its own 8/16-bit type: besides the output itself, the CPU holds less
    than half of one float32 RGB image of the output's size (numpy allocations, traced). Before: enhance built the
    whole output as a float tensor, then as float numpy copies (3-4 float images of the output's size)."""
    import tracemalloc
    img = smooth_image((64, 64), channels=channels)
    img = img.astype(np.uint16) * 257 + 1 if depth == 16 else img
    net = Recorder()
    upscaler = Upscaler(net, 4, 'cpu', tile=16, tile_pad=2)
    tracemalloc.start()
    try:
        out = upscaler.enhance(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    expected = img.repeat(4, axis=0).repeat(4, axis=1)
    assert out.dtype == img.dtype and np.array_equal(out, expected)  # nearest: the tiles are seamless
    assert net.largest_in == 3 * 20 * 20 and net.largest_out == 3 * 80 * 80  # a 16 px tile + 2 px of margin
    assert peak - out.nbytes < 256 * 256 * 3 * 4 / 2


@pytest.mark.parametrize('tile, pad, message', [
    (8, 5, '--tile 8 is smaller than twice --tile-pad 5; allowed: --tile 0 (no tiles) or --tile >= 10'),
    (-1, 0, '--tile -1: must be 0 (no tiles)'),
    (16, -2, '--tile-pad -2: must be >= 0'),
])
def test_bad_tiles_name_the_option(tile, pad, message):
    with pytest.raises(UserInputError, match=message.replace('(', r'\(').replace(')', r'\)')):
        check_tiling(tile, pad)


def test_half_on_the_cpu_and_a_wrong_scale_are_refused():
    with pytest.raises(UserInputError, match='--half needs a CUDA device'):
        Upscaler(nn.Upsample(scale_factor=2), 2, 'cpu', half=True)
    with pytest.raises(UserInputError, match='not x3'):
        Upscaler(nn.Upsample(scale_factor=2), 3, 'cpu').enhance(smooth_image((4, 4)))
