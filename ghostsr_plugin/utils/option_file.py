"""Reading a BasicSR option file (YAML, BasicSR's ordered mappings) with errors that name the file."""
import os

import yaml

from basicsr.utils.options import ordered_yaml

from ghostsr_plugin.utils.errors import UserInputError

__all__ = ['load_options']


def load_options(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f'option file not found: {path}')
    with open(path) as file:
        try:
            opt = yaml.load(file, Loader=ordered_yaml()[0])
        except yaml.YAMLError as err:
            raise UserInputError(f'{path}: not valid YAML ({err})'.replace('\n', ' ')) from err
    if not isinstance(opt, dict):
        raise ValueError(f'{path}: not a BasicSR option file (expected a YAML mapping)')
    return opt
