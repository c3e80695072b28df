"""Y-channel PSNR / SSIM of a network on benchmark sets, as SR papers (GhostSR included) report them.

Same conventions as BasicSR's test pipeline with ``PairedImageDataset``: the HR image is cropped to LR x scale,
output and HR go through ``tensor2img`` (uint8), then ``calculate_psnr`` / ``calculate_ssim`` with
``test_y_channel=True`` and ``crop_border=scale``. The sets are read in the EDSR "benchmark" layout of
``../shared/data/benchmark`` (``<set>/HR/<name>.png``, ``<set>/LR_bicubic/X<s>/<name>x<s>.png``).

A network whose ``forward`` takes ``scale`` (the multi-scale CARN / CARN_M) runs the head of that scale.

Every image is checked before the network runs: an unreadable image, a missing LR partner, a stray file or an
LR whose size does not fit its HR at the scale (after the HR is cut to a multiple of the scale) is an error naming
the file (``--skip-mismatched`` leaves mismatched pairs out instead, naming them); grey, RGBA and 16-bit images
are read as 8-bit RGB as BasicSR reads them, said once per set. Errors are one line, exit code 2 (``--debug``:
traceback).
"""
import inspect
import json
import os
import time

import numpy as np
import torch

from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img
from ghostsr_plugin.archs.build import build_network_spec, load_weights, network_spec
from ghostsr_plugin.data.benchmark import DEFAULT_BENCHMARK, set_pairs
from ghostsr_plugin.utils.atomic import atomic_write
from ghostsr_plugin.utils.errors import UserInputError
from ghostsr_plugin.utils.images import check_pairs, conversion_note, read_image
from ghostsr_plugin.utils.option_file import load_options

__all__ = ['evaluate', 'evaluate_network', 'option_scale', 'fidelity']


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
        hr = read_image(hr_path, bgr8=True)
        lr = read_image(lr_path, bgr8=True).astype(np.float32) / 255.
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


def fidelity(net, reference, inputs, device='cpu'):
    """How close ``net``'s outputs are to ``reference``'s (the original network a compressed one replaces), on
    ``inputs`` ({name: 1 x C x h x w tensor in [0, 1]}): PSNR in RGB and on Y (crop_border 0) of the two outputs
    as images (``tensor2img``, uint8), as BasicSR's validation measures them. Returns ``{'psnr_rgb', 'psnr_y',
    'images': {name: {'psnr_rgb', 'psnr_y'}}}`` with the means over the images."""
    per_image = {}
    for name, lq in inputs.items():
        with torch.no_grad():
            out, ref = (tensor2img(n(lq.to(device)).cpu(), rgb2bgr=True, min_max=(0, 1)) for n in (net, reference))
        per_image[name] = {'psnr_rgb': float(calculate_psnr(out, ref, crop_border=0)),
                           'psnr_y': float(calculate_psnr(out, ref, crop_border=0, test_y_channel=True))}
    return {key: float(np.mean([v[key] for v in per_image.values()])) for key in ('psnr_rgb', 'psnr_y')} | {
        'images': per_image}


def option_scale(path):
    """The ``scale`` of option file ``path`` (an int), or None when it has none (unreadable files: the error of
    :func:`ghostsr_plugin.utils.option_file.load_options`, naming the file)."""
    scale = load_options(path).get('scale')
    return scale if isinstance(scale, int) and not isinstance(scale, bool) else None


def evaluate_network(ckpt, sets=('Set5', ), scale=None, opt=None, network_key='network_g', arch=None, arch_args='{}',
                     param_key='params', data=DEFAULT_BENCHMARK, device='cpu', json_path=None,
                     skip_mismatched=False, log=print):
    """Y-PSNR / Y-SSIM of the network of option file ``opt`` (its ``network_key``) or of the registered ``arch``
    (``arch_args``: JSON), with ``ckpt`` loaded strictly, on the benchmark ``sets`` under ``data`` at ``scale``
    (default: the option file's). Every set's layout is checked before the network runs; one line per set goes to
    ``log``; the results (also per image) are returned and, with ``json_path``, written there atomically."""
    if bool(opt) == bool(arch):
        raise UserInputError('give either -opt or --arch')
    if scale is None:
        scale = option_scale(opt) if opt else None
        if scale is None:
            raise UserInputError(f'--scale is needed: {opt} has no scale' if opt else '--scale is needed with --arch')
    pairs_of = {name: set_pairs(data, name, scale) for name in sets}  # layout errors before any work
    spec, source = network_spec(opt, network_key, arch, arch_args)
    net = build_network_spec(spec, source)
    load_weights(net, ckpt, param_key)
    net.eval().to(device)
    net_type = spec['type']
    forward_scale = 'scale' in inspect.signature(net.forward).parameters
    results = {'arch': net_type, 'ckpt': ckpt, 'scale': scale, 'sets': {}}
    for name, pairs in pairs_of.items():
        start = time.time()
        result = evaluate(net, pairs, scale, device, forward_scale, skip_mismatched=skip_mismatched,
                          label=f'{name} x{scale}', log=lambda line: log(f'note: {line}'))
        results['sets'][name] = result
        skipped = f', {len(result["skipped"])} skipped' if result.get('skipped') else ''
        log(f'{net_type} x{scale} {name}: Y-PSNR {result["psnr"]:.4f} dB, Y-SSIM {result["ssim"]:.4f} '
            f'({len(result["images"])} images{skipped}, {time.time() - start:.1f} s)')
    if json_path:
        atomic_write(json_path, lambda file: json.dump(results, file, indent=1), mode='w')
    return results
