"""Writing files so that a killed or failed run never leaves half of one.

* :func:`atomic_write`: a temporary file beside the target, then a rename; nothing half-written stays on failure,
  the file gets the mode the user's umask gives a normal file, and a full disk says "no space left on <folder>";
  a folder that cannot be written (read-only file system, no permission) or made (a file in the way) is one
  PermissionError / NotADirectoryError naming it, never an OSError traceback.
* :func:`make_folder`: ``os.makedirs(folder, exist_ok=True)`` with those errors (what :func:`atomic_write` and
  commands that make an output folder first use).
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

__all__ = ['NoSpaceLeftError', 'NO_SPACE_ERRNOS', 'NOT_WRITABLE_ERRNOS', 'make_folder', 'atomic_write',
           'atomic_write_json', 'atomic_torch_save', 'write_bytes', 'default_file_mode', 'remove_temporaries']

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
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


def _not_writable(folder, err, what):
    """The one PermissionError of a folder that cannot be written: ``err`` (EACCES / EPERM / EROFS) explained."""
    why = 'read-only file system' if err.errno == errno.EROFS else 'permission denied'
    return PermissionError(f'{folder}: the folder is not writable ({why}); {what} was not written')


def _file_in_the_way(folder):
    """The nearest existing ancestor of ``folder`` (itself included) that is not a folder, or None."""
    path = os.path.abspath(folder)
    while True:
        if os.path.lexists(path) and not os.path.isdir(path):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def make_folder(folder, what=None):
    """``os.makedirs(folder, exist_ok=True)``, its failures as one error naming the folder: a file in the way is a
    NotADirectoryError naming that file, a read-only file system or a missing permission a PermissionError saying
    the folder is not writable, a full disk :class:`NoSpaceLeftError`. ``what`` (default: the folder) names what
    was to be written."""
    what = what or folder
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        blocker = _file_in_the_way(folder) or folder
        raise NotADirectoryError(f'{blocker}: exists and is not a folder, so {what} cannot be written under it') \
            from err
    except OSError as err:
        if err.errno in NOT_WRITABLE_ERRNOS:
            # the folder that could not be made: the deepest one missing
            missing = os.path.abspath(folder)
            while not os.path.isdir(os.path.dirname(missing)) and os.path.dirname(missing) != missing:
                missing = os.path.dirname(missing)
            raise _not_writable(os.path.dirname(missing), err, what) from err
        if err.errno in NO_SPACE_ERRNOS:
            raise NoSpaceLeftError(errno.ENOSPC, f'no space left on {os.path.dirname(os.path.abspath(folder))} '
                                   f'while making {folder}; {what} was not written') from err
        raise


def atomic_write(path, write, mode='wb'):
    """Call ``write(file)`` on a temporary file in the same folder, then rename it to ``path``: a killed run never
    leaves half a file, and an earlier file at ``path`` stays intact until the new one is complete. The file gets
    :func:`default_file_mode` (mkstemp's 0600 would hide results from other users). A full disk raises
    :class:`NoSpaceLeftError` naming the folder; a folder that is not writable (read-only file system, no
    permission) a PermissionError naming it; a file where a folder should be (``out.pth/x.pth``) a
    NotADirectoryError naming that file; ``path`` an existing folder an IsADirectoryError. The temporary file is
    removed on any failure."""
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f'{path}: is a folder; give a file name to write')
    make_folder(folder, path)
    try:
        handle, tmp = tempfile.mkstemp(prefix=f'.{name}.', suffix='.tmp', dir=folder)
    except OSError as err:
        if err.errno in NOT_WRITABLE_ERRNOS:
            raise _not_writable(folder, err, path) from err
        if err.errno in NO_SPACE_ERRNOS:
            raise NoSpaceLeftError(errno.ENOSPC, f'no space left on {folder} while writing {name}; it was not '
                                   'written, the files already there are intact') from err
        raise
    try:
        with os.fdopen(handle, mode) as file:
            os.fchmod(file.fileno(), default_file_mode())
            write(file)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.replace(tmp, path)
        except OSError as err:
            if err.errno in NOT_WRITABLE_ERRNOS:
                raise _not_writable(folder, err, path) from err
            raise
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if _no_space(err):
            raise NoSpaceLeftError(errno.ENOSPC, f'no space left on {folder} while writing '
                                   f'{name}; it was not written, the files already there are '
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
