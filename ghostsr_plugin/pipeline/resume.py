"""Find and load the training state to resume from (``--auto_resume`` or ``path: resume_state``), safely, also on CPU.

Same behaviour as BasicSR 1.4.2's ``basicsr.train.load_resume_state``, except that:

* states are read with ``weights_only=True`` (:func:`ghostsr_plugin.utils.checkpoint.torch_load`): a state whose
  pickle would run code is refused with its path, and nothing in it runs. BasicSR's and GhostSRModel's states hold
  only ints, floats, strings, lists, dicts, ``collections.Counter`` (MultiStepRestartLR) and tensors, which
  PyTorch's weights-only unpickler accepts; no type needed to be allow-listed;
* ``--auto_resume`` skips a truncated or damaged newest state with a warning naming it and resumes from the newest
  complete one (an experiment whose states are all damaged is an error, never a silent restart at iteration 0);
  temporary files of a killed save (``.<iter>.state.XXXXXXXX.tmp``) are never picked;
* the state goes to the GPU when one is used, else to the CPU (BasicSR maps it to ``torch.cuda.current_device()``).
"""
import os
import sys

import torch

from basicsr.utils import check_resume, scandir
from ghostsr_plugin.utils.checkpoint import CheckpointError, torch_load

__all__ = ['STATE_KEYS', 'state_paths', 'read_state', 'load_resume_state']

STATE_KEYS = ('epoch', 'iter', 'optimizers', 'schedulers')  # what BasicSR's resume_training reads


def state_paths(state_dir):
    """Paths of the ``<iter>.state`` files in ``state_dir``, newest (highest iteration) first."""
    if not os.path.isdir(state_dir):
        return []
    states = [name for name in scandir(state_dir, suffix='.state', recursive=False) if name[:-6].isdigit()]
    return [os.path.join(state_dir, name) for name in sorted(states, key=lambda name: -int(name[:-6]))]


def read_state(path, map_location='cpu'):
    """A training state (weights only), checked to hold what BasicSR's resume reads."""
    state = torch_load(path, 'training state', map_location=map_location)
    missing = [key for key in STATE_KEYS if key not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if missing:
        raise CheckpointError(f'{path} is not a BasicSR training state: it lacks {", ".join(missing)}', damaged=False)
    return state


def _newest_readable(state_dir, map_location):
    """(path, state) of the newest state that reads, skipping damaged ones with a warning; (None, None) when there
    is none. A refused state (complete, but not plain data) is an error."""
    damaged = []
    for path in state_paths(state_dir):
        try:
            return path, read_state(path, map_location)
        except CheckpointError as err:
            if not err.damaged:
                raise
            damaged.append(path)
            print(f'warning: --auto_resume: {err}; trying the next older state', file=sys.stderr, flush=True)
    if damaged:
        raise ValueError(f'--auto_resume: no training state in {state_dir} can be read (damaged: '
                         f'{", ".join(os.path.basename(p) for p in damaged)}); remove them to start the experiment '
                         'again, or name one with path: resume_state')
    return None, None


def load_resume_state(opt):
    """BasicSR's ``load_resume_state`` (same arguments, same effect on ``opt``), see the module docstring."""
    if opt['num_gpu'] > 0 and torch.cuda.is_available():
        device_id = torch.cuda.current_device()
        map_location = lambda storage, loc: storage.cuda(device_id)  # noqa: E731
    else:
        map_location = 'cpu'
    if opt['auto_resume']:
        state_dir = opt['path'].get('training_states') or os.path.join('experiments', opt['name'], 'training_states')
        path, state = _newest_readable(state_dir, map_location)
        if path is not None:
            opt['path']['resume_state'] = path
    else:
        path = opt['path'].get('resume_state')
        state = read_state(path, map_location) if path else None
    if state is not None:
        check_resume(opt, state['iter'])
    return state
