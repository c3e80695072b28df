"""``ghostsr evaluate``: Y-channel PSNR / SSIM of a network on benchmark sets, as SR papers (GhostSR included) report
them (:func:`ghostsr_plugin.measure.quality.evaluate_network`).

    ghostsr evaluate --arch CARN_M --arch_args '{"multi_scale": true}' \\
        --ckpt experiments/pretrained/CARN_M_multiscale.pth --set Set5 Set14 --scale 2
    ghostsr evaluate -opt options/train_GhostCARN_M_x2.yml --ckpt ghost.pth --set Set5 --scale 2
"""
import argparse
import functools

import torch

from ghostsr_plugin.data.benchmark import DEFAULT_BENCHMARK
from ghostsr_plugin.measure.quality import evaluate_network


def main(argv=None):
    parser = argparse.ArgumentParser(prog='ghostsr evaluate', description=__doc__.split('\n\n')[0].split(': ', 1)[1])
    parser.add_argument('-opt', default=None, help='option file whose network section builds the network')
    parser.add_argument('--network_key', default='network_g')
    parser.add_argument('--arch', default=None, help='registered arch (instead of -opt)')
    parser.add_argument('--arch_args', default='{}', help='JSON arguments of --arch')
    parser.add_argument('--ckpt', required=True, help='checkpoint (BasicSR or bare state dict)')
    parser.add_argument('--param_key', default='params')
    parser.add_argument('--set', nargs='+', default=['Set5'], help='benchmark sets (Set5 Set14 B100)')
    parser.add_argument('--scale', type=int, default=None, help="upscale factor (default: the option file's scale)")
    parser.add_argument('--data', default=DEFAULT_BENCHMARK,
                        help='benchmark root, or the data folder holding it as benchmark/ (../shared/data/benchmark)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', default=None, help='write the results here')
    parser.add_argument('--skip-mismatched', action='store_true',
                        help='leave out (and name) LR/HR pairs whose sizes do not fit the scale, instead of stopping')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    evaluate_network(args.ckpt, args.set, args.scale, args.opt, args.network_key, args.arch, args.arch_args,
                     args.param_key, args.data, args.device, args.json, args.skip_mismatched,
                     log=functools.partial(print, flush=True))
    return 0
