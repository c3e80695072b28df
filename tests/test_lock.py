"""Issue 18 item 7: one run at a time in an experiment / results folder (ghostsr_plugin/pipeline/lock.py and its use
in ghostsr_plugin/pipeline/training.py).

Proves: the lock file ``<folder>.lock`` (beside the folder) holds this process's id while held and is gone after,
errors included, with a parent folder it made removed again; a lock of a dead process (or of a process id now
given to a later process, or holding no id) is taken over with a warning naming it; a lock of a live process, or
of another host, is refused with the folder and the process id, the lock left as it was; of runs racing for one
(stale) lock exactly one wins; under DDP only rank 0 locks; and end to end: `ghostsr train` / `ghostsr test` are
refused while a live process holds the lock (one line, exit code 2, the tree unchanged), hold the lock before
BasicSR makes or archives the folder (the archiving rename does not move it), take over a stale lock, and release
the lock when BasicSR fails.
"""
import multiprocessing
import os
import socket
import subprocess
import time

import pytest

import basicsr.test as basicsr_test
from ghostsr_plugin.pipeline.lock import FolderLock, FolderLockedError, lock_path, read_holder
from ghostsr_plugin.pipeline.training import run_lock
from test_hardening import Plant, run_in_process, tree


def dead_pid():
    """The id of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(['true'])
    proc.wait()
    return proc.pid


@pytest.fixture
def sleeper():
    """A live process (``sleep 60``), ended after the test."""
    proc = subprocess.Popen(['sleep', '60'])
    yield proc
    proc.kill()
    proc.wait()


def write_lock(folder, pid, **fields):
    path = lock_path(folder)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as file:
        file.write(f'{pid}\n' + ''.join(f'{key}: {value}\n' for key, value in fields.items()))
    return path


def test_lock_taken_and_released(tmp_path):
    """The lock file lies beside the folder with this process's id, host and command while held; it is removed on
    leaving, and so is the parent folder the lock had to make (still empty)."""
    folder = tmp_path / 'experiments' / 'run'
    with FolderLock(folder, 'ghostsr train') as lock:
        assert lock.path == str(tmp_path / 'experiments' / 'run.lock') and os.path.isfile(lock.path)
        holder = read_holder(lock.path)
        assert holder.pid == os.getpid() and holder.host == socket.gethostname()
        assert holder.command.startswith('ghostsr train') and holder.started is not None
        assert not folder.exists()  # the lock never makes the folder itself
    assert not os.path.exists(lock.path)
    assert not (tmp_path / 'experiments').exists()  # made for the lock, empty: removed
    assert os.listdir(tmp_path) == []


def test_lock_released_on_an_exception(tmp_path):
    """An exception inside the block removes the lock; a parent folder that existed before stays."""
    (tmp_path / 'experiments').mkdir()
    with pytest.raises(RuntimeError, match='boom'):
        with FolderLock(tmp_path / 'experiments' / 'run'):
            raise RuntimeError('boom')
    assert os.listdir(tmp_path / 'experiments') == []


def test_parent_kept_when_the_run_wrote_into_it(tmp_path):
    """A parent folder made for the lock stays when the run made its folder in it."""
    folder = tmp_path / 'experiments' / 'run'
    with FolderLock(folder):
        folder.mkdir()
    assert os.listdir(tmp_path / 'experiments') == ['run']


def test_stale_lock_taken_over(tmp_path, capsys):
    """A lock left by a process that has ended (killed with SIGKILL: nothing removed it) is taken over, with a
    warning naming the lock file and the old process id."""
    folder = tmp_path / 'experiments' / 'run'
    pid = dead_pid()
    path = write_lock(folder, pid, host=socket.gethostname())
    with FolderLock(folder):
        assert read_holder(path).pid == os.getpid()
    err = capsys.readouterr().err
    assert f'warning: {path}: stale lock of process {pid}, which is no longer running; taking it over' in err
    assert not os.path.exists(path)


def test_live_lock_refused(tmp_path, sleeper):
    """A lock of a live process is refused with one line naming the folder and that process id; the lock file is
    left as it was. Once that process has ended, the lock is stale and is taken over."""
    folder = tmp_path / 'experiments' / 'run'
    path = write_lock(folder, sleeper.pid, command='ghostsr train -opt other.yml')
    content = open(path).read()
    with pytest.raises(FolderLockedError) as refused:
        FolderLock(folder).acquire()
    message = str(refused.value)
    assert f'{folder} is in use by process {sleeper.pid} (ghostsr train -opt other.yml)' in message
    assert len(message.splitlines()) == 1 and open(path).read() == content
    sleeper.kill()
    sleeper.wait()
    with FolderLock(folder):
        assert read_holder(path).pid == os.getpid()


def test_parent_process_lock_refused(tmp_path):
    """A lock holding only a live process id (here this test's parent process) is refused."""
    folder = tmp_path / 'run'
    write_lock(folder, os.getppid())
    with pytest.raises(FolderLockedError, match=f'is in use by process {os.getppid()}'):
        FolderLock(folder).acquire()


def test_reused_process_id_is_stale(tmp_path, capsys):
    """A lock whose process id is alive but belongs to a process that started at another time (the system gave the
    id of a killed run to a later process) is stale."""
    folder = tmp_path / 'run'
    path = write_lock(folder, os.getppid(), host=socket.gethostname(), started=1)
    with FolderLock(folder):
        assert read_holder(path).pid == os.getpid()
    assert f'stale lock of process {os.getppid()}' in capsys.readouterr().err


def test_lock_without_a_process_id_taken_over(tmp_path, capsys):
    """An empty lock file (a run killed while writing it) is taken over with a warning."""
    folder = tmp_path / 'run'
    open(lock_path(folder), 'w').close()
    with FolderLock(folder):
        pass
    assert 'stale lock of no process (it holds no process id)' in capsys.readouterr().err


def test_lock_of_another_host_refused(tmp_path):
    """A lock written on another host (a shared file system) cannot be checked: refused, naming the host."""
    folder = tmp_path / 'run'
    write_lock(folder, dead_pid(), host='some-other-host')
    with pytest.raises(FolderLockedError, match='on host some-other-host'):
        FolderLock(folder).acquire()


def _race(folder, barrier, results):
    barrier.wait()
    try:
        with FolderLock(folder):
            results.put(('won', os.getpid()))
            time.sleep(1.0)
    except FolderLockedError as err:
        results.put(('refused', str(err)))


def test_racing_runs_one_wins(tmp_path):
    """Four processes starting at once on a folder with a stale lock: exactly one takes it over, the others are
    refused naming the winner's process id (the flock on the parent folder serialises take-over and creation)."""
    folder = tmp_path / 'experiments' / 'run'
    write_lock(folder, dead_pid())
    context = multiprocessing.get_context('fork')  # the test process's imports, no interpreter start per process
    barrier, results = context.Barrier(4), context.Queue()
    procs = [context.Process(target=_race, args=(str(folder), barrier, results)) for _ in range(4)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    winners = [value for kind, value in outcomes if kind == 'won']
    assert len(winners) == 1, outcomes
    assert all(f'in use by process {winners[0]}' in value for kind, value in outcomes if kind == 'refused'), outcomes
    assert not os.path.exists(lock_path(folder))


def test_only_rank_0_locks(tmp_path):
    """Under DDP the other ranks take no lock (rank 0 alone makes and renames the folders)."""
    with run_lock({'rank': 1}, tmp_path / 'run', 'ghostsr train'):
        assert os.listdir(tmp_path) == []
    with run_lock({'rank': 0}, tmp_path / 'run', 'ghostsr train'):
        assert os.listdir(tmp_path) == ['run.lock']


# ----------------------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize('command', ['train', 'test'])
def test_run_refused_while_another_holds_the_lock(command, tiny_data, tmp_path, monkeypatch, capsys, sleeper):
    """Before: a second run with the same name renamed the first one's folder to <name>_archived_<time> mid-run and
    both wrote into one new folder. Now: refused with one line naming the folder and the live process id, exit code
    2, nothing changed (the existing folder, its lock, no new folder)."""
    plant = Plant(tmp_path, tiny_data)
    if command == 'train':
        opt_path, folder = plant.train_opt(), tmp_path / 'experiments' / 'exp'
    else:
        opt_path, folder = plant.test_opt(pretrain=True), tmp_path / 'results' / 'tst'
    (folder / 'models').mkdir(parents=True)
    (folder / f'{command}_1.log').write_text('the running one')
    write_lock(folder, sleeper.pid, command=f'ghostsr {command}')
    before = tree(tmp_path)
    code, _ = run_in_process(command, ['-opt', opt_path], monkeypatch, tmp_path)
    captured = capsys.readouterr()
    assert code == 2
    shown = os.path.relpath(folder, tmp_path)  # paths under the current folder are shown relative to it
    assert captured.err == (f'ghostsr {command}: error: {shown} is in use by process {sleeper.pid} (ghostsr '
                            f'{command}): another run with this name is writing it (lock {shown}.lock); wait for it '
                            'to end or use another name (if no run is using it, remove the lock file)\n')
    assert tree(tmp_path) == before
    assert 'Disable distributed' not in captured.out  # no option dump


def test_test_holds_the_lock_while_basicsr_archives(tiny_data, tmp_path, monkeypatch, capsys):
    """`ghostsr test` over an existing results/<name> with a stale lock: the lock is taken over (warning) and held
    by this process when BasicSR archives the folder, still beside the new folder afterwards, and removed at the
    end; the run's results are written."""
    plant = Plant(tmp_path, tiny_data)
    opt_path = plant.test_opt(pretrain=True)
    folder = tmp_path / 'results' / 'tst'
    folder.mkdir(parents=True)
    path = write_lock(folder, dead_pid())
    seen = []
    make_exp_dirs = basicsr_test.make_exp_dirs

    def watched(opt):
        seen.append(read_holder(path).pid)
        make_exp_dirs(opt)
        seen.append(read_holder(path).pid)

    monkeypatch.setattr(basicsr_test, 'make_exp_dirs', watched)
    code, _ = run_in_process('test', ['-opt', opt_path], monkeypatch, tmp_path)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert seen == [os.getpid(), os.getpid()]
    assert 'warning: results/tst.lock: stale lock of process' in captured.err
    assert not os.path.exists(path)
    names = sorted(os.listdir(tmp_path / 'results'))
    assert names[0] == 'tst' and names[1].startswith('tst_archived_') and len(names) == 2


def test_lock_released_when_basicsr_fails(tiny_data, tmp_path, monkeypatch):
    """An exception inside BasicSR's pipeline (after the folder was made) still removes the lock."""
    plant = Plant(tmp_path, tiny_data)
    opt_path = plant.test_opt(pretrain=True)

    def broken(opt):
        raise RuntimeError('model construction failed')

    monkeypatch.setattr(basicsr_test, 'build_model', broken)
    with pytest.raises(RuntimeError, match='model construction failed'):
        run_in_process('test', ['-opt', opt_path], monkeypatch, tmp_path)
    assert os.listdir(tmp_path / 'results') == ['tst']
