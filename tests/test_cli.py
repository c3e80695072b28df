"""ghostsr_plugin.utils.cli.run_command: bad input is one line `<command>: error: ...` with exit code 2, a full disk
one line with exit code 1, the traceback only with --debug or GHOSTSR_DEBUG=1, bugs keep their traceback; and the
entry points (train, test, evaluate, convert; demo in test_demo.py) deliver their errors this way when run with `python -m`."""
import errno

import pytest

from conftest import python, run
from ghostsr_plugin.utils.checkpoint import NoSpaceLeftError
from ghostsr_plugin.utils.cli import UserInputError, error_line, run_command


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


@pytest.mark.parametrize('module,argv,message', [
    ('ghostsr_plugin.train', ['-opt', 'nope.yml'], 'option file not found: nope.yml'),
    ('ghostsr_plugin.test', ['-opt', 'nope.yml'], 'option file not found: nope.yml'),
    ('ghostsr_plugin.evaluate', ['--arch', 'EDSR', '--ckpt', 'nope.pth', '--scale', '2', '--data', '.', '--set', 'X'],
     'set X: ./X does not exist'),
    ('ghostsr_plugin.convert', ['--arch', 'CARN_M', '--in', 'nope.pth', '--out', 'o.pth'],
     'checkpoint not found: nope.pth'),
])
def test_entry_points(module, argv, message, tmp_path):
    proc = run([python(), '-m', module, *argv], cwd=tmp_path, env={'GHOSTSR_DEBUG': '0'})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(f'{module}: error: ') and len(proc.stderr.splitlines()) == 1, proc.stderr[-2000:]
    assert message in proc.stderr and proc.stdout == ''
