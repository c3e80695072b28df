"""Up-front checks of a BasicSR option file, so a bad option fails at once, with a message naming it, before
BasicSR makes, renames (``<name>_archived_<time>``) or writes anything.

:func:`check_parsed_options` checks what BasicSR's ``parse_options`` returns: required sections, registered model,
networks and datasets, every option BasicSR would only reject (or silently misuse) once it has made or renamed a
folder (:func:`check_run_options`: ``num_gpu`` against the machine, ``train: total_iter``, the optimizers,
scheduler and losses against what BasicSR 1.4.2 builds, the logger's and validation's frequencies, ``val: save_img``
/ ``suffix``, the metrics and their ``crop_border``), the networks' arguments (each ``network_*`` is built, on the
meta device where the arch allows it), GhostSRModel's ``ghost:`` / ``ghost_init:`` / ``distill:`` blocks, and the data
(:func:`check_datasets`): folders, LMDBs (``data.mdb`` and ``meta_info.txt``), ``meta_info_file``, the training
loader's options (batch, workers, ``gt_size`` against the smallest training pair, a batch the set can fill), and
every validation / test set, however large and on disk or in an LMDB: each LR fits its HR at the scale after
BasicSR's crop (else an error naming the image, both sizes and the scale). Sizes come from the image headers
(:func:`ghostsr_plugin.utils.images.image_size`, no pixel decoded) or an LMDB's ``meta_info.txt``; test / validation
sets of up to :data:`MAX_IMAGES_TO_DECODE` pairs are also decoded, so that an undecodable image is named and grey /
RGBA / 16-bit images, which BasicSR reads as 8-bit RGB, are named once per set. :func:`check_checkpoints` loads
(``weights_only=True``, memory-mapped) and fits every checkpoint the run will read: ``path: pretrain_network_*``,
``ghost_init: pretrain_path``, ``distill: teacher_path``.
"""
import argparse
import contextlib
import inspect
import io
import math
import os
import re

import torch

from basicsr.models.base_model import BaseModel
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY
from ghostsr_plugin.archs.build import build_unloaded
from ghostsr_plugin.models.ghostsr_model import GhostSRModel, check_model_options
from ghostsr_plugin.utils.option_file import load_options
from ghostsr_plugin.utils.checkpoint import check_state_dict_fits, load_checkpoint
from ghostsr_plugin.utils.errors import UserInputError
from ghostsr_plugin.utils.images import (IMAGE_EXTENSIONS, check_pairs, conversion_note, image_size, inspect_image,
                                         is_image_name, size_mismatch)

__all__ = ['check_required', 'check_registered', 'check_run_options', 'check_networks',
           'check_datasets', 'check_checkpoints', 'check_parsed_options',
           'check_options', 'check_options_cli', 'parse_and_check', 'lmdb_meta_info']

NO_GROUND_TRUTH_DATASETS = ('LRFolderDataset', )  # training sets whose items hold no 'gt'
MAX_IMAGES_TO_DECODE = 500  # test/val sets up to this many pairs are decoded; every set's sizes are read from headers
REQUIRED = ('name', 'model_type', 'num_gpu', 'datasets', 'network_g', 'path')
REQUIRED_TRAIN = ('train', 'logger')
# BaseModel.get_optimizer and BaseModel.setup_schedulers of BasicSR 1.4.2 build only these
BASICSR_OPTIMIZERS = ('Adam', )
BASICSR_SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')
LOSS_REDUCTIONS = ('none', 'mean', 'sum')  # basicsr.losses.basic_loss._reduction_modes
PREFETCH_MODES = (None, 'cpu', 'cuda')  # basicsr/train.py
_LMDB_LINE = re.compile(r'^(\S+)\s+\((\d+),\s*(\d+)(?:,\s*(\d+))?\)(?:\s+\S+)?\s*$')


def check_required(opt, is_train, source='options'):
    needed = REQUIRED + (REQUIRED_TRAIN if is_train else ('val', ))
    missing = [key for key in needed if opt.get(key) is None]
    if missing:
        raise UserInputError(f'{source}: missing {", ".join(missing)}; a BasicSR {"training" if is_train else "test"} '
                             f'option file needs {", ".join(needed)}')


def _allowed(registry):
    return ', '.join(sorted(registry._obj_map))


def check_registered(opt):
    model_type = opt.get('model_type', 'SRModel')
    if model_type not in MODEL_REGISTRY._obj_map:
        raise ValueError(f'model_type: "{model_type}" is not a registered model; allowed: {_allowed(MODEL_REGISTRY)}')
    for key, net_opt in opt.items():
        if key.startswith('network_'):
            net_type = (net_opt or {}).get('type')
            if net_type not in ARCH_REGISTRY._obj_map:
                raise ValueError(f'{key}: type "{net_type}" is not a registered architecture; allowed: '
                                 f'{_allowed(ARCH_REGISTRY)}')


# ----------------------------------------------------------------------------------------------- run options
def _is_int(value, integral_float=False):
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (integral_float and isinstance(value, float) and value.is_integer())


