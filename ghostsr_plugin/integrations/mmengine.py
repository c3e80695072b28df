"""GhostSR in MMEngine: the plugin's architectures in an mmengine model registry (scope ``ghostsr_plugin``), a
BaseModel wrapper for MMEngine's Runner, and the hook that drives the Gumbel schedule (Eq. 3-5) from the runner's iteration.

Loaded on demand (``import ghostsr_plugin`` does not import mmengine), e.g. from a Python config::

    custom_imports = dict(imports=['ghostsr_plugin.integrations.mmengine'], allow_failed_imports=False)
    default_scope = 'ghostsr_plugin'
    model = dict(type='GhostSRMMModel', network=dict(type='GhostEDSR', num_in_ch=3, num_out_ch=3, upscale=2))
    custom_hooks = [dict(type='GhostScheduleHook')]

* :data:`MODELS` (child of mmengine's ``MODELS``, scope ``ghostsr_plugin``; every other mmengine root registry gets a
  ``ghostsr_plugin`` child too, :data:`REGISTRIES`) holds every architecture the plugin registers
  into BasicSR's ``ARCH_REGISTRY`` (derived from those registrations, so a new one appears by itself) and
  :class:`GhostSRMMModel`. ``MODELS.build(dict(type='GhostEDSR', ...))`` builds the bare network; from
  mmengine's root registry use ``type='ghostsr_plugin.GhostEDSR'`` or ``default_scope='ghostsr_plugin'``.
* :class:`GhostScheduleHook` sets, before every training step, what ``GhostSRModel.optimize_parameters`` sets:
  ``ghost_schedule.set_iteration(current_iter, iters_per_epoch)`` with BasicSR's 1-based ``current_iter =
  runner.iter + 1`` and, unless given, BasicSR's ``iters_per_epoch = ceil(images / (batch x world size))``, so τ, the noise scale a^(t-1) and the offsets drawn at an iteration are
  GhostSRModel's. It logs ``gumbel_tau``, ``gumbel_noise``, ``gumbel_epoch`` and ``ghost_moved``.
* :data:`DATASETS`: :class:`BasicSRDataset` (any BasicSR dataset, e.g. ``PairedImageDataset``) and
  :class:`SyntheticSRDataset` (generated pairs, for smoke tests).
* Checkpoints (:func:`install_weights_only_checkpoints`, run at import): the Runner's ``load_from`` / ``resume`` /
  ``load_checkpoint`` read a local file with ``torch.load(weights_only=True)`` through
  :func:`ghostsr_plugin.utils.checkpoint.torch_load`, whatever the environment says
  (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` included): a pickle that would import a function is refused with the
  file's name and nothing in it runs. The few types MMEngine itself saves (its message hub's ``HistoryBuffer``, numpy
  arrays and scalars) are allowed during that load only. MMEngine's other schemes (``https://``, ``open-mmlab://``,
  ``s3://``, ...) load with torch's default (weights-only) and refuse to run while ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
  is set.
"""
import functools
import math
import os
import pickle

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel, is_model_wrapper
import mmengine.registry as mmengine_registry
from mmengine.registry import Registry
from mmengine.runner.checkpoint import CheckpointLoader
from torch.utils.data import Dataset

import ghostsr_plugin  # noqa: F401  (registers the archs into BasicSR)
from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.ops.ghost_conv import ghost_offsets
from ghostsr_plugin.ops.schedule import GhostSchedule
from ghostsr_plugin.utils.checkpoint import torch_load

__all__ = [
    'SCOPE', 'REGISTRIES', 'MODELS', 'HOOKS', 'DATASETS', 'plugin_archs', 'register_archs', 'GhostSRMMModel', 'GhostScheduleHook',
    'BasicSRDataset', 'SyntheticSRDataset', 'load_from_local_weights_only', 'install_weights_only_checkpoints'
]

SCOPE = 'ghostsr_plugin'  # the package name, as OpenMMLab scopes: mmengine imports <scope>.registry
# A 'ghostsr_plugin' child of every mmengine root registry (loops, optimizers, hooks, ...), so that a Runner under
# default_scope='ghostsr_plugin' finds mmengine's own modules through it, and ours in MODELS / HOOKS / DATASETS.
REGISTRIES = {
    name: Registry(root.name, parent=root, scope=SCOPE, locations=[__name__])
    for name, root in vars(mmengine_registry).items() if isinstance(root, Registry) and root.parent is None
}
MODELS, HOOKS, DATASETS = REGISTRIES['MODELS'], REGISTRIES['HOOKS'], REGISTRIES['DATASETS']


def plugin_archs():
    """{name: class or builder} of every architecture the plugin registered into BasicSR's ARCH_REGISTRY."""
    return {name: ARCH_REGISTRY.get(name) for name in sorted(ARCH_REGISTRY.keys())
            if ARCH_REGISTRY.get(name).__module__.startswith('ghostsr_plugin.')}


