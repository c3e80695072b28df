"""ghostsr_plugin.utils.checkpoint: loads are weights-only and fail in one line naming the file; atomic writes get
the umask's mode, clean up after themselves, and report a full disk as "no space left on <folder>"; only the
plugin's own temporary names are removed after a killed save."""
import errno
import io
import os
import pickle
import random

import pytest
import torch

from hardening_helpers import Hostile
from ghostsr_plugin.utils.checkpoint import CheckpointError, load_checkpoint, torch_load
from ghostsr_plugin.utils.atomic import (NoSpaceLeftError, atomic_torch_save, atomic_write, default_file_mode,
                                         remove_temporaries)


@pytest.mark.parametrize('fmt', ['zip', 'legacy', 'raw pickle'])
def test_hostile_pickles_are_refused(fmt, tmp_path):
    marker, path = tmp_path / 'MARKER', tmp_path / 'evil.pth'
    obj = {'params': {'w': Hostile(marker)}}
    if fmt == 'raw pickle':
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=fmt == 'zip')
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(str(path))
    assert not marker.exists()
    message = str(info.value)
    assert message.startswith(str(path)) and 'weights_only=False' not in message and '\n' not in message
    if fmt != 'raw pickle':  # torch.save's formats name what the pickle asked for; a foreign pickle is no checkpoint
        assert 'refers to posix.system' in message and not info.value.damaged


def test_damaged_files_are_named(tmp_path):
    """Before: a truncated file gave `OSError: [Errno 22] Invalid argument` (or miniz's RuntimeError), random bytes
    repeated PyTorch's advice to retry with weights_only=False."""
    good = tmp_path / 'good.pth'
    torch.save({'params': {'w': torch.zeros(1000)}}, good)
    data = good.read_bytes()
    for cut in (100, len(data) // 2, len(data) - 10):
        (tmp_path / 'cut.pth').write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f'^{tmp_path / "cut.pth"} is truncated or damaged \\({cut} bytes'):
            load_checkpoint(str(tmp_path / 'cut.pth'))
    # Random bytes (seeded; first bytes not 'PK' nor a pickle protocol opcode, which torch.save files start with):
    # once some random bytes parsed as a pickle far enough to be called truncated, so the rule is the file's head.
    rng = random.Random(0)
    for _ in range(200):
        data = rng.randbytes(3000)
        if data[:2] == b'PK' or data[0] == 0x80:
            continue
        (tmp_path / 'random.pth').write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(str(tmp_path / 'random.pth'))
        assert info.value.damaged and str(info.value).startswith(f'{tmp_path / "random.pth"} is not a PyTorch '
                                                                 'checkpoint'), str(info.value)
        assert 'weights_only' not in str(info.value)
    (tmp_path / 'text.pth').write_text('not a checkpoint\n')
    with pytest.raises(CheckpointError, match='is not a PyTorch checkpoint'):
        load_checkpoint(str(tmp_path / 'text.pth'))
    with pytest.raises(FileNotFoundError, match='checkpoint not found: .*nope.pth'):
        load_checkpoint(str(tmp_path / 'nope.pth'))


def test_project_and_basicsr_files_load_weights_only(tmp_path):
    """What the plugin and BasicSR write (checkpoints, optimizer and scheduler states, Counter milestones) loads."""
    from basicsr.models.lr_scheduler import CosineAnnealingRestartLR, MultiStepRestartLR
    net = torch.nn.Conv2d(3, 3, 3)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    net(torch.rand(1, 3, 8, 8)).sum().backward()
    optimizer.step()
    schedulers = [MultiStepRestartLR(optimizer, [2, 4]), CosineAnnealingRestartLR(optimizer, [4])]
    state = {'epoch': 0, 'iter': 1, 'optimizers': [optimizer.state_dict()],
             'schedulers': [s.state_dict() for s in schedulers], 'ghost': {'iters_per_epoch': 3, 'saved_at': 1.5}}
    atomic_torch_save(state, tmp_path / '1.state')
    loaded = torch_load(str(tmp_path / '1.state'), 'training state')
    assert loaded['schedulers'][0]['milestones'] == schedulers[0].state_dict()['milestones']
    assert torch.equal(loaded['optimizers'][0]['state'][0]['exp_avg'], optimizer.state_dict()['state'][0]['exp_avg'])
    atomic_torch_save({'params': net.state_dict()}, tmp_path / 'net.pth')
    assert torch.equal(load_checkpoint(str(tmp_path / 'net.pth'), mmap=True)['weight'], net.weight)


