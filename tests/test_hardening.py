"""Issue 10 (hardening), at the entry points, on tiny inputs.

Proves, item by item:
1. a checkpoint or training state whose unpickling would run code (``os.system('touch <marker>')``) is refused at
   every load path (:data:`LOAD_PATHS`): the marker is never created, the error is one line naming the file, never
   advising ``weights_only=False``, and the file system is left as it was;
2. a bad option fails before BasicSR makes or renames (``_archived_``) any folder: the tree is unchanged, the error
   is one line with exit code 2, BasicSR's option dump is not printed (:data:`BAD_OPTIONS` for ``train`` against
   an existing experiment, :data:`BAD_TEST_OPTIONS` for ``test`` against an existing results folder; issue 18
   added every option BasicSR reads only after making the folder: data files, iterations, batch, ``gt_size``,
   optimizer / scheduler / loss / metric types, frequencies, ``num_gpu``, ``crop_border``, ``val: suffix``);
3. an LR that does not fit its HR at the scale stops ``test`` with the image, both sizes and the scale, in a set of
   any size (501 pairs: headers only) and in LMDB sets (their ``meta_info.txt``);
5. after a killed save, the next ``--auto_resume`` removes the plugin's temporary files (only those), skips the
   damaged newest state with a warning naming it and resumes from the newest complete one;
8. grey / RGBA / 16-bit test images are named once per set.
Items 4 (evaluate's errors), 5 (full disk), 6 (error delivery) and 7 (file modes) are also covered beside their
modules: tests/test_quality.py, test_checkpoint.py, test_resume.py, test_errors.py.

Adding a load path (a new command that reads a checkpoint): one entry in :data:`LOAD_PATHS`, a function of the
:class:`Plant` context returning ``(module, argv)``; ``c.evil`` is the hostile file, ``c.train_opt(...)`` /
``c.test_opt(...)`` write option files, ``c.bench`` is a benchmark root, ``c.image`` an image file, e.g.
``'upscale --ckpt': lambda c: ('upscale', ['-opt', c.test_opt(), '--ckpt', c.evil, '-i', c.image,
'-o', c.tmp / 'out'])``. The command runs in this process as ``ghostsr <command>`` runs it (``ghostsr_plugin.cli.run``, in ``c.tmp``).
"""
import glob
import os
import shutil
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import SCALE, python, run, train_options, write_options
from hardening_helpers import Hostile
from ghostsr_plugin import cli

GPUS = torch.cuda.device_count()
NET = {'type': 'GhostEDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': SCALE}
PLAIN = dict(NET, type='EDSR')


DELETE = object()  # set_option: remove the key


def set_option(opt, dotted, value):
    """Set (or, with :data:`DELETE`, remove) ``opt['a']['b']`` for ``dotted`` ``'a.b'``."""
    *parents, leaf = dotted.split('.')
    for part in parents:
        opt = opt[part]
    if value is DELETE:
        opt.pop(leaf, None)
    else:
        opt[leaf] = value


def tree(root):
    """{relative path: size} of everything under ``root`` (folders with size -1)."""
    result = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            result[os.path.relpath(os.path.join(folder, name), root)] = -1
        for name in files:
            path = os.path.join(folder, name)
            result[os.path.relpath(path, root)] = os.path.getsize(path)
    return result