def _text_number_hint(value):
    """' (YAML reads 1e-3 as text: write 1.0e-3 or !!float 1e-3)' for a string that is a number, else ''."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ''
        return f' (YAML reads {value} as text: write it with a decimal point, e.g. 1.0e-3, or as !!float {value})'
    return ''


def _count(option, value, minimum=1, what='', integral_float=True):
    """``value`` as an int >= ``minimum`` (an integral float such as BasicSR's ``!!float 5e3`` allowed when
    ``integral_float``), else an error naming ``option``."""
    if not _is_int(value, integral_float) or value < minimum:
        kind = 'a positive integer' if minimum == 1 else f'an integer >= {minimum}'
        if value is None:
            raise UserInputError(f'{option}: required, {kind}{what}')
        raise UserInputError(f'{option}: must be {kind}{what}, got {value!r}{_text_number_hint(value)}')
    return int(value)


def _defined_by(cls, method):
    """The class of ``cls``'s MRO that defines ``method``."""
    return next(klass for klass in cls.__mro__ if method in vars(klass))


def _check_num_gpu(opt):
    value = opt.get('num_gpu')
    if value == 'auto':
        return
    if not _is_int(value) or value < 0:
        raise UserInputError(f'num_gpu: must be auto or an integer >= 0 (0: the CPU), got {value!r}')
    count = torch.cuda.device_count()
    if value > count and not (opt.get('dist') and count > 0):
        gpus = f'{count} CUDA GPU{"" if count == 1 else "s"}'
        allowed = f'0 (the CPU) to {count}' if count else '0 (the CPU)'
        raise UserInputError(f'num_gpu: {value}, but this machine has {gpus}; allowed: {allowed}, or auto')


def _check_optimizer(option, optim_opt, model_cls):
    """``train: optim_*``: a type the model's ``get_optimizer`` builds, a numeric ``lr``, arguments the optimizer
    takes (built once on a one-element parameter)."""
    if not isinstance(optim_opt, dict) or 'type' not in optim_opt:
        raise UserInputError(f'{option}: must be a mapping with type and lr, got {optim_opt!r}')
    optim_type = optim_opt['type']
    if _defined_by(model_cls, 'get_optimizer') is BaseModel:
        allowed, why = BASICSR_OPTIMIZERS, " (BasicSR 1.4.2's get_optimizer builds only Adam)"
    else:
        allowed = tuple(name for name, cls in vars(torch.optim).items()
                        if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and cls is not
                        torch.optim.Optimizer)
        why = ''
    if optim_type not in allowed:
        raise UserInputError(f'{option}.type: "{optim_type}" is not an optimizer {model_cls.__name__} can build; '
                             f'allowed: {", ".join(sorted(allowed))}{why}')
    kwargs = {key: value for key, value in optim_opt.items() if key != 'type'}
    if 'lr' not in kwargs:
        raise UserInputError(f'{option}: lr (the learning rate) is required')
    for key, value in kwargs.items():
        hint = _text_number_hint(value)
        if hint:
            raise UserInputError(f'{option}.{key}: must be a number, got {value!r}{hint}')
    if isinstance(kwargs['lr'], bool) or not isinstance(kwargs['lr'], (int, float)) or kwargs['lr'] < 0:
        raise UserInputError(f'{option}.lr: must be a number >= 0, got {kwargs["lr"]!r}')
    try:
        getattr(torch.optim, optim_type)([torch.zeros(1, requires_grad=True)], **kwargs)
    except (TypeError, ValueError, KeyError) as err:
        raise UserInputError(f'{option}: {optim_type} does not take these arguments: {err}') from err


def _check_scheduler(option, scheduler_opt, total_iter):
    """``train: scheduler``: a type BasicSR's ``setup_schedulers`` builds, with arguments it takes (built once on a
    dummy optimizer); CosineAnnealingRestartLR's periods must cover the run (BasicSR's ``get_lr`` fails past them)."""
    from basicsr.models import lr_scheduler
    if not isinstance(scheduler_opt, dict) or 'type' not in scheduler_opt:
        raise UserInputError(f'{option}: required (a mapping with type: {", ".join(BASICSR_SCHEDULERS)}), got '
                             f'{scheduler_opt!r}')
    kind = scheduler_opt['type']
    if kind not in BASICSR_SCHEDULERS:
        raise UserInputError(f'{option}.type: "{kind}" is not a scheduler BasicSR 1.4.2 builds; allowed: '
                             f'{", ".join(BASICSR_SCHEDULERS)}')
    kwargs = {key: value for key, value in scheduler_opt.items() if key != 'type'}
    for key, value in kwargs.items():
        hint = _text_number_hint(value)
        if hint:
            raise UserInputError(f'{option}.{key}: must be a number, got {value!r}{hint}')
    cls = lr_scheduler.CosineAnnealingRestartLR if kind == 'CosineAnnealingRestartLR' else \
        lr_scheduler.MultiStepRestartLR
    try:
        cls(torch.optim.Adam([torch.zeros(1, requires_grad=True)], 1e-3), **kwargs)
    except (TypeError, ValueError, AssertionError, ZeroDivisionError, IndexError, KeyError) as err:
        raise UserInputError(f'{option}: {kind} does not take these arguments: {err or type(err).__name__}') from err
    if kind == 'CosineAnnealingRestartLR' and total_iter is not None:
        # the scheduler steps at iterations 2..total_iter, so get_lr runs up to last_epoch = total_iter - 1
        covered = sum(kwargs['periods'])
        if covered < total_iter - 1:
            raise UserInputError(f'{option}.periods: {list(kwargs["periods"])} sum to {covered}, but train.total_iter '
                                 f'is {total_iter}: BasicSR\'s CosineAnnealingRestartLR fails at iteration '
                                 f'{covered + 2}; allowed: periods summing to at least {total_iter - 1} '
                                 f'(usually total_iter, {total_iter})')


