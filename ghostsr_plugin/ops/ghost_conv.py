"""The ghost module of GhostSR (Nie et al., §3.1).

``GhostConv2d`` is a drop-in for a k×k ``nn.Conv2d(in, out)``: a real convolution makes the (1-λ)·c_o
intrinsic features, the λ·c_o ghost features are intrinsic ones moved by one offset per layer. It subclasses
``nn.Conv2d`` so its parameters keep the plain layer's state-dict names (``weight``, ``bias``) with fewer output
filters; it adds ``shift_logits`` (W' of Eq. 3-4, learnable mode) and the channel map buffer ``ghost_index``.

Each Ghost network picks the offsets of all its learnable ghost layers once per forward through its
``ghost_schedule`` (:mod:`ghostsr_plugin.ops.schedule`); a layer reads its planned offset in ``forward``.
"""
import torch
from torch import nn

from ghostsr_plugin.ops.shift import centre_offset, ghost_shift, shift_to_offset, window_size

__all__ = [
    'SHIFT_MODES', 'GhostConv2d', 'FusedPReLU', 'GhostOptions', 'ghost_layers', 'ghost_offsets', 'check_ghost_options'
]

SHIFT_MODES = ('learnable', 'fixed', 'copy')


def check_ghost_options(ghost_ratio, ghost_d, shift_mode, where='network_g'):
    """Raise a ValueError naming the bad ghost option and what is allowed."""
    if not isinstance(ghost_ratio, (int, float)) or not 0 < ghost_ratio < 1:
        raise ValueError(f'{where}: ghost_ratio (λ, the share of ghost features) must be in (0, 1), got {ghost_ratio!r}')
    if isinstance(ghost_d, bool) or not isinstance(ghost_d, int) or ghost_d < 1:
        raise ValueError(f'{where}: ghost_d (maximum shift offset d) must be an integer >= 1, got {ghost_d!r}')
    if shift_mode not in SHIFT_MODES:
        raise ValueError(f'{where}: shift_mode must be one of {", ".join(SHIFT_MODES)}; got {shift_mode!r}')


def num_intrinsic_channels(out_channels, ratio, groups=1):
    """(1-λ)·c_o rounded to a multiple of ``groups``; the rest are ghosts."""
    num = int(round((1 - ratio) * out_channels / groups)) * groups
    return num


