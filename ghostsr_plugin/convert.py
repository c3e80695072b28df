"""Convert the authors' CARN-pytorch checkpoints into BasicSR checkpoints of the plugin's CARN / CARN_M. The library
is :mod:`ghostsr_plugin.compress.convert`.

    python -m ghostsr_plugin.convert --arch CARN_M --in ../shared/data/weights/carn_m.pth \\
        --out experiments/pretrained/CARN_M_multiscale.pth [--scale 2]
"""
import argparse
import sys

from ghostsr_plugin.compress.convert import CARN_ARCHS, convert_carn
from ghostsr_plugin.utils.checkpoint import atomic_torch_save, load_checkpoint
from ghostsr_plugin.utils.cli import UserInputError, run_command


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m ghostsr_plugin.convert',
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
    if args.arch in ('EDSR', 'GhostEDSR'):
        parser.error('BasicSR EDSR checkpoints need no conversion: they load as they are ("params" key) into EDSR, '
                     'and into GhostEDSR through `python -m ghostsr_plugin.cluster` (clustering init)')
    if args.arch not in CARN_ARCHS:
        parser.error(f'--arch must be one of {", ".join(CARN_ARCHS)}, got {args.arch!r}')
    state = load_checkpoint(args.inp, param_key='params')
    try:
        converted, network = convert_carn(state, args.arch, args.scale)
    except ValueError as err:
        raise UserInputError(f'{args.inp}: {err}') from err
    atomic_torch_save({'params': converted}, args.out)
    num_params = sum(v.numel() for k, v in converted.items() if 'mean.shifter' not in k)
    options = ', '.join(f'{k}: {str(v).lower() if isinstance(v, bool) else v}' for k, v in network.items())
    print(f'wrote {args.out}: {args.arch}, {num_params:,} parameters (mean shifters excluded), '
          f'{len(converted)} tensors\nnetwork_g: {{{options}}}')
    return 0


if __name__ == '__main__':
    sys.exit(run_command('ghostsr_plugin.convert', main))
