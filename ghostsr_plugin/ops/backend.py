"""Which implementation of the ghost op runs: the compiled kernels of ``kernels/`` or the plain-PyTorch reference.

The compiled extension ``ghostsr_plugin._C`` defines, with ``TORCH_LIBRARY`` (CPU kernels in C++ with OpenMP
threads, CUDA kernels when built with them):

* ``torch.ops.ghostsr.ghost_shift(x, index, offset, d, probs=None, residual=None, scale=1.0, relu=False,
  negative_slope=0.0, slopes=None)``: a ghost layer's full output ``[N, c_out, H, W]`` from its intrinsic features
  ``x`` (§3.1, Eq. 1-2 with the one-hot W of Eq. 5), in one pass, in the memory format of ``x`` (channels_last
  stays channels_last). The optional epilogue fuses what follows a ghost layer, ``residual + scale * act(Y)`` with
  ``act`` a PReLU (``slopes``: ``nn.PReLU``'s weight, one per output channel or one for all), a ReLU (``relu``) or a
  leaky ReLU (``relu`` and a nonzero ``negative_slope``), with the same rounding as the separate ops (so it stays
  exact);
* ``torch.ops.ghostsr.ghost_shift_backward(grad_out, index, offset, d, num_in)``: the gradient to ``x`` (the
  transposed move, summed over the output channels sharing a source);
* ``torch.ops.ghostsr.ghost_shift_offset_grad(grad_out, x, index, d)``: the straight-through gradient to
  ``probs`` = S(W') (Eq. 6), the ``(2d+1)**2`` reductions ``sum_ghost <dL/dG, shift_k(I)>``.

This module registers their autograd formula (so learnable-shift training never runs a depth-wise convolution) and
their fake functions (so ``torch.compile`` and ``torch.export`` accept them). It is imported by ``ghostsr_plugin``
and named by the C++ library (``set_python_module``), so the registrations exist whenever the ops do.

Without the extension (not built, or ``GHOSTSR_NO_EXT=1`` at build time) or on a device it has no kernel for, the
reference of :mod:`ghostsr_plugin.ops.shift` runs and one warning says so. ``GHOSTSR_BACKEND=reference`` forces
the reference (for comparisons); ``GHOSTSR_BACKEND=auto`` (or unset) picks the compiled op where it can.

Under ``torch.compile`` (not ``torch.export``) the op is traced as the reference's plain ops by default, so that
Inductor fuses the move into its neighbours (the ReLU, the residual add, the next kernel's loads) as it does for
any plain-op shift; ``GHOSTSR_COMPILE=op`` keeps the compiled op in the graph as one call instead. ``torch.export``
always keeps the op.
"""
import os
import warnings

import torch

from ghostsr_plugin.ops.shift import check_ghost_inputs, ghost_shift_reference, window_size

__all__ = ['backend_name', 'ghost_shift', 'compiled_available']

_BACKEND_CHOICES = ('auto', 'reference')
_COMPILE_CHOICES = ('decompose', 'op')
_compiled = None  # the loaded extension module, False when unavailable, None before the first look
_load_error = None
_warned = set()  # fallback reasons already warned about (one warning each)


def _load_compiled():
    """The extension module (registering the Python side of its ops on first load), or False."""
    global _compiled, _load_error
    if _compiled is None:
        try:
            from ghostsr_plugin import _C
        except ImportError as err:
            _compiled, _load_error = False, err
        else:
            _register_python_side()
            _compiled = _C
    return _compiled


def compiled_available():
    """True when the compiled extension ``ghostsr_plugin._C`` is importable (its ops are registered)."""
    return bool(_load_compiled())


def _choice():
    choice = os.environ.get('GHOSTSR_BACKEND', 'auto') or 'auto'
    if choice not in _BACKEND_CHOICES:
        raise ValueError(f'GHOSTSR_BACKEND must be one of {", ".join(_BACKEND_CHOICES)}, got {choice!r}')
    return choice


