"""Option files are plain YAML (issue 18, item 1): ``ghostsr_plugin.utils.option_file`` reads them with a safe loader
that keeps BasicSR's ordered mappings, and ``import ghostsr_plugin`` puts that loader behind BasicSR's
``ordered_yaml()``. Proved here with a hostile line appended to a real option file, as a user would meet it: it runs
code under BasicSR's original (full) loader, and nothing of it runs through ``load_options``, through the commands
(one line naming the file and the line, exit code 2) or through BasicSR's own ``basicsr/train.py``. Every option
file of ``options/`` still loads as it did: nested ``OrderedDict`` in file order, the values plain YAML gives."""
import glob
import os
import shutil
import subprocess
import sys
from collections import OrderedDict

import pytest
import yaml

import ghostsr_plugin  # noqa: F401  (installs the safe ordered_yaml)
import basicsr
import basicsr.utils.options as basicsr_options
from ghostsr_plugin.cli import run
from ghostsr_plugin.utils.errors import UserInputError
from ghostsr_plugin.utils.option_file import (PLAIN_YAML, SafeOrderedLoader, install_safe_ordered_yaml,
                                              load_options)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTION_FILES = sorted(glob.glob(os.path.join(ROOT, 'options', '*.yml')))
assert len(OPTION_FILES) > 10, 'options/*.yml not found'
REAL = os.path.join(ROOT, 'options', 'test_GhostEDSR_x2.yml')
TAG = '!!python/object/apply:os.system'


def hostile_copy(folder, marker, source=REAL, tag=TAG):
    """A copy of the real option file ``source`` with ``x: <tag> ["touch <marker>"]`` appended. Returns (path, the
    appended line's number)."""
    path = folder / 'opt.yml'
    shutil.copy(source, path)
    text = path.read_text()
    text += ('' if text.endswith('\n') else '\n') + f'x: {tag} ["touch {marker}"]\n'
    path.write_text(text)
    return str(path), text.count('\n')


def refusal(path, line, tag=TAG):
    return (f'{path}, line {line}: the tag {tag} would construct a Python object; option files may hold only plain '
            'YAML (mappings, lists, strings, numbers, booleans, null)')


def mappings(value):
    """(type, keys in order) of every mapping in ``value``, depth first."""
    if isinstance(value, dict):
        yield type(value), list(value)
        for item in value.values():
            yield from mappings(item)
    elif isinstance(value, list):
        for item in value:
            yield from mappings(item)


@pytest.mark.parametrize('path', OPTION_FILES, ids=os.path.basename)
def test_every_option_file_loads_as_before(path):
    """Each options/*.yml: the same content as yaml.safe_load, every mapping an OrderedDict in file order (what
    BasicSR's ordered_yaml() gave), through load_options and through BasicSR's (now safe) ordered_yaml()."""
    with open(path) as file:
        plain = yaml.safe_load(file)
    with open(path) as file:
        through_basicsr = yaml.load(file, Loader=basicsr_options.ordered_yaml()[0])
    opt = load_options(path)
    assert opt == plain == through_basicsr
    for loaded in (opt, through_basicsr):
        assert [(OrderedDict, keys) for _, keys in mappings(plain)] == list(mappings(loaded))


def test_basicsr_ordered_yaml_is_the_safe_loader_and_basicsr_dumper():
    """After `import ghostsr_plugin`, BasicSR's ordered_yaml() (which parse_options looks up when it runs) returns the
    safe ordered loader (a CSafeLoader subclass when PyYAML has libyaml) and BasicSR's dumper, which still writes an
    OrderedDict as a plain mapping; installing twice changes nothing."""
    loader, dumper = basicsr_options.ordered_yaml()
    assert loader is SafeOrderedLoader
    assert issubclass(loader, yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)
    assert dumper is (yaml.CDumper if yaml.__with_libyaml__ else yaml.Dumper)
    assert yaml.dump(OrderedDict(b=1, a=[2]), Dumper=dumper) == 'b: 1\na:\n- 2\n'
    installed = basicsr_options.ordered_yaml
    install_safe_ordered_yaml()
    assert basicsr_options.ordered_yaml is installed
    assert yaml.load('a: !!float 1e-4\nb: [1, 2]\n', Loader=loader) == OrderedDict(a=1e-4, b=[1, 2])


