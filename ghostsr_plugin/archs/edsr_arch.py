from basicsr.archs.edsr_arch import EDSR
from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.compress.ghostifier import ghost_arch
from ghostsr_plugin.ops.ghost_conv import GhostConv2d


def _check_upscale(arguments):
    upscale = arguments.get('upscale', 4)
    if upscale not in (2, 3, 4, 8):
        raise ValueError(f'network_g: GhostEDSR supports upscale 2, 3, 4 or 8 (powers of 2 and 3), got {upscale!r}')


_GhostEDSR = ghost_arch(
    EDSR, 'GhostEDSR', """GhostSR version of EDSR (Nie et al., "GhostSR: Learning Ghost Features for Efficient Image
    Super-Resolution"): ``ghostify(EDSR(...))`` with the residual add after ``conv_after_body`` fused too.

    Same arguments, layout and state-dict names as BasicSR's ``EDSR``. Ghosted (§4.1): both 3x3 convs of every
    residual block and ``conv_after_body``. Kept plain: ``conv_first``, the upsampler and ``conv_last``.
    The ReLU and the scaled residual add of each residual block run inside the ghost op (ghostify's fused
    epilogues; the blocks are ``torch.fx`` rewrites of BasicSR's ``ResidualBlockNoBN`` with the same children).
    EDSR-L: num_feat=256, num_block=32, res_scale=0.1.""", __name__, check=_check_upscale)


@ARCH_REGISTRY.register()
class GhostEDSR(_GhostEDSR):
    __doc__ = _GhostEDSR.__doc__

    def forward(self, x):
        """EDSR's forward with ``res += x`` fused into ``conv_after_body`` (ghostify fuses epilogues in blocks below
        the root only)."""
        if not isinstance(self.conv_after_body, GhostConv2d):  # the plain layout, while ghostify traces it
            return super().forward(x)
        self.mean = self.mean.type_as(x)
        x = (x - self.mean) * self.img_range
        x = self.conv_first(x)
        res = self.conv_after_body(self.body(x), residual=x)
        x = self.conv_last(self.upsample(res))
        return x / self.img_range + self.mean