def _check_loss(option, loss_opt):
    if not isinstance(loss_opt, dict):
        raise UserInputError(f'{option}: must be a mapping with type, got {loss_opt!r}')
    kind = loss_opt.get('type')
    if kind not in LOSS_REGISTRY._obj_map:
        raise UserInputError(f'{option}.type: "{kind}" is not a registered loss; allowed: {_allowed(LOSS_REGISTRY)}')
    kwargs = {key: value for key, value in loss_opt.items() if key != 'type'}
    try:
        inspect.signature(LOSS_REGISTRY.get(kind)).bind(**kwargs)
    except TypeError as err:
        raise UserInputError(f'{option}: {kind} does not take these arguments: {err}') from err
    if 'reduction' in kwargs and kwargs['reduction'] not in LOSS_REDUCTIONS:
        raise UserInputError(f'{option}.reduction: "{kwargs["reduction"]}" is not supported; allowed: '
                             f'{", ".join(LOSS_REDUCTIONS)}')


def _check_train_section(opt, model_cls):
    train = opt['train']
    if not isinstance(train, dict):
        raise UserInputError(f'train: must be a mapping, got {train!r}')
    total_iter = _count('train.total_iter', train.get('total_iter'), 1, ' (the number of training iterations)')
    warmup = train.get('warmup_iter', -1)
    if not _is_int(warmup, integral_float=True):
        raise UserInputError(f'train.warmup_iter: must be an integer (-1: no warm-up), got {warmup!r}')
    if issubclass(model_cls, SRModel) and not train.get('optim_g'):
        raise UserInputError(f'train.optim_g: required by {model_cls.__name__} (e.g. type: Adam, lr: 2.0e-4)')
    for key, value in train.items():
        if key.startswith('optim_') and value is not None:
            _check_optimizer(f'train.{key}', value, model_cls)
    if _defined_by(model_cls, 'setup_schedulers') is BaseModel:
        _check_scheduler('train.scheduler', train.get('scheduler'), total_iter)
    for key, value in train.items():
        if key.endswith('_opt') and value is not None:
            _check_loss(f'train.{key}', value)
    ground_truth_losses = [key for key in ('pixel_opt', 'perceptual_opt') if train.get(key)]
    teacher = issubclass(model_cls, GhostSRModel) and bool(opt.get('distill'))
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        if phase != 'train' and (dataset_opt or {}).get('type') in NO_GROUND_TRUTH_DATASETS and not teacher:
            raise UserInputError(f'datasets.{phase}: {dataset_opt["type"]} has no ground truth; validating on it '
                                 'needs model_type: GhostSRModel with a distill: teacher (its metrics then measure '
                                 'the fidelity to the teacher\'s output)')
    train_set = (opt.get('datasets') or {}).get('train') or {}
    if train_set.get('type') in NO_GROUND_TRUTH_DATASETS:
        if ground_truth_losses:
            raise UserInputError(f'train.{ground_truth_losses[0]}: needs ground truth, which datasets.train '
                                 f'({train_set["type"]}) does not have; allowed: no pixel_opt / perceptual_opt '
                                 '(the distill: teacher is the target), or a PairedImageDataset')
        if not teacher:
            raise UserInputError(f'datasets.train: {train_set["type"]} has no ground truth; it needs model_type: '
                                 'GhostSRModel with a distill: teacher (whose output is the target)')
    if _defined_by(model_cls, 'init_training_settings') in (SRModel, GhostSRModel) and not ground_truth_losses \
            and not teacher:
        raise UserInputError(f'train: pixel_opt or perceptual_opt is required by {model_cls.__name__} (both are '
                             'missing), e.g. pixel_opt: {type: L1Loss, loss_weight: 1.0}; or, with GhostSRModel, a '
                             'distill: teacher as the only target')