def register_archs():
    """Register every plugin architecture not yet in :data:`MODELS` (run at import; call again after registering
    a new one). Returns the names registered now."""
    added = [name for name in plugin_archs() if name not in MODELS.module_dict]
    for name in added:
        MODELS.register_module(name=name, module=ARCH_REGISTRY.get(name))
    return added


register_archs()


# Checkpoints: weights-only whatever the environment says. -------------------------------------------------------
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')  # HistoryBuffer._set_default_statistics


def _history_buffer_statistic(obj, name):
    """The ``getattr`` an MMEngine checkpoint calls (``HistoryBuffer.__getstate__`` saves its statistics methods, which
    pickle as ``getattr(HistoryBuffer, 'mean')``), allowed for those methods only: anything else is refused."""
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    what = getattr(obj, '__name__', type(obj).__name__)
    raise pickle.UnpicklingError(f'Unsupported global: GLOBAL builtins.getattr (allowed for the statistics of '
                                 f'HistoryBuffer only, not getattr({what}, {name!r}))')


_multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
# What MMEngine's own checkpoints hold beyond tensors and plain containers (its message hub), allowed for one load.
MMENGINE_SAFE_GLOBALS = [
    HistoryBuffer, np.ndarray, np.dtype,
    *dict.fromkeys(type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDG'),  # numeric dtypes (their state is set)
    (_multiarray._reconstruct, 'numpy._core.multiarray._reconstruct'),
    (_multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),  # written with numpy 1
    (_multiarray.scalar, 'numpy._core.multiarray.scalar'),
    (_multiarray.scalar, 'numpy.core.multiarray.scalar'),
    (_history_buffer_statistic, 'builtins.getattr'),
]


def _mmengine_globals():
    """The part of :data:`MMENGINE_SAFE_GLOBALS` not allowed yet (leaving the context removes only what it added)."""
    allowed = torch.serialization.get_safe_globals()
    return torch.serialization.safe_globals([item for item in MMENGINE_SAFE_GLOBALS if item not in allowed])


def _forced_unsafe():
    return os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '0').lower() in ('1', 'y', 'yes', 'true')


def load_from_local_weights_only(filename, map_location):
    """MMEngine's local checkpoint scheme, weights-only: :func:`ghostsr_plugin.utils.checkpoint.torch_load` (its
    ``weights_only=True`` is explicit, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` does not switch it off), one error
    naming the file for a refused or damaged one."""
    with _mmengine_globals():
        return torch_load(os.path.expanduser(filename), 'checkpoint', map_location=map_location)


def _weights_only_scheme(loader):
    """One of MMEngine's other schemes (URLs, ``open-mmlab://``, ``s3://``, ...): they call ``torch.load`` without
    ``weights_only``, so they run only while torch's default (weights-only) holds."""
    if getattr(loader, 'ghostsr_weights_only', False):
        return loader

    @functools.wraps(loader)
    def load(filename, map_location):
        if _forced_unsafe():
            raise ValueError(f'{filename}: not loaded: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set, under which MMEngine '
                             'would read it without the weights-only check (code in it could run); download it and give '
                             'load_from / resume the local file, which is read weights-only whatever the environment')
        with _mmengine_globals():
            return loader(filename, map_location)

    load.ghostsr_weights_only = True
    return load


def install_weights_only_checkpoints():
    """Make MMEngine's ``CheckpointLoader`` (the Runner's ``load_from``, ``resume``, ``load_checkpoint``) weights-only
    (idempotent; run at import): local files through :func:`load_from_local_weights_only`, every other registered
    scheme through a guard that refuses to run under ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``."""
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_weights_only, force=True)
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if prefix != '':
            CheckpointLoader._schemes[prefix] = _weights_only_scheme(loader)


install_weights_only_checkpoints()


def _batch(tensors):
    """A batch tensor from a stacked batch or a list of samples (mmengine's ``pseudo_collate``)."""
    return tensors if isinstance(tensors, torch.Tensor) else torch.stack(list(tensors))


