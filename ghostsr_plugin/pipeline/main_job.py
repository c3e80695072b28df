"""The main job: compress the real pre-trained CARN_M into GhostCARN_M with GhostSR, on this machine's CPU.

    ghostsr demo [--data ../shared/data] [--minutes 6] [--scale 2]          (or: bash tools/demo.sh)
    run_main_job(data='../shared/data', minutes=6.0, scale=2)               (from Python; returns the figures)

Steps (every one through the plugin's public pieces, training through BasicSR's own pipeline):

1. check the data folder (layout below) and make the training pairs from T91 + BSD200 with MATLAB-bicubic LR
   (:func:`ghostsr_plugin.data.prepare.prepare`, cached under ``datasets/``);
2. convert the authors' multi-scale CARN_M checkpoint to the plugin's single-scale CARN_M
   (:func:`ghostsr_plugin.compress.conversion.convert_carn`);
3. train GhostCARN_M with ``ghostsr train``: GhostSRModel's ``ghost_init`` clusters the CARN_M
   filters into intrinsic + ghost features (§3.2, Alg. 1 lines 1-3), then a fine-tune with learnable shifts
   (Gumbel-softmax, Eq. 3-6) sized to ``--minutes`` of this machine's measured speed; BasicSR validates on Set5;
4. print a Y-PSNR/SSIM table on Set5 and Set14 (crop_border = scale, as the paper): bicubic, CARN_M, GhostCARN_M
   right after clustering, GhostCARN_M after the fine-tune; also written to ``<work>/results.json``.

The fine-tune is the recipe of ``tools/ghost_init_experiment.py`` (Adam lr 5e-4 with cosine decay, the ground truth
plus the CARN_M's own output as targets, offsets starting at "no move") with the paper's Gumbel schedule, and the
offsets fixed at their argmax W' for the last quarter, as in the fine-tune recipe (``options/finetune_GhostCARN_M_x2.yml``):
late flips between near-tied offsets, which the weights have no steps left to follow, are what that freeze prevents.
The start stays "no move": at this budget the paper's unbiased start costs PSNR (docs/results/finetune.md).

Data layout expected under ``--data`` (``../shared/data`` in this project)::

    train/T91/*.bmp, train/BSD200/*.png                 HR training images
    benchmark/Set5/HR/*.png, benchmark/Set5/LR_bicubic/X2/*x2.png (and Set14)
    weights/carn_m.pth                                  the authors' pre-trained CARN_M (CARN-pytorch release)
"""
import os
import subprocess
import sys
import time

import numpy as np
import torch
import yaml

import ghostsr_plugin  # noqa: F401  (registers archs/models; makes basicsr importable)
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils.matlab_functions import imresize
from ghostsr_plugin.compress.clustering import cluster_init
from ghostsr_plugin.compress.conversion import convert_carn
from ghostsr_plugin.data.benchmark import DEFAULT_DATA, set_pairs
from ghostsr_plugin.measure.quality import evaluate
from ghostsr_plugin.pipeline.budget import iterations_for, seconds_per_step, timing_seconds
from ghostsr_plugin.data.prepare import prepare
from ghostsr_plugin.utils.checkpoint import load_checkpoint
from ghostsr_plugin.utils.atomic import atomic_torch_save, atomic_write, atomic_write_json
from ghostsr_plugin.utils.errors import RunFailedError
from ghostsr_plugin.utils.images import inspect_image, read_image

NEEDED = ('train/T91', 'train/BSD200', 'benchmark/Set5/HR', 'benchmark/Set14/HR', 'weights/carn_m.pth')
BATCH, LR_PATCH = 16, 48  # §4.1
FREEZE_OFFSETS_AT = 0.75  # fraction of total_iter, as options/finetune_GhostCARN_M_x2.yml


def check_data(data):
    missing = [p for p in NEEDED if not os.path.exists(os.path.join(data, p))]
    if missing:
        raise FileNotFoundError(f'the data folder {data} lacks {", ".join(missing)}; point --data at a folder with '
                                'the layout `ghostsr demo --help` shows')


def ghost_network(scale):
    return {'type': 'GhostCARN_M', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'upscale': scale}


def time_per_iteration(scale, teacher, dataset_opt, **timing):
    """Seconds of one training step of GhostCARN_M x``scale`` on the real training set, with the teacher
    (:func:`ghostsr_plugin.pipeline.budget.seconds_per_step`, which ``timing`` goes to)."""
    return seconds_per_step(build_network(ghost_network(scale)), teacher, {**dataset_opt, 'scale': scale}, **timing)


