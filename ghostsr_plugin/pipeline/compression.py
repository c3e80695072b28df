"""Compress the SR network you have on the images you have: any checkpoint in, a faster Ghost network that keeps
its output out, with no ground truth (the library behind ``ghostsr compress``).

    ghostsr compress --model realesr-animevideov3.pth --images photos/ --out compressed/ --minutes 60
    compress('compressed/', images=['photos/'], model='realesr-animevideov3.pth', minutes=60)

Steps, each writing into ``out`` (atomically; a kill leaves the previous state, ``--auto_resume`` goes on):

1. the plain network (a checkpoint spandrel identifies, an option file's network or a registered arch with
   ``pretrained``) is written as ``original.pth`` / ``original.yml``: the teacher and the reference of every figure;
2. the images: ``--val`` folders, or a share of ``--images`` set aside (``val_images.txt``), are held out for the
   fidelity; the rest (``train_images.txt``) are the training set, :class:`~ghostsr_plugin.data.lr_folder_dataset.
   LRFolderDataset` patches (``inputs: as-is`` feeds them to the network as they are, ``downscale`` first makes
   them LR with MATLAB bicubic);
3. the start: the network ghostified (§3.1, §4.1) and initialised from its own weights, with ``start='calibrate'``
   fitted to the original's layer outputs on crops of the training images
   (:func:`ghostsr_plugin.compress.calibration.calibrated_ghost`; per-layer λ whose convolutions, timed on this
   machine, take no longer than at uniform λ; ``'calibrate_flops'``: at the FLOPs of uniform λ), with ``start='cluster'`` by §3.2's
   k-means of the weights (:func:`ghostsr_plugin.compress.clustering.cluster_init`); ``start.pth``;
4. the fine-tune through BasicSR's own training loop (``ghostsr train -opt train.yml``, in a subprocess; with
   ``nproc`` > 1 under ``torch.distributed.run``): GhostSRModel, the original as the ``distill:`` teacher and the
   only target (L1), Adam with cosine decay, learnable shifts with the paper's Gumbel schedule, offsets frozen for
   the last quarter; validated on the held-out images by fidelity (PSNR of the Ghost output against the
   original's, RGB and Y), the best kept. ``minutes`` are turned into iterations from a measured training step;
5. ``ghost.pth`` (``{'params': ...}``) and ``ghost.yml`` (BasicSR options: ``network_g`` builds it; ``datasets``
   the held-out images, so ``ghostsr test -opt ghost.yml`` upscales them; ``evaluate``, ``upscale``, ``export``
   and a GhostSRModel fine-tune load it); ``report.md/.json/.png``: params, FLOPs, CPU latency of original and
   Ghost timed interleaved, fidelity of the start and of the fine-tuned network, with ``bench`` Y-PSNR/SSIM of both
   on benchmark sets; ``crops.png``: original, Ghost and their difference (x8) on held-out images; with ``export``
   the ONNX file, checked against PyTorch.
"""
import copy
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
import yaml

import ghostsr_plugin  # noqa: F401  (registers archs, models and datasets; makes basicsr importable)
from basicsr.archs import build_network
from basicsr.utils import tensor2img
from ghostsr_plugin.data.benchmark import DEFAULT_DATA
from ghostsr_plugin.data.lr_folder_dataset import INPUT_MODES, LRFolderDataset, check_input_scales, list_folder_images
from ghostsr_plugin.pipeline.budget import iterations_for, seconds_per_step, timing_seconds
from ghostsr_plugin.ops.ghost_conv import SHIFT_MODES
from ghostsr_plugin.pipeline.lock import FolderLock
from ghostsr_plugin.utils.atomic import atomic_torch_save, atomic_write, atomic_write_json, make_folder, write_bytes
from ghostsr_plugin.utils.checkpoint import load_checkpoint
from ghostsr_plugin.utils.errors import RunFailedError, UserInputError

__all__ = ['STARTS', 'BASELINES', 'compress', 'split_images', 'calibration_inputs', 'crops_figure']