def _decompose_for_inductor():
    """True while torch.compile (not torch.export) traces and ``GHOSTSR_COMPILE`` is 'decompose' (the default).
    The variable is checked on every call, so a bad value fails in eager mode too."""
    mode = os.environ.get('GHOSTSR_COMPILE', 'decompose') or 'decompose'
    if mode not in _COMPILE_CHOICES:
        raise ValueError(f'GHOSTSR_COMPILE must be one of {", ".join(_COMPILE_CHOICES)}, got {mode!r}')
    return mode == 'decompose' and torch.compiler.is_compiling() and not torch.compiler.is_exporting()


def backend_name(device='cpu'):
    """'cpp', 'cuda' or 'reference': the implementation :func:`ghost_shift` uses for tensors on ``device``."""
    if _choice() == 'reference':
        return 'reference'
    compiled = _load_compiled()
    if not compiled:
        return 'reference'
    device_type = torch.device(device).type
    if device_type == 'cpu':
        return 'cpp'
    if device_type == 'cuda' and compiled.WITH_CUDA:
        return 'cuda'
    return 'reference'


def _warn_fallback(device):
    if not _load_compiled():
        reason = 'not built'
        message = (f'GhostSR: compiled ghost-shift op not available ({_load_error}); using the plain-PyTorch '
                   'reference. Build it with `pip install --no-build-isolation -e .` (see tools/setup_env.sh).')
    else:
        reason = torch.device(device).type
        message = (f'GhostSR: the compiled ghost-shift op has no kernel for {reason} tensors (CUDA kernels are built '
                   'with GHOSTSR_CUDA=1 or where nvcc and a GPU exist); using the plain-PyTorch reference.')
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(message, stacklevel=3)


def ghost_shift(x, index, offset, d, probs=None, residual=None, scale=1.0, relu=False, negative_slope=0.0,
                slopes=None):
    """Full output of a ghost layer from its intrinsic features (§3.1, Eq. 1-2, 5-6).

    Same arguments, value and gradients as :func:`ghostsr_plugin.ops.shift.ghost_shift_reference`; runs the compiled
    op where :func:`backend_name` says so. Inputs are validated first (clear errors for wrong dtypes, device mixes,
    offsets outside the window, maps of the wrong shape or range); inside ``torch.compile`` the data-dependent
    value check is left to the compiled op, which checks every value itself.

    Optional fused epilogue: ``residual + scale * act(Y)`` (``relu`` a bool, ``residual`` a tensor of the output's
    shape and dtype or None), equal to ``act``, ``* scale`` and ``residual +`` applied one after the other; ``act``
    is ``torch.relu`` when ``relu`` and ``negative_slope == 0``, ``F.leaky_relu(Y, negative_slope)`` when ``relu``
    and the slope is nonzero, none without ``relu`` (the slope is then unused); with ``slopes`` (a 1-D tensor of
    ``c_out`` values or one, ``nn.PReLU``'s weight) ``act`` is ``F.prelu(Y, slopes)`` whatever ``relu`` says, and
    the slopes get their gradient.
    """
    epilogue = relu or slopes is not None or residual is not None or scale != 1.0
    if epilogue:
        _check_residual(residual, x, index)
        _check_slopes(slopes, x, index)
    if _choice() == 'reference' or _decompose_for_inductor() or backend_name(x.device) == 'reference':
        if _choice() != 'reference' and not torch.compiler.is_compiling():
            _warn_fallback(x.device)
        out = ghost_shift_reference(x, index, offset, d, probs)
        return _reference_epilogue(out, residual, scale, relu, negative_slope, slopes) if epilogue else out
    if not torch.compiler.is_compiling():
        check_ghost_inputs(x, index, offset, d, probs)
    if probs is not None and not (probs.requires_grad and torch.is_grad_enabled()):
        probs = None  # the value never depends on S(W'); pass it only to carry its gradient
    if not epilogue:
        return torch.ops.ghostsr.ghost_shift(x, index, offset, d, probs)
    return torch.ops.ghostsr.ghost_shift(x, index, offset, d, probs, residual, float(scale), bool(relu),
                                         float(negative_slope), slopes)