@pytest.mark.parametrize('umask', [0o022, 0o077, 0o002])
def test_written_files_get_the_umask_mode(umask, tmp_path):
    """Before: 0600 (mkstemp's) where a plain save gives 0644."""
    old = os.umask(umask)
    try:
        assert default_file_mode() == 0o666 & ~umask
        atomic_write(tmp_path / 'a.txt', lambda f: f.write('x'), mode='w')
        with open(tmp_path / 'plain.txt', 'w') as file:
            file.write('x')
    finally:
        os.umask(old)
    assert os.stat(tmp_path / 'a.txt').st_mode & 0o777 == os.stat(tmp_path / 'plain.txt').st_mode & 0o777


class FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, file, room):
        self.file, self.room = file, room

    def writable(self):
        return True

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, 'No space left on device')
        self.room -= len(data)
        return self.file.write(data)


@pytest.mark.parametrize('how', ['write raises', 'inside torch.save'])
def test_full_disk_keeps_the_last_good_file(how, tmp_path):
    """Before: `RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos ...`, with "No space left"
    in the middle of the traceback."""
    target = tmp_path / 'models' / 'net_g_latest.pth'
    atomic_torch_save({'params': {'w': torch.ones(4)}}, target)
    if how == 'write raises':
        def write(file):
            raise OSError(errno.ENOSPC, 'No space left on device')
    else:
        def write(file):
            torch.save({'params': {'w': torch.zeros(100000)}}, FullDisk(file, 600))
    with pytest.raises(NoSpaceLeftError) as info:
        atomic_write(target, write)
    assert str(info.value).startswith(f'no space left on {target.parent} while writing net_g_latest.pth')
    assert info.value.errno == errno.ENOSPC
    assert torch.equal(load_checkpoint(str(target))['w'], torch.ones(4))
    assert os.listdir(target.parent) == ['net_g_latest.pth']


def test_other_write_errors_pass_through(tmp_path):
    def write(file):
        raise RuntimeError('a bug')
    with pytest.raises(RuntimeError, match='a bug'):
        atomic_write(tmp_path / 'x', write)
    assert os.listdir(tmp_path) == []


def test_remove_temporaries_only_removes_its_own_names(tmp_path):
    own = ['.12.state.ab3_9xyz.tmp', '.net_g_12.pth.00000000.tmp']
    others = ['12.state', 'x.tmp', '.keep.tmp', '.net_g_12.pth.tmp', '.a.b.TOOLONG99.tmp', 'notes.txt']
    for name in own + others:
        (tmp_path / name).write_text('x')
    (tmp_path / '.dir.abcdefgh.tmp').mkdir()
    assert remove_temporaries(str(tmp_path)) == [str(tmp_path / name) for name in sorted(own)]
    assert sorted(os.listdir(tmp_path)) == sorted(others + ['.dir.abcdefgh.tmp'])
    assert remove_temporaries(str(tmp_path / 'missing')) == []


def test_killed_save_leaves_only_a_temporary(tmp_path):
    """What a SIGKILL in the middle of a save leaves (a .<name>.XXXXXXXX.tmp) is what remove_temporaries removes."""
    import subprocess
    import sys
    script = ('import os, signal\n'
              'from ghostsr_plugin.utils.atomic import atomic_write\n'
              f'atomic_write({str(tmp_path / "6.state")!r}, '
              'lambda f: (f.write(b"x" * 1000), f.flush(), os.kill(os.getpid(), signal.SIGKILL)))\n')
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True)
    assert proc.returncode == -9
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith('.6.state.') and left[0].endswith('.tmp')
    assert remove_temporaries(str(tmp_path)) == [str(tmp_path / left[0])] and os.listdir(tmp_path) == []
