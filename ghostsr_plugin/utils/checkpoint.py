"""Reading and writing checkpoints safely: atomic saves, clear errors for checkpoints that do not fit."""
import os
import tempfile

import torch

__all__ = ['atomic_write', 'atomic_torch_save', 'load_checkpoint', 'check_state_dict_fits']


def atomic_write(path, write, mode='wb'):
    """Call ``write(file)`` on a temporary file in the same folder, then rename it to ``path``: a killed run never
    leaves half a file, and an earlier file at ``path`` stays intact until the new one is complete."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(handle, mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj, path):
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda file: torch.save(obj, file))


def load_checkpoint(path, param_key='params'):
    """State dict from a BasicSR checkpoint (``params``/``params_ema`` key) or a bare state dict.

    ``param_key`` None means the file is a bare state dict. A missing ``params_ema`` falls back to ``params``
    as BasicSR does. Keys starting with ``module.`` lose that prefix.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - reported with the path
        raise ValueError(f'{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})') from err
    if not isinstance(obj, dict):
        raise ValueError(f'{path}: expected a state dict or a dict with a "params" key, got {type(obj).__name__}')
    if param_key is not None and param_key in obj:
        obj = obj[param_key]
    elif param_key == 'params_ema' and 'params' in obj:
        obj = obj['params']
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KeyError(f'{path}: no "{param_key}" in the checkpoint; its keys are {", ".join(map(str, obj))}')
    return {k.removeprefix('module.'): v for k, v in obj.items()}


def check_state_dict_fits(net, state_dict, source='checkpoint'):
    """Raise a ValueError naming the first missing/unexpected key or the first shape that does not fit ``net``."""
    expected = net.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            raise ValueError(f'{source} does not fit {type(net).__name__}: key "{key}" is missing '
                             f'({len(set(expected) - set(state_dict))} missing in all)')
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise ValueError(f'{source} does not fit {type(net).__name__}: "{key}" has shape '
                             f'{tuple(state_dict[key].shape)}, the network needs {tuple(tensor.shape)}')
    unexpected = [k for k in state_dict if k not in expected]
    if unexpected:
        raise ValueError(f'{source} does not fit {type(net).__name__}: unexpected key "{unexpected[0]}" '
                         f'({len(unexpected)} unexpected in all)')