def _check_logger(opt):
    logger = opt['logger']
    if not isinstance(logger, dict):
        raise UserInputError(f'logger: must be a mapping, got {logger!r}')
    _count('logger.print_freq', logger.get('print_freq'), 1, ' (iterations between log lines)')
    _count('logger.save_checkpoint_freq', logger.get('save_checkpoint_freq'), 1,
           ' (iterations between saved checkpoints)')
    wandb = logger.get('wandb')
    if isinstance(wandb, dict) and wandb.get('project') is not None and 'debug' not in str(opt.get('name')) \
            and logger.get('use_tb_logger') is not True:
        raise UserInputError('logger.wandb.project: set, so BasicSR needs logger.use_tb_logger: true (wandb syncs '
                             'the tensorboard log); set it, or project: ~')


def _check_metrics(opt, model_cls):
    metrics = opt['val'].get('metrics')
    if metrics is None:
        return
    if not isinstance(metrics, dict):
        raise UserInputError(f'val.metrics: must be a mapping of name -> {{type: ..., crop_border: ...}}, got '
                             f'{metrics!r}')
    numpy_images = _defined_by(model_cls, 'nondist_validation') in (SRModel, GhostSRModel)
    allowed = sorted(name for name in METRIC_REGISTRY._obj_map if not (numpy_images and name.endswith('_pt')))
    for name, metric_opt in metrics.items():
        option = f'val.metrics.{name}'
        if not isinstance(metric_opt, dict):
            raise UserInputError(f'{option}: must be a mapping with type, got {metric_opt!r}')
        kind = metric_opt.get('type')
        if kind not in allowed:
            why = ' (the _pt metrics take tensors; SRModel\'s validation passes images)' \
                if kind in METRIC_REGISTRY._obj_map else ' is not a registered metric'
            raise UserInputError(f'{option}.type: "{kind}"{why}; allowed: {", ".join(allowed)}')
        kwargs = {key: value for key, value in metric_opt.items() if key != 'type'}
        try:
            inspect.signature(METRIC_REGISTRY.get(kind)).bind(img=None, img2=None, **kwargs)
        except TypeError as err:
            raise UserInputError(f'{option}: {kind} does not take these arguments: {err}') from err
        if 'crop_border' in kwargs:
            _count(f'{option}.crop_border', kwargs['crop_border'], 0, ' (pixels cut from each border before measuring)',
                   integral_float=False)


def _check_val_section(opt, is_train, model_cls):
    val = opt.get('val')
    if val is None:
        return
    if not isinstance(val, dict):
        raise UserInputError(f'val: must be a mapping, got {val!r}')
    if is_train:
        _count('val.val_freq', val.get('val_freq'), 1, ' (iterations between validations)')
    if 'save_img' not in val:
        raise UserInputError('val.save_img: required (true: write the super-resolved images; false: metrics only)')
    if not is_train and val['save_img'] and 'suffix' not in val:
        # BasicSR's test validation reads opt['val']['suffix'] for every saved image (KeyError when missing)
        raise UserInputError('val.suffix: required when save_img is true in a test option file: images are saved '
                             'as <image>_<suffix>.png, or <image>_<name>.png with suffix: ~')
    _check_metrics(opt, model_cls)


def check_run_options(opt, is_train):
    """The options BasicSR reads only once it has made or renamed a folder (or while it trains): ``num_gpu``;
    for training ``train:`` (``total_iter``, ``warmup_iter``, the optimizers, scheduler and losses) and ``logger:``
    (``print_freq``, ``save_checkpoint_freq``, wandb); ``val:`` (``val_freq`` when training, ``save_img``,
    ``suffix`` for a test that saves images, the metrics: registered types, arguments, ``crop_border`` >= 0)."""
    model_cls = MODEL_REGISTRY.get(opt.get('model_type', 'SRModel'))
    _check_num_gpu(opt)
    if is_train:
        _check_train_section(opt, model_cls)
        _check_logger(opt)
    _check_val_section(opt, is_train, model_cls)


def check_networks(opt):
    """Build every ``network_*`` (:func:`build_unloaded`); returns {key: network}."""
    return {key: build_unloaded(net_opt, key) for key, net_opt in opt.items() if key.startswith('network_')}


