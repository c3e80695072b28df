"""ghostsr_plugin.utils.atomic when the output cannot be written: a folder on a read-only file system or without
write permission, and a file where a folder should be, are one error naming the path (PermissionError /
NotADirectoryError, exit code 2 from a command, one stderr line, no traceback) for every command that writes:
``cluster``, ``convert``, ``report``, ``ghostify --out``, ``upscale -o``.

The tests run as root here, where ``chmod 0o555`` does not stop writes: a read-only folder is simulated by making
``os.makedirs`` / ``tempfile.mkstemp`` (as the atomic writer calls them) raise what the kernel raises there,
``OSError(EROFS, 'Read-only file system')`` or ``PermissionError(EACCES, 'Permission denied')``, for paths under
the test's ``ro`` folder only."""
import errno
import json
import os
import tempfile

import cv2
import pytest
import torch

from ghostsr_plugin import cli
from ghostsr_plugin.utils import atomic
from ghostsr_plugin.utils.atomic import atomic_write, make_folder
from tiny_options_helpers import TINY, smooth_image, tiny_option_file


@pytest.fixture()
def read_only(monkeypatch, tmp_path):
    """``tmp_path / 'ro'``, an existing folder that behaves as read-only: ``how`` 'erofs' (a read-only file system:
    EROFS from makedirs and mkstemp) or 'eacces' (no write permission: EACCES). Returns a setter ``(how) -> ro``."""
    ro = tmp_path / 'ro'
    ro.mkdir()
    real_makedirs, real_mkstemp = os.makedirs, tempfile.mkstemp

    def error(how, path):
        if how == 'erofs':
            return OSError(errno.EROFS, 'Read-only file system', str(path))
        return PermissionError(errno.EACCES, 'Permission denied', str(path))

    def set_up(how):
        def makedirs(name, *args, **kwargs):
            if str(os.path.abspath(name)).startswith(str(ro)) and not os.path.isdir(name):
                raise error(how, name)
            return real_makedirs(name, *args, **kwargs)

        def mkstemp(*args, dir=None, **kwargs):
            if dir is not None and str(os.path.abspath(dir)).startswith(str(ro)):
                raise error(how, os.path.join(dir, 'x'))
            return real_mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(atomic.os, 'makedirs', makedirs)
        monkeypatch.setattr(atomic.tempfile, 'mkstemp', mkstemp)
        return ro

    return set_up


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    """What each writing command reads: tiny EDSR / GhostEDSR option files and checkpoints, an authors' CARN_M
    checkpoint, an image."""
    from test_conversion import authors_state_dict
    folder = tmp_path_factory.mktemp('inputs')
    plain_opt, plain_ckpt = tiny_option_file(folder, 'EDSR', 2)
    ghost_opt, ghost_ckpt = tiny_option_file(folder, 'GhostEDSR', 2)
    torch.save(authors_state_dict(True, 8, prefix=''), folder / 'carn_m.pth')
    cv2.imwrite(str(folder / 'photo.png'), smooth_image((8, 10), 1))
    return {'plain_opt': plain_opt, 'plain_ckpt': plain_ckpt, 'ghost_opt': ghost_opt, 'ghost_ckpt': ghost_ckpt,
            'carn_m': str(folder / 'carn_m.pth'), 'image': str(folder / 'photo.png')}


# command -> argv writing under ``out`` (a folder that may not exist yet); the path the error must name is ``out``'s
COMMANDS = {
    'cluster': lambda i, out: ['-opt', i['ghost_opt'], '--pretrained', i['plain_ckpt'], '--out', f'{out}/g.pth',
                               '--n_init', '1', '--no_progress'],
    'convert': lambda i, out: ['--arch', 'CARN_M', '--in', i['carn_m'], '--out', f'{out}/carn_m.pth'],
    'report': lambda i, out: [i['plain_opt'], '--no-latency', '--flops-size', '3x16x16', '--out', f'{out}/report'],
    'ghostify': lambda i, out: ['--arch', 'EDSR', '--arch_args', json.dumps({**TINY, 'upscale': 2}), '--out',
                                f'{out}/ghost.pth', '--no_progress'],
    'upscale': lambda i, out: ['-i', i['image'], '-o', out, '-opt', i['ghost_opt'], '--ckpt', i['ghost_ckpt']],
}


