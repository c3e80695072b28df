"""The package's import floors (docs/DESIGN.md, "Layout"), read from the source of every module, function-level
imports included: ``utils`` imports nothing else of the package, no library module imports the commands
(``cli``), and each sub-package imports only the packages beneath it in the table below. A new import that breaks
a floor fails here with the module and the import named."""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'ghostsr_plugin')

# sub-package -> the sub-packages of ghostsr_plugin it may import ('' = the package itself, for registration)
ALLOWED = {
    'utils': set(),
    'ops': {'utils', '_C', ''},
    'data': {'utils'},
    'archs': {'ops', 'compress', 'utils', ''},
    'compress': {'ops', 'archs', 'utils', ''},
    'models': {'ops', 'archs', 'compress', 'utils', ''},
    'measure': {'ops', 'archs', 'compress', 'data', 'deploy', 'utils', ''},
    'deploy': {'ops', 'archs', 'measure', 'utils', ''},
    'integrations': {'ops', 'archs', 'models', 'utils', ''},
    'pipeline': {'ops', 'archs', 'compress', 'models', 'data', 'measure', 'deploy', 'utils', ''},
    'cli': {'ops', 'archs', 'compress', 'models', 'data', 'measure', 'deploy', 'pipeline', 'utils', ''},
}


def package_imports():
    """[(module path, sub-package, imported sub-package)] for every import of ghostsr_plugin in the package."""
    found = []
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith('.py'):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, ROOT).split(os.sep)
            package = parts[0] if len(parts) > 1 else ''
            for node in ast.walk(ast.parse(open(path, encoding='utf-8').read(), path)):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module] if node.module != 'ghostsr_plugin' else \
                        [f'ghostsr_plugin.{alias.name}' for alias in node.names]
                else:
                    assert not isinstance(node, ast.ImportFrom), f'{path}: relative import (use absolute imports)'
                    continue
                for module in modules:
                    if module == 'ghostsr_plugin' or module.startswith('ghostsr_plugin.'):
                        target = module.split('.')[1] if '.' in module else ''
                        found.append((os.path.relpath(path, os.path.dirname(ROOT)), package, target))
    return found


def test_the_table_covers_every_sub_package():
    packages = {name for name in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, name, '__init__.py'))}
    assert packages == set(ALLOWED)


def test_utils_is_the_floor():
    """utils imports nothing else of the package."""
    wrong = [(path, target) for path, package, target in package_imports() if package == 'utils' and target != 'utils']
    assert not wrong, wrong


def test_the_library_never_imports_the_commands():
    wrong = [(path, target) for path, package, target in package_imports()
             if target == 'cli' and package != 'cli' and not path.endswith('__main__.py')]
    assert not wrong, wrong


@pytest.mark.parametrize('package', sorted(ALLOWED))
def test_each_package_imports_only_what_is_beneath_it(package):
    wrong = [(path, target) for path, pkg, target in package_imports()
             if pkg == package and target != package and target not in ALLOWED[package]]
    assert not wrong, f'{package} may import {sorted(ALLOWED[package])}; found {wrong}'


def test_no_command_module_shares_a_name_with_a_library_module():
    commands = {name[:-3] for name in os.listdir(os.path.join(ROOT, 'cli')) if name.endswith('.py')} - {'__init__'}
    library = {name[:-3] for folder, _, files in os.walk(ROOT) if os.path.basename(folder) != 'cli'
               for name in files if name.endswith('.py')}
    assert not commands & library, commands & library
