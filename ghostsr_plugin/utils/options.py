"""Up-front checks of a BasicSR option file, so a bad option fails at once with a message naming it."""
import argparse
import os

import cv2
import yaml

from basicsr.utils.options import ordered_yaml
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
MAX_IMAGES_TO_DECODE = 500  # test/val sets are decoded up front; larger (train) sets are only listed


def load_options(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f'option file not found: {path}')
    with open(path) as file:
        opt = yaml.load(file, Loader=ordered_yaml()[0])
    if not isinstance(opt, dict):
        raise ValueError(f'{path}: not a BasicSR option file (expected a YAML mapping)')
    return opt


def _allowed(registry):
    return ', '.join(sorted(registry._obj_map))


def check_registered(opt):
    model_type = opt.get('model_type', 'SRModel')
    if model_type not in MODEL_REGISTRY._obj_map:
        raise ValueError(f'model_type: "{model_type}" is not a registered model; allowed: {_allowed(MODEL_REGISTRY)}')
    for key, net_opt in opt.items():
        if key.startswith('network_'):
            net_type = (net_opt or {}).get('type')
            if net_type not in ARCH_REGISTRY._obj_map:
                raise ValueError(f'{key}: type "{net_type}" is not a registered architecture; allowed: '
                                 f'{_allowed(ARCH_REGISTRY)}')


def _check_image_folder(option, folder, decode):
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'{option}: folder {folder} does not exist. Expected a folder of images '
                                '(see README, "Data"; `python -m ghostsr_plugin.prepare_data` makes one)')
    images = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise FileNotFoundError(f'{option}: folder {folder} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
    if decode and len(images) <= MAX_IMAGES_TO_DECODE:
        for name in images:
            if cv2.imread(os.path.join(folder, name), cv2.IMREAD_UNCHANGED) is None:
                raise ValueError(f'{option}: image {os.path.join(folder, name)} cannot be read (corrupt or not an '
                                 'image)')


def check_datasets(opt):
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        dataset_type = dataset_opt.get('type')
        if dataset_type not in DATASET_REGISTRY._obj_map:
            raise ValueError(f'datasets.{phase}.type: "{dataset_type}" is not a registered dataset; allowed: '
                             f'{_allowed(DATASET_REGISTRY)}')
        backend = (dataset_opt.get('io_backend') or {}).get('type', 'disk')
        for key in ('dataroot_gt', 'dataroot_lq'):
            root = dataset_opt.get(key)
            if root is None:
                continue
            option = f'datasets.{phase}.{key}'
            if backend == 'lmdb':
                if not os.path.isfile(os.path.join(root, 'data.mdb')):
                    raise FileNotFoundError(f'{option}: {root} is not an LMDB folder (no data.mdb); make one with '
                                            '`python -m ghostsr_plugin.prepare_data --lmdb`')
            elif backend == 'disk':
                _check_image_folder(option, root, decode=phase != 'train')
            else:
                raise ValueError(f'datasets.{phase}.io_backend.type: "{backend}" is not supported; allowed: disk, lmdb')


def check_options(path):
    """Load the option file at ``path`` and check registrations and data folders. Returns the options."""
    opt = load_options(path)
    check_registered(opt)
    check_datasets(opt)
    return opt


def check_options_cli():
    """Check the ``-opt`` file given on the command line (BasicSR parses the rest itself)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', type=str)
    args, _ = parser.parse_known_args()
    if args.opt is None:
        raise SystemExit('usage: python -m ghostsr_plugin.train -opt <option file.yml> [--auto_resume] [--debug]')
    return check_options(args.opt)