STARTS = ('calibrate', 'calibrate_flops', 'cluster')  # calibrate: per-layer λ under measured conv time
BASELINES = ('prune',)  # instead of the Ghost network: Torch-Pruning's structured channel pruning
MANIFEST = 'compress.json'
RUN_NAME = 'finetune'  # BasicSR's experiment under <out>/experiments/
FREEZE_OFFSETS_AT = 0.75  # as the main job and options/finetune_GhostCARN_M_x2.yml
MAX_HELD_OUT = 8


def _check_arguments(images, minutes, iters, inputs, start, val_share, lq_size, batch_size, nproc, model, opt,
                     arch, baseline, prune_ratio, shift_mode='learnable', input_scales=(1, )):
    if sum(x is not None for x in (model, opt, arch)) != 1:
        raise UserInputError('give the network as one of --model (a checkpoint), -opt (an option file) or --arch')
    if not images:
        raise UserInputError('--images: required, one or more folders of images')
    if minutes is not None and iters is not None:
        raise UserInputError('--minutes and --iters: give one (the budget in minutes or in iterations)')
    if minutes is not None and not (isinstance(minutes, (int, float)) and minutes > 0):
        raise UserInputError(f'--minutes {minutes}: allowed a number > 0')
    if iters is not None and not (isinstance(iters, int) and iters >= 1):
        raise UserInputError(f'--iters {iters}: allowed an integer >= 1')
    if inputs not in INPUT_MODES:
        raise UserInputError(f'--inputs {inputs!r}: allowed {", ".join(INPUT_MODES)}')
    if start not in STARTS:
        raise UserInputError(f'--start {start!r}: allowed {", ".join(STARTS)}')
    if shift_mode not in SHIFT_MODES:
        raise UserInputError(f'--shift_mode {shift_mode!r}: allowed {", ".join(SHIFT_MODES)}')
    if baseline is not None and baseline not in BASELINES:
        raise UserInputError(f'--baseline {baseline!r}: allowed {", ".join(BASELINES)}')
    if prune_ratio is not None and (baseline != 'prune' or not 0 < prune_ratio < 1):
        raise UserInputError(f'--prune_ratio {prune_ratio}: allowed a fraction in (0, 1), with --baseline prune')
    if not 0 < val_share < 1:
        raise UserInputError(f'--val_share {val_share}: allowed a fraction in (0, 1)')
    for option, value in (('--lq_size', lq_size), ('--batch_size', batch_size), ('--nproc', nproc)):
        if not (isinstance(value, int) and value >= 1):
            raise UserInputError(f'{option} {value}: allowed an integer >= 1')
    try:  # the dataset's own rule, named as the command's option
        check_input_scales(list(input_scales or []))
    except UserInputError:
        raise UserInputError(f'--input_scales {" ".join(map(str, input_scales or []))}: allowed resize factors in '
                             '(0, 1], e.g. 1 0.5') from None


def split_images(images, val=None, val_share=0.1):
    """(training image paths, held-out image paths): ``val``'s images held out, or every k-th image of ``images``
    (``val_share`` of them, 1 to 8); refused when that would leave no training image."""
    paths = list_folder_images(images, '--images')
    if val:
        held_out = list_folder_images(val, '--val')
        overlap = set(map(os.path.abspath, paths)) & set(map(os.path.abspath, held_out))
        if overlap:
            raise UserInputError(f'--val: {sorted(overlap)[0]} is also in --images; allowed: held-out images only')
        return paths, held_out
    if len(paths) < 2:
        raise UserInputError(f'--images: {len(paths)} image; allowed: at least 2 (one is held out to measure '
                             'fidelity), or give held-out images with --val')
    count = min(max(1, round(val_share * len(paths))), MAX_HELD_OUT)
    step = len(paths) / count
    held = {int(i * step + step / 2) for i in range(count)}
    return [p for i, p in enumerate(paths) if i not in held], [p for i, p in enumerate(paths) if i in held]


def _network_scale(net, channels, size):
    with torch.no_grad():
        out = net.eval()(torch.rand(1, channels, size, size))
    scale, rest = divmod(out.shape[-1], size)
    if rest or out.shape[-2] != scale * size:
        raise UserInputError(f'the network maps {size}x{size} to {tuple(out.shape[-2:])}: not an integer upscale')
    return scale


