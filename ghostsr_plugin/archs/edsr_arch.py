import torch
from torch import nn as nn

from basicsr.archs.arch_util import Upsample
from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.ops.ghost_conv import GhostOptions, GhostSchedule


class GhostResidualBlockNoBN(nn.Module):
    """BasicSR's ResidualBlockNoBN (conv-ReLU-conv, scaled residual) with both 3x3 convs ghosted; the ReLU and the
    scaled residual add are fused into the ghost op (same value, fewer passes over the features)."""

    def __init__(self, ghost, num_feat=64, res_scale=1, name=''):
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = ghost.conv(num_feat, num_feat, name=f'{name}.conv1')
        self.conv2 = ghost.conv(num_feat, num_feat, name=f'{name}.conv2')

    def forward(self, x):
        return self.conv2(self.conv1(x, relu=True), residual=x, scale=self.res_scale)


@ARCH_REGISTRY.register()
class GhostEDSR(nn.Module):
    """GhostSR version of EDSR (Nie et al., "GhostSR: Learning Ghost Features for Efficient Image Super-Resolution").

    Same arguments, layout and state-dict names as BasicSR's ``EDSR``. Ghosted (§4.1): both 3x3 convs of every
    residual block and ``conv_after_body``. Kept plain: ``conv_first``, the upsampler and ``conv_last``.
    EDSR-L: num_feat=256, num_block=32, res_scale=0.1.

    Args:
        num_in_ch, num_out_ch, num_feat, num_block, upscale, res_scale, img_range, rgb_mean: as BasicSR's EDSR.
        ghost_ratio (float): λ, the share of ghost features per layer, in (0, 1). Default 0.5.
        ghost_d (int): maximum shift offset d (window (2d+1)x(2d+1)). Default 1.
        shift_mode (str): 'learnable' (Gumbel-softmax), 'fixed' or 'copy'. Default 'learnable'.
        fixed_offset (tuple[int]): (dy, dx) of 'fixed' mode. Default (0, -1).
        gumbel_a (float): noise decay a of Eq. 3. Default 0.97.
        gumbel_tau (float): temperature τ of Eq. 4. Default 1.
        iters_per_epoch (int): epoch length for Eq. 3 when no GhostSRModel sets it. Default 1000.
        gumbel_seed (int): seed of the Gumbel noise. Default 0.
    """

    def __init__(self,
                 num_in_ch,
                 num_out_ch,
                 num_feat=64,
                 num_block=16,
                 upscale=4,
                 res_scale=1,
                 img_range=255.,
                 rgb_mean=(0.4488, 0.4371, 0.4040),
                 ghost_ratio=0.5,
                 ghost_d=1,
                 shift_mode='learnable',
                 fixed_offset=(0, -1),
                 gumbel_a=0.97,
                 gumbel_tau=1.0,
                 iters_per_epoch=1000,
                 gumbel_seed=0):
        super().__init__()
        if upscale not in (2, 3, 4, 8):
            raise ValueError(f'network_g: GhostEDSR supports upscale 2, 3, 4 or 8 (powers of 2 and 3), got {upscale!r}')
        ghost = GhostOptions(ghost_ratio, ghost_d, shift_mode, fixed_offset)
        self.img_range = img_range
        self.mean = torch.Tensor(rgb_mean).view(1, 3, 1, 1)

        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(
            *[GhostResidualBlockNoBN(ghost, num_feat, res_scale, name=f'body.{i}') for i in range(num_block)])
        self.conv_after_body = ghost.conv(num_feat, num_feat, name='conv_after_body')
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.ghost_schedule = GhostSchedule(gumbel_a, gumbel_tau, iters_per_epoch, gumbel_seed)

    def forward(self, x):
        self.ghost_schedule.plan(self, self.training)
        self.mean = self.mean.type_as(x)

        x = (x - self.mean) * self.img_range
        x = self.conv_first(x)
        res = self.conv_after_body(self.body(x), residual=x)

        x = self.conv_last(self.upsample(res))
        x = x / self.img_range + self.mean
        return x