def run(command, argv, capsys):
    """(exit code, stderr lines but progress bars) of ``ghostsr command argv...``."""
    code = cli.run(command, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert 'Traceback' not in err, err
    return code, [line for line in err.replace('\r', '\n').strip().splitlines() if line and '%|' not in line]


@pytest.mark.parametrize('command', sorted(COMMANDS))
@pytest.mark.parametrize('how, where', [('erofs', 'new'), ('eacces', 'new'), ('erofs', 'existing'),
                                        ('eacces', 'existing')])
def test_a_read_only_output_folder_is_one_line(command, how, where, inputs, read_only, capsys):
    """Writing into a new folder under a read-only folder (makedirs fails) or into the read-only folder itself
    (mkstemp fails), on a read-only file system (EROFS) or without permission (EACCES): exit code 2, one line naming
    the folder and saying it is not writable, nothing written. Before: an OSError / PermissionError traceback (EROFS)
    or a line naming mkstemp's random temporary name."""
    ro = read_only(how)
    out = ro / 'new' if where == 'new' else ro
    code, err = run(command, COMMANDS[command](inputs, out), capsys)
    why = 'read-only file system' if how == 'erofs' else 'permission denied'
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f'ghostsr {command}: error: {ro}: the folder is not writable ({why}); '), err[0]
    assert os.listdir(ro) == []


@pytest.mark.parametrize('command', ['ghostify', 'cluster', 'upscale'])
@pytest.mark.parametrize('depth', ['file', 'file/sub'])
def test_a_file_where_a_folder_should_be_is_one_line(command, depth, inputs, tmp_path, capsys):
    """``--out existing_file/x.pth`` (and ``existing_file/sub/...``): exit code 2, one line naming the file that is
    in the way. Before: a FileExistsError / NotADirectoryError traceback from os.makedirs."""
    (tmp_path / 'file').write_text('not a folder')
    code, err = run(command, COMMANDS[command](inputs, tmp_path / depth), capsys)
    assert code == 2 and len(err) == 1, err
    if command == 'upscale' and depth == 'file':  # upscale's own check of -o
        assert err[0] == f'ghostsr upscale: error: -o {tmp_path / "file"}: exists and is not a folder (give a folder ' \
            'for the outputs)'
    else:
        assert err[0].startswith(f'ghostsr {command}: error: {tmp_path / "file"}: exists and is not a folder, so '), err
    assert (tmp_path / 'file').read_text() == 'not a folder'


def test_make_folder_and_atomic_write_name_what_is_in_the_way(tmp_path):
    """The library errors behind those lines: a file in the way is a NotADirectoryError naming it, an existing
    folder as the target an IsADirectoryError naming it; neither leaves a temporary file."""
    (tmp_path / 'file').write_text('x')
    for folder in ('file', 'file/a/b'):
        with pytest.raises(NotADirectoryError, match=f'^{tmp_path / "file"}: exists and is not a folder'):
            make_folder(str(tmp_path / folder))
        with pytest.raises(NotADirectoryError, match=f'^{tmp_path / "file"}: exists and is not a folder'):
            atomic_write(str(tmp_path / folder / 'x.pth'), lambda f: f.write(b'x'))
    (tmp_path / 'dir').mkdir()
    with pytest.raises(IsADirectoryError, match=f'^{tmp_path / "dir"}: is a folder; give a file name'):
        atomic_write(str(tmp_path / 'dir'), lambda f: f.write(b'x'))
    assert sorted(os.listdir(tmp_path)) == ['dir', 'file'] and os.listdir(tmp_path / 'dir') == []


def test_a_read_only_folder_at_the_rename(monkeypatch, tmp_path):
    """A folder that turns read-only between the temporary file and the rename: PermissionError naming the folder,
    the temporary removed (simulated: os.replace raises EROFS)."""
    def replace(src, dst):
        raise OSError(errno.EROFS, 'Read-only file system', src)
    monkeypatch.setattr(atomic.os, 'replace', replace)
    with pytest.raises(PermissionError, match=f'^{tmp_path}: the folder is not writable \\(read-only file system\\)'):
        atomic_write(str(tmp_path / 'x.pth'), lambda f: f.write(b'x'))
    assert os.listdir(tmp_path) == []
