"""Y-channel PSNR / SSIM of a network on benchmark sets, as SR papers (GhostSR included) report them.

Same conventions as BasicSR's test pipeline with ``PairedImageDataset``: the HR image is cropped to LR x scale,
output and HR go through ``tensor2img`` (uint8), then ``calculate_psnr`` / ``calculate_ssim`` with
``test_y_channel=True`` and ``crop_border=scale``. The sets are read in the EDSR "benchmark" layout of
``../shared/data/benchmark`` (``<set>/HR/<name>.png``, ``<set>/LR_bicubic/X<s>/<name>x<s>.png``).

    python -m ghostsr_plugin.evaluate --arch CARN_M --arch_args '{"multi_scale": true}' \\
        --ckpt experiments/pretrained/CARN_M_multiscale.pth --set Set5 Set14 --scale 2
    python -m ghostsr_plugin.evaluate -opt options/train_GhostCARN_M_x2.yml --ckpt ghost.pth --set Set5 --scale 2

A network whose ``forward`` takes ``scale`` (the multi-scale CARN / CARN_M) runs the head of ``--scale``.

Every image is checked before the network runs: an unreadable image, a missing LR partner, a stray file or an
LR whose size does not fit its HR at the scale (after the HR is cut to a multiple of the scale) is an error naming
the file (``--skip-mismatched`` leaves mismatched pairs out instead, naming them); grey, RGBA and 16-bit images
are read as 8-bit RGB as BasicSR reads them, said once per set. Errors are one line, exit code 2 (``--debug``:
traceback).
"""
import argparse
import inspect
import json
import os
import sys
import time

import numpy as np
import torch

import ghostsr_plugin  # noqa: F401  (registers the archs; makes basicsr importable)
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img
from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.utils.checkpoint import atomic_write
from ghostsr_plugin.utils.cli import UserInputError, run_command
from ghostsr_plugin.utils.images import check_pairs, conversion_note, is_image_name, read_image
from ghostsr_plugin.utils.network import load_weights, network_options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the project folder
DEFAULT_DATA = os.path.join(ROOT, '..', 'shared', 'data', 'benchmark')


def build_net(args):
    """(network with ``--ckpt`` loaded strictly, in eval mode; its type) from ``-opt`` or ``--arch``."""
    if args.opt:
        net_opt, source = network_options(args.opt, args.network_key), f'{args.opt} {args.network_key}'
    else:
        try:
            net_opt, source = {'type': args.arch, **json.loads(args.arch_args)}, '--arch_args'
        except (json.JSONDecodeError, TypeError) as err:
            raise UserInputError(f'--arch_args {args.arch_args!r} is not a JSON object of arguments ({err})')
    net_type = net_opt.pop('type')
    if net_type not in ARCH_REGISTRY:
        raise UserInputError(f'network type {net_type!r} is not a registered architecture; allowed: '
                             f'{", ".join(sorted(ARCH_REGISTRY._obj_map))}')
    try:
        net = ARCH_REGISTRY.get(net_type)(**net_opt)
    except TypeError as err:
        raise UserInputError(f'{source}: {net_type}: {err}') from err
    load_weights(net, args.ckpt, args.param_key)
    return net.eval(), net_type


def set_pairs(data_root, name, scale):
    """[(image name, HR path, LR path)] of one benchmark set; a missing folder or LR image, or a stray file in HR/
    or in the LR folder, is an error naming it (hidden files are ignored)."""
    set_dir = os.path.join(data_root, name)
    if not os.path.isdir(set_dir):
        sets = sorted(d for d in os.listdir(data_root) if os.path.isdir(os.path.join(data_root, d))) \
            if os.path.isdir(data_root) else []
        raise FileNotFoundError(f'set {name}: {set_dir} does not exist (sets in {data_root}: '
                                f'{", ".join(sets) or "none"})')
    hr_dir = os.path.join(set_dir, 'HR')
    lr_dir = os.path.join(set_dir, 'LR_bicubic', f'X{scale}')
    for folder in (hr_dir, lr_dir):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'{folder} does not exist (set {name}, scale {scale}; layout: <set>/HR/<name>.png, '
                                    f'<set>/LR_bicubic/X{scale}/<name>x{scale}.png)')
    pairs = []
    for file in _visible(hr_dir):
        hr_path = os.path.join(hr_dir, file)
        if not is_image_name(file) or not os.path.isfile(hr_path):
            raise UserInputError(f'{hr_path}: stray file in the HR folder of {name} (not an image); move it out')
        stem = os.path.splitext(file)[0]
        lr_path = os.path.join(lr_dir, f'{stem}x{scale}.png')
        if not os.path.isfile(lr_path):
            raise FileNotFoundError(f'{lr_path}: missing, the LR image of {hr_path}')
        pairs.append((stem, hr_path, lr_path))
    if not pairs:
        raise FileNotFoundError(f'{hr_dir} holds no images (set {name})')
    paired = {os.path.basename(lr_path) for _, _, lr_path in pairs}
    for file in _visible(lr_dir):
        if file not in paired:
            raise UserInputError(f'{os.path.join(lr_dir, file)}: stray file in the LR folder of {name} (no HR image '
                                 f'{file.removesuffix(f"x{scale}.png")}.* in {hr_dir}); move it out')
    return pairs


