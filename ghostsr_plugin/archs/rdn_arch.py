import torch
from torch import nn as nn

from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.compress.ghostifier import ghost_arch

RDN_SCALES = (2, 3, 4)


class DenseLayer(nn.Module):
    """One layer of a residual dense block: 3x3 conv + ReLU, output appended to its input (growth ``num_grow_ch``)."""

    def __init__(self, in_ch, num_grow_ch):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_ch, num_grow_ch, 3, 1, 1), nn.ReLU(inplace=True))

    def forward(self, x):
        return torch.cat((x, self.conv(x)), 1)


class ResidualDenseBlock(nn.Module):
    """RDB: ``num_layer`` densely connected layers, local feature fusion (1x1 conv) and local residual."""

    def __init__(self, num_feat, num_grow_ch, num_layer):
        super().__init__()
        self.convs = nn.Sequential(*[DenseLayer(num_feat + c * num_grow_ch, num_grow_ch) for c in range(num_layer)])
        self.LFF = nn.Conv2d(num_feat + num_layer * num_grow_ch, num_feat, 1)

    def forward(self, x):
        return self.LFF(self.convs(x)) + x


def check_upscale(upscale, arch):
    if upscale not in RDN_SCALES:
        raise ValueError(f'network_g: {arch} supports upscale 2, 3 or 4, got upscale={upscale!r}')


class _RDNBase(nn.Module):
    """RDN layout."""

    def __init__(self, num_in_ch, num_out_ch, num_feat, num_block, num_layer, num_grow_ch, upscale, img_range,
                 rgb_mean, arch):
        super().__init__()
        check_upscale(upscale, arch)
        self.img_range = img_range
        self.register_buffer('mean', torch.tensor(rgb_mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

        # shallow feature extraction: F_-1 (kept for the global residual) and F_0
        self.SFENet1 = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.SFENet2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.RDBs = nn.ModuleList([ResidualDenseBlock(num_feat, num_grow_ch, num_layer) for _ in range(num_block)])
        # global feature fusion: 1x1 over all RDB outputs, then 3x3
        self.GFF = nn.Sequential(
            nn.Conv2d(num_block * num_feat, num_feat, 1), nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        # sub-pixel upsampler (ESPCN), never ghosted
        if upscale == 4:
            up = [
                nn.Conv2d(num_feat, num_grow_ch * 4, 3, 1, 1),
                nn.PixelShuffle(2),
                nn.Conv2d(num_grow_ch, num_grow_ch * 4, 3, 1, 1),
                nn.PixelShuffle(2)
            ]
        else:
            up = [nn.Conv2d(num_feat, num_grow_ch * upscale**2, 3, 1, 1), nn.PixelShuffle(upscale)]
        self.UPNet = nn.Sequential(*up, nn.Conv2d(num_grow_ch, num_out_ch, 3, 1, 1))

    def forward(self, x):
        x = (x - self.mean) * self.img_range
        shallow = self.SFENet1(x)
        x = self.SFENet2(shallow)
        block_outs = []
        for block in self.RDBs:
            x = block(x)
            block_outs.append(x)
        x = self.GFF(torch.cat(block_outs, 1)) + shallow
        x = self.UPNet(x)
        return x / self.img_range + self.mean


@ARCH_REGISTRY.register()
class RDN(_RDNBase):
    """Residual Dense Network (Zhang et al., "Residual Dense Network for Image Super-Resolution", CVPR 2018).

    Shallow features (two 3x3 convs), ``num_block`` residual dense blocks (``num_layer`` dense 3x3 conv+ReLU layers
    of growth ``num_grow_ch``, 1x1 local feature fusion, local residual), global feature fusion (1x1 over the
    concatenated block outputs, then 3x3), global residual to the first conv's output, sub-pixel upsampler.
    The paper's setting (D=16, C=8, G=G0=64) is the default: 22.12M parameters at x2.
    State-dict names follow the widely used EDSR-PyTorch RDN (``SFENet1``, ``RDBs.i.convs.c.conv.0``,
    ``RDBs.i.LFF``, ``GFF``, ``UPNet``); checkpoints of that layout trained without mean subtraction load with
    ``rgb_mean=(0, 0, 0)``.

    Args:
        num_in_ch (int): Channel number of inputs. Default: 3.
        num_out_ch (int): Channel number of outputs. Default: 3.
        num_feat (int): G0, channel number of the features between blocks. Default: 64.
        num_block (int): D, number of residual dense blocks. Default: 16.
        num_layer (int): C, number of conv layers per block. Default: 8.
        num_grow_ch (int): G, growth rate (output channels of each dense layer; width of the upsampler). Default: 64.
        upscale (int): 2, 3 or 4. Default: 4.
        img_range (float): Image range. Default: 255.
        rgb_mean (tuple[float]): Image mean in RGB orders. Default: the DIV2K mean.
    """

    def __init__(self,
                 num_in_ch=3,
                 num_out_ch=3,
                 num_feat=64,
                 num_block=16,
                 num_layer=8,
                 num_grow_ch=64,
                 upscale=4,
                 img_range=255.,
                 rgb_mean=(0.4488, 0.4371, 0.4040)):
        super().__init__(num_in_ch, num_out_ch, num_feat, num_block, num_layer, num_grow_ch, upscale, img_range,
                         rgb_mean, 'RDN')


GhostRDN = ARCH_REGISTRY.register()(ghost_arch(
    RDN, 'GhostRDN', """GhostSR version of RDN (Nie et al., "GhostSR: Learning Ghost Features for Efficient Image
    Super-Resolution"): ``ghostify(RDN(...))``.

    Same arguments, layout and state-dict names as ``RDN``. Ghosted (§4.1: all but the first and last layers and
    the point-wise convs): every dense 3x3 conv ``RDBs.i.convs.c.conv.0`` (its ReLU runs inside the ghost op,
    ``conv.1`` is an Identity), ``SFENet2`` and ``GFF.1`` (num_block * num_layer + 2 layers). Kept plain:
    ``SFENet1`` (first layer), the 1x1 fusions ``RDBs.i.LFF`` and ``GFF.0``, and the upsampler ``UPNet`` (with the
    last layer).""", __name__))
