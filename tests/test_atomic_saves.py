"""ghostsr_plugin.models.atomic_saves: BasicSR's own models (``model_type: SRModel``, the shipped EDSR / RDN / CARN
option files) save checkpoints, training states and validation images atomically once the plugin is imported, also
under BasicSR's own train.py / test.py (the autoload hook): a SIGKILL in the middle of a save leaves the previous
files intact and only a temporary that the next ``ghostsr train`` removes, and ``--auto_resume`` skips a damaged
state; a full disk is :class:`NoSpaceLeftError` naming the folder (one line, exit code 1 from ``ghostsr train`` /
``ghostsr test``), never a zero-byte checkpoint or image, never exit code 0.

A full disk is simulated by the `full_disk` fixture of conftest.py (files opened by the atomic writer under the
test's folder fail with ENOSPC after a few bytes), since tests cannot fill a real disk."""
import glob
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

import ghostsr_plugin  # noqa: F401  (installs the atomic saves)
from basicsr.models import build_model
from conftest import SCALE, train_options, write_options
from ghostsr_plugin import cli
from ghostsr_plugin.models import atomic_saves
from ghostsr_plugin.pipeline.resume import read_state
from ghostsr_plugin.utils.atomic import NoSpaceLeftError
from ghostsr_plugin.utils.checkpoint import load_checkpoint

NET = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': SCALE}


