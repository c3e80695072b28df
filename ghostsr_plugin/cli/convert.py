"""Convert the authors' CARN-pytorch checkpoints into BasicSR checkpoints of the plugin's CARN / CARN_M. The library
is :mod:`ghostsr_plugin.compress.conversion`.

    ghostsr convert --arch CARN_M --in ../shared/data/weights/carn_m.pth \\
        --out experiments/pretrained/CARN_M_multiscale.pth [--scale 2]
"""
import argparse

from ghostsr_plugin.compress.conversion import convert_carn_file


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='ghostsr convert',
        description="Convert the authors' CARN-pytorch checkpoints (CARN, CARN_M; multi-scale) into BasicSR "
        "checkpoints ({'params': state_dict}) of the plugin's CARN / CARN_M. BasicSR's own EDSR checkpoints need "
        'no conversion.')
    parser.add_argument('--arch', required=True, help='CARN or CARN_M')
    parser.add_argument('--in', dest='inp', required=True, help="the authors' checkpoint (a bare state dict)")
    parser.add_argument('--out', required=True, help='the BasicSR checkpoint to write')
    parser.add_argument('--scale', type=int, default=None,
                        help='keep only the head of this scale (2, 3 or 4): a single-scale network (multi_scale: '
                        'false, upscale: SCALE); default: keep the checkpoint as it is')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    convert_carn_file(args.arch, args.inp, args.out, args.scale)
    return 0
