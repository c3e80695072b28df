"""``ghostsr prepare_data --hr DIR [DIR ...] --name NAME [--scales 2 3 4] [--crop-size N --step N] [--lmdb]``:
BasicSR training data from folders of HR images (:func:`ghostsr_plugin.data.prepare.prepare`)."""
import argparse
from os import path as osp

from ghostsr_plugin.data.bicubic import RESIZE_MODES
from ghostsr_plugin.data.prepare import prepare


def build_parser():
    parser = argparse.ArgumentParser(
        prog='ghostsr prepare_data',
        description='Make BasicSR training data from HR image folders: mod-crop, MATLAB-bicubic LR images per\n'
        'scale, optional sub-images (like BasicSR\'s extract_subimages) and LMDBs, in BasicSR\'s DIV2K layout:\n'
        '  <out>/<name>_<split>_HR[_sub]\n'
        '  <out>/<name>_<split>_LR_bicubic/X<s>[_sub]      (same file names: filename_tmpl \'{}\')\n'
        '  <out>/<name>_<split>_HR[_sub].lmdb\n'
        '  <out>/<name>_<split>_LR_bicubic_X<s>[_sub].lmdb\n'
        'Every folder is written atomically (temporary folder, then rename); complete outputs made from the same\n'
        'images and settings are reused, others are refused unless --overwrite.',
        epilog='Examples:\n'
        '  DIV2K as BasicSR documents it:\n'
        '    ghostsr prepare_data --hr datasets/DIV2K/DIV2K_train_HR --name DIV2K \\\n'
        '        --scales 2 3 4 --crop-size 480 --step 240 --lmdb --workers 4\n'
        '  T91 + BSD200 (the "291" set), whole images, x2:\n'
        '    ghostsr prepare_data --hr ../shared/data/train/T91 ../shared/data/train/BSD200 \\\n'
        '        --name T291 --scales 2',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--hr', nargs='+', required=True, metavar='DIR',
                        help='folder(s) of HR images (PNG, BMP, JPEG, ...; grey images become 3-channel)')
    parser.add_argument('--name', required=True, help='dataset name, prefix of the output folders (e.g. DIV2K)')
    parser.add_argument('--out', default=None, help='output root (default: datasets/<name>)')
    parser.add_argument('--split', default='train', help='middle part of the folder names (default: train)')
    parser.add_argument('--scales', nargs='+', type=int, default=[2, 3, 4],
                        help='down-scaling factors (default: 2 3 4); HR is mod-cropped to their least common '
                        'multiple so one HR folder serves every scale')
    parser.add_argument('--crop-size', type=int, default=None,
                        help='HR sub-image size, e.g. 480 for DIV2K (default: keep whole images); a multiple of '
                        'lcm(scales)')
    parser.add_argument('--step', type=int, default=None,
                        help='distance between sub-images (default: crop-size / 2); a multiple of lcm(scales)')
    parser.add_argument('--thresh-size', type=int, default=0,
                        help='add a sub-image flush with the border when more than this many pixels are left '
                        '(default: 0)')
    parser.add_argument('--lmdb', action='store_true', help='also make LMDBs (BasicSR lmdb_util, with meta_info.txt)')
    parser.add_argument('--workers', type=int, default=1, help='worker processes (default: 1)')
    parser.add_argument('--resize', choices=RESIZE_MODES, default='matlab',
                        help='matlab: bit-exact MATLAB imresize of uint8 images (default; reproduces the standard '
                        'benchmark LR files); basicsr: basicsr.utils.matlab_functions.imresize in float, one rounding')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing outputs made from other images or settings (default: stop with an '
                        'error)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = args.out if args.out is not None else osp.join('datasets', args.name)
    result = prepare(args.hr, out, args.name, args.scales, crop_size=args.crop_size, step=args.step,
                     thresh_size=args.thresh_size, lmdb=args.lmdb, workers=args.workers, split=args.split,
                     resize=args.resize, overwrite=args.overwrite)
    print(f'\n{result.num_images} HR images -> {result.num_files} files per folder')
    print(f'  HR: {result.hr}' + (f'\n      {result.hr_lmdb}' if result.hr_lmdb else ''))
    for scale, folder in result.lr.items():
        print(f'  x{scale}: {folder}' + (f'\n      {result.lr_lmdb[scale]}' if scale in result.lr_lmdb else ''))
    print("Options: dataroot_gt / dataroot_lq as above, filename_tmpl: '{}', io_backend: disk (or lmdb for .lmdb)")
    return 0

