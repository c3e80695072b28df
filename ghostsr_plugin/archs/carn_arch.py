import math

import torch
from torch import nn as nn
from torch.nn import functional as F

from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.compress.ghostifier import ghost_arch

CARN_SCALES = (2, 3, 4)
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


def conv3x3(in_ch, out_ch, groups=1):
    return nn.Conv2d(in_ch, out_ch, 3, 1, 1, groups=groups)


def conv3x3_relu(in_ch, out_ch, groups=1):
    """``[3x3 conv, ReLU]`` (ghostified, the ReLU runs inside the ghost op and an Identity keeps its place)."""
    return [conv3x3(in_ch, out_ch, groups), nn.ReLU(inplace=True)]


class MeanShift(nn.Module):
    """Adds ``sign * mean`` per channel with a frozen 1x1 conv (``shifter``), as the authors' checkpoints store it."""

    def __init__(self, mean, sign):
        super().__init__()
        num_ch = len(mean)
        self.shifter = nn.Conv2d(num_ch, num_ch, 1)
        with torch.no_grad():
            self.shifter.weight.copy_(torch.eye(num_ch).view(num_ch, num_ch, 1, 1))
            self.shifter.bias.copy_(sign * torch.tensor(mean, dtype=torch.float32))
        self.shifter.requires_grad_(False)

    def forward(self, x):
        return self.shifter(x)


class FusionBlock(nn.Module):
    """1x1 conv + ReLU that fuses the concatenated features of a cascade (``body.0``)."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.body(x)


class ResidualBlock(nn.Module):
    """CARN residual block: ``ReLU(x + conv3x3(ReLU(conv3x3(x))))``."""

    def __init__(self, num_feat):
        super().__init__()
        self.body = nn.Sequential(*conv3x3_relu(num_feat, num_feat), conv3x3(num_feat, num_feat))

    def forward(self, x):
        return F.relu(self.body(x) + x)


class EfficientResidualBlock(nn.Module):
    """CARN-M efficient residual block: two 3x3 group convs with ReLU, a 1x1 conv, then ``ReLU(x + body(x))``."""

    def __init__(self, num_feat, group):
        super().__init__()
        self.body = nn.Sequential(*conv3x3_relu(num_feat, num_feat, group), *conv3x3_relu(num_feat, num_feat, group),
                                  nn.Conv2d(num_feat, num_feat, 1))

    def forward(self, x):
        return F.relu(self.body(x) + x)


def cascade(x, blocks, fusions):
    """Cascading connections: each block's output is concatenated to all earlier features and fused by a 1x1 conv."""
    features = out = x
    for block, fusion in zip(blocks, fusions):
        features = torch.cat((features, block(out)), 1)
        out = fusion(features)
    return out


class CascadingBlock(nn.Module):
    """Three residual blocks ``b1..b3`` (CARN) or one block ``b1`` applied three times (CARN-M), fusions ``c1..c3``."""

    def __init__(self, num_feat, mobile, group=1):
        super().__init__()
        self.shared = mobile
        if mobile:
            self.b1 = EfficientResidualBlock(num_feat, group)
        else:
            self.b1 = ResidualBlock(num_feat)
            self.b2 = ResidualBlock(num_feat)
            self.b3 = ResidualBlock(num_feat)
        self.c1 = FusionBlock(num_feat * 2, num_feat)
        self.c2 = FusionBlock(num_feat * 3, num_feat)
        self.c3 = FusionBlock(num_feat * 4, num_feat)

    def forward(self, x):
        blocks = [self.b1] * 3 if self.shared else [self.b1, self.b2, self.b3]
        return cascade(x, blocks, [self.c1, self.c2, self.c3])


class UpsampleHead(nn.Module):
    """Sub-pixel upsampling by one factor: (3x3 conv, ReLU, PixelShuffle) once for x3, log2(scale) times for x2/x4."""

    def __init__(self, num_feat, scale, group=1):
        super().__init__()
        steps = [3] if scale == 3 else [2] * int(math.log2(scale))
        layers = []
        for step in steps:
            layers += [nn.Conv2d(num_feat, num_feat * step**2, 3, 1, 1, groups=group), nn.ReLU(inplace=True)]
            layers.append(nn.PixelShuffle(step))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


class UpsampleBlock(nn.Module):
    """One head ``up`` (single scale) or three heads ``up2``, ``up3``, ``up4`` (multi-scale)."""

    def __init__(self, num_feat, upscale, multi_scale, group=1):
        super().__init__()
        self.multi_scale = multi_scale
        self.upscale = upscale
        if multi_scale:
            for scale in CARN_SCALES:
                self.add_module(f'up{scale}', UpsampleHead(num_feat, scale, group))
        else:
            self.up = UpsampleHead(num_feat, upscale, group)

    def forward(self, x, scale):
        if self.multi_scale and scale in CARN_SCALES:
            return getattr(self, f'up{scale}')(x)
        if not self.multi_scale and scale == self.upscale:
            return self.up(x)
        allowed = CARN_SCALES if self.multi_scale else (self.upscale, )
        raise ValueError(f'scale={scale!r} has no upsampling head; this network was built for scale '
                         f'{" or ".join(map(str, allowed))} (multi_scale={self.multi_scale})')


