"""Y-channel PSNR / SSIM of a network on benchmark sets, as SR papers (GhostSR included) report them.

Same conventions as BasicSR's test pipeline with ``PairedImageDataset``: the HR image is cropped to LR x scale,
output and HR go through ``tensor2img`` (uint8), then ``calculate_psnr`` / ``calculate_ssim`` with
``test_y_channel=True`` and ``crop_border=scale``. The sets are read in the EDSR "benchmark" layout of
``../shared/data/benchmark`` (``<set>/HR/<name>.png``, ``<set>/LR_bicubic/X<s>/<name>x<s>.png``).

    python -m ghostsr_plugin.evaluate --arch CARN_M --arch_args '{"multi_scale": true}' \\
        --ckpt experiments/pretrained/CARN_M_multiscale.pth --set Set5 Set14 --scale 2
    python -m ghostsr_plugin.evaluate -opt options/train_GhostCARN_M_x2.yml --ckpt ghost.pth --set Set5 --scale 2

A network whose ``forward`` takes ``scale`` (the multi-scale CARN / CARN_M) runs the head of ``--scale``.
"""
import argparse
import inspect
import json
import os
import sys
import time

import cv2
import numpy as np
import torch

import ghostsr_plugin  # noqa: F401  (registers the archs; makes basicsr importable)
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img
from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.utils.checkpoint import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the project folder
DEFAULT_DATA = os.path.join(ROOT, '..', 'shared', 'data', 'benchmark')


def build_net(args):
    if args.opt:
        from ghostsr_plugin.utils.options import load_options
        net_opt = dict(load_options(args.opt)[args.network_key])
    else:
        net_opt = {'type': args.arch, **json.loads(args.arch_args)}
    net_type = net_opt.pop('type')
    net = ARCH_REGISTRY.get(net_type)(**net_opt)
    state = load_checkpoint(args.ckpt, args.param_key)
    net.load_state_dict(state, strict=True)
    return net.eval(), net_type


def set_pairs(data_root, name, scale):
    """[(image name, HR path, LR path)] of one benchmark set."""
    hr_dir = os.path.join(data_root, name, 'HR')
    lr_dir = os.path.join(data_root, name, 'LR_bicubic', f'X{scale}')
    if not os.path.isdir(lr_dir):
        raise FileNotFoundError(f'{lr_dir} does not exist (set {name}, scale {scale})')
    pairs = []
    for file in sorted(os.listdir(hr_dir)):
        stem = os.path.splitext(file)[0]
        pairs.append((stem, os.path.join(hr_dir, file), os.path.join(lr_dir, f'{stem}x{scale}.png')))
    return pairs


def evaluate(net, pairs, scale, device, forward_scale):
    """Mean Y-PSNR and Y-SSIM over the pairs, plus per-image values."""
    psnrs, ssims, per_image = [], [], {}
    for stem, hr_path, lr_path in pairs:
        hr = cv2.imread(hr_path, cv2.IMREAD_COLOR)
        lr = cv2.imread(lr_path, cv2.IMREAD_COLOR).astype(np.float32) / 255.
        hr = hr[:lr.shape[0] * scale, :lr.shape[1] * scale]
        lq = img2tensor(lr, bgr2rgb=True, float32=True).unsqueeze(0).to(device)
        with torch.no_grad():
            out = net(lq, scale=scale) if forward_scale else net(lq)
        sr = tensor2img(out.cpu(), rgb2bgr=True, min_max=(0, 1))
        psnr = calculate_psnr(sr, hr, crop_border=scale, test_y_channel=True)
        ssim = calculate_ssim(sr, hr, crop_border=scale, test_y_channel=True)
        psnrs.append(psnr)
        ssims.append(ssim)
        per_image[stem] = {'psnr': psnr, 'ssim': ssim}
    return {'psnr': float(np.mean(psnrs)), 'ssim': float(np.mean(ssims)), 'images': per_image}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', default=None, help='option file whose network section builds the network')
    parser.add_argument('--network_key', default='network_g')
    parser.add_argument('--arch', default=None, help='registered arch (instead of -opt)')
    parser.add_argument('--arch_args', default='{}', help='JSON arguments of --arch')
    parser.add_argument('--ckpt', required=True, help='checkpoint (BasicSR or bare state dict)')
    parser.add_argument('--param_key', default='params')
    parser.add_argument('--set', nargs='+', default=['Set5'], help='benchmark sets (Set5 Set14 B100)')
    parser.add_argument('--scale', type=int, required=True)
    parser.add_argument('--data', default=DEFAULT_DATA, help='benchmark root (default ../shared/data/benchmark)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', default=None, help='write the results here')
    args = parser.parse_args(argv)
    if bool(args.opt) == bool(args.arch):
        parser.error('give either -opt or --arch')

    net, net_type = build_net(args)
    net.to(args.device)
    forward_scale = 'scale' in inspect.signature(net.forward).parameters
    results = {'arch': net_type, 'ckpt': args.ckpt, 'scale': args.scale, 'sets': {}}
    for name in args.set:
        start = time.time()
        result = evaluate(net, set_pairs(args.data, name, args.scale), args.scale, args.device, forward_scale)
        results['sets'][name] = result
        print(f'{net_type} x{args.scale} {name}: Y-PSNR {result["psnr"]:.4f} dB, Y-SSIM {result["ssim"]:.4f} '
              f'({len(result["images"])} images, {time.time() - start:.1f} s)', flush=True)
    if args.json:
        with open(args.json, 'w') as file:
            json.dump(results, file, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
