"""Issue 10 (hardening), at the entry points, on tiny inputs.

Proves, item by item:
1. a checkpoint or training state whose unpickling would run code (``os.system('touch <marker>')``) is refused at
   every load path (:data:`LOAD_PATHS`): the marker is never created, the error is one line naming the file, never
   advising ``weights_only=False``, and the file system is left as it was;
2. a bad option fails before BasicSR makes or renames (``_archived_``) any folder: the tree is unchanged, the error
   is one line with exit code 2, BasicSR's option dump is not printed;
3. an LR that does not fit its HR at the scale stops ``test`` with the image, both sizes and the scale;
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

NET = {'type': 'GhostEDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': SCALE}
PLAIN = dict(NET, type='EDSR')


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
        """A training option file (tiny GhostEDSR); ``changes``: top-level blocks, ``path`` entries merged."""
        opt = train_options(name, dict(NET), self.data, total_iter=2)
        for key, value in changes.items():
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
        opt.update(changes)
        return write_options(opt, self.tmp)

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
}


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
        opt_path = plant.train_opt(**change)
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