def test_the_planted_line_runs_code_under_the_full_loader(tmp_path):
    """The control: the hostile line, as planted below, does run its command under PyYAML's full loader (what BasicSR's
    original ordered_yaml() returned), so a missing marker in the other tests means the loader stopped it."""
    marker = tmp_path / 'control_marker'
    path, _ = hostile_copy(tmp_path, marker)
    with open(path) as file:
        yaml.load(file, Loader=yaml.Loader)
    assert marker.exists()


@pytest.mark.parametrize('tag', [TAG, '!!python/object/new:os.system', '!!python/name:os.system',
                                 '!!python/tuple'])
def test_load_options_refuses_a_python_tag(tmp_path, tag):
    """load_options: one line (UserInputError) naming the file, the line and the tag; the command never runs."""
    marker = tmp_path / 'marker'
    path, line = hostile_copy(tmp_path, marker, tag=tag)
    with pytest.raises(UserInputError) as err:
        load_options(path)
    assert str(err.value) == refusal(path, line, tag)
    assert not marker.exists()


def test_load_options_refuses_an_unknown_tag(tmp_path):
    path = tmp_path / 'opt.yml'
    path.write_text('name: x\nscale: !custom 2\n')
    with pytest.raises(UserInputError, match=r'opt\.yml, line 2: the tag !custom is not plain YAML; ') as err:
        load_options(str(path))
    assert str(err.value).endswith(PLAIN_YAML) and '\n' not in str(err.value)


def test_load_options_still_names_other_yaml_errors(tmp_path):
    path = tmp_path / 'bad.yml'
    path.write_text('name: [unclosed\n')
    with pytest.raises(UserInputError, match='bad.yml: not valid YAML') as err:
        load_options(str(path))
    assert '\n' not in str(err.value)


COMMANDS = {  # the option file is all a command needs to refuse; nothing else given has to exist
    'train': lambda opt, tmp: ['-opt', opt],
    'test': lambda opt, tmp: ['-opt', opt],
    'evaluate': lambda opt, tmp: ['-opt', opt, '--ckpt', str(tmp / 'net.pth'), '--data', str(tmp)],
    'upscale': lambda opt, tmp: ['-i', str(tmp), '-o', str(tmp / 'out'), '-opt', opt],
    'export': lambda opt, tmp: ['-opt', opt, '--ckpt', str(tmp / 'net.pth'), '--out', str(tmp / 'net')],
    'cluster': lambda opt, tmp: ['-opt', opt, '--pretrained', str(tmp / 'net.pth'), '--out', str(tmp / 'c.pth')],
    'report': lambda opt, tmp: [opt, '--no-latency', '--out', str(tmp / 'report')],
    'ghostify': lambda opt, tmp: ['-opt', opt, '--out', str(tmp / 'ghost.pth')],
}


@pytest.mark.parametrize('command', sorted(COMMANDS))
def test_commands_refuse_the_hostile_option_file(command, tmp_path, capsys, monkeypatch):
    """Every command that reads an option file (in-process, as `ghostsr <command>`): exit code 2, one line on stderr
    naming the file and the line, no marker, nothing written."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / 'in'
    folder.mkdir()
    marker = tmp_path / 'marker'
    path, line = hostile_copy(folder, marker)
    code = run(command, COMMANDS[command](path, folder))
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == f'ghostsr {command}: error: {refusal(path, line)}\n'
    assert not marker.exists()
    assert sorted(os.listdir(tmp_path)) == ['in'] and os.listdir(folder) == ['opt.yml']


def test_basicsr_own_train_script_does_not_run_it(tmp_path):
    """BasicSR's own basicsr/train.py (the autoload hook imports ghostsr_plugin with basicsr): its parse_options fails
    on the tag (BasicSR's traceback, ending in the error naming the file and line), exit code non-zero, no marker."""
    marker = tmp_path / 'marker'
    path, line = hostile_copy(tmp_path, marker)
    env = {k: v for k, v in os.environ.items() if k != 'GHOSTSR_NO_AUTOLOAD'}
    proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(basicsr.__file__), 'train.py'), '-opt', path],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(env, OMP_NUM_THREADS='1'))
    assert proc.returncode != 0
    assert not marker.exists()
    last = proc.stderr.strip().splitlines()[-2:]
    assert last[0] == f'ghostsr_plugin.utils.option_file.OptionFileTagError: {refusal(path, line).split(": ", 1)[1]}'
    assert last[1].strip().startswith(f'in "{path}", line {line},')