def _check_residual(residual, x, index):
    if residual is None or not isinstance(x, torch.Tensor) or x.dim() != 4:
        return  # a malformed x is reported by the main checks
    shape = (x.shape[0], index.shape[0], x.shape[2], x.shape[3])
    if tuple(residual.shape) != shape:
        raise ValueError(f'ghost_shift: residual must have the output\'s shape {shape}, got {tuple(residual.shape)}')
    if residual.dtype != x.dtype or residual.device != x.device:
        raise ValueError(f'ghost_shift: residual is {residual.dtype} on {residual.device} but the features are '
                         f'{x.dtype} on {x.device}')


def _check_slopes(slopes, x, index):
    if slopes is None or not isinstance(x, torch.Tensor):
        return
    if not isinstance(slopes, torch.Tensor) or slopes.dim() != 1 or slopes.shape[0] not in (1, index.shape[0]):
        shape = tuple(slopes.shape) if isinstance(slopes, torch.Tensor) else type(slopes).__name__
        raise ValueError(f'ghost_shift: slopes must be a 1-D tensor of {index.shape[0]} values (one per output '
                         f'channel, nn.PReLU\'s weight) or 1, got {shape}')
    if slopes.dtype != x.dtype or slopes.device != x.device:
        raise ValueError(f'ghost_shift: slopes are {slopes.dtype} on {slopes.device} but the features are '
                         f'{x.dtype} on {x.device}')


def _reference_epilogue(out, residual, scale, relu, negative_slope, slopes=None):
    """The epilogue as separate PyTorch ops (what the fused kernels reproduce)."""
    if slopes is not None:
        out = torch.nn.functional.prelu(out, slopes)
    elif relu:
        out = torch.nn.functional.leaky_relu(out, negative_slope) if negative_slope else torch.relu(out)
    if scale != 1.0 or residual is not None:
        out = out * scale
    return out if residual is None else residual + out


# ---------------------------------------------------------------------------------------------------------------
# Python side of the compiled ops: fake functions and the autograd formula.


def _memory_format(t):
    """Layout the kernels produce for ``t`` (the rule of kernels/ghost_shift.h: channels_last when ``t`` is
    channels_last-contiguous and not also NCHW-contiguous, NCHW otherwise)."""
    if not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _check_features(t, what):
    if t.dim() != 4:
        raise ValueError(f'ghost_shift: {what} must be a 4-D tensor [N, C, H, W], got shape {tuple(t.shape)}')
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise TypeError(f'ghost_shift: {what} must be float32, float16, bfloat16 or float64, got {t.dtype}')


def _check_same_device(features, *others):
    """The fake functions also run for a mix of devices involving 'meta'; refuse it as the kernels do."""
    for what, other in others:
        if other is not None and other.device != features.device:
            raise RuntimeError(f'ghost_shift: {what} is on {other.device} but the features are on {features.device}')


def _ghost_shift_fake(x, index, offset, d, probs=None, residual=None, scale=1.0, relu=False, negative_slope=0.0,
                      slopes=None):
    _check_features(x, 'intrinsic features x')
    _check_same_device(x, ('channel map', index), ('offset probabilities', probs), ('residual', residual),
                       ('slopes', slopes))
    if slopes is not None:
        torch._check(slopes.dim() == 1 and slopes.shape[0] in (1, index.shape[0]) and slopes.dtype == x.dtype,
                     lambda: f'ghost_shift: slopes must be {x.dtype} of shape [{index.shape[0]}] or [1]')
    if residual is not None:
        shape = (x.shape[0], index.shape[0], x.shape[2], x.shape[3])
        torch._check(tuple(residual.shape) == shape and residual.dtype == x.dtype,
                     lambda: f'ghost_shift: residual must be {x.dtype} of shape {shape}')
    return torch.empty((x.shape[0], index.shape[0], x.shape[2], x.shape[3]),
                       dtype=x.dtype,
                       device=x.device,
                       memory_format=_memory_format(x))


def _ghost_shift_backward_fake(grad_out, index, offset, d, num_in):
    _check_features(grad_out, 'output gradient')
    _check_same_device(grad_out, ('channel map', index))
    return torch.empty((grad_out.shape[0], num_in, grad_out.shape[2], grad_out.shape[3]),
                       dtype=grad_out.dtype,
                       device=grad_out.device,
                       memory_format=_memory_format(grad_out))


