"""ghostsr_plugin.pipeline.resume: training states load weights-only (a hostile one is refused, naming it);
--auto_resume passes over damaged newest states to the newest complete one, and never restarts an experiment whose
states are all damaged; temporary files are never picked."""
import random

import pytest
import torch

from hardening_helpers import Hostile
from ghostsr_plugin.utils.checkpoint import CheckpointError
from ghostsr_plugin.utils.atomic import atomic_torch_save
from ghostsr_plugin.pipeline.resume import load_resume_state, state_paths


def _state(iteration):
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(net.parameters())
    return {'epoch': 0, 'iter': iteration, 'optimizers': [optimizer.state_dict()], 'schedulers': [],
            'ghost': {'iters_per_epoch': 5}}


def _opt(tmp_path, auto_resume=True, resume_state=None):
    root = tmp_path / 'experiments' / 'exp'
    return {'name': 'exp', 'num_gpu': 0, 'auto_resume': auto_resume, 'network_g': {'type': 'EDSR'},
            'path': {'resume_state': resume_state, 'models': str(root / 'models'),
                     'training_states': str(root / 'training_states')}}


def _states(tmp_path):
    folder = tmp_path / 'experiments' / 'exp' / 'training_states'
    folder.mkdir(parents=True)
    for iteration in (2, 10):
        atomic_torch_save(_state(iteration), folder / f'{iteration}.state')
    return folder


def test_newest_state_is_resumed(tmp_path):
    folder = _states(tmp_path)
    (folder / '.12.state.abcdefgh.tmp').write_bytes(b'partial')
    opt = _opt(tmp_path)
    state = load_resume_state(opt)
    assert state['iter'] == 10 and opt['path']['resume_state'] == str(folder / '10.state')
    assert opt['path']['pretrain_network_g'].endswith('net_g_10.pth')  # BasicSR's check_resume
    assert state_paths(str(folder)) == [str(folder / '10.state'), str(folder / '2.state')]


@pytest.mark.parametrize('damage', ['truncated', 'empty', 'random bytes'])
def test_damaged_newest_state_is_skipped(damage, tmp_path, capsys):
    folder = _states(tmp_path)
    data = (folder / '10.state').read_bytes()
    damaged = {'truncated': data[:len(data) // 2], 'empty': b'', 'random bytes': random.Random(0).randbytes(500)}[damage]
    (folder / '12.state').write_bytes(damaged)
    opt = _opt(tmp_path)
    assert load_resume_state(opt)['iter'] == 10
    assert f'warning: --auto_resume: {folder / "12.state"}' in capsys.readouterr().err


def test_all_states_damaged_is_an_error(tmp_path):
    folder = tmp_path / 'experiments' / 'exp' / 'training_states'
    folder.mkdir(parents=True)
    (folder / '4.state').write_bytes(b'PK\x03\x04broken')
    with pytest.raises(ValueError, match=r'--auto_resume: no training state in .* can be read \(damaged: 4.state\)'):
        load_resume_state(_opt(tmp_path))


def test_no_state_starts_afresh(tmp_path):
    opt = _opt(tmp_path)
    assert load_resume_state(opt) is None and opt['path']['resume_state'] is None


@pytest.mark.parametrize('auto_resume', [True, False])
def test_hostile_state_is_refused(auto_resume, tmp_path):
    """Before: the state was loaded with weights_only=False and its os.system ran (the marker was created)."""
    folder = _states(tmp_path)
    marker = tmp_path / 'MARKER'
    torch.save(dict(_state(20), x=Hostile(marker)), folder / '20.state')
    opt = _opt(tmp_path, auto_resume, None if auto_resume else str(folder / '20.state'))
    with pytest.raises(CheckpointError, match=f'^{folder / "20.state"} was not loaded: it refers to posix.system'):
        load_resume_state(opt)  # complete but refused: an error, not a silent fall-back
    assert not marker.exists()


def test_named_state_must_be_a_training_state(tmp_path):
    torch.save({'params': {}}, tmp_path / 'net.pth')
    with pytest.raises(CheckpointError, match='net.pth is not a BasicSR training state: it lacks epoch, iter'):
        load_resume_state(_opt(tmp_path, False, str(tmp_path / 'net.pth')))
    with pytest.raises(FileNotFoundError, match='training state not found: .*nope.state'):
        load_resume_state(_opt(tmp_path, False, str(tmp_path / 'nope.state')))