@MODELS.register_module()
class GhostSRMMModel(BaseModel):
    """An SR network (built from :data:`MODELS`: any plugin arch) as an MMEngine model.

    Data: ``inputs`` the LR batch [N, C, h, w] (or a list of samples), ``data_samples`` the HR targets.
    ``forward(mode='loss')`` returns ``{'loss': pixel loss}``; ``'predict'`` and ``'tensor'`` return the output.

    Args:
        network (dict | nn.Module): the network, e.g. ``dict(type='GhostEDSR', ...)``.
        pixel_loss (dict): a BasicSR loss (``basicsr.losses``). Default: ``L1Loss``, weight 1 (as §4.1).
        data_preprocessor (dict | None): MMEngine data preprocessor (default: ``BaseDataPreprocessor``, which
            moves the batch to the model's device).
    """

    def __init__(self, network, pixel_loss=None, data_preprocessor=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        from basicsr.losses import build_loss
        self.network = MODELS.build(network) if isinstance(network, dict) else network
        self.pixel_loss = build_loss(dict(pixel_loss or {'type': 'L1Loss', 'loss_weight': 1.0}))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode not in ('loss', 'predict', 'tensor'):
            raise ValueError(f'GhostSRMMModel: mode must be loss, predict or tensor, got {mode!r}')
        output = self.network(_batch(inputs))
        if mode == 'loss':
            if data_samples is None:
                raise ValueError('GhostSRMMModel: mode "loss" needs data_samples (the HR targets)')
            return {'loss': self.pixel_loss(output, _batch(data_samples))}
        return output


def ghost_schedules(model):
    """The distinct GhostSchedule modules inside ``model`` (unwrapping DDP-style wrappers)."""
    model = model.module if is_model_wrapper(model) else model
    return [m for m in model.modules() if isinstance(m, GhostSchedule)]


@HOOKS.register_module()
class GhostScheduleHook(Hook):
    """Drives the Gumbel schedule of every Ghost network in the runner's model as GhostSRModel does.

    Args:
        iters_per_epoch (int | None): Gumbel epoch length in iterations; None: BasicSR's epoch,
            ``ceil(len(train dataset) / (batch x world size))``.
        log (bool): put τ, the noise scale, the epoch t and the share of moved layers into the message hub.
    """
    priority = 'VERY_HIGH'  # before anything else that could run a training forward

    def __init__(self, iters_per_epoch=None, log=True):
        if iters_per_epoch is not None and (isinstance(iters_per_epoch, bool) or not isinstance(iters_per_epoch, int)
                                            or iters_per_epoch < 1):
            raise ValueError(f'GhostScheduleHook: iters_per_epoch must be a positive integer or None (the train '
                             f'loader\'s length), got {iters_per_epoch!r}')
        self.iters_per_epoch, self.log = iters_per_epoch, log

    def before_train(self, runner):
        if self.iters_per_epoch is None:  # BasicSR's epoch: ceil(images / (batch x world size))
            loader = runner.train_dataloader
            self.iters_per_epoch = max(math.ceil(len(loader.dataset) / (loader.batch_size * get_world_size())), 1)
        if not ghost_schedules(runner.model):
            runner.logger.warning('GhostScheduleHook: the model has no Ghost network; nothing to drive.')
        else:
            runner.logger.info(f'GhostScheduleHook: Gumbel epoch = {self.iters_per_epoch} iterations.')

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        for schedule in ghost_schedules(runner.model):
            schedule.set_iteration(runner.iter + 1, self.iters_per_epoch)  # BasicSR's current_iter: 1-based

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        schedules = ghost_schedules(runner.model)
        if not (self.log and schedules):
            return
        state = schedules[0].state()
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        offsets = list(ghost_offsets(model).values())
        hub = runner.message_hub
        hub.update_scalar('train/gumbel_tau', state.tau)
        hub.update_scalar('train/gumbel_noise', state.noise_scale)
        hub.update_scalar('train/gumbel_epoch', float(state.epoch))
        hub.update_scalar('train/ghost_moved', sum(o != (0, 0) for o in offsets) / max(len(offsets), 1))


@DATASETS.register_module()
class BasicSRDataset(Dataset):
    """A BasicSR dataset (``basicsr.data.build_dataset``) as MMEngine data: ``{'inputs': lq, 'data_samples': gt}``.

    Args:
        dataset (dict): BasicSR dataset options, e.g. ``dict(type='PairedImageDataset', dataroot_gt=..., ...)``.
        scale (int): SR scale (BasicSR's top-level ``scale``).
        phase (str): 'train' (random crops and flips as configured) or 'val'.
    """

    def __init__(self, dataset, scale, phase='train'):
        from basicsr.data import build_dataset
        self.dataset = build_dataset({'phase': phase, 'scale': scale, 'name': dataset.get('name', 'mmengine'),
                                      **dataset})

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        return {'inputs': item['lq'], 'data_samples': item['gt']}


@DATASETS.register_module()
class SyntheticSRDataset(Dataset):
    """Generated pairs for smoke tests: smooth random RGB images (HR ``size`` x ``size``), LR by bicubic
    downscaling with antialiasing; deterministic per index."""

    def __init__(self, num_images=8, size=32, scale=2, seed=0):
        if size % scale:
            raise ValueError(f'SyntheticSRDataset: size {size} must be a multiple of scale {scale}')
        self.num_images, self.size, self.scale, self.seed = num_images, size, scale, seed

    def __len__(self):
        return self.num_images

    def __getitem__(self, index):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + index)
        grid = torch.linspace(0, 1, self.size)
        y, x = torch.meshgrid(grid, grid, indexing='ij')
        freq, phase = torch.rand(3, 2, generator=gen) * 3 + 1, torch.rand(3, generator=gen) * 2 * math.pi
        hr = torch.stack([torch.sin(2 * math.pi * (f[0] * x + f[1] * y) + p) for f, p in zip(freq, phase)])
        hr = hr * 0.4 + 0.5
        lr = F.interpolate(hr[None], scale_factor=1 / self.scale, mode='bicubic', antialias=True)[0].clamp(0, 1)
        return {'inputs': lr, 'data_samples': hr}