def large_enough(train_data, scale, meta_path, patch=LR_PATCH, log=print):
    """BasicSR meta-info file listing the training images whose LR side fits a ``patch`` x ``patch`` patch (48 by
    default; T91 has smaller ones)."""
    names = sorted(n for n in os.listdir(train_data.lr[scale]) if not n.startswith('.'))
    kept = [n for n in names if min(inspect_image(os.path.join(train_data.lr[scale], n))[:2]) >= patch]
    atomic_write(meta_path, lambda file: file.writelines(f'{n}\n' for n in kept), mode='w')
    log(f'   {len(kept)} of {len(names)} training images fit {patch}x{patch} LR patches at x{scale}')
    return meta_path


def train_dataset_options(scale, train_data, meta_path):
    """BasicSR options of the fine-tune's training set (T91 + BSD200 pairs, 48x48 LR patches)."""
    return {**train_data.dataset_opt(scale, lmdb=False), 'name': 'T91_BSD200', 'type': 'PairedImageDataset',
            'meta_info_file': meta_path, 'gt_size': LR_PATCH * scale, 'use_hflip': True, 'use_rot': True,
            'num_worker_per_gpu': 1, 'batch_size_per_gpu': BATCH, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None}


def train_options(name, scale, train_data, data, pretrained, total_iter, meta_path):
    benchmark = os.path.join(data, 'benchmark', 'Set5')
    return {
        'name': name,
        'model_type': 'GhostSRModel',
        'scale': scale,
        'num_gpu': 'auto',
        'manual_seed': 0,
        'datasets': {
            'train': train_dataset_options(scale, train_data, meta_path),
            'val': {'name': 'Set5', 'type': 'PairedImageDataset', 'dataroot_gt': os.path.join(benchmark, 'HR'),
                    'dataroot_lq': os.path.join(benchmark, 'LR_bicubic', f'X{scale}'),
                    'filename_tmpl': f'{{}}x{scale}', 'io_backend': {'type': 'disk'}},
        },
        'network_g': ghost_network(scale),
        'ghost_init': {'pretrain_path': pretrained, 'param_key': 'params', 'seed': 0, 'init_offset': 'centre',
                       'offset_margin': 3.0},
        'ghost': {'iters_per_epoch': None, 'log_offsets': True, 'freeze_offsets_at': FREEZE_OFFSETS_AT},
        'distill': {'loss_weight': 1.0},  # the CARN_M as teacher too (docs/results/ghost-init.md)
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0,
            'optim_g': {'type': 'Adam', 'lr': 5e-4, 'betas': [0.9, 0.999], 'eps': 1e-8},
            'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [total_iter], 'restart_weights': [1],
                          'eta_min': 1e-7},
            'total_iter': total_iter,
            'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
        },
        'val': {'val_freq': total_iter, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': True},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': scale, 'test_y_channel': True}}},
        'logger': {'print_freq': max(total_iter // 10, 1), 'save_checkpoint_freq': max(total_iter // 2, 1),
                   'use_tb_logger': True, 'wandb': {'project': None}},
        'dist_params': {'backend': 'nccl', 'port': 29500},
    }


def bicubic_scores(data, sets, scale):
    """Bicubic up-scaling of the LR files (BasicSR's MATLAB-style imresize), the usual lower bound of SR tables."""
    scores = {}
    for name in sets:
        psnrs, ssims = [], []
        for _, hr_path, lr_path in set_pairs(os.path.join(data, 'benchmark'), name, scale):
            lr = read_image(lr_path, bgr8=True)
            hr = read_image(hr_path, bgr8=True)[:lr.shape[0] * scale, :lr.shape[1] * scale]
            sr = np.clip(np.round(imresize(lr.astype(np.float64) / 255., scale) * 255.), 0, 255).astype(np.uint8)
            psnrs.append(calculate_psnr(sr, hr, crop_border=scale, test_y_channel=True))
            ssims.append(calculate_ssim(sr, hr, crop_border=scale, test_y_channel=True))
        scores[name] = {'psnr': float(np.mean(psnrs)), 'ssim': float(np.mean(ssims))}
    return scores


_NOTED = set()  # the notes net_scores printed in this run


def net_scores(net, data, sets, scale, log=print):
    """Y-PSNR/SSIM of ``net`` on each set; a set's note (e.g. Set14's grey images) is printed once per run, not
    once per network."""
    def note_once(line):
        if line not in _NOTED:
            _NOTED.add(line)
            log(f'note: {line}')

    net.eval()
    return {name: evaluate(net, set_pairs(os.path.join(data, 'benchmark'), name, scale), scale, 'cpu', False,
                           log=note_once)
            for name in sets}


