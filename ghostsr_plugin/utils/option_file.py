"""Reading a BasicSR option file: plain YAML only, BasicSR's ordered mappings, errors that name the file.

* :class:`SafeOrderedLoader`: YAML's safe loader (``yaml.CSafeLoader`` when PyYAML has libyaml, else
  ``yaml.SafeLoader``) whose mappings are ``OrderedDict``, as BasicSR's ``ordered_yaml()`` makes them. A tag that
  would construct a Python object (``!!python/object/apply:os.system``, ``!!python/name:...``) or any other tag
  plain YAML does not know is refused with :class:`OptionFileTagError` naming the file and the line; nothing is
  constructed. Plain YAML loads exactly as with BasicSR's full loader (mappings, lists, strings, numbers,
  ``!!float 1e-4``, booleans, null).
* :func:`load_options`: the plugin's one reader of an option file (:class:`UserInputError` naming the file, and the
  line where YAML says which).
* :func:`install_safe_ordered_yaml`: makes ``basicsr.utils.options.ordered_yaml()`` return (:class:`SafeOrderedLoader`,
  BasicSR's dumper), so BasicSR's own ``parse_options`` (``basicsr/train.py``, ``basicsr/test.py``) reads option
  files safely too. ``import ghostsr_plugin`` calls it; ``ghostsr_autoload`` imports ``ghostsr_plugin`` as soon as
  ``basicsr`` is imported.
"""
import functools
import os
from collections import OrderedDict

import yaml

import basicsr.utils.options as basicsr_options

from ghostsr_plugin.utils.errors import UserInputError

__all__ = ['SafeOrderedLoader', 'OptionFileTagError', 'load_options', 'install_safe_ordered_yaml']

PLAIN_YAML = 'option files may hold only plain YAML (mappings, lists, strings, numbers, booleans, null)'
_YAML_TAG = 'tag:yaml.org,2002:'


class OptionFileTagError(yaml.constructor.ConstructorError):
    """A tag plain YAML does not know (``!!python/...`` above all); ``problem`` says which, ``problem_mark`` where."""


def _short_tag(tag):
    return '!!' + tag[len(_YAML_TAG):] if tag.startswith(_YAML_TAG) else tag


def _refuse_tag(loader, node):
    tag = _short_tag(node.tag)
    if node.tag.startswith(_YAML_TAG + 'python/'):
        what = f'the tag {tag} would construct a Python object'
    else:
        what = f'the tag {tag} is not plain YAML'
    raise OptionFileTagError(None, None, f'{what}; {PLAIN_YAML}', node.start_mark)


def _ordered_mapping(loader, node):  # BasicSR's ordered_yaml() constructor
    return OrderedDict(loader.construct_pairs(node))


class SafeOrderedLoader(getattr(yaml, 'CSafeLoader', yaml.SafeLoader)):
    """Safe YAML loader with BasicSR's ordered mappings; unknown tags raise :class:`OptionFileTagError`."""


SafeOrderedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _ordered_mapping)
SafeOrderedLoader.add_constructor(None, _refuse_tag)  # every tag without a safe constructor, python/* included


def load_options(path):
    """The option file at ``path`` as BasicSR reads it (nested ``OrderedDict``), safely."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'option file not found: {path}')
    with open(path) as file:
        try:
            opt = yaml.load(file, Loader=SafeOrderedLoader)
        except OptionFileTagError as err:
            raise UserInputError(f'{path}, line {err.problem_mark.line + 1}: {err.problem}') from err
        except yaml.YAMLError as err:
            raise UserInputError(f'{path}: not valid YAML ({err})'.replace('\n', ' ')) from err
    if not isinstance(opt, dict):
        raise ValueError(f'{path}: not a BasicSR option file (expected a YAML mapping)')
    return opt


def install_safe_ordered_yaml():
    """Replace ``basicsr.utils.options.ordered_yaml`` (idempotent): it returns (:class:`SafeOrderedLoader`, BasicSR's
    dumper). BasicSR's ``parse_options`` looks it up when it runs, so its option files are read safely from then on;
    a refused tag is BasicSR's traceback ending in :class:`OptionFileTagError` (file, line, the tag), nothing run."""
    current = basicsr_options.ordered_yaml
    if getattr(current, 'ghostsr_safe', False):
        return
    basicsr_ordered_yaml = current

    @functools.wraps(basicsr_ordered_yaml)
    def ordered_yaml():
        return SafeOrderedLoader, basicsr_ordered_yaml()[1]

    ordered_yaml.ghostsr_safe = True
    ordered_yaml.__doc__ = ('BasicSR\'s ordered_yaml() with a safe loader (installed by ghostsr_plugin): returns '
                            '(ghostsr_plugin.utils.option_file.SafeOrderedLoader, BasicSR\'s dumper).')
    basicsr_options.ordered_yaml = ordered_yaml
