"""Benchmark sets in the EDSR "benchmark" layout (``<set>/HR/<name>.png``, ``<set>/LR_bicubic/X<s>/<name>x<s>.png``),
as ``../shared/data/benchmark`` holds Set5, Set14 and B100: the (name, HR, LR) pairs of a set, every layout error
naming the file or folder."""
import os

from ghostsr_plugin.utils.errors import UserInputError
from ghostsr_plugin.utils.images import is_image_name

__all__ = ['PROJECT_ROOT', 'DEFAULT_DATA', 'DEFAULT_BENCHMARK', 'set_pairs']

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA = os.path.normpath(os.path.join(PROJECT_ROOT, '..', 'shared', 'data'))  # the project's data folder
DEFAULT_BENCHMARK = os.path.join(DEFAULT_DATA, 'benchmark')


def set_pairs(data_root, name, scale):
    """[(image name, HR path, LR path)] of one benchmark set; a missing folder or LR image, or a stray file in HR/
    or in the LR folder, is an error naming it (hidden files are ignored). ``data_root`` is the benchmark root, or the
    data folder that holds it as ``benchmark/`` (what ``compress --data`` takes)."""
    set_dir = os.path.join(data_root, name)
    if not os.path.isdir(set_dir) and os.path.isdir(os.path.join(data_root, 'benchmark', name)):
        data_root, set_dir = os.path.join(data_root, 'benchmark'), os.path.join(data_root, 'benchmark', name)
    if not os.path.isdir(set_dir):
        sets = sorted(d for d in os.listdir(data_root) if os.path.isdir(os.path.join(data_root, d))) \
            if os.path.isdir(data_root) else []
        raise FileNotFoundError(f'set {name}: {set_dir} does not exist (sets in {data_root}: '
                                f'{", ".join(sets) or "none"})')
    hr_dir = os.path.join(set_dir, 'HR')
    lr_dir = os.path.join(set_dir, 'LR_bicubic', f'X{scale}')
    for folder in (hr_dir, lr_dir):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'{folder} does not exist (set {name}, scale {scale}; layout: <set>/HR/<name>.png, '
                                    f'<set>/LR_bicubic/X{scale}/<name>x{scale}.png)')
    pairs = []
    for file in _visible(hr_dir):
        hr_path = os.path.join(hr_dir, file)
        if not is_image_name(file) or not os.path.isfile(hr_path):
            raise UserInputError(f'{hr_path}: stray file in the HR folder of {name} (not an image); move it out')
        stem = os.path.splitext(file)[0]
        lr_path = os.path.join(lr_dir, f'{stem}x{scale}.png')
        if not os.path.isfile(lr_path):
            raise FileNotFoundError(f'{lr_path}: missing, the LR image of {hr_path}')
        pairs.append((stem, hr_path, lr_path))
    if not pairs:
        raise FileNotFoundError(f'{hr_dir} holds no images (set {name})')
    paired = {os.path.basename(lr_path) for _, _, lr_path in pairs}
    for file in _visible(lr_dir):
        if file not in paired:
            raise UserInputError(f'{os.path.join(lr_dir, file)}: stray file in the LR folder of {name} (no HR image '
                                 f'{file.removesuffix(f"x{scale}.png")}.* in {hr_dir}); move it out')
    return pairs


def _visible(folder):
    return sorted(f for f in os.listdir(folder) if not f.startswith('.'))
