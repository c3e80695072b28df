"""One run at a time in an experiment (or results) folder: a lock file beside the folder, ``<folder>.lock``.

    with FolderLock('experiments/my_run', 'ghostsr train'):
        ...   # BasicSR makes, renames (<name>_archived_<time>) and writes experiments/my_run

Without it, a second run with the same name renames the first one's folder mid-run (BasicSR archives an existing
folder) and both then write into one new folder. The lock file lies *beside* the folder, so that BasicSR's
archiving rename never moves it, and holds the process id, the host, the process start time and the command.

* Taken atomically: ``O_CREAT | O_EXCL`` while holding ``flock`` on the parent folder, which every lock operation
  (take, take over, release) holds, so two runs starting at once cannot both take it or both take over one stale
  lock; the kernel drops that ``flock`` when a process dies, even by SIGKILL.
* Held by a live process: refused with one line naming the folder and the process id (:class:`FolderLockedError`,
  a :class:`UserInputError`: exit code 2); nothing is changed.
* Stale (its process is gone, e.g. killed with SIGKILL, or its id now belongs to a later process): taken over with a
  warning naming the old process id. A lock written on another host cannot be checked and is refused.
* Released (the file removed) on leaving the ``with`` block, errors and exceptions included; a parent folder that
  taking the lock made (``experiments/``) is removed again when it is still empty, so that a run refused after
  taking the lock leaves the file system as it was.
"""
import errno
import fcntl
import os
import socket
import sys
from collections import namedtuple

from ghostsr_plugin.utils.errors import UserInputError

__all__ = ['FolderLock', 'FolderLockedError', 'Holder', 'lock_path', 'read_holder', 'holder_alive']

Holder = namedtuple('Holder', 'pid host started command')  # host, started (clock ticks since boot), command: or None


def _flock(fd, operation):
    """``flock`` on a folder's fd; a file system that cannot lock folders (some network ones) leaves the lock to
    ``O_EXCL`` alone (two runs could then both take over one stale lock at the same instant)."""
    try:
        fcntl.flock(fd, operation)
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EBADF, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise


class FolderLockedError(UserInputError):
    """The folder is in use by a live process (named in the message)."""


def lock_path(folder):
    """The lock file of ``folder``: ``<folder>.lock``, beside it."""
    return os.path.normpath(os.path.abspath(folder)) + '.lock'