# ------------------------------------------------------------------------------------------------------ data
def _check_image_folder(option, folder):
    """The image names of a data folder; an error names a missing or empty folder."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'{option}: folder {folder} does not exist. Expected a folder of images '
                                '(see docs/basicsr.md, "Data preparation"; `ghostsr prepare_data` makes one)')
    images = sorted(f for f in os.listdir(folder) if is_image_name(f))
    if not images:
        raise FileNotFoundError(f'{option}: folder {folder} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
    return images


def _read_error(option, err):
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return UserInputError(f'{option}: {message}')


def lmdb_meta_info(option, root):
    """{LMDB key: (name, height, width, channels)} of the ``meta_info.txt`` of the LMDB folder ``root``, read as
    BasicSR reads it (key: the line up to its first dot) with the shapes its ``lmdb_util`` writes (``<key>.png
    (h,w,c) <compress_level>``); an error names a line that is not so."""
    path = os.path.join(root, 'meta_info.txt')
    entries = {}
    with open(path, errors='replace') as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            match = _LMDB_LINE.match(line.strip())
            if not match:
                raise UserInputError(f'{option}: {path} line {number}: {line.strip()!r} is not "<name> (h,w,c) '
                                     '<compress_level>" as BasicSR\'s lmdb_util writes it')
            entries[line.split('.')[0]] = (match[1], int(match[2]), int(match[3]), int(match[4] or 1))
    if not entries:
        raise UserInputError(f'{option}: {path} lists no image')
    return entries


def _lmdb_pairs(label, gt, lq):
    """[(name, HR (h, w, c), LR (h, w, c))] of a paired LMDB set, as BasicSR pairs it (same keys in both)."""
    hr, lr = lmdb_meta_info(f'{label} dataroot_gt', gt), lmdb_meta_info(f'{label} dataroot_lq', lq)
    if set(hr) != set(lr):
        only_hr, only_lr = sorted(set(hr) - set(lr)), sorted(set(lr) - set(hr))
        listed = '; '.join(f'only in {side}: {", ".join(keys[:5])}{" ..." if len(keys) > 5 else ""}'
                           for side, keys in (('dataroot_gt', only_hr), ('dataroot_lq', only_lr)) if keys)
        raise UserInputError(f'{label}: the LR and HR LMDBs hold different images ({listed}); BasicSR pairs them '
                             'by key')
    return [(hr[key][0], hr[key][1:], lr[key][1:]) for key in sorted(hr)]


def _disk_pairs(label, dataset_opt, gt, lq):
    """[(name, HR path, LR path)] of a paired disk set, as BasicSR pairs it (folder scan or ``meta_info_file``,
    ``filename_tmpl``)."""
    from basicsr.data.data_util import paired_paths_from_folder, paired_paths_from_meta_info_file
    tmpl = dataset_opt.get('filename_tmpl', '{}')
    try:
        if dataset_opt.get('meta_info_file'):
            paths = paired_paths_from_meta_info_file([lq, gt], ['lq', 'gt'], dataset_opt['meta_info_file'], tmpl)
        else:
            paths = paired_paths_from_folder([lq, gt], ['lq', 'gt'], tmpl)
    except (AssertionError, OSError, IndexError, KeyError, ValueError) as err:
        raise UserInputError(f'{label}: the LR and HR folders do not pair up: {err} (dataroot_gt {gt}, '
                             f'dataroot_lq {lq}, filename_tmpl {tmpl!r})') from err
    return sorted((os.path.basename(p['gt_path']), p['gt_path'], p['lq_path']) for p in paths)


def _header_size(label, path):
    try:
        return image_size(path)
    except (ValueError, FileNotFoundError) as err:
        raise _read_error(label, err) from err


def _sized_pairs(label, dataset_opt, backend):
    """[(name, HR (h, w), LR (h, w))] of a paired set: sizes from the image headers or the LMDBs' meta_info.txt."""
    gt, lq = dataset_opt['dataroot_gt'], dataset_opt['dataroot_lq']
    if backend == 'lmdb':
        return [(name, hr[:2], lr[:2]) for name, hr, lr in _lmdb_pairs(label, gt, lq)]
    return [(name, _header_size(label, hr), _header_size(label, lr))
            for name, hr, lr in _disk_pairs(label, dataset_opt, gt, lq)]


def _refuse_mismatches(label, problems):
    problems = [problem for problem in problems if problem]
    if problems:
        more = f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''
        raise UserInputError(f'{label}: {problems[0]}{more}; every LR must be its HR cut to a multiple of the scale '
                             'and divided by it')


def _check_eval_set(phase, dataset_opt, scale, log, backend='disk'):
    """Every image of a validation / test set: for PairedImageDataset (on disk or in LMDBs), each LR fits its HR at
    ``scale`` after BasicSR's crop, sizes read from the image headers or the LMDBs' meta_info.txt, for any number of
    pairs; sets of up to :data:`MAX_IMAGES_TO_DECODE` pairs on disk are also decoded (readable; grey / RGBA / 16-bit
    images named once through ``log``; in LMDBs grey and RGBA from the channel count)."""
    label = f'datasets.{phase} ({dataset_opt.get("name", phase)})'
    gt, lq = dataset_opt.get('dataroot_gt'), dataset_opt.get('dataroot_lq')
    folders = [root for root in (gt, lq) if root]
    conversions, total = {}, 0
    if dataset_opt.get('type') == 'PairedImageDataset' and gt and lq:
        if backend == 'lmdb':
            pairs = _lmdb_pairs(label, gt, lq)
            _refuse_mismatches(label, [size_mismatch(name, hr[:2], lr[:2], scale) for name, hr, lr in pairs])
            kinds = {1: 'grey', 4: 'RGBA'}
            for name, hr, lr in pairs:
                for shape in (hr, lr):
                    if shape[2] in kinds:
                        conversions.setdefault(kinds[shape[2]], []).append(name)
            total = 2 * len(pairs)
        else:
            pairs = _disk_pairs(label, dataset_opt, gt, lq)
            if len(pairs) > MAX_IMAGES_TO_DECODE:  # headers only: any number of pairs
                _refuse_mismatches(label, [size_mismatch(name, _header_size(label, hr), _header_size(label, lr), scale)
                                           for name, hr, lr in pairs])
                return
            try:
                checked = check_pairs(pairs, scale, label)
            except (ValueError, FileNotFoundError) as err:
                raise _read_error(label, err) if not str(err).startswith(label) else err
            conversions, total = checked.conversions, 2 * len(pairs)
    elif backend == 'disk':
        names = [(root, name) for root in folders for name in sorted(os.listdir(root))]
        for root, name in names:
            path = os.path.join(root, name)
            if len(names) > 2 * MAX_IMAGES_TO_DECODE:
                _header_size(label, path)
                continue
            try:
                info = inspect_image(path)
            except (ValueError, FileNotFoundError) as err:
                raise _read_error(label, err) from err
            total += 1
            if info.conversion:
                conversions.setdefault(info.conversion, []).append(name)
    note = conversion_note(label, conversions, total)
    if note:
        log(note)


