"""The documentation: the MkDocs site under docs/ builds with --strict (no broken link or anchor, no page left out
of the navigation), the README stays a short front page whose quick start is the two commands and whose test command
is the one CI runs, and neither names a command form the package no longer has (``python -m ghostsr_plugin.<cmd>``).
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, 'README.md')
DOCS = os.path.join(ROOT, 'docs')
QUICK_START = ('bash tools/demo.sh', 'bash tools/test.sh')
DROPPED_FORM = re.compile(r'python -m ghostsr_plugin\.')


def _readme_lines():
    with open(README, encoding='utf-8') as file:
        return file.read().splitlines()


def _doc_pages():
    pages = [README]
    for folder, _, names in os.walk(DOCS):
        pages += [os.path.join(folder, name) for name in sorted(names) if name.endswith('.md')]
    return pages


def test_site_builds_strict(tmp_path):
    """``mkdocs build --strict`` succeeds: every page is in mkdocs.yml's nav, every link between pages and every
    anchor resolves (mkdocs.yml turns those checks into warnings, which --strict makes errors)."""
    result = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '--site-dir', str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / 'index.html').is_file()
    assert (tmp_path / 'results' / 'index.html').is_file()


def test_readme_is_short():
    """The README is a front page of at most 200 lines; the reference and the results live in docs/."""
    lines = _readme_lines()
    assert len(lines) <= 200, f'README.md has {len(lines)} lines (at most 200)'


def test_readme_quick_start_is_the_two_commands():
    """Within its first 25 lines the README has the "## Quick start" heading, and the first commands after it are
    ``bash tools/demo.sh`` then ``bash tools/test.sh``."""
    lines = _readme_lines()
    heading = lines.index('## Quick start')
    commands = [(number, line.split('#')[0].strip()) for number, line in enumerate(lines[:25])
                if number > heading and line.startswith('bash ')]
    assert tuple(command for _, command in commands[:2]) == QUICK_START, commands


def test_readme_names_the_test_command_ci_runs():
    """CI's ``.ci/run`` calls ``bash tools/test.sh``, and the README's Tests section names that command."""
    with open(os.path.join(ROOT, '.ci', 'run'), encoding='utf-8') as file:
        ci = [line for line in file.read().splitlines() if not line.lstrip().startswith('#')]
    assert any(re.match(r'\s*bash tools/test\.sh\b', line) for line in ci), ci
    lines = _readme_lines()
    tests = '\n'.join(lines[lines.index('## Tests'):])
    assert 'bash tools/test.sh' in tests


def test_no_page_uses_the_dropped_command_form():
    """No docs page and not the README writes a command as ``python -m ghostsr_plugin.<command>``: every command is
    ``ghostsr <command>`` (or ``python -m ghostsr_plugin <command>``)."""
    offenders = []
    for path in _doc_pages():
        with open(path, encoding='utf-8') as file:
            for number, line in enumerate(file, 1):
                if DROPPED_FORM.search(line):
                    offenders.append(f'{os.path.relpath(path, ROOT)}:{number}: {line.strip()}')
    assert not offenders, '\n'.join(offenders)