def _in_channels(net):
    return next(m.in_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def _dataset_options(list_file, phase, scale, inputs, lq_size, batch_size, val_crop=None, input_scales=(1, )):
    opt = {'name': 'held_out' if phase == 'val' else 'images', 'type': 'LRFolderDataset', 'phase': phase,
           'scale': scale, 'image_list': list_file, 'inputs': inputs, 'io_backend': {'type': 'disk'}}
    if phase == 'train':
        opt.update(lq_size=lq_size, use_hflip=True, use_rot=True, batch_size_per_gpu=batch_size, num_worker_per_gpu=1,
                   dataset_enlarge_ratio=1, prefetch_mode=None)
        if list(input_scales) != [1]:
            opt['input_scales'] = [float(s) for s in input_scales]
    elif val_crop:
        opt['val_crop'] = val_crop
    return opt


def calibration_inputs(dataset_opt, count=16, seed=0):
    """``count`` LR training patches (1 x C x h x w) of the training set, drawn with a fixed seed."""
    import random
    state = random.getstate()
    random.seed(seed)
    try:
        dataset = LRFolderDataset(dict(dataset_opt, phase='train'))
        return [dataset[i % len(dataset)]['lq'].unsqueeze(0) for i in range(count)]
    finally:
        random.setstate(state)


def _held_out_inputs(dataset_opt):
    dataset = LRFolderDataset(dataset_opt)
    return {os.path.basename(item['lq_path']): item['lq'].unsqueeze(0) for item in (dataset[i] for i in
                                                                                     range(len(dataset)))}


def _start(plain, plain_opts, ghost_opts, start, calib, seed, progress, log, baseline=None, prune_ratio=None):
    """The started Ghost network (with ``baseline='prune'``: the pruned plain network) and its (possibly updated)
    options, and the start's report."""
    if baseline == 'prune':
        return _pruned_start(plain, plain_opts, ghost_opts, calib[0], prune_ratio, log)
    if start in ('calibrate', 'calibrate_flops'):
        from ghostsr_plugin.compress.calibration import calibrated_ghost
        cost = 'time' if start == 'calibrate' else 'flops'
        ghost, ghost_opts, report = calibrated_ghost(plain, ghost_opts, calib, cost=cost, progress=progress, log=log)
        return ghost, ghost_opts, {'method': start, **report}
    from ghostsr_plugin.compress.clustering import cluster_init, report_summary
    from ghostsr_plugin.compress.reparam import merged_state_dict
    ghost = build_network(copy.deepcopy(ghost_opts))
    report = cluster_init(ghost, merged_state_dict(plain), seed=seed, init_offset='centre', offset_margin=3.0,
                          progress=progress)
    log(report_summary(report))
    return ghost, ghost_opts, {'method': 'cluster', 'layers': report}


def _pruned_start(plain, plain_opts, ghost_opts, example, prune_ratio, log):
    """The baseline's start: the plain network with every hidden conv's channels cut by ``prune_ratio`` (DepGraph,
    magnitude), or when None by the ratio that leaves at most the Ghost network's share of the parameters."""
    from ghostsr_plugin.compress.pruning import param_count, prune, ratio_for_params
    target = param_count(build_network(copy.deepcopy(ghost_opts))) / param_count(plain)
    if prune_ratio is None:
        prune_ratio = ratio_for_params(plain, target, example)
    pruned, keep = prune(plain, prune_ratio, example)
    share = param_count(pruned) / param_count(plain)
    log(f'start (prune): {prune_ratio:.3f} of every hidden conv\'s channels removed by magnitude; {share:.3f}x the '
        f'params (the Ghost network: {target:.3f}x)')
    return pruned, {'type': 'Pruned', 'network': plain_opts, 'keep': keep}, {
        'method': 'prune', 'ratio': prune_ratio, 'params_share': share, 'ghost_params_share': target}


def _train_options(out, scale, ghost_opts, plain_opts, train_set, val_set, total_iter, lr, device, nproc, seed):
    val_freq = max(total_iter // 4, 1)
    metric = {'type': 'calculate_psnr', 'crop_border': 0}
    return {
        'name': RUN_NAME, 'model_type': 'GhostSRModel', 'scale': scale,
        'num_gpu': 0 if device == 'cpu' else 'auto', 'manual_seed': seed,
        'datasets': {'train': train_set, 'val': val_set},
        'network_g': ghost_opts,
        'path': {'pretrain_network_g': os.path.join(out, 'start.pth'), 'strict_load_g': True, 'resume_state': None},
        'distill': {'teacher_path': os.path.join(out, 'original.pth'), 'network': plain_opts, 'loss_weight': 1.0},
        'ghost': {'iters_per_epoch': None, 'freeze_offsets_at': FREEZE_OFFSETS_AT},
        'train': {
            'ema_decay': 0,
            'optim_g': {'type': 'Adam', 'lr': lr, 'betas': [0.9, 0.999], 'eps': 1e-8},
            'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [total_iter], 'restart_weights': [1],
                          'eta_min': 1e-7},
            'total_iter': total_iter, 'warmup_iter': -1,
        },
        'val': {'val_freq': val_freq, 'save_img': False, 'save_best': 'fidelity_rgb',
                'metrics': {'fidelity_rgb': dict(metric, test_y_channel=False),
                            'fidelity_y': dict(metric, test_y_channel=True)}},
        'logger': {'print_freq': max(total_iter // 20, 1), 'save_checkpoint_freq': max(total_iter // 10, 1),
                   'use_tb_logger': False, 'wandb': {'project': None}},
        'dist_params': {'backend': 'gloo' if device == 'cpu' else 'nccl', 'port': 29500 + os.getpid() % 1000},
    }


def _run_training(out, nproc):
    """BasicSR's training loop on ``train.yml`` in a subprocess (under ``torch.distributed.run`` for ``nproc`` > 1),
    resuming from the newest state when there is one; outputs under ``out``."""
    command = [sys.executable, '-m', 'ghostsr_plugin', 'train', '-opt', os.path.join(out, 'train.yml'),
               '--auto_resume']
    if nproc > 1:
        command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}',
                   '-m', 'ghostsr_plugin', *command[3:], '--launcher', 'pytorch']
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', str(torch.get_num_threads())))
    proc = subprocess.run(command, cwd=out, env=env)
    if proc.returncode != 0:
        raise RunFailedError(f'the fine-tune failed (exit {proc.returncode}); its log is under '
                             f'{os.path.join(out, "experiments", RUN_NAME)}; `--auto_resume` goes on from its last state')


