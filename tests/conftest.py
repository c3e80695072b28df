"""Shared fixtures: a tiny generated paired dataset (disk and LMDB), option files for short training runs, and a
simulated full disk for the atomic writer."""
import errno
import os
import random
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

import ghostsr_plugin  # noqa: F401  (registration; makes basicsr importable)
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.matlab_functions import imresize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(ROOT, '..', 'shared', 'data')
SCALE = 2


def _smooth_image(rng, size):
    """A textured but smooth RGB image, so that SR networks have something to learn."""
    y, x = np.mgrid[0:size, 0:size] / size
    channels = [np.sin(2 * np.pi * (rng.uniform(1, 4) * x + rng.uniform(1, 4) * y) + rng.uniform(0, 6)) for _ in range(3)]
    return ((np.stack(channels, -1) * 0.4 + 0.5) * 255).astype(np.uint8)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state (torch, numpy, random), so a failure reproduces."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """Six 32x32 HR images with MATLAB-bicubic x2 LR, as folders and as LMDBs. Returns a dict of paths."""
    root = tmp_path_factory.mktemp('tiny_data')
    rng = np.random.default_rng(0)
    paths = {k: root / k for k in ('hr', 'lr')}
    for p in paths.values():
        p.mkdir()
    for i in range(6):
        hr = _smooth_image(rng, 32)
        lr = imresize(hr.astype(np.float64) / 255., 1 / SCALE)
        cv2.imwrite(str(paths['hr'] / f'img{i}.png'), hr)
        cv2.imwrite(str(paths['lr'] / f'img{i}.png'), np.clip(np.round(lr * 255), 0, 255).astype(np.uint8))
    for key in ('hr', 'lr'):
        names = sorted(os.listdir(paths[key]))
        make_lmdb_from_imgs(str(paths[key]), str(root / f'{key}.lmdb'), names, [n[:-4] for n in names])
    return {'hr': str(paths['hr']), 'lr': str(paths['lr']), 'hr_lmdb': str(root / 'hr.lmdb'),
            'lr_lmdb': str(root / 'lr.lmdb')}


def train_options(name, network, data, backend='disk', total_iter=4, model_type='GhostSRModel', **extra):
    """A complete BasicSR training option dict for a few CPU iterations on ``tiny_data``."""
    gt, lq = (data['hr'], data['lr']) if backend == 'disk' else (data['hr_lmdb'], data['lr_lmdb'])
    opt = {
        'name': name, 'model_type': model_type, 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
                      'filename_tmpl': '{}', 'io_backend': {'type': backend}, 'gt_size': 16, 'use_hflip': True,
                      'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2,
                      'dataset_enlarge_ratio': 1, 'prefetch_mode': None},
            'val': {'name': 'tiny_val', 'type': 'PairedImageDataset', 'dataroot_gt': data['hr'],
                    'dataroot_lq': data['lr'], 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}},
        },
        'network_g': network,
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.999]},
                  'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [total_iter], 'restart_weights': [1],
                                'eta_min': 1e-7},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': total_iter, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': True},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': SCALE, 'test_y_channel': True}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False, 'wandb': {'project': None}},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }
    for key, value in extra.items():
        opt[key] = value
    return opt


def write_options(opt, folder):
    path = os.path.join(str(folder), f'{opt["name"]}.yml')
    with open(path, 'w') as file:
        yaml.safe_dump(opt, file, sort_keys=False)
    return path


def run(args, cwd, env=None, timeout=300):
    """Run a command, return CompletedProcess; on failure the assertion shows its output."""
    full_env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', **(env or {}))
    proc = subprocess.run(args, cwd=str(cwd), env=full_env, capture_output=True, text=True, timeout=timeout)
    return proc


def python():
    return sys.executable


class _FullDiskFile:
    """A file whose writes fail with ENOSPC once ``room`` bytes are written (what a full disk does to a write)."""

    def __init__(self, file, room):
        self.file, self.room = file, room

    def write(self, data):
        if len(data) > self.room:
            self.file.write(bytes(data)[:self.room] if isinstance(data, (bytes, bytearray, memoryview)) else
                            data[:self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, 'No space left on device')
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


@pytest.fixture()
def full_disk(monkeypatch, tmp_path):
    """Files that the atomic writer opens (``os.fdopen`` in ghostsr_plugin.utils.atomic) under ``tmp_path`` take 100
    bytes, then fail with ENOSPC; other files are untouched. Returns the list of the paths that failed."""
    from ghostsr_plugin.utils import atomic
    real_fdopen, failed = atomic.os.fdopen, []

    def fdopen(fd, *args, **kwargs):
        file = real_fdopen(fd, *args, **kwargs)
        path = os.readlink(f'/proc/self/fd/{fd}')
        if not path.startswith(str(tmp_path)):
            return file
        failed.append(path)
        return _FullDiskFile(file, 100)

    monkeypatch.setattr(atomic.os, 'fdopen', fdopen)
    return failed
