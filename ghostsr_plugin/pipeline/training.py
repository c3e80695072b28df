"""Training and testing through BasicSR's own pipelines (``train_pipeline`` / ``test_pipeline``), the plugin
registered, writing ``experiments/``, ``tb_logger/`` and ``results/`` under the current folder.

Differences from ``python basicsr/train.py`` / ``test.py``:

* the options are checked before BasicSR makes, renames (``<name>_archived_<time>``) or writes anything
  (:mod:`ghostsr_plugin.pipeline.options`: networks built, GhostSRModel blocks, data, every test image, every
  checkpoint the run reads loaded with ``weights_only=True`` and fitted); a rejected run leaves the file system as
  it was, and an error is one line ``ghostsr train: error: ...`` (exit code 2) instead of a traceback after the
  option dump (``GHOSTSR_DEBUG=1``, or BasicSR's ``--debug`` mode, shows the traceback);
* one run at a time in a folder: once the options pass, the run locks ``experiments/<name>`` (``test``:
  ``results/<name>``) with ``<folder>.lock`` beside it (:mod:`ghostsr_plugin.pipeline.lock`; rank 0 under DDP),
  before BasicSR makes, renames or reads anything there; a second run with the same name is refused with one line
  naming the folder and the running process id, and changes nothing; the lock is removed when the run ends, errors
  included, and a lock left by a killed run is taken over with a warning;
* resume states are read with ``weights_only=True``; ``--auto_resume`` skips a damaged newest state (with a warning
  naming it) and resumes on CPU too (:mod:`ghostsr_plugin.pipeline.resume`);
* at the start of an experiment, temporary files that a killed save left in its ``models/`` and
  ``training_states/`` are removed (only the names ``.<file>.XXXXXXXX.tmp`` the plugin's atomic writes use);
* a training run reaches ``total_iter``: BasicSR counts ceil(images / batch) iterations per epoch but its loader
  drops the last partial batch, so a run could stop early (1926 of 2000 iterations of a 2000-iteration recipe);
  the epoch count is taken from the loader's real length instead;
* a training set's loader keeps its worker processes from one epoch to the next (``persistent_workers: true``
  unless the option file sets it; :func:`keep_workers`): BasicSR's default forks them again every epoch, and each
  fork made the training process copy the memory it writes next (measured: GhostCARN_M x2, batch 16 of 48² LR
  patches, 1 worker, 17 batches an epoch, a 2-core EPYC: 0.80 s an iteration forked every epoch, 0.68–0.69 kept);
* ``--launcher pytorch`` works on a machine without a GPU too (processes joined with gloo, one per CPU share;
  BasicSR's own start-up divides by the number of GPUs);
* outputs go under the current folder rather than BasicSR's install folder, and glibc's malloc keeps tensors in the
  heap (:mod:`ghostsr_plugin.utils.malloc`; ~27 % faster CPU training steps on a 2-core CPU).
"""
import contextlib
import math
import os
import sys

import ghostsr_plugin  # noqa: F401  (registers archs and models; makes basicsr importable)
from basicsr import test as basicsr_test
from basicsr import train as basicsr_train
from basicsr.utils import get_root_logger
from basicsr.utils import options as basicsr_options
from basicsr.utils.dist_util import init_dist
from ghostsr_plugin.pipeline.lock import FolderLock
from ghostsr_plugin.pipeline.options import check_checkpoints, check_options_cli, parse_and_check
from ghostsr_plugin.pipeline.resume import load_resume_state
from ghostsr_plugin.utils.atomic import remove_temporaries
from ghostsr_plugin.utils.malloc import tune_malloc

__all__ = ['train', 'test', 'epochs_for', 'keep_workers', 'run_lock']


def run_lock(opt, folder, command):
    """The lock of the run's output ``folder`` (:class:`FolderLock`, ``<folder>.lock``) on rank 0; a context that
    does nothing on the other ranks of a distributed run (rank 0 alone makes and renames the folders)."""
    return FolderLock(folder, command) if opt.get('rank', 0) == 0 else contextlib.nullcontext()


