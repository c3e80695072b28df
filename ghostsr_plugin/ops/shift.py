"""The ghost operation of GhostSR (Nie et al., §3.1): one plain-PyTorch reference and its dispatcher.

Conventions used everywhere in the plugin
-----------------------------------------
* ``d`` is the maximum offset; the window has ``K = (2d+1)**2`` positions.
* An *offset* is the flat index ``k`` of the one-hot weight ``W`` of Eq. 2, ``k = (i_o-1)*(2d+1) + (j_o-1)``.
  It moves a feature map by ``(dy, dx) = (i_o-d-1, j_o-d-1)``; Eq. 1 with that one-hot ``W`` reads
  ``G[y, x] = I[y + dy, x + dx]`` and vacated pixels are zero. The centre ``k = d*(2d+1)+d`` is "no move".
* A ghost layer's output channel ``c`` is described by ``index[c]`` into the virtual concatenation
  ``[I, shift(I)]`` of ``2 * n_intrinsic`` channels: ``index[c] < n`` copies intrinsic channel ``index[c]``,
  ``index[c] >= n`` is the ghost of intrinsic channel ``index[c] - n``. The default map
  (:func:`default_index`) is ``Y = [I, G]`` of §3.1 with ghost ``j`` made from intrinsic ``j mod n``, which is
  right for every ratio λ; the clustering of §3.2 writes other maps.
* Training with a learnable offset passes ``probs = S(W')`` (Eq. 4). The forward value never depends on it
  (Eq. 5 and 2: the one-hot argmax); the backward gives ``probs`` the straight-through gradient of
  Alg. 1 line 8, ``dL/dS_k = sum over ghost channels of <dL/dG, shift_k(I)>`` (Eq. 6).
"""
import torch

__all__ = [
    'window_size', 'offset_to_shift', 'shift_to_offset', 'centre_offset', 'default_index', 'shift2d',
    'ghost_shift_reference', 'ghost_shift', 'check_ghost_inputs'
]


def window_size(d):
    """Number of positions K = (2d+1)^2 of the shift window (Eq. 2)."""
    return (2 * d + 1)**2


def offset_to_shift(offset, d):
    """Flat offset index k -> (dy, dx), each in [-d, d]."""
    width = 2 * d + 1
    return offset // width - d, offset % width - d


def shift_to_offset(dy, dx, d):
    """(dy, dx) -> flat offset index k; inverse of :func:`offset_to_shift`."""
    if not (-d <= dy <= d and -d <= dx <= d):
        raise ValueError(f'shift ({dy}, {dx}) is outside the window of maximum offset d={d}; '
                         f'allowed: each of dy, dx in [{-d}, {d}]')
    return (dy + d) * (2 * d + 1) + (dx + d)


def centre_offset(d):
    """The "no move" offset index."""
    return shift_to_offset(0, 0, d)


def default_index(num_out, num_intrinsic, device=None):
    """Channel map of Y = [I, G] (§3.1): intrinsic channels first, then ghost j made from intrinsic j mod n."""
    intrinsic = torch.arange(num_intrinsic, device=device)
    ghosts = torch.arange(num_out - num_intrinsic, device=device) % num_intrinsic + num_intrinsic
    return torch.cat([intrinsic, ghosts])


