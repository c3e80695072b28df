"""The one entry point of the commands (ghostsr_plugin.cli): `ghostsr --help` and `python -m ghostsr_plugin --help`
list every command with one line, every listed command has a module whose --help works, an unknown command is one
line naming the allowed ones (exit 2), and the commands deliver their errors as one line through it."""
import os
import subprocess

import pytest

from conftest import python, run
from ghostsr_plugin import cli


def test_help_lists_every_command_with_one_line(capsys):
    assert cli.main(['--help']) == 0
    out = capsys.readouterr().out
    for name, line in cli.COMMANDS.items():
        assert f'  {name}' in out and line in out
    assert cli.main([]) == 2  # no command: the list, and a usage error


def test_unknown_command_is_one_line(capsys):
    assert cli.main(['compres']) == 2
    err = capsys.readouterr().err
    assert err.startswith("ghostsr: error: unknown command 'compres'; allowed: compress, demo, train,") and \
        len(err.splitlines()) == 1


@pytest.mark.parametrize('command', sorted(cli.COMMANDS))
def test_every_command_has_help(command, capsys):
    """Each command module parses --help (argparse exits 0) without running anything."""
    with pytest.raises(SystemExit) as exit_:
        cli.run(command, ['--help'])
    assert exit_.value.code in (0, None)
    assert capsys.readouterr().out.strip()


def test_console_script_and_module_agree(tmp_path):
    """The installed `ghostsr` script (setup.py's console_scripts) and `python -m ghostsr_plugin` print the same list."""
    script = os.path.join(os.path.dirname(python()), 'ghostsr')
    assert os.path.isfile(script), 'ghostsr console script not installed (pip install -e . installs it)'
    module = run([python(), '-m', 'ghostsr_plugin', '--help'], cwd=tmp_path)
    console = subprocess.run([script, '--help'], cwd=tmp_path, capture_output=True, text=True)
    assert module.returncode == console.returncode == 0 and module.stdout == console.stdout


@pytest.mark.parametrize('command,argv,message', [
    ('train', ['-opt', 'nope.yml'], 'option file not found: nope.yml'),
    ('test', ['-opt', 'nope.yml'], 'option file not found: nope.yml'),
    ('evaluate', ['--arch', 'EDSR', '--ckpt', 'nope.pth', '--scale', '2', '--data', '.', '--set', 'X'],
     'set X: ./X does not exist'),
    ('convert', ['--arch', 'CARN_M', '--in', 'nope.pth', '--out', 'o.pth'],
     'checkpoint not found: nope.pth'),
])
def test_entry_points_give_one_line_errors(command, argv, message, tmp_path):
    """`python -m ghostsr_plugin <command>` delivers bad input as one line `ghostsr <command>: error: ...`, exit 2."""
    proc = run([python(), '-m', 'ghostsr_plugin', command, *argv], cwd=tmp_path, env={'GHOSTSR_DEBUG': '0'})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(f'ghostsr {command}: error: ') and len(proc.stderr.splitlines()) == 1, proc.stderr[-2000:]
    assert message in proc.stderr and proc.stdout == ''