def _size(hw):
    return f'{hw[1]}x{hw[0]}'


def _build_to_check(option, dataset_opt):
    """Build a dataset of the plugin's that checks its own folders and image sizes when built (header reads only),
    its errors prefixed with ``option`` (they start with the option's name)."""
    try:
        DATASET_REGISTRY.get(dataset_opt['type'])(dataset_opt)
    except (UserInputError, FileNotFoundError) as err:
        raise UserInputError(f'{option}.{err}') from err


def _check_train_set(opt, dataset_opt, backend):
    """The training loader's options (BasicSR's ``build_dataloader`` / ``PairedImageDataset`` / sampler read them
    only after the experiment folder is made), and for PairedImageDataset every pair: HR = LR x scale exactly (what
    BasicSR's ``paired_random_crop`` requires), ``gt_size / scale`` no larger than the smallest LR, and a set that
    fills at least one batch (the loader drops the last partial batch)."""
    option = 'datasets.train'
    label = f'{option} ({dataset_opt.get("name", "train")})'
    batch = _count(f'{option}.batch_size_per_gpu', dataset_opt.get('batch_size_per_gpu'), 1,
                   ' (images a step on each GPU, or on the CPU)', integral_float=False)
    _count(f'{option}.num_worker_per_gpu', dataset_opt.get('num_worker_per_gpu'), 0,
           ' (loader processes per GPU; 0: load in the training process)', integral_float=False)
    ratio = dataset_opt.get('dataset_enlarge_ratio', 1)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0:
        raise UserInputError(f'{option}.dataset_enlarge_ratio: must be a positive number (1: each image once an '
                             f'epoch), got {ratio!r}')
    prefetch = dataset_opt.get('prefetch_mode')
    if prefetch not in PREFETCH_MODES:
        raise UserInputError(f'{option}.prefetch_mode: {prefetch!r} is not supported; allowed: ~, cpu, cuda')
    if prefetch == 'cuda' and dataset_opt.get('pin_memory') is not True:
        raise UserInputError(f'{option}.prefetch_mode: cuda needs {option}.pin_memory: true')
    if dataset_opt.get('type') in NO_GROUND_TRUTH_DATASETS:
        _build_to_check(option, dict(dataset_opt, phase='train', scale=dataset_opt.get('scale', opt.get('scale'))))
    if dataset_opt.get('type') != 'PairedImageDataset':
        return
    scale = dataset_opt['scale']
    gt_size = _count(f'{option}.gt_size', dataset_opt.get('gt_size'), 1, ' (the HR patch side)', integral_float=False)
    if gt_size % scale:
        raise UserInputError(f'{option}.gt_size: {gt_size} is not a multiple of the scale {scale} (the LR patch is '
                             f'gt_size / scale); allowed: e.g. {gt_size - gt_size % scale or scale}')
    for key in ('use_hflip', 'use_rot'):
        if key not in dataset_opt:
            raise UserInputError(f'{option}.{key}: required by PairedImageDataset for training (true or false)')
    pairs = _sized_pairs(label, dataset_opt, backend)
    if not pairs:
        raise UserInputError(f'{label}: no training pairs (meta_info_file {dataset_opt.get("meta_info_file")} lists '
                             'no image)')
    wrong = [(name, hr, lr) for name, hr, lr in pairs if (hr[0], hr[1]) != (lr[0] * scale, lr[1] * scale)]
    if wrong:
        name, hr, lr = wrong[0]
        more = f' (and {len(wrong) - 1} more)' if len(wrong) > 1 else ''
        raise UserInputError(f'{label}: {name}: HR {_size(hr)} is not LR {_size(lr)} x scale {scale}{more}; BasicSR\'s '
                             'training crop needs every HR to be its LR x scale exactly')
    name, hr, lr = min(pairs, key=lambda pair: (min(pair[2]), pair[0]))
    if min(lr) < gt_size // scale:
        raise UserInputError(f'{option}.gt_size: {gt_size} needs LR images of at least {gt_size // scale}x'
                             f'{gt_size // scale} (gt_size / scale {scale}), but {name} is LR {_size(lr)} (HR '
                             f'{_size(hr)}); allowed: a multiple of {scale} up to {min(lr) * scale}')
    world = opt.get('world_size', 1)
    num_gpu = opt.get('num_gpu', 0)
    num_gpu = torch.cuda.device_count() if num_gpu == 'auto' else num_gpu
    gpus = 1 if opt.get('dist') or not num_gpu else num_gpu  # BasicSR's build_dataloader: batch x num_gpu
    samples = math.ceil(len(pairs) * ratio / world)  # EnlargedSampler: the samples of one process
    if samples < batch * gpus:
        enlarged = f' x dataset_enlarge_ratio {ratio}' if ratio != 1 else ''
        split = f' split over {world} processes' if world > 1 else ''
        times = f' x {gpus} GPUs' if gpus > 1 else ''
        raise UserInputError(f'{option}.batch_size_per_gpu: {batch}{times} is more than the {len(pairs)} training '
                             f'pairs{enlarged}{split}; BasicSR\'s loader drops the last partial batch, so not one '
                             f'iteration would run; allowed: at most {samples // gpus}')


