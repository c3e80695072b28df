"""Find and load the training state to resume from (``--auto_resume`` or ``path: resume_state``), also on CPU.

Same behaviour as BasicSR 1.4.2's ``basicsr.train.load_resume_state``, which maps the state to
``torch.cuda.current_device()`` and so fails without a GPU; here the state goes to the GPU when one is used,
else to the CPU. Incomplete temporary files (``*.tmp``) left by a killed save are never picked.
"""
import os

import torch

from basicsr.utils import check_resume, scandir


def latest_state(state_dir):
    """Path of the highest-iteration ``<iter>.state`` in ``state_dir``, or None."""
    if not os.path.isdir(state_dir):
        return None
    states = [name for name in scandir(state_dir, suffix='.state', recursive=False) if name[:-6].isdigit()]
    if not states:
        return None
    return os.path.join(state_dir, max(states, key=lambda name: int(name[:-6])))


def load_resume_state(opt):
    if opt['auto_resume']:
        path = latest_state(os.path.join('experiments', opt['name'], 'training_states'))
        if path is not None:
            opt['path']['resume_state'] = path
    else:
        path = opt['path'].get('resume_state')
    if path is None:
        return None
    if opt['num_gpu'] > 0 and torch.cuda.is_available():
        device_id = torch.cuda.current_device()
        map_location = lambda storage, loc: storage.cuda(device_id)  # noqa: E731
    else:
        map_location = 'cpu'
    state = torch.load(path, map_location=map_location, weights_only=False)
    check_resume(opt, state['iter'])
    return state