class GhostConv2d(nn.Conv2d):
    """k×k convolution whose output is [intrinsic, ghost] features (Eq. 1-6).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, groups, bias: as ``nn.Conv2d`` for the full
            layer; ``padding`` defaults to ``kernel_size // 2``.
        ratio (float): λ, the share of ghost features, in (0, 1). Default 0.5 (§4.1).
        d (int): maximum offset; the offset lies in a (2d+1)×(2d+1) window. Default 1.
        shift_mode (str): 'learnable' (Gumbel-softmax, Eq. 3-6), 'fixed' (the ``offset`` below, never learned)
            or 'copy' (ghost = unshifted copy of its intrinsic feature; the paper's ablation).
        offset (tuple[int, int]): (dy, dx) of 'fixed' mode, ``G[y, x] = I[y+dy, x+dx]``.
            Default (0, -1): content moves one pixel to the right, the example of §3.1.
        name (str): layer name used in error messages.
        relu (bool): the layer is followed by a ReLU, applied inside the ghost op's pass (the value of ``relu(Y)``;
            the architecture then puts ``nn.Identity`` where its ReLU module was). Default False.
        negative_slope (float): with ``relu``, the fused activation is ``F.leaky_relu(Y, negative_slope)`` (an
            ``nn.LeakyReLU``, e.g. ESRGAN's); 0 is the plain ReLU. Default 0.

    A following ``nn.PReLU`` (Real-ESRGAN's Compact) is fused with :meth:`fuse_prelu`: the layer applies
    ``F.prelu(Y, prelu.weight)`` in the ghost op's pass and the PReLU module, left in its place so its weight keeps
    its state-dict name, passes its input through (:class:`FusedPReLU`).
    """

    def __init__(self,
                 in_channels,
                 out_channels,
                 kernel_size=3,
                 stride=1,
                 padding=None,
                 groups=1,
                 bias=True,
                 ratio=0.5,
                 d=1,
                 shift_mode='learnable',
                 offset=(0, -1),
                 name='',
                 relu=False,
                 negative_slope=0.0):
        check_ghost_options(ratio, d, shift_mode, where=name or 'GhostConv2d')
        num_intrinsic = num_intrinsic_channels(out_channels, ratio, groups)
        if not 0 < num_intrinsic < out_channels:
            raise ValueError(f'{name or "GhostConv2d"}: ghost_ratio={ratio} leaves {num_intrinsic} intrinsic of '
                             f'{out_channels} output channels (groups={groups}); a ghost layer needs at least one '
                             'intrinsic and one ghost channel')
        if padding is None:
            padding = kernel_size // 2
        super().__init__(in_channels, num_intrinsic, kernel_size, stride, padding, groups=groups, bias=bias)
        self.full_out_channels = out_channels
        self.ratio = ratio
        self.d = d
        self.shift_mode = shift_mode
        self.name = name
        self.fused_relu = bool(relu)
        self.fused_negative_slope = float(negative_slope)
        self.__dict__['fused_prelu'] = None  # a FusedPReLU owned by the network, not a submodule (see fuse_prelu)
        self.register_buffer('ghost_index', torch.empty(out_channels, dtype=torch.long))
        if shift_mode == 'learnable':
            # W' of Eq. 3-4. Zero except a small random tie-break, so no direction is favoured at the start.
            self.shift_logits = nn.Parameter(torch.randn(window_size(d)) * 1e-3)
            self.fixed_offset = None
        else:
            self.shift_logits = None
            self.fixed_offset = centre_offset(d) if shift_mode == 'copy' else shift_to_offset(*offset, d)
        self.set_index(None)
        self._plan = None  # (offset, probs) set by GhostSchedule for the current forward

    def __getstate__(self):
        """Copies and pickles leave out the current forward's plan: its probabilities are part of that forward's
        autograd graph, which ``copy.deepcopy`` refuses (an EMA or SWA copy made after a training step)."""
        state = self.__dict__.copy()
        state['_plan'] = None
        return state

    def fuse_prelu(self, prelu):
        """Apply ``prelu`` (an :class:`FusedPReLU` of 1 or ``full_out_channels`` slopes, left where it is in the
        network) inside this layer's ghost op. It is held outside ``_modules``, so the network's state dict, ``to()``
        and ``parameters()`` see its weight once, at its own place; copies of the whole network keep the link."""
        if not isinstance(prelu, FusedPReLU) or prelu.weight.numel() not in (1, self.full_out_channels):
            raise ValueError(f'{self.name or "GhostConv2d"}: fuse_prelu needs a FusedPReLU of 1 or '
                             f'{self.full_out_channels} slopes, got {prelu!r}')
        self.__dict__['fused_prelu'] = prelu

    @property
    def num_intrinsic(self):
        return self.out_channels

    def set_index(self, index):
        """Set the channel map (see :mod:`ghostsr_plugin.ops.shift`); ``None`` restores the default [I, G]."""
        from ghostsr_plugin.ops.shift import default_index
        with torch.device('cpu'):  # checked on the CPU, also when the network is built on the meta device
            if index is None:
                index = default_index(self.full_out_channels, self.num_intrinsic)
            index = torch.as_tensor(index, dtype=torch.long)
        if index.shape != (self.full_out_channels, ) or int(index.min()) < 0 or int(index.max()) >= 2 * self.num_intrinsic:
            raise ValueError(f'{self.name or "GhostConv2d"}: channel map must hold {self.full_out_channels} values in '
                             f'[0, {2 * self.num_intrinsic - 1}], got shape {tuple(index.shape)}')
        self.ghost_index.copy_(index.to(self.ghost_index.device))

    def freeze_offset(self):
        """Fix a learnable layer's offset at its argmax W' from now on: no Gumbel noise, W' no longer trained
        (its values stay, so a checkpoint keeps the argmax). A fixed or copy layer is left as it is."""
        if self.shift_logits is not None and self.fixed_offset is None:
            self.fixed_offset = int(self.shift_logits.argmax())
            self.shift_logits.requires_grad_(False)
            self._plan = None

    @property
    def offset_frozen(self):
        return self.shift_logits is not None and self.fixed_offset is not None

    def current_offset(self):
        """(offset, probs) of this forward: planned by the network's GhostSchedule, or worked out here."""
        if self.fixed_offset is not None:
            return self.fixed_offset, None
        if self._plan is not None:
            return self._plan
        if self.training:  # used outside a Ghost network: noise of scale 1 from the global RNG
            noise = -torch.log(-torch.log(torch.rand_like(self.shift_logits).clamp(1e-20, 1 - 1e-7)))
            probs = torch.softmax(self.shift_logits + noise, dim=0)
            return int(probs.argmax()), probs
        return int(self.shift_logits.argmax()), None

    def forward(self, x, residual=None, scale=1.0, relu=None):
        """Ghost layer output ``Y = [I, G]``; optionally ``residual + scale * act(Y)`` fused into the same pass
        (the same value as applying those ops one after another; it saves passes over the features). ``relu=None``
        uses the layer's own activation (``fused_relu`` with ``fused_negative_slope``, or its fused PReLU); a bool
        overrides it (no PReLU then)."""
        intrinsic = super().forward(x)
        offset, probs = self.current_offset()
        slopes = self.fused_prelu.weight if self.fused_prelu is not None and relu is None else None
        relu = self.fused_relu if relu is None else relu
        return ghost_shift(intrinsic, self.ghost_index, offset, self.d, probs, residual=residual, scale=scale,
                           relu=relu, negative_slope=self.fused_negative_slope, slopes=slopes)

    def extra_repr(self):
        fused = ', relu=True' if self.fused_relu else ', prelu=True' if self.fused_prelu is not None else ''
        if self.fused_relu and self.fused_negative_slope:
            fused += f', negative_slope={self.fused_negative_slope}'
        return (f'{super().extra_repr()}, full_out_channels={self.full_out_channels}, ratio={self.ratio}, '
                f'd={self.d}, shift_mode={self.shift_mode}' + fused)


