"""Writing files so that a killed or failed run never leaves half of one.

* :func:`atomic_write`: a temporary file beside the target, then a rename; nothing half-written stays on failure,
  the file gets the mode the user's umask gives a normal file, and a full disk says "no space left on <folder>".
* :func:`atomic_write_json`, :func:`atomic_torch_save`, :func:`write_bytes`: JSON, ``torch.save`` and raw bytes
  (encoded images, ONNX files, plots) through it.
* :func:`remove_temporaries`: what a killed save left behind (only this module's own temporary names).
"""
import errno
import json
import os
import re
import tempfile

import torch

__all__ = ['NoSpaceLeftError', 'NO_SPACE_ERRNOS', 'atomic_write', 'atomic_write_json', 'atomic_torch_save',
           'write_bytes', 'default_file_mode', 'remove_temporaries']

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# mkstemp(prefix='.<name>.', suffix='.tmp'): 8 random characters from [a-z0-9_]
TEMPORARY_NAME = re.compile(r'^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$')


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


def write_bytes(path, data):
    """Write ``data`` to ``path`` through :func:`atomic_write` (temporary name, then rename; the mode a plain
    ``open`` would give under the umask)."""
    atomic_write(path, lambda file: file.write(data))