class Plant:
    """The context of one load path: a temporary folder with a hostile file, tiny data and option-file writers."""

    def __init__(self, tmp, data):
        self.tmp, self.data = tmp, data
        self.marker = tmp / 'MARKER'
        self.evil = str(tmp / 'evil.pth')
        torch.save({'params': {'x': Hostile(self.marker)}}, self.evil)
        self.expected = self.evil  # the file the error must name: the hostile file, or the last one planted
        self.bench = tmp / 'bench'
        for sub in ('HR', f'LR_bicubic/X{SCALE}'):
            (self.bench / 'Tiny' / sub).mkdir(parents=True)
        for name in sorted(os.listdir(data['hr']))[:2]:
            stem = name[:-4]
            shutil.copy(os.path.join(data['hr'], name), self.bench / 'Tiny' / 'HR' / name)
            shutil.copy(os.path.join(data['lr'], name), self.bench / 'Tiny' / f'LR_bicubic/X{SCALE}/{stem}x{SCALE}.png')
        self.image = str(self.bench / 'Tiny' / 'HR' / sorted(os.listdir(data['hr']))[0])

    def train_opt(self, name='exp', **changes):
        """A training option file (tiny GhostEDSR); ``changes``: top-level blocks, ``path`` entries merged, dotted
        keys (``'train.total_iter'``) set inside (:data:`DELETE` removes the key)."""
        opt = train_options(name, dict(NET), self.data, total_iter=2)
        for key, value in changes.items():
            if '.' in key:
                set_option(opt, key, value)
            else:
                opt[key] = dict(opt.get(key) or {}, **value) if key == 'path' else value
        return write_options(opt, self.tmp)

    def test_opt(self, name='tst', pretrain=None, gt=None, lq=None, **changes):
        """A test option file (tiny GhostEDSR; ``pretrain`` True: a checkpoint of it); ``gt`` / ``lq``: other data."""
        if pretrain is True:
            from basicsr.archs import build_network
            pretrain = str(self.tmp / 'net.pth')
            torch.save({'params': build_network(dict(NET)).state_dict()}, pretrain)
        opt = {'name': name, 'model_type': 'GhostSRModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
               'datasets': {'test_1': {'name': 'tiny', 'type': 'PairedImageDataset',
                                       'dataroot_gt': str(gt or self.data['hr']),
                                       'dataroot_lq': str(lq or self.data['lr']), 'filename_tmpl': '{}',
                                       'io_backend': {'type': 'disk'}}},
               'network_g': dict(NET), 'path': {'pretrain_network_g': pretrain, 'strict_load_g': True},
               'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE,
                                                               'test_y_channel': True}}}}
        for key, value in changes.items():
            set_option(opt, key, value)
        return write_options(opt, self.tmp)

    def copy_data(self, key, target):
        """A copy of ``tiny_data[key]`` (a folder of images or an LMDB) at ``tmp/target``; returns its path."""
        shutil.copytree(self.data[key], self.tmp / target)
        return self.tmp / target

    def plant(self, relative):
        """Copy the hostile file to ``tmp/relative``; returns that path."""
        target = self.tmp / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.evil, target)
        self.expected = str(target)
        return self.expected


# name -> function(Plant) -> (command module, argv). Every path a checkpoint or training state is loaded from.
LOAD_PATHS = {
    'evaluate --ckpt': lambda c: ('evaluate', [
        '--arch', 'EDSR', '--arch_args', '{"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 1, "upscale": 2}', '--ckpt', c.evil,
        '--set', 'Tiny', '--scale', SCALE, '--data', c.bench]),
    'convert --in': lambda c: ('convert', ['--arch', 'CARN_M', '--in', c.evil, '--out', c.tmp / 'o.pth']),
    'cluster --pretrained': lambda c: ('cluster', [
        '-opt', c.train_opt(), '--pretrained', c.evil, '--out', c.tmp / 'g.pth', '--no_progress']),
    'train path: pretrain_network_g': lambda c: ('train', ['-opt', c.train_opt(
        path={'pretrain_network_g': c.evil})]),
    'train ghost_init: pretrain_path': lambda c: ('train', ['-opt', c.train_opt(
        ghost_init={'pretrain_path': c.evil})]),
    'train distill: teacher_path': lambda c: ('train', ['-opt', c.train_opt(
        distill={'teacher_path': c.evil})]),
    'train path: resume_state': lambda c: ('train', ['-opt', c.train_opt(
        path={'resume_state': c.evil})]),
    'train --auto_resume': lambda c: (c.plant('experiments/exp/models/net_g_8.pth'),
                                      c.plant('experiments/exp/training_states/8.state'),
                                      ('train', ['-opt', c.train_opt(), '--auto_resume']))[-1],
    'test path: pretrain_network_g': lambda c: ('test', ['-opt', c.test_opt(pretrain=c.evil)]),
    'upscale --ckpt': lambda c: ('upscale', [
        '-i', c.image, '-o', c.tmp / 'up', '-opt', c.test_opt(), '--ckpt', c.evil, '--device', 'cpu']),
    'report OPT:CKPT': lambda c: ('report', [
        f'{c.test_opt()}:{c.evil}', '--set', 'Tiny', '--data', c.bench, '--no-latency', '--out', c.tmp / 'rep']),
    'export --ckpt': lambda c: ('export', [
        '-opt', c.test_opt(), '--ckpt', c.evil, '--out', c.tmp / 'exported', '--format', 'pt2']),
    'ghostify --pretrained': lambda c: ('ghostify', [
        '--arch', 'EDSR', '--arch_args', '{"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 1, "upscale": 2}',
        '--pretrained', c.evil, '--out', c.tmp / 'gh.pth']),
    'ghostify --model (spandrel)': lambda c: ('ghostify', ['--model', c.evil, '--out', c.tmp / 'gh.pth']),
    'compress --model (spandrel)': lambda c: ('compress', ['--model', c.evil, '--images', os.path.dirname(c.image),
                                                           '--out', c.tmp / 'cmp']),
    'compress --pretrained': lambda c: ('compress', [
        '--arch', 'EDSR', '--arch_args', '{"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 1, "upscale": 2}',
        '--pretrained', c.evil, '--images', os.path.dirname(c.image), '--out', c.tmp / 'cmp']),
}


