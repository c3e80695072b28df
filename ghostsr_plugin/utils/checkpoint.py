"""Reading checkpoints safely.

* :func:`torch_load`: ``torch.load(weights_only=True)`` with one clear line per failure naming the file: refused
  content (a pickle that would import a function, e.g. ``os.system``: nothing in it runs), truncated or damaged
  files, files that are no PyTorch checkpoint. PyTorch's advice to retry with the weights-only check switched off
  is never passed on.
* :func:`load_checkpoint`, :func:`check_state_dict_fits`: a network's state dict, and the first key or shape that
  does not fit.
"""
import os
import re
import warnings
import zipfile

import torch

__all__ = ['CheckpointError', 'torch_load', 'load_checkpoint', 'check_state_dict_fits']


class CheckpointError(ValueError):
    """A file that cannot be loaded as a checkpoint; ``damaged`` is True for truncated / non-checkpoint files (a
    resume may fall back to an older state), False for a complete file whose content is refused."""

    def __init__(self, message, damaged):
        super().__init__(message)
        self.damaged = damaged


def _refused_global(message):
    """The global a weights-only unpickler refused (``posix.system``, ...), or None."""
    match = re.search(r'GLOBAL ([\w.]+)', message)
    return match.group(1) if match else None


def _looks_like_torch_file(path):
    """Whether ``path`` starts as torch.save writes: a zip archive (``PK``) or a legacy pickle (protocol opcode)."""
    with open(path, 'rb') as f:
        head = f.read(2)
    return head == b'PK' or head[:1] == b'\x80'


def torch_load(path, what='checkpoint', map_location='cpu', mmap=False):
    """``torch.load(path, weights_only=True)``; failures become one line naming ``path``.

    Raises FileNotFoundError for a missing file, :class:`CheckpointError` otherwise (``damaged`` says whether the
    file is truncated / not a checkpoint, or complete but refused). ``mmap`` maps zip-format files instead of
    reading them (shape checks without reading the tensors).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning: the error below says it all
            warnings.filterwarnings('ignore', message='Detected pickle protocol')
            return torch.load(path, map_location=map_location, weights_only=True,
                              mmap=mmap and zipfile.is_zipfile(path))
    except Exception as err:  # noqa: BLE001 - every failure is reported with the path
        message = str(err)
        size = os.path.getsize(path)
        refused = _refused_global(message)
        if refused:
            raise CheckpointError(
                f'{path} was not loaded: it refers to {refused}, which is not a tensor, number, string or plain '
                f'container; a {what} holds only those (it was read with weights_only=True, nothing in it ran)',
                damaged=False) from err
        if not _looks_like_torch_file(path):
            raise CheckpointError(f'{path} is not a PyTorch {what} ({size} bytes): neither the zip archive '
                                  'torch.save writes nor a pickle of tensors', damaged=True) from err
        reason = message.split('. ')[0].strip() or type(err).__name__
        raise CheckpointError(f'{path} is truncated or damaged ({size} bytes; reading it failed: {reason}); it is '
                              f'not a complete {what}', damaged=True) from err


def load_checkpoint(path, param_key='params', mmap=False):
    """State dict from a BasicSR checkpoint (``params``/``params_ema`` key) or a bare state dict.

    ``param_key`` None means the file is a bare state dict. A missing ``params_ema`` falls back to ``params``
    as BasicSR does. Keys starting with ``module.`` lose that prefix. Loaded by :func:`torch_load`.
    """
    obj = torch_load(path, 'checkpoint', mmap=mmap)
    if not isinstance(obj, dict):
        raise ValueError(f'{path}: expected a state dict or a dict with a "params" key, got {type(obj).__name__}')
    if param_key is not None and param_key in obj:
        obj = obj[param_key]
    elif param_key == 'params_ema' and 'params' in obj:
        obj = obj['params']
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KeyError(f'{path}: no "{param_key}" in the checkpoint; its keys are {", ".join(map(str, obj))}')
    if not isinstance(obj, dict):
        raise ValueError(f'{path}: "{param_key}" holds a {type(obj).__name__}, not a state dict')
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