def crops_figure(original, ghost, inputs, path, size=48, amplify=8):
    """``path`` (PNG): for each input, the centre ``size`` x ``size`` LR crop's output by the original network, by
    the Ghost network, and their absolute difference x ``amplify``, side by side."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = list(inputs.items())
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for (name, lq), row in zip(rows, axes):
        top, left = max(lq.shape[-2] - size, 0) // 2, max(lq.shape[-1] - size, 0) // 2
        crop = lq[..., top:top + size, left:left + size]
        with torch.no_grad():
            outs = [tensor2img(n(crop).cpu(), rgb2bgr=False, min_max=(0, 1)) for n in (original, ghost)]
        diff = np.clip(np.abs(outs[0].astype(np.int16) - outs[1].astype(np.int16)) * amplify, 0, 255).astype(np.uint8)
        for ax, img, title in zip(row, (*outs, diff), ('original', 'Ghost', f'|difference| x{amplify}')):
            ax.imshow(img if img.ndim == 3 else img, cmap=None if img.ndim == 3 else 'gray')
            ax.set_title(f'{name}: {title}', fontsize=8)
            ax.axis('off')
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=110)
    plt.close(fig)
    write_bytes(path, buffer.getvalue())


def _report(out, scale, bench, data, fidelity_start, fidelity_end, start_report, train_info, log, label='Ghost'):
    """``report.md/.json/.png`` (the comparison of :mod:`ghostsr_plugin.measure.comparison` plus fidelity)."""
    from ghostsr_plugin.measure.comparison import load_entries, markdown, measure, plot
    entries = load_entries([f'{out}/original.yml:{out}/original.pth', f'{out}/ghost.yml:{out}/ghost.pth'],
                           labels=['original', label])
    entries[1].twin = 'original'  # timed side by side with the original, ratios to it (a Pruned net is no twin)
    settings = measure(entries, tuple(bench), os.path.join(data, 'benchmark'), (1, 3, 128, 128), (1, 3, 128, 128),
                       repeats=10, warmup=2)
    lines = ['# compress report', '', markdown(entries, settings), '',
             '## Fidelity to the original network (held-out images, PSNR of the two outputs)', '',
             '| network | RGB PSNR (dB) | Y PSNR (dB) |', '|---|---|---|',
             f'| {label}, start ({start_report["method"]}) | {fidelity_start["psnr_rgb"]:.2f} | '
             f'{fidelity_start["psnr_y"]:.2f} |',
             f'| {label}, after {train_info["total_iter"]} iterations | {fidelity_end["psnr_rgb"]:.2f} | '
             f'{fidelity_end["psnr_y"]:.2f} |', '',
             f'Held-out images: {", ".join(fidelity_end["images"])}. Fine-tune: {train_info["total_iter"]} '
             f'iterations ({train_info["minutes"]:.1f} min); the best checkpoint by RGB fidelity is kept.']
    text = '\n'.join(lines) + '\n'
    write_bytes(os.path.join(out, 'report.md'), text.encode())
    from dataclasses import asdict
    atomic_write_json({'settings': settings, 'networks': [asdict(e) for e in entries],
                       'fidelity': {'start': fidelity_start, 'final': fidelity_end}, 'start': start_report,
                       'training': train_info}, os.path.join(out, 'report.json'))
    plot(entries, settings, os.path.join(out, 'report.png'))
    log(text)


def _arguments_record(**arguments):
    return {k: (os.path.abspath(v) if k in ('model', 'opt', 'pretrained') and v else
                [os.path.abspath(p) for p in v] if k in ('images', 'val') and v else v)
            for k, v in arguments.items()}


def _check_out(out, record, auto_resume):
    """Refuse an output folder holding something else, or another run without ``auto_resume`` (naming the first
    argument that differs); returns the manifest of a run to go on with, or None."""
    if not os.path.exists(out):
        return None
    if not os.path.isdir(out):
        raise UserInputError(f'--out {out} is a file; allowed: a new folder or one of an earlier compress run')
    manifest_path = os.path.join(out, MANIFEST)
    if not os.path.isfile(manifest_path):
        if os.listdir(out):
            raise UserInputError(f'--out {out} is not empty and holds no compress run ({MANIFEST}); allowed: a new or '
                                 'empty folder')
        return None
    with open(manifest_path, encoding='utf-8') as file:
        manifest = json.load(file)
    if not auto_resume:
        raise UserInputError(f'--out {out} holds a compress run already; add --auto_resume to go on with it, or choose '
                             'another --out')
    differing = [k for k in record if manifest['arguments'].get(k) != record[k]]
    if differing:
        k = differing[0]
        raise UserInputError(f'--auto_resume: {out} holds a run with {k}={manifest["arguments"].get(k)!r}, not '
                             f'{record[k]!r}; allowed: the same arguments, or another --out')
    return manifest


def compress(out, images, model=None, opt=None, arch=None, arch_args='{}', pretrained=None, param_key='params',
             network_key='network_g', minutes=None, iters=None, inputs='as-is', val=None, val_share=0.1, bench=(),
             data=DEFAULT_DATA, ghost_ratio=0.5, start='calibrate', device='cpu', export=False, auto_resume=False,
             lq_size=48, batch_size=16, lr=5e-4, nproc=1, seed=0, progress=True, log=print, baseline=None,
             prune_ratio=None, shift_mode='learnable', input_scales=(1, )):
    """Compress the network (``model`` | ``opt`` | ``arch`` + ``pretrained``) on the images of ``images`` into
    ``out`` (the steps and files in the module docstring). ``minutes`` (default 15 when ``iters`` is not given)
    or ``iters`` is the fine-tune's budget. ``shift_mode`` is the ghost layers' (§3.1 learned offsets, 'copy' or
    'fixed'). ``input_scales`` (factors in (0, 1]) also serve every training image resized by them (LRFolderDataset's
    option of that name). ``baseline='prune'`` starts from the plain network with its channels
    pruned (:mod:`ghostsr_plugin.compress.pruning`; by ``prune_ratio``, default the ratio that matches the Ghost
    network's params) instead of the Ghost network, with the same fine-tune, files and report. Returns the report
    (as ``report.json``)."""
    from ghostsr_plugin.compress.from_checkpoint import plain_network
    from ghostsr_plugin.measure.quality import fidelity
    images = [images] if isinstance(images, str) else list(images or [])
    val = [val] if isinstance(val, str) else list(val or [])
    if minutes is None and iters is None:
        minutes = 15
    _check_arguments(images, minutes, iters, inputs, start, val_share, lq_size, batch_size, nproc, model, opt, arch,
                     baseline, prune_ratio, shift_mode, input_scales)
    out = os.path.abspath(out)
    data = os.path.abspath(data)
    record = _arguments_record(images=images, model=model, opt=opt, arch=arch, arch_args=arch_args,
                               pretrained=pretrained, param_key=param_key, network_key=network_key, minutes=minutes,
                               iters=iters, inputs=inputs, val=val, val_share=val_share, ghost_ratio=ghost_ratio,
                               start=start, lq_size=lq_size, batch_size=batch_size, lr=lr, seed=seed,
                               baseline=baseline, prune_ratio=prune_ratio, shift_mode=shift_mode,
                               input_scales=[float(s) for s in input_scales])
    manifest = _check_out(out, record, auto_resume)
    train_paths, held_paths = split_images(images, val, val_share)
    if bench:
        from ghostsr_plugin.data.benchmark import set_pairs
        for name in bench:
            set_pairs(os.path.join(data, 'benchmark'), name, 2)  # names a missing set before anything runs
    plain, plain_opts, trace_size, source = plain_network(model, opt, arch, arch_args, network_key, pretrained,
                                                          param_key)
    if str(plain_opts.get('type', '')).startswith('Ghost'):
        raise UserInputError(f'the network is {plain_opts["type"]}, a Ghost network already; allowed: a plain network')
    plain.eval()  # its weights stay trainable: the start fits and prunes copies of the trainable layers
    scale = _network_scale(plain, _in_channels(plain), trace_size)
    train_set = _dataset_options(os.path.join(out, 'train_images.txt'), 'train', scale, inputs, lq_size,
                                 batch_size, input_scales=input_scales)
    val_set = _dataset_options(os.path.join(out, 'val_images.txt'), 'val', scale, inputs, lq_size,
                               batch_size, val_crop=128)

    # the images checked before anything is written: readable, large enough for a patch (names the others)
    LRFolderDataset(dict(train_set, image_list=train_paths))
    held_out = _held_out_inputs(dict(val_set, image_list=held_paths))
    log(f'{source} x{scale}: {len(train_paths)} training images, {len(held_out)} held out ({", ".join(held_out)}); '
        f'inputs {inputs}')

    with FolderLock(out, 'ghostsr compress'):
        make_folder(out, '--out')
        if manifest is None:
            manifest = {'arguments': record, 'source': source, 'scale': scale, 'stage': 'started'}
            atomic_write_json(manifest, os.path.join(out, MANIFEST))
        for name, paths in (('train_images.txt', train_paths), ('val_images.txt', held_paths)):
            atomic_write(os.path.join(out, name), lambda f, paths=paths: f.writelines(
                f'{os.path.abspath(p)}\n' for p in paths), mode='w')

        original_pth, ghost_opts = os.path.join(out, 'original.pth'), manifest.get('network_g')
        if ghost_opts is None:  # steps 1 and 3 (the start), once
            atomic_torch_save({'params': plain.state_dict()}, original_pth)
            _write_options(os.path.join(out, 'original.yml'), 'original', scale, plain_opts, original_pth, val_set)
            ghost_opts = {'type': 'Ghost', 'network': plain_opts, 'ghost_ratio': ghost_ratio}
            if shift_mode != 'learnable':
                ghost_opts['shift_mode'] = shift_mode
            if trace_size != 16:
                ghost_opts['trace_size'] = trace_size
            calib = calibration_inputs(train_set, seed=seed)
            ghost, ghost_opts, start_report = _start(plain, plain_opts, ghost_opts, start, calib, seed, progress, log,
                                                     baseline, prune_ratio)
            atomic_torch_save({'params': ghost.state_dict()}, os.path.join(out, 'start.pth'))
            ghost.eval()
            fidelity_start = fidelity(ghost, plain, held_out)
            log(f'start ({start_report["method"]}): fidelity to the original on the held-out images '
                f'{fidelity_start["psnr_rgb"]:.2f} dB RGB, {fidelity_start["psnr_y"]:.2f} dB Y')
            manifest.update(network_g=ghost_opts, start=start_report, fidelity_start=fidelity_start, stage='started')
            atomic_write_json(manifest, os.path.join(out, MANIFEST))
        if 'total_iter' not in manifest:  # the budget, once (a resumed run keeps it)
            total_iter = iters
            if total_iter is None:
                ghost = build_network(copy.deepcopy(ghost_opts))
                ghost.load_state_dict(load_checkpoint(os.path.join(out, 'start.pth')))
                seconds = seconds_per_step(ghost, plain, train_set, min_seconds=timing_seconds(minutes))
                total_iter = iterations_for(minutes, seconds)
                log(f'one training step (with its data loading) takes {seconds:.2f} s here: {total_iter} iterations '
                    f'fit {minutes} min')
            train_opts = _train_options(out, scale, ghost_opts, plain_opts, train_set, val_set, total_iter, lr, device,
                                        nproc, seed)
            atomic_write(os.path.join(out, 'train.yml'), lambda f: yaml.safe_dump(train_opts, f, sort_keys=False),
                         mode='w')
            manifest.update(total_iter=total_iter, stage='training')
            atomic_write_json(manifest, os.path.join(out, MANIFEST))

        began = time.time()
        if manifest['stage'] == 'training':
            _run_training(out, nproc)
            manifest.update(stage='trained', train_minutes=(time.time() - began) / 60)
            atomic_write_json(manifest, os.path.join(out, MANIFEST))

        models = os.path.join(out, 'experiments', RUN_NAME, 'models')
        best = os.path.join(models, 'net_g_best.pth')
        ghost = build_network(copy.deepcopy(ghost_opts))
        ghost.load_state_dict(load_checkpoint(best if os.path.isfile(best) else
                                              os.path.join(models, 'net_g_latest.pth')))
        ghost.eval()
        atomic_torch_save({'params': ghost.state_dict()}, os.path.join(out, 'ghost.pth'))
        _write_options(os.path.join(out, 'ghost.yml'), 'ghost', scale, ghost_opts, os.path.join(out, 'ghost.pth'),
                       val_set)
        fidelity_end = fidelity(ghost, plain, held_out)
        crops_figure(plain, ghost, dict(list(held_out.items())[:3]), os.path.join(out, 'crops.png'))
        train_info = {'total_iter': manifest['total_iter'], 'minutes': manifest.get('train_minutes', 0.0),
                      'checkpoint': 'best' if os.path.isfile(best) else 'latest'}
        _report(out, scale, bench, data, manifest['fidelity_start'], fidelity_end, manifest['start'], train_info, log,
                label='Pruned' if baseline else 'Ghost')
        if export:
            from ghostsr_plugin.deploy.exporters import export_network
            export_network(os.path.join(out, 'ghost.yml'), os.path.join(out, 'ghost.pth'), os.path.join(out, 'ghost'),
                           fmt='onnx', log=log)
        manifest.update(stage='done', fidelity_final=fidelity_end)
        atomic_write_json(manifest, os.path.join(out, MANIFEST))
        log(f'wrote {out}: ghost.pth, ghost.yml, report.md/.json/.png, crops.png' + (', ghost.onnx' if export else ''))
    with open(os.path.join(out, 'report.json'), encoding='utf-8') as file:
        return json.load(file)


def _write_options(path, name, scale, network_opts, checkpoint, val_set):
    """A BasicSR option file of one network: ``network_g`` and its checkpoint, and the held-out images as a test
    set (``ghostsr test -opt`` upscales them; ``evaluate``, ``upscale``, ``export`` read ``network_g``)."""
    test_set = {k: v for k, v in val_set.items() if k != 'phase'}
    options = {'name': f'compress_{name}', 'model_type': 'SRModel', 'scale': scale, 'num_gpu': 'auto',
               'manual_seed': 0, 'datasets': {'test_1': test_set}, 'network_g': network_opts,
               'path': {'pretrain_network_g': checkpoint, 'param_key_g': 'params', 'strict_load_g': True},
               'val': {'save_img': True, 'suffix': name}}
    atomic_write(path, lambda f: yaml.safe_dump(options, f, sort_keys=False), mode='w')
