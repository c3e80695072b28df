"""MATLAB's bicubic down-scaling (``imresize(img, 1/scale)``), bit-exact on uint8 images, and the mod-crop before it:
how the standard benchmark LR files (Set5, Set14, B100, DIV2K's LR) were made. The kernel weights come from
BasicSR's ``matlab_functions``."""
import math

import numpy as np
import torch

from basicsr.utils.matlab_functions import calculate_weights_indices, imresize

__all__ = ['RESIZE_MODES', 'modcrop', 'bicubic_downscale']

RESIZE_MODES = ('matlab', 'basicsr')


def modcrop(img, mod):
    """Crop the bottom/right so that height and width are multiples of ``mod``."""
    h, w = img.shape[:2]
    return img[:h - h % mod, :w - w % mod]


def _quantize(x):
    """float -> uint8 as MATLAB converts: round half away from zero, saturate."""
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def _matlab_axis_weights(in_len, scale):
    """Weights and (0-based, in-range) source indices of MATLAB's antialiased bicubic along one axis.

    The kernel comes from BasicSR's ``calculate_weights_indices``, evaluated in float64 like MATLAB; indices outside
    the axis are mirrored the way MATLAB's ``imresize`` does (symmetric, periodic for tiny inputs).
    """
    out_len = math.ceil(in_len / scale)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        weights, indices, sym_start, _ = calculate_weights_indices(in_len, out_len, 1 / scale, 'cubic', 4, True)
    finally:
        torch.set_default_dtype(default_dtype)
    src = indices.numpy().astype(np.int64) - sym_start  # BasicSR offsets them into its padded copy
    src = np.mod(src, 2 * in_len)
    src = np.where(src >= in_len, 2 * in_len - 1 - src, src)
    return weights.numpy().astype(np.float64), src


def _matlab_resize_axis(img, scale, axis):
    weights, src = _matlab_axis_weights(img.shape[axis], scale)
    moved = np.moveaxis(img, axis, 0)
    out = np.zeros((weights.shape[0], ) + moved.shape[1:], dtype=np.float64)
    tap_shape = (-1, ) + (1, ) * (moved.ndim - 1)
    for tap in range(weights.shape[1]):
        out += weights[:, tap].reshape(tap_shape) * moved[src[:, tap]]
    return np.moveaxis(out, 0, axis)


def bicubic_downscale(img, scale, mode='matlab'):
    """Down-scale a uint8 HxWxC image by the integer ``scale`` with MATLAB's bicubic ``imresize(img, 1/scale)``.

    The image must already be mod-cropped (height and width multiples of ``scale``).

    Modes:
        ``'matlab'`` (default): bit-exact MATLAB ``imresize`` of a uint8 image, which resizes the height first,
            rounds to uint8, then resizes the width and rounds again. This reproduces the standard Set5/Set14 LR
            files (and so DIV2K's official LR images) exactly.
        ``'basicsr'``: ``basicsr.utils.matlab_functions.imresize`` on the float image and ONE rounding at the end
            (BasicSR's float re-implementation; it differs from MATLAB's uint8 output by one grey level in roughly
            15% of the pixels).

    Returns:
        uint8 array of shape (H/scale, W/scale, C).
    """
    if img.dtype != np.uint8:
        raise ValueError(f'bicubic_downscale expects a uint8 image, got {img.dtype}')
    h, w = img.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f'bicubic_downscale: image {w}x{h} is not mod-cropped to scale {scale}')
    if mode == 'matlab':
        rows = _quantize(_matlab_resize_axis(img.astype(np.float64), scale, axis=0))
        return _quantize(_matlab_resize_axis(rows.astype(np.float64), scale, axis=1))
    if mode == 'basicsr':
        return _quantize(imresize(img.astype(np.float32) / 255., 1 / scale) * 255.)
    raise ValueError(f'resize mode must be one of {RESIZE_MODES}, got {mode!r}')
