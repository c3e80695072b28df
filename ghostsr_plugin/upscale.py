"""Upscale an image or a folder of images with a network given by a BasicSR option file and a checkpoint.

    python -m ghostsr_plugin.upscale -i photo.jpg -o results/ -opt options/test_GhostCARN_M_x2.yml --ckpt ghost.pth
    python -m ghostsr_plugin.upscale -i folder/ -o out/ -opt options/test_GhostCARN_M_x2.yml --ckpt ghost.pth \\
        --tile 128 --tile-pad 10 --ext png

Conventions of Real-ESRGAN's inference command: grey images come back grey, RGBA keeps its alpha (upscaled by the
network, or bicubic with ``--alpha-upsampler bicubic``), 16-bit images come back 16-bit (PNG, TIFF); JPEG, PNG,
WebP, BMP and TIFF are read. ``--ext auto`` keeps each input's format (an image with alpha goes to PNG when the
format has no alpha). Outputs are ``<stem>_<suffix>.<ext>`` (suffix default ``x<scale>``; ``--suffix ''`` for
none), written under a temporary name and renamed when complete. ``--tile N`` runs N x N LR tiles with
``--tile-pad`` pixels of real context each (bounded memory); ``--half`` runs float16 on a GPU.

Exit code: 0 when every image was written; 1 when some file could not be read (each is named on stderr, the
others are still done); 2 for bad options, checkpoint or output folder (one line naming it).
"""
import argparse
import sys

from ghostsr_plugin.utils.cli import run_command


def parse_args(argv=None):
    from ghostsr_plugin.deploy.images import OUTPUT_FORMATS
    from ghostsr_plugin.deploy.tiling import ALPHA_UPSAMPLERS
    parser = argparse.ArgumentParser(prog='python -m ghostsr_plugin.upscale', description=__doc__.split('\n\n')[0])
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
    parser.add_argument('--suffix', default=None, help='appended to output names as _<suffix> (default x<scale>)')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from ghostsr_plugin.deploy.images import list_inputs
    from ghostsr_plugin.deploy.tiling import Upscaler, check_tiling, upscale_files
    check_tiling(args.tile, args.tile_pad)  # before the network is built
    files = list_inputs(args.input)
    upscaler = Upscaler.from_options(args.opt, args.ckpt, args.param_key, args.network_key, device=args.device,
                                     tile=args.tile, tile_pad=args.tile_pad, half=args.half,
                                     alpha_upsampler=args.alpha_upsampler, progress=True)
    suffix = f'x{upscaler.scale}' if args.suffix is None else args.suffix
    print(f'upscale: {len(files)} file(s), x{upscaler.scale} on {upscaler.device}'
          f'{", float16" if args.half else ""}{f", tiles {args.tile} + pad {args.tile_pad}" if args.tile else ""}',
          flush=True)
    written, notes, skipped = upscale_files(upscaler, files, args.output, args.ext, suffix)
    for note in notes:
        print(f'upscale: note: {note}', file=sys.stderr)
    for path, reason in skipped:
        print(f'upscale: skipped: {reason}' if path in reason else f'upscale: skipped {path}: {reason}',
              file=sys.stderr)
    print(f'upscale: {len(written)} written to {args.output}, {len(skipped)} skipped', flush=True)
    return 1 if skipped else 0


if __name__ == '__main__':
    sys.exit(run_command('ghostsr_plugin.upscale', main))