def shift2d(x, dy, dx):
    """Eq. 1 with a one-hot W: ``out[..., y, x] = x[..., y+dy, x+dx]``, zero where that falls outside."""
    height, width = x.shape[-2:]
    out = torch.zeros_like(x)
    y0, y1 = max(0, -dy), min(height, height - dy)
    x0, x1 = max(0, -dx), min(width, width - dx)
    if y0 < y1 and x0 < x1:
        out[..., y0:y1, x0:x1] = x[..., y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    return out


def check_ghost_inputs(x, index, offset, d, probs=None):
    """Validate the arguments of the ghost op; raise a ValueError/TypeError that names what is wrong."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f'intrinsic features must be a 4-D tensor [N, C, H, W], got {getattr(x, "shape", type(x))}')
    if not x.is_floating_point():
        raise TypeError(f'intrinsic features must be floating point (float32, float16, bfloat16, float64), '
                        f'got {x.dtype}')
    if not isinstance(d, int) or d < 1:
        raise ValueError(f'maximum offset d must be an integer >= 1, got {d!r}')
    if not isinstance(offset, int) or not 0 <= offset < window_size(d):
        raise ValueError(f'offset index must be an integer in [0, {window_size(d) - 1}] for d={d}, got {offset!r}')
    if index.dtype != torch.long or index.dim() != 1:
        raise TypeError(f'channel map must be a 1-D int64 tensor, got {index.dtype} of shape {tuple(index.shape)}')
    if index.device != x.device:
        raise ValueError(f'channel map is on {index.device} but the features are on {x.device}')
    num_in = x.shape[1]
    # Value range is checked on the CPU only: on a GPU it would cost a device sync per layer; there the
    # layers validate their map once when it is set (GhostConv2d.set_index) and index_select bounds-checks.
    # Under torch.compile the check would break the graph; index_select bounds-checks there.
    if (index.device.type == 'cpu' and index.numel() and not torch.compiler.is_compiling()
            and (int(index.min()) < 0 or int(index.max()) >= 2 * num_in)):
        raise ValueError(f'channel map values must lie in [0, {2 * num_in - 1}] (2 x {num_in} intrinsic channels), '
                         f'got range [{int(index.min())}, {int(index.max())}]')
    if probs is not None:
        if probs.shape != (window_size(d), ):
            raise ValueError(f'offset probabilities must have shape ({window_size(d)},) for d={d}, '
                             f'got {tuple(probs.shape)}')
        if probs.device != x.device:
            raise ValueError(f'offset probabilities are on {probs.device} but the features are on {x.device}')


def _gather(x, index, offset, d):
    """Forward of the ghost op: ``[x, shift(x)]`` picked by the channel map."""
    return torch.cat([x, shift2d(x, *offset_to_shift(offset, d))], 1).index_select(1, index)


def _gather_backward(grad_out, num_in, index, offset, d):
    """Gradient of :func:`_gather` w.r.t. x: channel gradients summed per source, ghosts moved back."""
    dy, dx = offset_to_shift(offset, d)
    grad_cat = grad_out.new_zeros(grad_out.shape[0], 2 * num_in, *grad_out.shape[2:])
    grad_cat.index_add_(1, index, grad_out)
    return grad_cat[:, :num_in] + shift2d(grad_cat[:, num_in:], -dy, -dx)


def _offset_backward(grad_out, x, index, d):
    """Straight-through gradient w.r.t. S(W') (Eq. 6): the K reductions <dL/dG, shift_k(I)> over ghost channels."""
    num_in = x.shape[1]
    ghost = index >= num_in
    sources = x.index_select(1, index[ghost] - num_in)
    grad_ghost = grad_out.index_select(1, torch.nonzero(ghost).flatten())
    return torch.stack([(grad_ghost * shift2d(sources, *offset_to_shift(k, d))).sum() for k in range(window_size(d))])


class _GhostShiftSTE(torch.autograd.Function):
    """The ghost op with a learnable offset: one-hot forward (Eq. 5, 2), straight-through backward (Eq. 6)."""

    @staticmethod
    def forward(ctx, x, probs, index, offset, d):
        ctx.save_for_backward(x, index)
        ctx.offset, ctx.d = offset, d
        return _gather(x, index, offset, d)

    @staticmethod
    def backward(ctx, grad_out):
        x, index = ctx.saved_tensors
        grad_x = _gather_backward(grad_out, x.shape[1], index, ctx.offset, ctx.d) if ctx.needs_input_grad[0] else None
        grad_probs = _offset_backward(grad_out, x, index, ctx.d) if ctx.needs_input_grad[1] else None
        return grad_x, grad_probs, None, None, None


def ghost_shift_reference(x, index, offset, d, probs=None):
    """Full output of a ghost layer from its intrinsic features ``x`` (§3.1, Eq. 1-2, 5-6), plain PyTorch.

    Args:
        x (Tensor): intrinsic features I, [N, n, H, W].
        index (LongTensor): channel map, [c_out], values in [0, 2n) (see the module docstring).
        offset (int): flat offset index k in [0, (2d+1)^2).
        d (int): maximum offset.
        probs (Tensor | None): S(W') of Eq. 4, [(2d+1)^2]; when it requires grad it receives the
            straight-through gradient. The output value does not depend on it.

    Returns:
        Tensor: [N, c_out, H, W].
    """
    check_ghost_inputs(x, index, offset, d, probs)
    if probs is not None and probs.requires_grad and torch.is_grad_enabled():
        return _GhostShiftSTE.apply(x, probs, index, offset, d)
    return _gather(x, index, offset, d)


def ghost_shift(x, index, offset, d, probs=None, residual=None, scale=1.0, relu=False, negative_slope=0.0,
                slopes=None):
    """The ghost op used by the networks: the compiled kernel when one is built, else the reference; with the
    optional epilogue ``residual + scale * act(Y)``, ``act`` a PReLU of the per-channel ``slopes`` when given, else a
    ReLU or (``negative_slope`` nonzero) leaky ReLU when ``relu``
    (see :func:`ghostsr_plugin.ops.backend.ghost_shift`)."""
    from ghostsr_plugin.ops import backend
    return backend.ghost_shift(x, index, offset, d, probs, residual=residual, scale=scale, relu=relu,
                               negative_slope=negative_slope, slopes=slopes)