def _ghost_shift_offset_grad_fake(grad_out, x, index, d):
    _check_features(x, 'intrinsic features x')
    _check_same_device(x, ('channel map', index), ('output gradient', grad_out))
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.new_empty((window_size(d), ), dtype=dtype)


def _needs_grad(ctx, i):
    return i < len(ctx.needs_input_grad) and ctx.needs_input_grad[i]


def _setup_context(ctx, inputs, output):
    x, index, offset, d, probs, residual, scale, relu, negative_slope, slopes = inputs
    ctx.offset, ctx.d, ctx.num_in, ctx.scale = offset, d, x.shape[1], scale
    ctx.prelu = slopes is not None
    ctx.relu, ctx.negative_slope = relu and not ctx.prelu, negative_slope
    ctx.probs_dtype = None if probs is None else probs.dtype
    ctx.wants_probs = probs is not None and _needs_grad(ctx, 4)
    # Activation mask (where Y > 0): the output itself when nothing follows the activation and it keeps the sign
    # (slope >= 0), else Y recomputed from x in the backward (always for PReLU, whose slopes may be negative and
    # whose slope gradient needs Y).
    ctx.relu_from_output = ctx.relu and negative_slope >= 0 and residual is None and scale == 1.0
    keep_x = ctx.wants_probs or ctx.prelu or (ctx.relu and not ctx.relu_from_output)
    ctx.save_for_backward(index, x if keep_x else None, output if ctx.relu_from_output else None, slopes)


def _backward(ctx, grad_out):
    """Eq. 6 and the transposed move, after the epilogue's own backward (add, mul by scale, activation), which
    is PyTorch's own (``threshold_backward`` of ReLU, ``leaky_relu_backward``, ``_prelu_kernel_backward`` with the
    slopes viewed and their gradient summed as ``F.prelu`` does)."""
    index, x, output, slopes = ctx.saved_tensors
    grad_residual = grad_out if _needs_grad(ctx, 5) else None
    grad = grad_out * ctx.scale if ctx.scale != 1.0 else grad_out
    grad_slopes = None
    if ctx.prelu:
        y = torch.ops.ghostsr.ghost_shift(x, index, ctx.offset, ctx.d)
        weight = slopes.reshape(-1, 1, 1) if slopes.shape[0] > 1 else slopes  # F.prelu's broadcast
        grad, grad_weight = torch.ops.aten._prelu_kernel_backward(grad, y, weight)
        if _needs_grad(ctx, 9):
            grad_slopes = grad_weight.sum_to_size(weight.shape).reshape(slopes.shape)
    elif ctx.relu:
        mask = output if ctx.relu_from_output else torch.ops.ghostsr.ghost_shift(x, index, ctx.offset, ctx.d)
        if ctx.negative_slope:
            grad = torch.ops.aten.leaky_relu_backward(grad, mask, ctx.negative_slope, ctx.relu_from_output)
        else:
            grad = torch.ops.aten.threshold_backward(grad, mask, 0)
    grad_x = grad_probs = None
    if _needs_grad(ctx, 0):
        grad_x = torch.ops.ghostsr.ghost_shift_backward(grad, index, ctx.offset, ctx.d, ctx.num_in)
    if ctx.wants_probs:
        grad_probs = torch.ops.ghostsr.ghost_shift_offset_grad(grad, x, index, ctx.d).to(ctx.probs_dtype)
    return grad_x, None, None, None, grad_probs, grad_residual, None, None, None, grad_slopes


def _register_python_side():
    torch.library.register_fake('ghostsr::ghost_shift', _ghost_shift_fake)
    torch.library.register_fake('ghostsr::ghost_shift_backward', _ghost_shift_backward_fake)
    torch.library.register_fake('ghostsr::ghost_shift_offset_grad', _ghost_shift_offset_grad_fake)
    torch.library.register_autograd('ghostsr::ghost_shift', _backward, setup_context=_setup_context)


_load_compiled()  # registers the ops' Python side as soon as the plugin is imported