def run_in_process(command, argv, monkeypatch, cwd):
    """Run a command as ``ghostsr <command> argv...`` does; returns (exit code, stderr text source)."""
    argv = [str(a) for a in argv]
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, 'argv', ['ghostsr', command] + argv)
    monkeypatch.delenv('GHOSTSR_DEBUG', raising=False)
    try:
        return cli.run(command, argv), None
    except SystemExit as exit_:  # commands that still exit with a message
        return (1, str(exit_.code)) if isinstance(exit_.code, str) else (exit_.code, None)


# ------------------------------------------------------------------------------------------------------ item 1
@pytest.mark.parametrize('load_path', sorted(LOAD_PATHS))
def test_hostile_pickle_never_runs(load_path, tiny_data, tmp_path, monkeypatch, capsys):
    """Before: `train --auto_resume` with such a state in training_states/ created the marker."""
    plant = Plant(tmp_path, tiny_data)
    module, argv = LOAD_PATHS[load_path](plant)
    before = tree(tmp_path)
    code, message = run_in_process(module, argv, monkeypatch, tmp_path)
    captured = capsys.readouterr()
    stderr = message or captured.err
    assert not plant.marker.exists(), f'{load_path}: the pickle ran'
    assert code != 0, captured.out[-2000:]
    assert plant.expected in stderr or os.path.relpath(plant.expected, tmp_path) in stderr, stderr
    assert 'nothing in it ran' in stderr and 'weights_only=False' not in stderr + captured.out
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert tree(tmp_path) == before  # no experiment folder, no archive, no output file


def test_hostile_pickle_in_a_subprocess(tiny_data, tmp_path):
    """The same through `python -m` (what a user runs), for the resume path of item 1."""
    plant = Plant(tmp_path, tiny_data)
    state = plant.plant('experiments/exp/training_states/4.state')
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', plant.train_opt(), '--auto_resume'], cwd=tmp_path)
    assert proc.returncode == 2 and not plant.marker.exists()
    assert proc.stderr.startswith(f'ghostsr train: error: {state} was not loaded: it refers to posix.system'), \
        proc.stderr[-2000:]