def _visible(folder):
    return sorted(f for f in os.listdir(folder) if not f.startswith('.'))


def evaluate(net, pairs, scale, device, forward_scale, skip_mismatched=False, label=None, log=print):
    """Mean Y-PSNR and Y-SSIM over the pairs, plus per-image values.

    Every pair is checked first (:func:`ghostsr_plugin.utils.images.check_pairs`): an LR whose size does not fit
    its HR at ``scale`` is an error, or with ``skip_mismatched`` left out and listed under ``'skipped'`` (and
    logged); grey / RGBA / 16-bit images are logged once per set through ``log``. ``label`` names the set in
    messages (default: the folder above the first HR image).
    """
    if label is None and pairs:
        label = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(pairs[0][1]))))
    checked = check_pairs(pairs, scale, label, skip_mismatched)
    note = conversion_note(label, checked.conversions, 2 * len(pairs))
    if note:
        log(note)
    if checked.skipped:
        log(f'{label}: skipped {len(checked.skipped)} of {len(pairs)} pairs whose sizes do not fit: '
            + '; '.join(checked.skipped))
    if not checked.pairs:
        raise UserInputError(f'{label}: no pair left to evaluate (all {len(pairs)} skipped)')
    psnrs, ssims, per_image = [], [], {}
    for stem, hr_path, lr_path in checked.pairs:
        hr = read_image(hr_path)
        lr = read_image(lr_path).astype(np.float32) / 255.
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
    result = {'psnr': float(np.mean(psnrs)), 'ssim': float(np.mean(ssims)), 'images': per_image}
    if checked.skipped:
        result['skipped'] = checked.skipped
    return result


def option_scale(path):
    """The ``scale`` of option file ``path`` (an int), or None when it has none (unreadable files: the error of
    :func:`ghostsr_plugin.utils.options.load_options`, naming the file)."""
    from ghostsr_plugin.utils.options import load_options
    scale = load_options(path).get('scale')
    return scale if isinstance(scale, int) and not isinstance(scale, bool) else None


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m ghostsr_plugin.evaluate', description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', default=None, help='option file whose network section builds the network')
    parser.add_argument('--network_key', default='network_g')
    parser.add_argument('--arch', default=None, help='registered arch (instead of -opt)')
    parser.add_argument('--arch_args', default='{}', help='JSON arguments of --arch')
    parser.add_argument('--ckpt', required=True, help='checkpoint (BasicSR or bare state dict)')
    parser.add_argument('--param_key', default='params')
    parser.add_argument('--set', nargs='+', default=['Set5'], help='benchmark sets (Set5 Set14 B100)')
    parser.add_argument('--scale', type=int, default=None, help="upscale factor (default: the option file's scale)")
    parser.add_argument('--data', default=DEFAULT_DATA, help='benchmark root (default ../shared/data/benchmark)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', default=None, help='write the results here')
    parser.add_argument('--skip-mismatched', action='store_true',
                        help='leave out (and name) LR/HR pairs whose sizes do not fit the scale, instead of stopping')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    if bool(args.opt) == bool(args.arch):
        parser.error('give either -opt or --arch')
    if args.scale is None:
        args.scale = option_scale(args.opt) if args.opt else None
        if args.scale is None:
            parser.error(f'--scale is needed: {args.opt} has no scale' if args.opt else '--scale is needed with --arch')

    sets = {name: set_pairs(args.data, name, args.scale) for name in args.set}  # layout errors before any work
    net, net_type = build_net(args)
    net.to(args.device)
    forward_scale = 'scale' in inspect.signature(net.forward).parameters
    results = {'arch': net_type, 'ckpt': args.ckpt, 'scale': args.scale, 'sets': {}}
    for name, pairs in sets.items():
        start = time.time()
        result = evaluate(net, pairs, args.scale, args.device, forward_scale, skip_mismatched=args.skip_mismatched,
                          label=f'{name} x{args.scale}', log=lambda line: print(f'note: {line}', flush=True))
        results['sets'][name] = result
        skipped = f', {len(result["skipped"])} skipped' if result.get('skipped') else ''
        print(f'{net_type} x{args.scale} {name}: Y-PSNR {result["psnr"]:.4f} dB, Y-SSIM {result["ssim"]:.4f} '
              f'({len(result["images"])} images{skipped}, {time.time() - start:.1f} s)', flush=True)
    if args.json:
        atomic_write(args.json, lambda file: json.dump(results, file, indent=1), mode='w')
    return 0


if __name__ == '__main__':
    sys.exit(run_command('ghostsr_plugin.evaluate', main))