class FusedPReLU(nn.PReLU):
    """An ``nn.PReLU`` whose activation a ghost layer applies (:meth:`GhostConv2d.fuse_prelu`): it passes its input
    through and keeps its ``weight`` (same state-dict name, still trained)."""

    @classmethod
    def from_prelu(cls, prelu):
        fused = cls(prelu.num_parameters, device=prelu.weight.device, dtype=prelu.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(prelu.weight)
        fused.weight.requires_grad_(prelu.weight.requires_grad)
        return fused

    def forward(self, x):
        return x

    def extra_repr(self):
        return f'num_parameters={self.num_parameters}, applied by the ghost layer before it'


def ghost_layers(net):
    """All distinct GhostConv2d of ``net`` in registration order (shared layers once)."""
    return [m for m in net.modules() if isinstance(m, GhostConv2d)]


def ghost_offsets(net):
    """{layer name: (dy, dx)} of every ghost layer, with the offset it uses in eval (argmax W', no noise)."""
    from ghostsr_plugin.ops.shift import offset_to_shift
    result = {}
    for name, module in net.named_modules():
        if isinstance(module, GhostConv2d):
            offset = module.fixed_offset if module.fixed_offset is not None else int(module.shift_logits.argmax())
            result[name] = offset_to_shift(offset, module.d)
    return result


class GhostOptions:
    """The ghost settings a Ghost network passes to each of its ghost layers (validated once)."""

    def __init__(self, ghost_ratio=0.5, ghost_d=1, shift_mode='learnable', fixed_offset=(0, -1)):
        check_ghost_options(ghost_ratio, ghost_d, shift_mode)
        self.ratio, self.d, self.shift_mode, self.offset = ghost_ratio, ghost_d, shift_mode, tuple(fixed_offset)
        if shift_mode == 'fixed':
            shift_to_offset(*self.offset, ghost_d)  # raises if outside the window

    def conv(self, in_channels, out_channels, kernel_size=3, groups=1, bias=True, name='', relu=False,
             negative_slope=0.0):
        return GhostConv2d(
            in_channels,
            out_channels,
            kernel_size,
            groups=groups,
            bias=bias,
            ratio=self.ratio,
            d=self.d,
            shift_mode=self.shift_mode,
            offset=self.offset,
            name=name,
            relu=relu,
            negative_slope=negative_slope)