class _CARNBase(nn.Module):
    """CARN / CARN-M layout."""

    def __init__(self, num_in_ch, num_out_ch, num_feat, upscale, multi_scale, mobile, group, rgb_mean, arch):
        super().__init__()
        if upscale not in CARN_SCALES:
            raise ValueError(f'network_g: {arch} supports upscale 2, 3 or 4, got upscale={upscale!r}')
        if not len(rgb_mean) == num_in_ch == num_out_ch:
            raise ValueError(f'network_g: {arch} needs num_in_ch == num_out_ch == len(rgb_mean), got {num_in_ch}, '
                             f'{num_out_ch} and {len(rgb_mean)}')
        self.upscale = upscale
        self.sub_mean = MeanShift(rgb_mean, -1)
        self.add_mean = MeanShift(rgb_mean, 1)
        self.entry = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.b1 = CascadingBlock(num_feat, mobile, group)
        self.b2 = CascadingBlock(num_feat, mobile, group)
        self.b3 = CascadingBlock(num_feat, mobile, group)
        self.c1 = FusionBlock(num_feat * 2, num_feat)
        self.c2 = FusionBlock(num_feat * 3, num_feat)
        self.c3 = FusionBlock(num_feat * 4, num_feat)
        self.upsample = UpsampleBlock(num_feat, upscale, multi_scale, group)
        self.exit = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x, scale=None):
        x = self.entry(self.sub_mean(x))
        x = cascade(x, [self.b1, self.b2, self.b3], [self.c1, self.c2, self.c3])
        x = self.upsample(x, self.upscale if scale is None else scale)
        return self.add_mean(self.exit(x))


@ARCH_REGISTRY.register()
class CARN(_CARNBase):
    """Cascading Residual Network (Ahn et al., "Fast, Accurate, and Lightweight Super-Resolution with Cascading
    Residual Network", ECCV 2018).

    Entry 3x3 conv, three cascading blocks ``b1..b3`` (each: three residual blocks ``b1..b3`` with 1x1 fusions
    ``c1..c3``), the same cascade at network level (fusions ``c1..c3``), sub-pixel upsampler, exit 3x3 conv.
    Input RGB in [0, 1]; the frozen 1x1 convs ``sub_mean`` / ``add_mean`` subtract / add the DIV2K mean.
    State-dict names are those of the authors' CARN-pytorch checkpoints: ``multi_scale=True`` for the released
    multi-scale ones (heads ``upsample.up2/up3/up4``); single scale has the one head ``upsample.up``.

    Args:
        num_in_ch (int): Channel number of inputs. Default: 3.
        num_out_ch (int): Channel number of outputs. Default: 3.
        num_feat (int): Channel number of intermediate features. Default: 64.
        upscale (int): 2, 3 or 4: the only head built in single scale, the default scale of forward in
            multi-scale. Default: 4.
        multi_scale (bool): Build the three heads; ``forward(x, scale=None)`` picks one (None: ``upscale``).
            Default: False.
        rgb_mean (tuple[float]): Mean of the mean shifters. Default: the DIV2K mean.
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=64, upscale=4, multi_scale=False, rgb_mean=DIV2K_MEAN):
        super().__init__(num_in_ch, num_out_ch, num_feat, upscale, multi_scale, False, 1, rgb_mean, 'CARN')


@ARCH_REGISTRY.register()
class CARN_M(_CARNBase):
    """CARN-M, the mobile CARN (Ahn et al., ECCV 2018).

    As CARN, but each cascading block holds ONE efficient residual block ``b1`` (3x3 group conv, ReLU, 3x3 group
    conv, ReLU, 1x1 conv) applied three times with shared weights, and the upsampler uses group convs. The
    authors' released ``carn_m.pth`` loads strictly into ``CARN_M(multi_scale=True)``.

    Args:
        num_in_ch, num_out_ch, num_feat, upscale, multi_scale, rgb_mean: as CARN.
        group (int): Groups of the 3x3 convs of the residual blocks and of the upsampler. Default: 4.
    """

    def __init__(self,
                 num_in_ch=3,
                 num_out_ch=3,
                 num_feat=64,
                 upscale=4,
                 multi_scale=False,
                 group=4,
                 rgb_mean=DIV2K_MEAN):
        super().__init__(num_in_ch, num_out_ch, num_feat, upscale, multi_scale, True, group, rgb_mean, 'CARN_M')


GhostCARN = ARCH_REGISTRY.register()(ghost_arch(
    CARN, 'GhostCARN', """GhostSR version of CARN (Nie et al., "GhostSR: Learning Ghost Features for Efficient Image
    Super-Resolution"): ``ghostify(CARN(...))``.

    Same arguments, layout and state-dict names as ``CARN``. Ghosted (§4.1): the two 3x3 convs ``bi.bj.body.0``
    and ``bi.bj.body.2`` of all 9 residual blocks (18 layers; the ReLU after ``body.0`` runs inside the ghost op,
    ``body.1`` is an Identity). Kept plain: ``entry`` (first layer), ``exit`` (last layer), every 1x1 conv (the
    fusions ``c1..c3``, the mean shifters) and the upsampler.""", __name__))

GhostCARN_M = ARCH_REGISTRY.register()(ghost_arch(
    CARN_M, 'GhostCARN_M', """GhostSR version of CARN-M (Nie et al., "GhostSR: Learning Ghost Features for Efficient
    Image Super-Resolution"): ``ghostify(CARN_M(...))``.

    Same arguments, layout and state-dict names as ``CARN_M``. Ghosted (§4.1 and §4.2: "the number of
    group-convolution in CARN_M is only six"): the two 3x3 group convs ``bi.b1.body.0`` and ``bi.b1.body.2`` of
    the three shared efficient residual blocks (6 ghost layers, each still applied three times per forward; their
    ReLUs run inside the ghost op, ``body.1`` / ``body.3`` are Identities). Kept plain: ``entry``, ``exit``, every
    1x1 conv (``bi.b1.body.4``, the fusions, the mean shifters) and the upsampler.""", __name__))