def format_table(rows, sets):
    header = '| model | params | ' + ' | '.join(f'{s} PSNR / SSIM' for s in sets) + ' |'
    lines = [header, '|' + '---|' * (2 + len(sets))]
    for label, params, scores in rows:
        cells = ' | '.join(f'{scores[s]["psnr"]:.2f} / {scores[s]["ssim"]:.4f}' for s in sets)
        lines.append(f'| {label} | {params} | {cells} |')
    return '\n'.join(lines)


def run_main_job(data=DEFAULT_DATA, minutes=6.0, iters=None, scale=2, name=None, sets=('Set5', 'Set14'), log=print):
    """The main job (steps in the module docstring): returns its measured figures (the table's rows, iterations,
    minutes) as written to ``experiments/<name>/results.json``; ``log`` gets the progress lines and the table."""
    data = os.path.abspath(data)
    name = name or f'GhostCARN_M_x{scale}_demo'
    sets = tuple(sets)
    check_data(data)
    start = time.time()

    log('== 1/4 training pairs from T91 + BSD200 (MATLAB bicubic LR, cached) ==')
    train_data = prepare([os.path.join(data, 'train', 'T91'), os.path.join(data, 'train', 'BSD200')],
                         os.path.join('datasets', 'T91_BSD200'), 'T91_BSD200', scales=(scale, ),
                         workers=max(os.cpu_count() or 1, 1))

    log('== 2/4 the authors\' CARN_M -> plugin CARN_M (single scale) ==')
    plain_state, plain_opt = convert_carn(load_checkpoint(os.path.join(data, 'weights', 'carn_m.pth'), None),
                                          'CARN_M', scale=scale)
    pretrained = os.path.join('experiments', 'pretrained', f'CARN_M_x{scale}.pth')
    atomic_torch_save({'params': plain_state}, pretrained)
    plain = build_network(plain_opt)
    plain.load_state_dict(plain_state)
    clustered = build_network(ghost_network(scale))
    cluster_init(clustered, plain_state, seed=0, init_offset='centre', progress=False)  # as ghost_init below

    meta_path = large_enough(train_data, scale, os.path.join('experiments', f'{name}_meta.txt'), log=log)
    if iters is None:
        seconds = time_per_iteration(scale, plain.eval(), train_dataset_options(scale, train_data, meta_path),
                                     min_seconds=timing_seconds(minutes))
        total_iter = iterations_for(minutes, seconds, high=5000)
        log(f'   one training step (with its data loading) takes {seconds:.2f} s here: {total_iter} iterations fit '
              f'{minutes} min')
    else:
        total_iter = iters

    log(f'== 3/4 cluster + fine-tune GhostCARN_M x{scale} ({total_iter} iterations) with BasicSR ==')
    work = os.path.join('experiments', name)
    os.makedirs('experiments', exist_ok=True)
    opt_path = os.path.join('experiments', f'{name}.yml')
    options = train_options(name, scale, train_data, data, pretrained, total_iter, meta_path)
    atomic_write(opt_path, lambda file: yaml.safe_dump(options, file, sort_keys=False), mode='w')
    proc = subprocess.run([sys.executable, '-m', 'ghostsr_plugin', 'train', '-opt', opt_path])  # BasicSR archives an
    # earlier run of the same name (<name>_archived_<time>) rather than overwrite it
    if proc.returncode != 0:
        raise RunFailedError(f'training failed (exit {proc.returncode}); its log is under {work}')
    finetuned = build_network(ghost_network(scale))
    finetuned.load_state_dict(load_checkpoint(os.path.join(work, 'models', 'net_g_latest.pth')))

    log('== 4/4 Y-PSNR / SSIM (crop_border = scale) ==')

    def params(net):
        return f'{sum(p.numel() for p in net.parameters() if p.requires_grad) / 1e3:.0f}K'

    rows = [('bicubic', '-', bicubic_scores(data, sets, scale)),
            ('CARN_M (pre-trained)', params(plain), net_scores(plain, data, sets, scale, log)),
            ('GhostCARN_M, clustered, no training', params(clustered), net_scores(clustered, data, sets, scale, log)),
            (f'GhostCARN_M, + {total_iter} it. fine-tune', params(finetuned),
             net_scores(finetuned, data, sets, scale, log))]
    table = format_table(rows, sets)
    log(table)
    summary = {'scale': scale, 'iterations': total_iter, 'minutes': round((time.time() - start) / 60, 1),
               'rows': [{'model': r[0], 'params': r[1], **{s: {k: r[2][s][k] for k in ('psnr', 'ssim')}
                                                          for s in sets}} for r in rows], 'table': table}
    atomic_write_json(summary, os.path.join(work, 'results.json'))
    log(f'results: {work}/results.json; log and checkpoints: {work}; total {summary["minutes"]} min')
    return summary
