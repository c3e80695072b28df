"""Reading and writing checkpoints safely.

* :func:`atomic_write`: a temporary file beside the target, then a rename; nothing half-written stays on failure,
  the file gets the mode the user's umask gives a normal file, and a full disk says "no space left on <folder>".
* :func:`remove_temporaries`: what a killed save left behind (only this module's own temporary names).
* :func:`torch_load`: ``torch.load(weights_only=True)`` with one clear line per failure naming the file: refused
  content (a pickle that would import a function, e.g. ``os.system``: nothing in it runs), truncated or damaged
  files, files that are no PyTorch checkpoint. PyTorch's advice to retry with the weights-only check switched off
  is never passed on.
* :func:`load_checkpoint`, :func:`check_state_dict_fits`: a network's state dict, and the first key or shape that
  does not fit.
"""
import errno
import json
import os
import re
import tempfile
import warnings
import zipfile

import torch

__all__ = ['atomic_write_json', 'CheckpointError', 'NoSpaceLeftError', 'atomic_write', 'atomic_torch_save', 'default_file_mode',
           'remove_temporaries', 'torch_load', 'load_checkpoint', 'check_state_dict_fits']

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# mkstemp(prefix='.<name>.', suffix='.tmp'): 8 random characters from [a-z0-9_]
TEMPORARY_NAME = re.compile(r'^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$')


class CheckpointError(ValueError):
    """A file that cannot be loaded as a checkpoint; ``damaged`` is True for truncated / non-checkpoint files (a
    resume may fall back to an older state), False for a complete file whose content is refused."""

    def __init__(self, message, damaged):
        super().__init__(message)
        self.damaged = damaged


class NoSpaceLeftError(OSError):
    """ENOSPC / EDQUOT while writing: the message names the folder; the target file was left as it was."""

    def __str__(self):
        return self.strerror


def default_file_mode():
    """The mode ``open(path, 'w')`` gives a new file: ``0o666`` less the process umask."""
    try:
        with open('/proc/self/status') as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith('Umask:'))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)  # no /proc: read it by setting it, and put it back at once
        os.umask(umask)
    return 0o666 & ~umask


def _no_space(err):
    """True when ``err`` or an exception it was raised from is a full disk / quota (torch.save wraps it in a
    RuntimeError from its zip writer)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in NO_SPACE_ERRNOS:
            return True
        err = err.__cause__ or err.__context__
    return False


def atomic_write(path, write, mode='wb'):
    """Call ``write(file)`` on a temporary file in the same folder, then rename it to ``path``: a killed run never
    leaves half a file, and an earlier file at ``path`` stays intact until the new one is complete. The file gets
    :func:`default_file_mode` (mkstemp's 0600 would hide results from other users). A full disk raises
    :class:`NoSpaceLeftError` naming the folder; the temporary file is removed on any failure."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        os.fchmod(handle, default_file_mode())
        with os.fdopen(handle, mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if _no_space(err):
            raise NoSpaceLeftError(errno.ENOSPC, f'no space left on {folder} while writing '
                                   f'{os.path.basename(path)}; it was not written, the files already there are '
                                   'intact') from err
        raise


def atomic_write_json(obj, path):
    """Write ``obj`` as indented JSON, atomically (temporary file beside ``path``, then rename)."""
    atomic_write(path, lambda file: file.write(json.dumps(obj, indent=1) + '\n'), mode='w')


def atomic_torch_save(obj, path):
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda file: torch.save(obj, file))


def remove_temporaries(folder):
    """Remove the temporary files a killed :func:`atomic_write` left in ``folder`` (names ``.<name>.XXXXXXXX.tmp``
    only; nothing else is touched). Returns the removed paths."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if TEMPORARY_NAME.match(name) and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
            removed.append(path)
    return removed


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
