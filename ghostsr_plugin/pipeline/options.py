"""Up-front checks of a BasicSR option file, so a bad option fails at once, with a message naming it, before
BasicSR makes, renames (``<name>_archived_<time>``) or writes anything.

:func:`check_parsed_options` checks what BasicSR's ``parse_options`` returns: required sections, registered model,
networks and datasets, the networks' arguments (each ``network_*`` is built, on the meta device where the arch
allows it), GhostSRModel's ``ghost:`` / ``ghost_init:`` / ``distill:`` blocks, the data folders, and for every
validation / test set on disk: each image is readable, each LR fits its HR at the scale after BasicSR's modcrop
(else an error naming the image, both sizes and the scale), and grey / RGBA / 16-bit images, which BasicSR reads
as 8-bit RGB, are named once per set. :func:`check_checkpoints` loads (``weights_only=True``, memory-mapped) and
fits every checkpoint the run will read: ``path: pretrain_network_*``, ``ghost_init: pretrain_path``,
``distill: teacher_path``.
"""
import argparse
import contextlib
import io
import os


from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY
from ghostsr_plugin.archs.build import build_unloaded
from ghostsr_plugin.models.ghostsr_model import check_model_options
from ghostsr_plugin.utils.option_file import load_options
from ghostsr_plugin.utils.checkpoint import check_state_dict_fits, load_checkpoint
from ghostsr_plugin.utils.errors import UserInputError
from ghostsr_plugin.utils.images import IMAGE_EXTENSIONS, check_pairs, conversion_note, inspect_image, is_image_name

__all__ = ['check_required', 'check_registered', 'check_networks',
           'check_datasets', 'check_checkpoints', 'check_parsed_options',
           'check_options', 'check_options_cli', 'parse_and_check']

MAX_IMAGES_TO_DECODE = 500  # test/val sets are decoded up front; larger (train) sets are only listed
REQUIRED = ('name', 'model_type', 'num_gpu', 'datasets', 'network_g', 'path')
REQUIRED_TRAIN = ('train', 'logger')


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


def check_networks(opt):
    """Build every ``network_*`` (:func:`build_unloaded`); returns {key: network}."""
    return {key: build_unloaded(net_opt, key) for key, net_opt in opt.items() if key.startswith('network_')}


def _check_image_folder(option, folder):
    """The image names of a data folder; an error names a missing or empty folder."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'{option}: folder {folder} does not exist. Expected a folder of images '
                                '(see README, "Data"; `ghostsr prepare_data` makes one)')
    images = sorted(f for f in os.listdir(folder) if is_image_name(f))
    if not images:
        raise FileNotFoundError(f'{option}: folder {folder} holds no images ({", ".join(IMAGE_EXTENSIONS)})')
    return images


def _read_error(option, err):
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return UserInputError(f'{option}: {message}')


def _check_eval_set(phase, dataset_opt, scale, log):
    """Every image of a validation / test set on disk: readable; for PairedImageDataset, each LR fits its HR at
    ``scale`` after modcrop (the pairs BasicSR makes: folder scan or ``meta_info_file``, ``filename_tmpl``);
    grey / RGBA / 16-bit images named once through ``log``."""
    from basicsr.data.data_util import paired_paths_from_folder, paired_paths_from_meta_info_file
    label = f'datasets.{phase} ({dataset_opt.get("name", phase)})'
    gt, lq = dataset_opt.get('dataroot_gt'), dataset_opt.get('dataroot_lq')
    folders = [root for root in (gt, lq) if root]
    if sum(len(os.listdir(root)) for root in folders) > 2 * MAX_IMAGES_TO_DECODE:
        return
    if dataset_opt.get('type') == 'PairedImageDataset' and gt and lq:
        tmpl = dataset_opt.get('filename_tmpl', '{}')
        try:
            if dataset_opt.get('meta_info_file'):
                paths = paired_paths_from_meta_info_file([lq, gt], ['lq', 'gt'], dataset_opt['meta_info_file'], tmpl)
            else:
                paths = paired_paths_from_folder([lq, gt], ['lq', 'gt'], tmpl)
        except (AssertionError, OSError) as err:
            raise UserInputError(f'{label}: the LR and HR folders do not pair up: {err} (dataroot_gt {gt}, '
                                 f'dataroot_lq {lq}, filename_tmpl {tmpl!r})') from err
        pairs = sorted((os.path.basename(p['gt_path']), p['gt_path'], p['lq_path']) for p in paths)
        try:
            checked = check_pairs(pairs, scale, label)
        except (ValueError, FileNotFoundError) as err:
            raise _read_error(label, err) if not str(err).startswith(label) else err
        conversions, total = checked.conversions, 2 * len(pairs)
    else:
        conversions, total = {}, 0
        for root in folders:
            for name in sorted(os.listdir(root)):
                try:
                    info = inspect_image(os.path.join(root, name))
                except (ValueError, FileNotFoundError) as err:
                    raise _read_error(label, err) from err
                total += 1
                if info.conversion:
                    conversions.setdefault(info.conversion, []).append(name)
    note = conversion_note(label, conversions, total)
    if note:
        log(note)


def check_datasets(opt, log=print):
    """Registered dataset types, data folders (disk: images there; LMDB: data.mdb), and every validation / test
    set on disk image by image (:func:`_check_eval_set`)."""
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        dataset_type = dataset_opt.get('type')
        if dataset_type not in DATASET_REGISTRY._obj_map:
            raise ValueError(f'datasets.{phase}.type: "{dataset_type}" is not a registered dataset; allowed: '
                             f'{_allowed(DATASET_REGISTRY)}')
        backend = (dataset_opt.get('io_backend') or {}).get('type', 'disk')
        for key in ('dataroot_gt', 'dataroot_lq'):
            root = dataset_opt.get(key)
            if root is None:
                continue
            option = f'datasets.{phase}.{key}'
            if backend == 'lmdb':
                if not os.path.isfile(os.path.join(root, 'data.mdb')):
                    raise FileNotFoundError(f'{option}: {root} is not an LMDB folder (no data.mdb); make one with '
                                            '`ghostsr prepare_data --lmdb`')
            elif backend == 'disk':
                _check_image_folder(option, root)
            else:
                raise ValueError(f'datasets.{phase}.io_backend.type: "{backend}" is not supported; allowed: disk, lmdb')
        if backend == 'disk' and phase.split('_')[0] != 'train':
            scale = dataset_opt.get('scale', opt.get('scale'))
            if not isinstance(scale, int) or scale < 1:
                raise UserInputError(f'scale: must be a positive integer (the SR factor), got {scale!r}')
            _check_eval_set(phase, dataset_opt, scale, log)


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
    nets = check_networks(opt)
    nets['teacher'] = check_model_options(opt)
    check_datasets(opt, log)
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
