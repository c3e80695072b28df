"""Upscale an image or a folder of images with a network given by a BasicSR option file and a checkpoint.

    ghostsr upscale -i photo.jpg -o results/ -opt options/test_GhostCARN_M_x2.yml --ckpt ghost.pth
    ghostsr upscale -i folder/ -o out/ -opt options/test_GhostCARN_M_x2.yml --ckpt ghost.pth \\
        --tile 128 --tile-pad 10 --ext png

Conventions of Real-ESRGAN's inference command: grey images come back grey, RGBA keeps its alpha (upscaled by the
network, or bicubic with ``--alpha-upsampler bicubic``), 16-bit images come back 16-bit (PNG, TIFF); JPEG, PNG,
WebP, BMP and TIFF are read. ``--ext auto`` keeps each input's format (an image with alpha goes to PNG when the
format has no alpha). Outputs are ``<stem>_<suffix>.<ext>`` (suffix default ``x<scale>``; ``--suffix ''`` for
none), written under a temporary name and renamed when complete. ``--tile N`` runs N x N LR tiles with
``--tile-pad`` pixels of real context each (bounded memory: one tile on the device, the output assembled in its
own 8/16-bit type); ``--half`` runs float16 on a GPU. An image whose header declares more than ``--max-pixels``
pixels (default 16384 x 16384 = 268,435,456; 0 = no limit) is skipped before any pixel is decoded.

Exit code: 0 when every image was written; 1 when some file could not be read or was above the pixel limit (each
is named on stderr, the others are still done), or the disk is full (one line); 2 for bad options, checkpoint or
output folder (one line naming it: missing, a file, not writable).
"""
import argparse
import functools

from ghostsr_plugin.deploy.tiling import ALPHA_UPSAMPLERS, upscale_folder
from ghostsr_plugin.utils.images import MAX_PIXELS, OUTPUT_FORMATS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='ghostsr upscale', description=__doc__.split('\n\n')[0])
    parser.add_argument('-i', '--input', required=True, help='an image file or a folder of images')
    parser.add_argument('-o', '--output', required=True, help='output folder (made if missing)')
    parser.add_argument('-opt', required=True, help='BasicSR option file whose network section builds the network')
    parser.add_argument('--ckpt', default=None, help='checkpoint (default: path.pretrain_network_g of -opt)')
    parser.add_argument('--param_key', default=None, help='params or params_ema (default: path.param_key_g or params)')
    parser.add_argument('--network_key', default='network_g')
    parser.add_argument('--device', default='auto', help='auto (CUDA when there is one), cpu, cuda, cuda:N')
    parser.add_argument('--tile', type=int, default=0, help='tile size in LR pixels; 0 = whole image (default)')
    parser.add_argument('--tile-pad', type=int, default=10, help='LR pixels of context around each tile (default 10)')
    parser.add_argument('--half', action='store_true', help='float16 inference (CUDA only)')
    parser.add_argument('--alpha-upsampler', choices=ALPHA_UPSAMPLERS, default='network',
                        help='how an alpha channel is upscaled (default: network)')
    parser.add_argument('--ext', choices=('auto', *OUTPUT_FORMATS), default='auto',
                        help='output format; auto keeps the input format (default)')
    parser.add_argument('--max-pixels', type=int, default=MAX_PIXELS,
                        help=f'skip images whose header declares more pixels, before decoding them (default '
                        f'{MAX_PIXELS} = 16384x16384; 0 = no limit)')
    parser.add_argument('--suffix', default=None, help='appended to output names as _<suffix> (default x<scale>)')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    _, skipped = upscale_folder(args.input, args.output, args.opt, args.ckpt, args.param_key, args.network_key,
                                args.device, args.tile, args.tile_pad, args.half, args.alpha_upsampler, args.ext,
                                args.suffix, log=functools.partial(print, flush=True), max_pixels=args.max_pixels)
    return 1 if skipped else 0