def _start_time(pid):
    """The start time of process ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22), or None."""
    try:
        with open(f'/proc/{pid}/stat') as file:
            fields = file.read().rsplit(')', 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _is_zombie(pid):
    try:
        with open(f'/proc/{pid}/stat') as file:
            return file.read().rsplit(')', 1)[1].split()[0] == 'Z'
    except (OSError, IndexError):
        return False


def read_holder(path):
    """The :class:`Holder` written in the lock file at ``path``; None when the file holds no process id (a
    hand-made or truncated file). Missing file: FileNotFoundError."""
    with open(path, errors='replace') as file:
        lines = file.read().splitlines()
    try:
        pid = int(lines[0].strip())
    except (IndexError, ValueError):
        return None
    fields = dict(line.split(': ', 1) for line in lines[1:] if ': ' in line)
    started = fields.get('started')
    return Holder(pid, fields.get('host'), int(started) if started and started.isdigit() else None,
                  fields.get('command'))


def holder_alive(holder):
    """True when ``holder``'s process still runs (on this host; a holder on another host counts as alive, since it
    cannot be checked): its id exists, is not a zombie, and, where the lock recorded it, started when the lock's
    process did (an id the system gave to a later process is not the holder)."""
    if holder.host and holder.host != socket.gethostname():
        return True
    if holder.pid <= 0:
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    if _is_zombie(holder.pid):
        return False
    if holder.started is not None:
        started = _start_time(holder.pid)
        if started is not None and started != holder.started:
            return False
    return True


class FolderLock:
    """The lock of one folder (``<folder>.lock``) as a context manager; ``command`` is written into the lock file
    and names the other run in a refusal. :meth:`acquire` / :meth:`release` for use without ``with``."""

    def __init__(self, folder, command='ghostsr'):
        self.folder = os.path.normpath(os.path.abspath(folder))
        self.path = lock_path(folder)
        self.command = command
        self.held = False
        self._made_parent = False

    # ---------------------------------------------------------------------------------------------- internals
    def _parent_lock(self):
        """An fd of the parent folder, flock-ed (made, with its parents, when missing: remembered for release)."""
        parent = os.path.dirname(self.path)
        while True:
            if not os.path.isdir(parent):
                try:
                    os.makedirs(parent)
                    self._made_parent = True
                except FileExistsError:
                    pass
            try:
                fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:  # removed by a run releasing its lock just now
                continue
            _flock(fd, fcntl.LOCK_EX)
            if os.path.isdir(parent) and os.path.samestat(os.fstat(fd), os.stat(parent)):
                return fd
            os.close(fd)  # the folder was removed (and maybe made again) while we waited: lock the current one

    def _content(self):
        lines = [str(os.getpid()), f'host: {socket.gethostname()}']
        started = _start_time(os.getpid())
        if started is not None:
            lines.append(f'started: {started}')
        lines.append(f'command: {" ".join([self.command] + sys.argv[1:])}'.replace('\n', ' '))
        return '\n'.join(lines) + '\n'

    def _create(self):
        """Create the lock file (``O_EXCL``: FileExistsError when there is one) with this process's id; a write that
        fails (a full disk) leaves no lock file."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                os.write(fd, self._content().encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            os.unlink(self.path)
            raise

    def _shown(self, path):
        relative = os.path.relpath(path)
        return path if relative.startswith('..') else relative

    # ------------------------------------------------------------------------------------------------- public
    def acquire(self):
        """Take the lock (a stale one taken over with a warning on stderr); a live holder: :class:`FolderLockedError`
        naming the folder and its process id, nothing changed. Returns self."""
        if self.held:
            return self
        fd = self._parent_lock()
        try:
            try:
                self._create()
            except FileExistsError:
                holder = read_holder(self.path)
                if holder is not None and holder.pid == os.getpid() and holder_alive(holder):
                    raise FolderLockedError(f'{self._shown(self.folder)} is already locked by this process '
                                            f'({self._shown(self.path)})')
                if holder is not None and holder_alive(holder):
                    other = f' on host {holder.host}' if holder.host and holder.host != socket.gethostname() else ''
                    command = f' ({holder.command})' if holder.command else ''
                    raise FolderLockedError(
                        f'{self._shown(self.folder)} is in use by process {holder.pid}{other}{command}: another run '
                        f'with this name is writing it (lock {self._shown(self.path)}); wait for it to end or use '
                        'another name (if no run is using it, remove the lock file)')
                what = f'process {holder.pid}, which is no longer running' if holder is not None else \
                    'no process (it holds no process id)'
                print(f'warning: {self._shown(self.path)}: stale lock of {what}; taking it over (a run with this name '
                      'was killed before it could remove its lock)', file=sys.stderr, flush=True)
                os.unlink(self.path)
                self._create()
            self.held = True
        except BaseException:
            if self._made_parent:
                self._remove_parent_if_empty()
            raise
        finally:
            _flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return self

    def release(self):
        """Remove the lock file if it is still this process's; then the parent folder if taking the lock made it and
        it is empty. Idempotent."""
        if not self.held:
            return
        fd = self._parent_lock()
        try:
            try:
                holder = read_holder(self.path)
                if holder is not None and holder.pid == os.getpid():
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.held = False
            if self._made_parent:
                self._remove_parent_if_empty()
        finally:
            _flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _remove_parent_if_empty(self):
        try:
            os.rmdir(os.path.dirname(self.path))
        except OSError as err:  # not empty: the run (or another one) wrote into it; keep it
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.EBUSY):
                raise
        self._made_parent = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