def train(argv, root_path=None, command='ghostsr train'):
    """Run BasicSR's ``train_pipeline`` on the command line ``argv`` (``-opt FILE [--auto_resume] [--launcher ...]``,
    as ``basicsr/train.py`` takes it; BasicSR reads ``sys.argv``, which is set from it) with the checks, resume and
    clean-up above; outputs under ``root_path`` (default: the current folder). ``command`` names the errors."""
    sys.argv[:] = [command, *argv]
    check_options_cli(command, is_train=True)
    parse_options, load_state, checked = basicsr_train.parse_options, basicsr_train.load_resume_state, {}
    create_loaders = basicsr_train.create_train_val_dataloader

    def checked_parse_options(root_path, is_train=True):  # BasicSR's, then every check that reads no experiment file
        opt, args, checked['nets'], checked['printed'] = parse_and_check(parse_options, root_path, is_train)
        locks.enter_context(run_lock(opt, opt['path']['experiments_root'], command))  # before anything reads it
        return opt, args

    def prepare_run(opt):  # in place of BasicSR's load_resume_state, which runs before any folder is made
        resume_state = load_resume_state(opt)
        check_checkpoints(opt, checked['nets'], resuming=resume_state is not None)
        print(checked['printed'], end='', flush=True)
        if opt['rank'] == 0:
            for folder in (opt['path']['models'], opt['path']['training_states']):
                for path in remove_temporaries(folder):
                    print(f'removed {path}, left by a save that was killed', flush=True)
        return resume_state

    def loaders_reaching_total_iter(opt, logger):
        keep_workers(opt, logger)
        train_loader, train_sampler, val_loaders, total_epochs, total_iters = create_loaders(opt, logger)
        if train_loader is not None:
            total_epochs = epochs_for(total_iters, len(train_loader), total_epochs)
        return train_loader, train_sampler, val_loaders, total_epochs, total_iters

    tune_malloc()  # far fewer page faults per CPU training step (see ghostsr_plugin/utils/malloc.py)
    with contextlib.ExitStack() as locks:  # the experiment's lock, released however the run ends
        basicsr_train.parse_options, basicsr_train.load_resume_state = checked_parse_options, prepare_run
        basicsr_train.create_train_val_dataloader = loaders_reaching_total_iter
        basicsr_options.init_dist = _init_dist_anywhere
        try:
            basicsr_train.train_pipeline(root_path or os.getcwd())
        finally:
            basicsr_train.parse_options, basicsr_train.load_resume_state = parse_options, load_state
            basicsr_train.create_train_val_dataloader = create_loaders
            basicsr_options.init_dist = init_dist


def _init_dist_anywhere(launcher, backend='nccl', **kwargs):
    """BasicSR's ``init_dist``, and on a machine without CUDA the process group of ``torch.distributed.run``'s
    environment joined with gloo (BasicSR's would pick a GPU by ``rank % 0``)."""
    import torch
    if launcher == 'pytorch' and not torch.cuda.is_available():
        torch.distributed.init_process_group(backend='gloo')
        return None
    return init_dist(launcher, backend, **kwargs)


def keep_workers(opt, logger=None):
    """``persistent_workers: true`` for every training set of ``opt`` with worker processes
    (``num_worker_per_gpu`` > 0) whose options do not set it; returns the sets changed."""
    changed = [phase for phase, dataset in opt.get('datasets', {}).items()
               if phase.split('_')[0] == 'train' and (dataset.get('num_worker_per_gpu') or 0) > 0
               and 'persistent_workers' not in dataset]
    for phase in changed:
        opt['datasets'][phase]['persistent_workers'] = True
        if logger is not None:
            logger.info(f'datasets.{phase}: the loader keeps its worker processes across epochs '
                        '(persistent_workers: true; set it to false to fork them every epoch as BasicSR does)')
    return changed


def epochs_for(total_iters, batches_per_epoch, basicsr_epochs):
    """Epochs for BasicSR's loop (``range(start_epoch, total_epochs + 1)``) to reach ``total_iters`` iterations with
    ``batches_per_epoch`` batches an epoch (the loader's length, after ``drop_last``); BasicSR's own count
    ``basicsr_epochs`` when it already suffices."""
    needed = math.ceil(total_iters / max(batches_per_epoch, 1))
    if needed > basicsr_epochs:
        get_root_logger().info(f'The train loader yields {batches_per_epoch} batches an epoch (the last partial '
                               f'batch dropped): {needed} epochs, not {basicsr_epochs}, reach {total_iters} iterations.')
    return max(needed, basicsr_epochs)


def test(argv, root_path=None, command='ghostsr test'):
    """Run BasicSR's ``test_pipeline`` on the command line ``argv`` (``-opt FILE``, as ``basicsr/test.py`` takes it)
    after the up-front checks; results under ``root_path`` (default: the current folder)."""
    sys.argv[:] = [command, *argv]
    check_options_cli(command, is_train=False)
    parse_options = basicsr_test.parse_options

    def checked_parse_options(root_path, is_train=False):  # BasicSR's, then every check, before results/ is made
        opt, args, nets, printed = parse_and_check(parse_options, root_path, is_train)
        locks.enter_context(run_lock(opt, opt['path']['results_root'], command))
        check_checkpoints(opt, nets)
        print(printed, end='', flush=True)
        return opt, args

    tune_malloc()  # see ghostsr_plugin/utils/malloc.py
    with contextlib.ExitStack() as locks:  # the results folder's lock, released however the run ends
        basicsr_test.parse_options = checked_parse_options
        try:
            basicsr_test.test_pipeline(root_path or os.getcwd())
        finally:
            basicsr_test.parse_options = parse_options