# ------------------------------------------------------------------------------------------------------ item 2
BAD_OPTIONS = {
    'ghost_ratio 0': ({'network_g': dict(NET, ghost_ratio=0)}, 'network_g: ghost_ratio (λ, the share of ghost '
                                                                'features) must be in (0, 1), got 0'),
    'unknown arch argument': ({'network_g': dict(NET, num_blocks=2)}, "unexpected keyword argument 'num_blocks'"),
    'iters_per_epoch': ({'ghost': {'iters_per_epoch': 0}}, 'ghost: iters_per_epoch must be a positive integer'),
    'distill weight': ({'distill': {'loss_weight': 0, 'teacher_path': 'x.pth'}},
                       'distill: loss_weight must be a positive number, got 0'),
    'distill key': ({'distill': {'weight': 1}}, 'distill: unknown option(s) weight; allowed: loss_weight'),
    'ghost_init without path': ({'ghost_init': {'seed': 1}}, 'ghost_init: pretrain_path'),
    'pretrain does not fit': ('wide.pth', 'wide.pth does not fit GhostEDSR: "conv_first.weight" has shape '
                                          '(16, 3, 3, 3), the network needs (8, 3, 3, 3)'),
    'ghost_init does not fit': ('wide_init', "ghost_init: pretrain_path"),
    'missing section': ({'train': None}, 'missing train'),
    # issue 18 item 2: options BasicSR reads only after it made or renamed the experiment folder
    'total_iter -5': ({'train.total_iter': -5}, 'train.total_iter: must be a positive integer (the number of '
                                                 'training iterations), got -5'),
    'total_iter 0': ({'train.total_iter': 0}, 'train.total_iter: must be a positive integer'),
    'total_iter abc': ({'train.total_iter': 'abc'}, "train.total_iter: must be a positive integer (the number of "
                                                     "training iterations), got 'abc'"),
    'warmup_iter text': ({'train.warmup_iter': 'none'}, "train.warmup_iter: must be an integer (-1: no warm-up)"),
    'batch size 0': ({'datasets.train.batch_size_per_gpu': 0}, 'datasets.train.batch_size_per_gpu: must be a '
                                                               'positive integer'),
    'batch larger than the set': ({'datasets.train.batch_size_per_gpu': 8},
                                  "datasets.train.batch_size_per_gpu: 8 is more than the 6 training pairs; BasicSR's "
                                  'loader drops the last partial batch, so not one iteration would run; allowed: '
                                  'at most 6'),
    'workers -1': ({'datasets.train.num_worker_per_gpu': -1}, 'datasets.train.num_worker_per_gpu: must be an '
                                                              'integer >= 0'),
    'workers missing': ({'datasets.train.num_worker_per_gpu': DELETE}, 'datasets.train.num_worker_per_gpu: required, '
                                                                       'an integer >= 0'),
    'enlarge ratio 0': ({'datasets.train.dataset_enlarge_ratio': 0}, 'datasets.train.dataset_enlarge_ratio: must be '
                                                                     'a positive number'),
    'prefetch cuda without pin_memory': ({'datasets.train.prefetch_mode': 'cuda'},
                                         'datasets.train.prefetch_mode: cuda needs datasets.train.pin_memory: true'),
    'gt_size larger than the images': ({'datasets.train.gt_size': 64},
                                       'datasets.train.gt_size: 64 needs LR images of at least 32x32 (gt_size / scale '
                                       '2), but img0.png is LR 16x16 (HR 32x32); allowed: a multiple of 2 up to 32'),
    'gt_size not a multiple of the scale': ({'datasets.train.gt_size': 15},
                                            'datasets.train.gt_size: 15 is not a multiple of the scale 2'),
    'gt_size larger than the LMDB images': (lambda c: {
        'datasets.train.io_backend': {'type': 'lmdb'}, 'datasets.train.dataroot_gt': c.data['hr_lmdb'],
        'datasets.train.dataroot_lq': c.data['lr_lmdb'], 'datasets.train.gt_size': 48},
        'datasets.train.gt_size: 48 needs LR images of at least 24x24 (gt_size / scale 2), but img0.png is LR 16x16'),
    'training pair does not fit': (lambda c: (
        cv2.imwrite(str(c.copy_data('lr', 'lr_bad') / 'img2.png'), np.zeros((15, 16, 3), np.uint8)),
        {'datasets.train.dataroot_lq': str(c.tmp / 'lr_bad')})[1],
        "datasets.train (tiny): img2.png: HR 32x32 is not LR 16x15 x scale 2; BasicSR's training crop needs every HR "
        'to be its LR x scale exactly'),
    'meta_info_file missing': ({'datasets.train.meta_info_file': 'datasets/meta_x2.txt'},
                               'datasets.train.meta_info_file: datasets/meta_x2.txt does not exist'),
    'meta_info_file lists a missing image': (lambda c: (
        (c.tmp / 'meta.txt').write_text('img0.png (32,32,3)\nimg9.png (32,32,3)\n'),
        {'datasets.train.meta_info_file': str(c.tmp / 'meta.txt')})[1], 'img9.png'),
    'LMDB without meta_info.txt': (lambda c: (
        os.remove(c.copy_data('hr_lmdb', 'hr.lmdb') / 'meta_info.txt'),
        {'datasets.train.io_backend': {'type': 'lmdb'}, 'datasets.train.dataroot_gt': str(c.tmp / 'hr.lmdb'),
         'datasets.train.dataroot_lq': c.data['lr_lmdb']})[1],
        'hr.lmdb is not an LMDB folder (no meta_info.txt)'),
    'LMDB folder not named .lmdb': (lambda c: (
        c.copy_data('hr_lmdb', 'hr_db'),
        {'datasets.train.io_backend': {'type': 'lmdb'}, 'datasets.train.dataroot_gt': str(c.tmp / 'hr_db'),
         'datasets.train.dataroot_lq': c.data['lr_lmdb']})[1],
        "hr_db is not named <name>.lmdb, which BasicSR's PairedImageDataset requires of an LMDB folder"),
    'unknown optimizer': ({'train.optim_g.type': 'SGD'}, 'train.optim_g.type: "SGD" is not an optimizer GhostSRModel '
                                                         "can build; allowed: Adam (BasicSR 1.4.2's get_optimizer "
                                                         'builds only Adam)'),
    'optimizer argument': ({'train.optim_g.momentum': 0.9}, 'train.optim_g: Adam does not take these arguments:'),
    'learning rate as text': ({'train.optim_g.lr': '1e-3'}, "train.optim_g.lr: must be a number, got '1e-3' (YAML "
                                                            'reads 1e-3 as text'),
    'unknown scheduler': ({'train.scheduler.type': 'StepLR'}, 'train.scheduler.type: "StepLR" is not a scheduler '
                                                              'BasicSR 1.4.2 builds; allowed: MultiStepLR, '
                                                              'MultiStepRestartLR, CosineAnnealingRestartLR'),
    'scheduler arguments': ({'train.scheduler.restart_weights': [1, 1]},
                            'train.scheduler: CosineAnnealingRestartLR does not take these arguments: periods and '
                            'restart_weights should have the same length.'),
    'scheduler periods shorter than the run': ({'train.total_iter': 4, 'train.scheduler.periods': [2]},
                                               'train.scheduler.periods: [2] sum to 2, but train.total_iter is 4: '
                                               "BasicSR's CosineAnnealingRestartLR fails at iteration 4"),
    'unknown loss': ({'train.pixel_opt.type': 'L3Loss'}, 'train.pixel_opt.type: "L3Loss" is not a registered loss; '
                                                         'allowed: CharbonnierLoss, GANLoss, L1Loss'),
    'loss reduction': ({'train.pixel_opt.reduction': 'avg'}, 'train.pixel_opt.reduction: "avg" is not supported; '
                                                             'allowed: none, mean, sum'),
    'no loss': ({'train.pixel_opt': None}, 'train: pixel_opt or perceptual_opt is required by GhostSRModel'),
    'unknown metric': ({'val.metrics.psnr.type': 'calculate_lpips'},
                       'val.metrics.psnr.type: "calculate_lpips" is not a registered metric; allowed: calculate_niqe, '
                       'calculate_psnr, calculate_ssim'),
    'tensor metric': ({'val.metrics.psnr.type': 'calculate_psnr_pt'}, 'val.metrics.psnr.type: "calculate_psnr_pt" '
                                                                      '(the _pt metrics take tensors'),
    'crop_border x': ({'val.metrics.psnr.crop_border': 'x'}, "val.metrics.psnr.crop_border: must be an integer >= 0 "
                                                             "(pixels cut from each border before measuring), got 'x'"),
    'crop_border -1': ({'val.metrics.ssim.crop_border': -1}, 'val.metrics.ssim.crop_border: must be an integer >= 0'),
    'crop_border missing': ({'val.metrics.psnr.crop_border': DELETE},
                            "val.metrics.psnr: calculate_psnr does not take these arguments: missing a required "
                            "argument: 'crop_border'"),
    'save_checkpoint_freq 0': ({'logger.save_checkpoint_freq': 0}, 'logger.save_checkpoint_freq: must be a positive '
                                                                   'integer (iterations between saved checkpoints), '
                                                                   'got 0'),
    'print_freq 0': ({'logger.print_freq': 0}, 'logger.print_freq: must be a positive integer'),
    'val_freq 0': ({'val.val_freq': 0}, 'val.val_freq: must be a positive integer (iterations between validations)'),
    'val save_img missing': ({'val.save_img': DELETE}, 'val.save_img: required'),
    'wandb without tensorboard': ({'logger.wandb': {'project': 'x'}}, 'logger.wandb.project: set, so BasicSR needs '
                                                                     'logger.use_tb_logger: true'),
    'num_gpu more than the machine has': ({'num_gpu': GPUS + 4}, f'num_gpu: {GPUS + 4}, but this machine has {GPUS} '
                                                                 'CUDA GPU'),
    'num_gpu text': ({'num_gpu': 'all'}, "num_gpu: must be auto or an integer >= 0 (0: the CPU), got 'all'"),
    'dataset phase': (lambda c: {'datasets.test_1': c_val(c)}, 'datasets.test_1: not a phase BasicSR trains with; '
                                                              'allowed: train, val, val_<n>'),
}