def _check_lmdb(option, root, dataset_type):
    if dataset_type == 'PairedImageDataset' and not root.endswith('.lmdb'):
        raise UserInputError(f'{option}: {root} is not named <name>.lmdb, which BasicSR\'s PairedImageDataset requires '
                             'of an LMDB folder')
    for name in ('data.mdb', 'meta_info.txt'):
        if not os.path.isfile(os.path.join(root, name)):
            raise FileNotFoundError(f'{option}: {root} is not an LMDB folder (no {name}); make one with '
                                    '`ghostsr prepare_data --lmdb`')


def check_datasets(opt, log=print, is_train=None):
    """Phases BasicSR's pipeline accepts (``is_train``: True for training, False for test, None: not checked),
    registered dataset types, data folders (disk: images there; LMDB: ``<name>.lmdb`` with data.mdb and
    meta_info.txt), ``meta_info_file``, the training set (:func:`_check_train_set`) and every validation / test set
    (:func:`_check_eval_set`)."""
    datasets = opt.get('datasets')
    if not isinstance(datasets, dict) or not datasets:
        raise UserInputError(f'datasets: must be a mapping of phase -> dataset options, got {datasets!r}')
    if is_train and 'train' not in datasets:
        raise UserInputError('datasets.train: required in a training option file')
    for phase, dataset_opt in datasets.items():
        kind = phase.split('_')[0]
        if is_train and phase != 'train' and kind != 'val':
            raise UserInputError(f'datasets.{phase}: not a phase BasicSR trains with; allowed: train, val, val_<n>')
        if is_train is False and kind not in ('train', 'val', 'test'):
            raise UserInputError(f'datasets.{phase}: not a phase BasicSR tests with; allowed: test, test_<n>, val, val_<n>')
        if not isinstance(dataset_opt, dict):
            raise UserInputError(f'datasets.{phase}: must be a mapping of dataset options, got {dataset_opt!r}')
        dataset_type = dataset_opt.get('type')
        if dataset_type not in DATASET_REGISTRY._obj_map:
            raise ValueError(f'datasets.{phase}.type: "{dataset_type}" is not a registered dataset; allowed: '
                             f'{_allowed(DATASET_REGISTRY)}')
        backend = (dataset_opt.get('io_backend') or {}).get('type', 'disk')
        if backend not in ('disk', 'lmdb'):
            raise ValueError(f'datasets.{phase}.io_backend.type: "{backend}" is not supported; allowed: disk, lmdb')
        paired = dataset_type == 'PairedImageDataset'
        for key in ('dataroot_gt', 'dataroot_lq'):
            root = dataset_opt.get(key)
            option = f'datasets.{phase}.{key}'
            if root is None:
                if paired:
                    raise UserInputError(f'{option}: required by PairedImageDataset (the '
                                         f'{"HR" if key == "dataroot_gt" else "LR"} images)')
                continue
            if backend == 'lmdb':
                _check_lmdb(option, root, dataset_type)
            else:
                _check_image_folder(option, root)
        meta = dataset_opt.get('meta_info_file')
        if backend == 'disk' and meta is not None and not os.path.isfile(meta):
            raise FileNotFoundError(f'datasets.{phase}.meta_info_file: {meta} does not exist (BasicSR reads the image '
                                    'names from it: make it, or remove meta_info_file to use every image of the '
                                    'folders)')
        if paired or kind != 'train':
            scale = dataset_opt.get('scale', opt.get('scale'))
            if not _is_int(scale) or scale < 1:
                raise UserInputError(f'scale: must be a positive integer (the SR factor), got {scale!r}')
            dataset_opt = dict(dataset_opt, scale=scale)
        if kind == 'train':
            if is_train:
                _check_train_set(opt, dataset_opt, backend)
        elif dataset_type in NO_GROUND_TRUTH_DATASETS:
            if is_train is False and (opt.get('val') or {}).get('metrics'):
                raise UserInputError(f'datasets.{phase}: {dataset_type} has no ground truth to measure val.metrics '
                                     'against; allowed: a PairedImageDataset, or no val.metrics (the test then only '
                                     'saves its outputs)')
            _build_to_check(f'datasets.{phase}', dict(dataset_opt, phase=phase))
        else:
            _check_eval_set(phase, dataset_opt, dataset_opt['scale'], log, backend)


