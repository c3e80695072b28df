"""Safe saves for every BasicSR model (SRModel, the other BasicSR models, GhostSRModel): the one implementation of
``save_network`` / ``save_training_state`` and of the validation-image writer, installed into BasicSR when
``ghostsr_plugin`` is imported (so through ``ghostsr train`` / ``ghostsr test`` and through BasicSR's own
``train.py`` / ``test.py`` with the autoload hook alike).

What BasicSR 1.4.2 does (``basicsr/models/base_model.py``, ``basicsr/models/sr_model.py``) and what this changes:

* ``BaseModel.save_network`` / ``save_training_state`` call ``torch.save`` on the final path, three tries, every
  error logged and ignored: a SIGKILL during a save leaves a truncated ``net_g_<iter>.pth`` / ``<iter>.state``
  under its real name, and a full disk leaves zero-byte checkpoints and a truncated state behind a warning, exit
  code 0. Here they write through :func:`ghostsr_plugin.utils.atomic.atomic_torch_save` (a temporary
  ``.<name>.XXXXXXXX.tmp`` beside the target, then a rename): a killed save leaves the previous file intact plus a
  temporary that ``ghostsr train`` removes at its next start, and a full disk raises
  :class:`~ghostsr_plugin.utils.atomic.NoSpaceLeftError` naming the folder (one line and exit code 1 from a
  ``ghostsr`` command; BasicSR's own ``train.py`` stops with it). Other write errors stop the run too, rather than
  being ignored. The saved content is BasicSR's (``{param_key: state_dict}``; ``epoch``, ``iter``, ``optimizers``,
  ``schedulers``), so checkpoints and states load as before.
* the ``imwrite`` that BasicSR's models call to save validation / test images (``val: save_img``; the name imported
  into ``basicsr.models.sr_model`` and the other model modules) writes through
  :func:`ghostsr_plugin.utils.images.write_image` (atomic; a full disk is :class:`NoSpaceLeftError`), not
  ``cv2.imwrite``, which leaves zero-byte PNGs on a full disk and reports success.

:func:`install` is idempotent; ``ghostsr_plugin.models`` calls it before importing the plugin's models, which
inherit these methods (GhostSRModel adds its own entries to the training state through ``extra``).
"""
import os
import sys

from basicsr.utils.dist_util import master_only
from ghostsr_plugin.utils.atomic import atomic_torch_save
from ghostsr_plugin.utils.images import write_image

__all__ = ['save_network', 'save_training_state', 'imwrite', 'install']


@master_only
def save_network(self, net, net_label, current_iter, param_key='params'):
    """BasicSR's ``BaseModel.save_network``, written atomically: ``{param_key: state_dict}`` (CPU tensors, a
    ``module.`` prefix removed) of each net to ``<models>/<net_label>_<iter>.pth`` (``latest`` for -1, or a label
    such as ``best``). A full disk raises NoSpaceLeftError naming the folder; the previous file stays intact."""
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    if len(nets) != len(keys):
        raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys')
    save_dict = {}
    for net_, key in zip(nets, keys):
        state_dict = self.get_bare_model(net_).state_dict()
        save_dict[key] = {k.removeprefix('module.'): v.cpu() for k, v in state_dict.items()}
    iteration = 'latest' if current_iter == -1 else current_iter
    atomic_torch_save(save_dict, os.path.join(self.opt['path']['models'], f'{net_label}_{iteration}.pth'))


@master_only
def save_training_state(self, epoch, current_iter, **extra):
    """BasicSR's ``BaseModel.save_training_state``, written atomically to ``<training_states>/<iter>.state``
    (nothing for ``current_iter`` -1): ``epoch``, ``iter``, the optimizers' and schedulers' states, plus ``extra``
    entries (GhostSRModel's ``ghost``). A full disk raises NoSpaceLeftError; the previous state stays intact."""
    if current_iter == -1:
        return
    state = {
        'epoch': epoch,
        'iter': current_iter,
        'optimizers': [o.state_dict() for o in self.optimizers],
        'schedulers': [s.state_dict() for s in self.schedulers],
        **extra,
    }
    atomic_torch_save(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))


def imwrite(img, file_path, params=None, auto_mkdir=True):
    """``basicsr.utils.imwrite`` (same arguments), written atomically by
    :func:`ghostsr_plugin.utils.images.write_image`: the folder is made (``auto_mkdir`` is ignored: the atomic
    write needs it), a full disk raises NoSpaceLeftError and leaves no zero-byte image."""
    write_image(file_path, img, params=params)


def install():
    """Put :func:`save_network` and :func:`save_training_state` on BasicSR's ``BaseModel`` (every BasicSR model and
    GhostSRModel inherit them), and :func:`imwrite` in place of ``basicsr.utils.imwrite`` in BasicSR's model modules
    (``basicsr.models.sr_model`` and the others that imported it). Idempotent."""
    from basicsr.models import base_model
    from basicsr.utils import img_util
    base_model.BaseModel.save_network = save_network
    base_model.BaseModel.save_training_state = save_training_state
    for name, module in list(sys.modules.items()):
        if name.startswith('basicsr.models.') and getattr(module, 'imwrite', None) is img_util.imwrite:
            module.imwrite = imwrite