def c_val(plant):
    """The validation set of a Plant's training options (for a case that copies it under another phase)."""
    return train_options('exp', dict(NET), plant.data)['datasets']['val']


@pytest.mark.parametrize('case', sorted(BAD_OPTIONS))
def test_rejected_run_leaves_the_experiment_alone(case, tiny_data, tmp_path, monkeypatch, capsys):
    """Before: rerunning an experiment with ghost_ratio: 0 renamed it to <name>_archived_<time>, left an empty one,
    and printed ~170 lines (option dump + traceback)."""
    plant = Plant(tmp_path, tiny_data)
    change, message = BAD_OPTIONS[case]
    if change == 'wide.pth':
        from basicsr.archs import build_network
        torch.save({'params': build_network(dict(NET, num_feat=16)).state_dict()}, tmp_path / 'wide.pth')
        opt_path = plant.train_opt(path={'pretrain_network_g': 'wide.pth'})
    elif change == 'wide_init':
        from basicsr.archs import build_network
        torch.save({'params': build_network(dict(PLAIN, num_feat=16)).state_dict()}, tmp_path / 'wide.pth')
        opt_path = plant.train_opt(ghost_init={'pretrain_path': 'wide.pth'})
    else:
        opt_path = plant.train_opt(**(change(plant) if callable(change) else change))
    capsys.readouterr()  # what setting up printed (make_lmdb_from_imgs' progress)
    existing = tmp_path / 'experiments' / 'exp'
    (existing / 'training_states').mkdir(parents=True)
    (existing / 'train_exp_1.log').write_text('the earlier run')
    before = tree(tmp_path)
    code, _ = run_in_process('train', ['-opt', opt_path], monkeypatch, tmp_path)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith('ghostsr train: error: ') and len(captured.err.splitlines()) == 1
    assert message in captured.err, captured.err
    assert tree(tmp_path) == before
    assert 'network_g' not in captured.out and 'Disable distributed' not in captured.out  # no option dump