def model_options(folder, model_type='SRModel'):
    """What BasicSR's parse_options makes of a training option file (tiny EDSR), for building the model alone."""
    return {'name': 'm', 'model_type': model_type, 'scale': SCALE, 'num_gpu': 0, 'is_train': True, 'dist': False,
            'rank': 0, 'world_size': 1, 'network_g': dict(NET),
            'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                     'models': str(folder / 'models'), 'training_states': str(folder / 'training_states')},
            'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.999]},
                      'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5}, 'total_iter': 10,
                      'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}}}


def zero_byte_files(folder):
    return [p for p in glob.glob(os.path.join(str(folder), '**', '*'), recursive=True)
            if os.path.isfile(p) and os.path.getsize(p) == 0]


def in_process(command, argv, monkeypatch, cwd):
    """``ghostsr <command> argv...`` in this process (BasicSR's pipelines read and rewrite sys.argv)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, 'argv', ['ghostsr', command, *map(str, argv)])
    monkeypatch.delenv('GHOSTSR_DEBUG', raising=False)
    return cli.run(command, [str(a) for a in argv])


# ----------------------------------------------------------------------------------------------- installation
def test_saved_content_is_basicsrs(tmp_path):
    """The checkpoint holds {'params': state dict}, the state BasicSR's four keys, both load weights-only as
    BasicSR's resume reads them; GhostSRModel's state adds its 'ghost' entry through the same writer."""
    model = build_model(model_options(tmp_path))
    model.save(epoch=1, current_iter=3)
    params = load_checkpoint(str(tmp_path / 'models' / 'net_g_3.pth'))
    assert params.keys() == model.net_g.state_dict().keys()
    state = read_state(str(tmp_path / 'training_states' / '3.state'))
    assert set(state) == {'epoch', 'iter', 'optimizers', 'schedulers'} and (state['epoch'], state['iter']) == (1, 3)
    ghost = build_model(model_options(tmp_path / 'ghost', 'GhostSRModel'))
    ghost.save_training_state(1, 3)
    assert read_state(str(tmp_path / 'ghost' / 'training_states' / '3.state'))['ghost']['iters_per_epoch'] == 1000


# ---------------------------------------------------------------------------------------------------- killed
KILLER = '''
import io, json, os, signal, sys
import torch
import basicsr  # the autoload hook imports ghostsr_plugin, as under BasicSR's own train.py
real_save = torch.save


def killed_save(obj, f, *args, **kwargs):
    """Half of what torch.save writes, then SIGKILL (a kill in the middle of the write)."""
    buffer = io.BytesIO()
    real_save(obj, buffer)
    out = open(f, 'wb') if isinstance(f, (str, os.PathLike)) else f  # BasicSR's own save passes the final path
    out.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    out.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def target(f):
    """The path torch.save writes to (the atomic writer passes an open temporary file)."""
    return str(f) if isinstance(f, (str, os.PathLike)) else os.readlink(f'/proc/self/fd/{f.fileno()}')
'''

KILLED_SAVE = KILLER + '''
import basicsr.models.sr_model as sr_model
from basicsr.models import build_model
from basicsr.models.base_model import BaseModel
from basicsr.utils.registry import MODEL_REGISTRY
print(BaseModel.save_network.__module__, BaseModel.save_training_state.__module__, sr_model.imwrite.__module__,
      MODEL_REGISTRY.get('GhostSRModel').save_network is MODEL_REGISTRY.get('SRModel').save_network, flush=True)
torch.manual_seed(0)
model = build_model(json.loads(sys.argv[1]))
model.save_network(model.net_g, 'net_g', -1)
torch.save = killed_save
with torch.no_grad():
    for p in model.net_g.parameters():
        p.add_(1)
model.save_network(model.net_g, 'net_g', -1)
'''


def test_a_killed_srmodel_save_under_basicsrs_entry(tmp_path):
    """As under BasicSR's own train.py (only basicsr imported, the autoload hook imports the plugin): BaseModel has
    the plugin's one save implementation (SRModel and GhostSRModel share it) and sr_model the atomic imwrite. An
    SRModel saves net_g_latest.pth, then is SIGKILLed half-way through saving it again: the previous checkpoint is
    intact under its name, the half-written one is only a .net_g_latest.pth.XXXXXXXX.tmp. Before: BasicSR's
    torch.save wrote the final path, which was left truncated."""
    opt = model_options(tmp_path)
    proc = subprocess.run([sys.executable, '-c', KILLED_SAVE, json.dumps(opt)], capture_output=True, text=True,
                          cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert proc.stdout.split() == ['ghostsr_plugin.models.atomic_saves'] * 3 + ['True']
    left = sorted(os.listdir(tmp_path / 'models'))
    assert len(left) == 2 and left[0].startswith('.net_g_latest.pth.') and left[0].endswith('.tmp')
    assert left[1] == 'net_g_latest.pth'
    torch.manual_seed(0)
    fresh = build_model(opt).net_g.state_dict()  # the weights before the +1
    saved = load_checkpoint(str(tmp_path / 'models' / 'net_g_latest.pth'))
    assert saved.keys() == fresh.keys() and all(torch.equal(saved[k], fresh[k]) for k in fresh)


def test_an_srmodel_run_killed_in_a_save_resumes(tiny_data, tmp_path, monkeypatch, capsys):
    """An SRModel training run (the plugin's entry point) is SIGKILLed half-way through writing 4.state; a damaged
    3.state (as an older, non-atomic save could leave) is there too. `ghostsr train --auto_resume` removes the
    temporary, skips 3.state with a warning naming it and resumes from 2.state to the end."""
    opt_path = write_options(train_options('plain', dict(NET), tiny_data, total_iter=4, model_type='SRModel'),
                             tmp_path)
    script = KILLER + ('torch.save = lambda obj, f, *a, **k: (killed_save if os.path.basename(target(f)).startswith('
                       '(".4.state.", "4.state")) else real_save)(obj, f, *a, **k)\n'
                       'from ghostsr_plugin.cli import main\n'
                       f'sys.exit(main(["train", "-opt", {opt_path!r}]))\n')
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, cwd=tmp_path,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == -9, proc.stderr[-3000:]
    exp = tmp_path / 'experiments' / 'plain'
    states, models = exp / 'training_states', exp / 'models'
    temporaries = [states / n for n in os.listdir(states) if n.startswith('.4.state.')]
    assert len(temporaries) == 1 and not (states / '4.state').exists() and (models / 'net_g_4.pth').exists()
    complete = (states / '2.state').read_bytes()
    (states / '3.state').write_bytes(complete[:len(complete) // 2])
    assert in_process('train', ['-opt', opt_path, '--auto_resume'], monkeypatch, tmp_path) == 0
    out, err = capsys.readouterr()
    assert f'removed {temporaries[0]}, left by a save that was killed' in out
    assert f'warning: --auto_resume: {states / "3.state"} is truncated or damaged' in err
    assert f"Set pretrain_network_g to {models / 'net_g_2.pth'}" in out  # BasicSR's resume from 2.state
    assert read_state(str(states / '4.state'))['iter'] == 4 and (models / 'net_g_latest.pth').exists()


# ------------------------------------------------------------------------------------------------- full disk
def test_full_disk_during_srmodel_saves(tmp_path, full_disk):
    """Checkpoint and state on a full disk: NoSpaceLeftError naming the folder, the previous file intact, nothing
    zero-byte and no temporary left. Before: three tries, a logged warning, zero-byte files, the run went on."""
    model = build_model(model_options(tmp_path))
    models, states = tmp_path / 'models', tmp_path / 'training_states'
    models.mkdir()
    states.mkdir()
    torch.save({'params': {'w': torch.ones(1)}}, models / 'net_g_latest.pth')
    torch.save({'epoch': 0, 'iter': 2, 'optimizers': [], 'schedulers': []}, states / '2.state')
    before = {p: p.read_bytes() for p in (models / 'net_g_latest.pth', states / '2.state')}
    with pytest.raises(NoSpaceLeftError) as info:
        model.save_network(model.net_g, 'net_g', -1)
    assert str(info.value).startswith(f'no space left on {models} while writing net_g_latest.pth')
    with pytest.raises(NoSpaceLeftError) as info:
        model.save_training_state(0, 2)
    assert str(info.value).startswith(f'no space left on {states} while writing 2.state')
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(os.listdir(models)) == ['net_g_latest.pth'] and sorted(os.listdir(states)) == ['2.state']
    assert len(full_disk) == 2 and not zero_byte_files(tmp_path)


def test_full_disk_during_an_srmodel_run_is_one_line(tiny_data, tmp_path, monkeypatch, capsys, full_disk):
    """`ghostsr train` of an SRModel recipe on a full disk stops at its first save with one line, exit code 1.
    Before: exit code 0, zero-byte checkpoints and a truncated state."""
    opt = train_options('full', dict(NET), tiny_data, total_iter=4, model_type='SRModel')
    code = in_process('train', ['-opt', write_options(opt, tmp_path)], monkeypatch, tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    models = tmp_path / 'experiments' / 'full' / 'models'
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f'ghostsr train: error: no space left on {models} while writing net_g_2.pth')
    assert os.listdir(models) == [] and not zero_byte_files(tmp_path / 'experiments')


def test_imwrite_on_a_full_disk(tmp_path, tmp_path_factory, full_disk):
    """BasicSR's imwrite as the models call it (sr_model's name): NoSpaceLeftError naming the folder, no zero-byte
    PNG; a complete write is the PNG cv2.imwrite writes. Before: cv2.imwrite left a zero-byte PNG and said True."""
    import basicsr.models.sr_model as sr_model
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    target = tmp_path / 'visualization' / 'tiny' / 'img0_test.png'
    with pytest.raises(NoSpaceLeftError) as info:
        sr_model.imwrite(img, str(target))
    assert str(info.value).startswith(f'no space left on {target.parent} while writing img0_test.png')
    assert os.listdir(target.parent) == [] and not zero_byte_files(tmp_path)
    ok = tmp_path_factory.mktemp('room') / 'ok.png'  # outside the full disk
    atomic_saves.imwrite(img, str(ok), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert (cv2.imread(str(ok)) == img).all()


def test_ghostsr_test_on_a_full_disk_is_one_line(tiny_data, tmp_path, monkeypatch, capsys, full_disk):
    """`ghostsr test` of an SRModel with save_img on a full disk: exit code 1, one line naming the folder, no
    zero-byte PNG. Before: exit code 0 and zero-byte PNGs."""
    from basicsr.archs import build_network
    ckpt = tmp_path / 'net.pth'
    torch.save({'params': build_network(dict(NET)).state_dict()}, ckpt)
    opt = {'name': 'tst', 'model_type': 'SRModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
           'datasets': {'test_1': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': tiny_data['hr'],
                                   'dataroot_lq': tiny_data['lr'], 'filename_tmpl': '{}',
                                   'io_backend': {'type': 'disk'}}},
           'network_g': dict(NET), 'path': {'pretrain_network_g': str(ckpt), 'strict_load_g': True},
           'val': {'save_img': True, 'suffix': None,
                   'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': True}}}}
    code = in_process('test', ['-opt', write_options(opt, tmp_path)], monkeypatch, tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    folder = tmp_path / 'results' / 'tst' / 'visualization' / 'tiny'
    assert code == 1 and len(err) == 1, err
    assert re.match(rf'ghostsr test: error: no space left on {re.escape(str(folder))} while writing img\d_tst.png; ',
                    err[0]), err[0]
    assert os.listdir(folder) == [] and not zero_byte_files(tmp_path / 'results')
