"""ghostsr_plugin.utils.errors.run_command: bad input is one line `<command>: error: ...` with exit code 2, a full disk
(or a step that failed with its own report) one line with exit code 1, the traceback only with --debug or
GHOSTSR_DEBUG=1, bugs keep their traceback."""
import errno

import pytest

from ghostsr_plugin.utils.atomic import NoSpaceLeftError
from ghostsr_plugin.utils.errors import RunFailedError, UserInputError, error_line, run_command


def _raising(err):
    def main(argv):
        raise err
    return main


@pytest.mark.parametrize('err,line,code', [
    (UserInputError('--scale must be 2, 3 or 4, got 5'), 'cmd: error: --scale must be 2, 3 or 4, got 5', 2),
    (KeyError('x.pth: no "params" in the checkpoint'), 'cmd: error: x.pth: no "params" in the checkpoint', 2),
    (FileNotFoundError(errno.ENOENT, 'No such file or directory', 'in.png'), 'cmd: error: in.png: No such file or '
                                                                            'directory', 2),
    (NoSpaceLeftError(errno.ENOSPC, 'no space left on /data while writing 4.state; ...'),
     'cmd: error: no space left on /data while writing 4.state; ...', 1),
    (OSError(errno.EDQUOT, 'Disk quota exceeded'), 'cmd: error: [Errno 122] Disk quota exceeded', 1),
    (RunFailedError('training failed (exit 1); its log is under x'), 'cmd: error: training failed (exit 1); its log '
                                                                      'is under x', 1),
])
def test_one_line_and_exit_code(err, line, code, capsys, monkeypatch):
    monkeypatch.delenv('GHOSTSR_DEBUG', raising=False)
    assert run_command('cmd', _raising(err), []) == code
    assert capsys.readouterr().err == line + '\n'


@pytest.mark.parametrize('debug', ['flag', 'env'])
def test_traceback_on_request(debug, capsys, monkeypatch):
    monkeypatch.setenv('GHOSTSR_DEBUG', '1' if debug == 'env' else '0')
    argv = ['--debug'] if debug == 'flag' else []
    assert run_command('cmd', _raising(ValueError('bad')), argv) == 2
    err = capsys.readouterr().err
    assert 'Traceback (most recent call last)' in err and err.endswith('cmd: error: bad\n')


def test_bugs_and_exit_codes_pass_through(monkeypatch):
    monkeypatch.delenv('GHOSTSR_DEBUG', raising=False)
    with pytest.raises(RuntimeError):
        run_command('cmd', _raising(RuntimeError('a bug')), [])
    with pytest.raises(OSError):
        run_command('cmd', _raising(OSError(errno.EIO, 'I/O error')), [])
    assert run_command('cmd', lambda argv: None, []) == 0 and run_command('cmd', lambda argv: 3, []) == 3


def test_error_line_keeps_a_named_path():
    err = FileNotFoundError(errno.ENOENT, 'No such file or directory', 'a.yml')
    assert error_line('c', err) == 'c: error: a.yml: No such file or directory'