# ----------------------------------------------------------------------------------------------- checkpoints
def check_checkpoints(opt, nets=None, resuming=False):
    """Load every checkpoint the run reads (``weights_only=True``, memory-mapped) and check that it fits:
    ``path: pretrain_network_*`` (strict ones against their network), ``ghost_init: pretrain_path`` (against the
    plain twin of network_g, re-parameterised blocks merged as GhostSRModel merges them; not when ``resuming``),
    ``distill: teacher_path`` (against the teacher)."""
    from ghostsr_plugin.compress.clustering import check_plain_state_dict, plain_state_for
    nets = check_networks(opt) if nets is None else nets
    path_opt = opt.get('path') or {}
    for key, net in nets.items():
        if not key.startswith('network_'):
            continue
        label = key.removeprefix('network_')
        ckpt = path_opt.get(f'pretrain_network_{label}')
        if ckpt:
            state = load_checkpoint(ckpt, path_opt.get(f'param_key_{label}', 'params'), mmap=True)
            if path_opt.get(f'strict_load_{label}', True):
                check_state_dict_fits(net, state, ckpt)
    teacher = nets.get('teacher') if 'teacher' in nets else check_model_options(opt)
    init = opt.get('ghost_init') or {}
    if init and not resuming and 'network_g' in nets:
        path = init['pretrain_path']
        try:
            plain = load_checkpoint(path, init.get('param_key', 'params'), mmap=True)
            check_plain_state_dict(nets['network_g'], plain_state_for(opt['network_g'], plain, path))
        except ValueError as err:
            raise UserInputError(f'ghost_init: pretrain_path {path}: {err}' if path not in str(err) else str(err))
    if teacher is not None:
        distill = opt['distill']
        path = distill.get('teacher_path') or init.get('pretrain_path')
        param_key = distill.get('param_key', init.get('param_key', 'params'))
        check_state_dict_fits(teacher, load_checkpoint(path, param_key, mmap=True), path)


def check_parsed_options(opt, is_train, log=print):
    """Everything but the checkpoints (:func:`check_checkpoints`), on options as BasicSR's ``parse_options``
    returns them (or as read from the file). Returns {network key: unloaded network, 'teacher': ... or None}."""
    check_required(opt, is_train)
    check_registered(opt)
    check_run_options(opt, is_train)
    nets = check_networks(opt)
    nets['teacher'] = check_model_options(opt)
    check_datasets(opt, log, is_train)
    return nets


def check_options(path, is_train=True, log=print):
    """Load the option file at ``path`` and check it all (:func:`check_parsed_options`, and the checkpoints).
    Returns the options."""
    opt = load_options(path)
    nets = check_parsed_options(opt, is_train, log)
    check_checkpoints(opt, nets)
    return opt


def check_options_cli(command='ghostsr train', is_train=True, argv=None):
    """The ``-opt`` file given on the command line exists, is a YAML mapping and has the sections BasicSR's
    ``parse_options`` reads (it parses the rest, then :func:`check_parsed_options` checks it). Returns its path
    (``-h`` / ``--help``: prints the usage and exits 0)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', type=str)
    parser.add_argument('-h', '--help', action='store_true')
    args, _ = parser.parse_known_args(argv)
    if args.help:
        print(f'usage: {command} -opt <option file.yml>' + (' [--auto_resume]' if is_train else '')
              + ' [--launcher none|pytorch|slurm] [--debug] [--force_yml KEY=VALUE ...]\n\n'
              + ('Train' if is_train else 'Test') + " with BasicSR's own pipeline; the option file is checked before "
              'anything is made or renamed. Outputs go under the current folder.')
        raise SystemExit(0)
    if args.opt is None:
        raise UserInputError(f'usage: {command} -opt <option file.yml>'
                             + (' [--auto_resume]' if is_train else '') + ' [--debug]')
    check_required(load_options(args.opt), is_train, args.opt)
    return args.opt


def parse_and_check(parse_options, root_path, is_train):
    """BasicSR's ``parse_options``, then :func:`check_parsed_options` (notes printed on rank 0). Returns (opt, args,
    networks, what ``parse_options`` printed): the caller prints that once all its checks passed, so that a rejected
    run prints only its error."""
    with contextlib.redirect_stdout(io.StringIO()) as held:
        opt, args = parse_options(root_path, is_train)
    log = (lambda line: print(f'note: {line}', flush=True)) if opt.get('rank', 0) == 0 else (lambda line: None)
    return opt, args, check_parsed_options(opt, is_train, log), held.getvalue()