def large_set(plant, pairs=501, bad='0250'):
    """``pairs`` tiny pairs (8x8 HR, 4x4 LR) under tmp/large, the LR of ``bad`` 5x5: more pairs than the checks
    decode (MAX_IMAGES_TO_DECODE), so only the headers tell the mismatch. Returns the test_opt changes."""
    hr_dir, lr_dir = plant.tmp / 'large' / 'hr', plant.tmp / 'large' / 'lr'
    hr_dir.mkdir(parents=True)
    lr_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(pairs):
        cv2.imwrite(str(hr_dir / f'{i:04d}.png'), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        side = 5 if f'{i:04d}' == bad else 4
        cv2.imwrite(str(lr_dir / f'{i:04d}.png'), rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    return {'gt': hr_dir, 'lq': lr_dir, 'val.metrics.psnr.crop_border': 0}


def lmdb_set(plant):
    """An LMDB test set from tiny_data whose LR img3 is 14x14 (its HR 32x32). Returns the test_opt changes."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    lr_dir = plant.copy_data('lr', 'lr_bad')
    cv2.imwrite(str(lr_dir / 'img3.png'), cv2.imread(str(lr_dir / 'img3.png'))[:14, :14])
    names = sorted(os.listdir(lr_dir))
    make_lmdb_from_imgs(str(lr_dir), str(plant.tmp / 'lr_bad.lmdb'), names, [n[:-4] for n in names])
    return {'gt': plant.data['hr_lmdb'], 'lq': plant.tmp / 'lr_bad.lmdb',
            'datasets.test_1.io_backend': {'type': 'lmdb'}}


# ghostsr test: name -> (changes to Plant.test_opt, or a function of the Plant returning them; message)
BAD_TEST_OPTIONS = {
    'unknown metric': ({'val.metrics.psnr.type': 'PSNR'}, 'val.metrics.psnr.type: "PSNR" is not a registered metric; '
                                                          'allowed: calculate_niqe, calculate_psnr, calculate_ssim'),
    'crop_border x': ({'val.metrics.psnr.crop_border': 'x'}, "val.metrics.psnr.crop_border: must be an integer >= 0 "
                                                             "(pixels cut from each border before measuring), got 'x'"),
    'save_img without suffix': ({'val.save_img': True}, 'val.suffix: required when save_img is true in a test option '
                                                        'file: images are saved as <image>_<suffix>.png, or '
                                                        '<image>_<name>.png with suffix: ~'),
    'save_img missing': ({'val.save_img': DELETE}, 'val.save_img: required (true: write the super-resolved images; '
                                                   'false: metrics only)'),
    'num_gpu more than the machine has': ({'num_gpu': GPUS + 4}, f'num_gpu: {GPUS + 4}, but this machine has {GPUS} '
                                                                 'CUDA GPU'),
    'dataset phase': ({'datasets.bench': {}}, 'datasets.bench: not a phase BasicSR tests with; allowed: test, '
                                              'test_<n>, val, val_<n>'),
    'meta_info_file missing': ({'datasets.test_1.meta_info_file': 'meta.txt'},
                               'datasets.test_1.meta_info_file: meta.txt does not exist'),
    'LMDB meta_info.txt line': (lambda c: (
        (c.copy_data('hr_lmdb', 'hr.lmdb') / 'meta_info.txt').write_text('img0.png (32,32,3) 1\nimg1.png 32x32\n'),
        {'gt': c.tmp / 'hr.lmdb', 'lq': c.data['lr_lmdb'], 'datasets.test_1.io_backend': {'type': 'lmdb'}})[1],
        "meta_info.txt line 2: 'img1.png 32x32' is not \"<name> (h,w,c) <compress_level>\" as BasicSR's lmdb_util "
        'writes it'),
    'LMDB keys differ': (lambda c: (
        (c.copy_data('hr_lmdb', 'hr.lmdb') / 'meta_info.txt').write_text(
            ''.join(f'img{i}.png (32,32,3) 1\n' for i in (0, 1, 2, 3, 4, 7))),
        {'gt': c.tmp / 'hr.lmdb', 'lq': c.data['lr_lmdb'], 'datasets.test_1.io_backend': {'type': 'lmdb'}})[1],
        'datasets.test_1 (tiny): the LR and HR LMDBs hold different images (only in dataroot_gt: img7; only in '
        'dataroot_lq: img5); BasicSR pairs them by key'),
    # item 3: every set is checked, however large, on disk or in an LMDB
    '501 pairs, one LR that does not fit': (large_set, 'datasets.test_1 (tiny): 0250.png: LR 5x5 does not fit HR 8x8 '
                                                       'at scale 2 (expected 4x4); every LR must be its HR cut to a '
                                                       'multiple of the scale and divided by it'),
    'LMDB set, one LR that does not fit': (lmdb_set, 'datasets.test_1 (tiny): img3.png: LR 14x14 does not fit HR 32x32 '
                                                     'at scale 2 (expected 16x16)'),
}


@pytest.mark.parametrize('case', sorted(BAD_TEST_OPTIONS))
def test_rejected_test_leaves_the_results_alone(case, tiny_data, tmp_path, monkeypatch, capsys):
    """Before: `ghostsr test` with an unknown metric, `crop_border: x` or save_img without suffix renamed
    results/<name> to <name>_archived_<time> and then failed (`error: suffix`); a 501-pair or LMDB set whose LR did
    not fit its HR gave a PSNR and exit code 0. Now: one line, exit code 2, the tree unchanged, no option dump."""
    plant = Plant(tmp_path, tiny_data)
    change, message = BAD_TEST_OPTIONS[case]
    opt_path = plant.test_opt(pretrain=True, **(change(plant) if callable(change) else change))
    capsys.readouterr()  # what setting up printed (make_lmdb_from_imgs' progress)
    existing = tmp_path / 'results' / 'tst'
    (existing / 'visualization').mkdir(parents=True)
    (existing / 'test_tst_1.log').write_text('the earlier test')
    before = tree(tmp_path)
    code, _ = run_in_process('test', ['-opt', opt_path], monkeypatch, tmp_path)
    captured = capsys.readouterr()
    assert code == 2, captured.out[-2000:] + captured.err[-2000:]
    assert captured.err.startswith('ghostsr test: error: ') and len(captured.err.splitlines()) == 1, captured.err
    assert message in captured.err, captured.err
    assert tree(tmp_path) == before
    assert 'network_g' not in captured.out and 'Disable distributed' not in captured.out  # no option dump


# ------------------------------------------------------------------------------------------------------ item 3
@pytest.mark.parametrize('crop,lr_size', [(-2, '14x14'), (2, '18x18')])
def test_test_refuses_an_lr_that_does_not_fit(crop, lr_size, tiny_data, tmp_path, monkeypatch, capsys):
    """Before: a smaller LR gave PSNR 13.37 without a word; a larger one an AssertionError naming no image."""
    plant = Plant(tmp_path, tiny_data)
    lr_dir = tmp_path / 'lr'
    shutil.copytree(tiny_data['lr'], lr_dir)
    lr = cv2.imread(str(lr_dir / 'img3.png'))
    lr = lr[:crop, :crop] if crop < 0 else cv2.copyMakeBorder(lr, 0, crop, 0, crop, cv2.BORDER_REFLECT)
    cv2.imwrite(str(lr_dir / 'img3.png'), lr)
    opt_path = plant.test_opt(pretrain=True, lq=lr_dir)
    code, _ = run_in_process('test', ['-opt', opt_path], monkeypatch, tmp_path)
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / 'results').exists()
    assert f'datasets.test_1 (tiny): img3.png: LR {lr_size} does not fit HR 32x32 at scale 2 (expected 16x16)' in err


# ------------------------------------------------------------------------------------------------------ item 5
@pytest.fixture(scope='module')
def trained(tiny_data, tmp_path_factory):
    """An experiment trained for 2 iterations (states and models at iteration 2)."""
    root = tmp_path_factory.mktemp('trained')
    opt = train_options('exp', dict(NET), tiny_data, total_iter=2)
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, root)], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_restart_after_a_killed_save(trained, tmp_path):
    """Before: `.6.state.XXXX.tmp` files stayed forever, and a truncated newest state stopped --auto_resume with
    `OSError: [Errno 22] Invalid argument` (or miniz's RuntimeError) naming no file."""
    shutil.copytree(trained, tmp_path, dirs_exist_ok=True)
    exp = tmp_path / 'experiments' / 'exp'
    states, models = exp / 'training_states', exp / 'models'
    complete = (states / '2.state').read_bytes()
    (states / '4.state').write_bytes(complete[:len(complete) // 2])  # the newest, truncated
    orphans = [states / '.4.state.k2j4x9ab.tmp', models / '.net_g_4.pth.q0_xyz12.tmp']
    others = [states / '.keep.tmp', models / 'notes.tmp', models / '.net_g_4.pth.tmp']
    for path in orphans + others:
        path.write_bytes(b'partial')
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', str(tmp_path / 'exp.yml'), '--auto_resume'],
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'warning: --auto_resume: {states / "4.state"} is truncated or damaged' in proc.stderr
    log = open(sorted(glob.glob(str(exp / 'train_*.log')))[-1]).read()
    assert 'Resuming training from epoch: 0, iter: 2.' in log
    assert not any(p.exists() for p in orphans) and all(p.exists() for p in others)
    for path in orphans:
        assert f'removed {path}' in proc.stdout


# ------------------------------------------------------------------------------------------------------ item 8
def test_test_names_converted_images_once(tiny_data, tmp_path, monkeypatch, capsys):
    """Before: grey, 16-bit and RGBA test images were read as 8-bit RGB without a word."""
    plant = Plant(tmp_path, tiny_data)
    hr_dir = tmp_path / 'hr'
    shutil.copytree(tiny_data['hr'], hr_dir)
    img = cv2.imread(str(hr_dir / 'img1.png'))
    cv2.imwrite(str(hr_dir / 'img1.png'), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(hr_dir / 'img2.png'), cv2.imread(str(hr_dir / 'img2.png')).astype(np.uint16) * 257)
    cv2.imwrite(str(hr_dir / 'img4.png'), cv2.cvtColor(cv2.imread(str(hr_dir / 'img4.png')), cv2.COLOR_BGR2BGRA))
    opt_path = plant.test_opt(pretrain=True, gt=hr_dir)
    code, _ = run_in_process('test', ['-opt', opt_path], monkeypatch, tmp_path)
    out = capsys.readouterr().out
    assert code == 0
    notes = [line for line in out.splitlines() if 'converted to 8-bit RGB' in line]
    assert notes == ['note: datasets.test_1 (tiny): 3 of 12 image files converted to 8-bit RGB as BasicSR reads '
                     'them (16-bit: img2.png; RGBA: img4.png; grey: img1.png)'], out[-2000:]
