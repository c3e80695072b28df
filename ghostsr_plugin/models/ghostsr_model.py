import math
import os
import time
from collections import OrderedDict

import torch
from torch.nn.parallel import DistributedDataParallel

from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
from ghostsr_plugin.archs.build import build_unloaded
from ghostsr_plugin.archs.twins import teacher_options
from ghostsr_plugin.ops.ghost_conv import ghost_layers, ghost_offsets
from ghostsr_plugin.ops.shift import centre_offset
from ghostsr_plugin.utils.checkpoint import check_state_dict_fits, load_checkpoint
from ghostsr_plugin.utils.errors import UserInputError

GHOST_OPTION_KEYS = ('iters_per_epoch', 'log_offsets', 'shift_lr_mult', 'freeze_offsets_at')
GHOST_INIT_KEYS = ('pretrain_path', 'param_key', 'seed', 'n_init', 'init_offset', 'offset_margin')
DISTILL_KEYS = ('loss_weight', 'teacher_path', 'param_key', 'network')


@MODEL_REGISTRY.register()
class GhostSRModel(SRModel):
    """SRModel for GhostSR networks (Nie et al., "GhostSR: Learning Ghost Features for Efficient SISR").

    What it adds to BasicSR's SRModel:

    * Gumbel schedule (Eq. 3-5) driven by the iteration: before every step the network's ``ghost_schedule`` gets
      the iteration and ``iters_per_epoch``, so t = 1 + (iter - 1) // iters_per_epoch. ``iters_per_epoch`` comes
      from the option ``ghost: iters_per_epoch`` or, when null, from the train set size, batch and world size
      (BasicSR's own formula). All DDP ranks draw the same noise (it is seeded by the iteration). Resuming
      continues at the same schedule position.
    * Logs the temperature, the noise scale a^(t-1), the epoch t and the share of ghost layers that moved
      (console/tensorboard), and every layer's offset at each print (``ghost: log_offsets``).
    * ``ghost_init:`` (pretrain_path, param_key, seed, init_offset) clusters a pre-trained plain model into the
      Ghost network before training (§3.2, Alg. 1 lines 1-3); skipped on resume. The checkpoint of a network with
      re-parameterised blocks (SPAN, ECBSR) is merged into its deploy form first, as ``type: Ghost`` merged the
      network (:func:`ghostsr_plugin.compress.clustering.plain_state_for`); the ``distill:`` teacher stays the original
      network (eval mode, which merges the branches itself).
    * ``ghost: shift_lr_mult``: learning-rate multiplier of the shift logits W' (own optimizer group; default 1).
    * ``ghost: freeze_offsets_at``: an iteration (int >= 1) or a fraction of ``total_iter`` (float in (0, 1)) from
      which every learnable offset is fixed at its argmax W' (no noise, W' no longer trained), so the last phase
      fine-tunes the weights for fixed moves. The logits keep their values, so checkpoints keep the argmax; a
      resumed run freezes again at the same point. Not in the paper.
    * ``val: save_best: <metric>`` (a metric of ``val: metrics``): keep ``models/net_g_best.pth`` (and
      ``best.json``) of the best validation figure of the first validation set; it survives resuming.
    * ``distill:`` (loss_weight, teacher_path, param_key, network): fine-tune against the pre-trained plain model
      as well: ``loss_weight * L1(net_g(lq), teacher(lq))`` is added to BasicSR's pixel/perceptual losses. Without
      ``pixel_opt`` / ``perceptual_opt`` it is the only loss, and the training set needs no ground truth
      (``LRFolderDataset``: LR patches from any folder of images). The
      teacher defaults to ``ghost_init``'s checkpoint in the plain twin of ``network_g``
      (GhostEDSR -> EDSR, ...). Not in the paper; it speeds up recovery after the clustering init.
    * EMA copies the ghost buffers (channel maps) too; validation and the EMA net use hard offsets (eval mode).
    * Checkpoints, training states and validation images are written atomically (as for every BasicSR model once
      the plugin is imported: :mod:`ghostsr_plugin.models.atomic_saves`); a checkpoint that does not fit the
      network gets an error naming the first key or shape that does not fit.
    * DDP on CPU (gloo) when num_gpu is 0.
    """

    def __init__(self, opt):
        self.ghost_opt, self.ghost_init_opt, self.distill_opt = check_options(opt)
        self.iters_per_epoch = None
        self.teacher = None
        self.freeze_iter = _freeze_iteration(self.ghost_opt.get('freeze_offsets_at'), opt)
        self.offsets_frozen_at = None  # the iteration at which the offsets were frozen
        self.best_metric = _best_metric_option(opt)
        self.best = None  # {'dataset', 'metric', 'value', 'iter', 'better'} of net_g_best.pth
        super().__init__(opt)

    # ----------------------------------------------------------------------------------------------- setup
    def model_to_device(self, net):
        """BasicSR's placement, with DDP on the CPU too (gloo) and without the buffer broadcast at each forward:
        BasicSR validates on rank 0 alone, and a forward that broadcasts would wait for the other ranks forever (a
        Ghost network has buffers: channel maps, the schedule's iteration, identical on every rank anyway)."""
        if not self.opt['dist']:
            return super().model_to_device(net)
        device_ids = None if self.opt['num_gpu'] == 0 else [torch.cuda.current_device()]
        return DistributedDataParallel(net.to(self.device), device_ids=device_ids, broadcast_buffers=False,
                                       find_unused_parameters=self.opt.get('find_unused_parameters', False))

    def init_training_settings(self):
        logger = get_root_logger()
        bare = self.get_bare_model(self.net_g)
        if not hasattr(bare, 'ghost_schedule'):
            logger.warning(f'GhostSRModel: network_g {type(bare).__name__} has no ghost layers; '
                           'training it like SRModel.')
        self.iters_per_epoch = self._iters_per_epoch()
        if self.ghost_init_opt and not self.opt['path'].get('resume_state'):
            self._ghost_init(bare)
        if self.distill_opt:
            self.teacher = self._build_teacher()
        train_opt = self.opt['train']
        if self.teacher is None or train_opt.get('pixel_opt') or train_opt.get('perceptual_opt'):
            super().init_training_settings()
            return
        # teacher only (no ground truth, e.g. LRFolderDataset): SRModel's set-up refuses a run without pixel_opt /
        # perceptual_opt after it has made the EMA copy and the (absent) losses, before the optimizers: finish it here
        try:
            super().init_training_settings()
        except ValueError as err:
            if 'losses are None' not in str(err):
                raise
            self.setup_optimizers()
            self.setup_schedulers()
        logger.info('GhostSRModel: no pixel_opt / perceptual_opt: the only loss is l_distill, the L1 distance to the '
                    'teacher\'s output (no ground truth needed).')

    def _iters_per_epoch(self):
        given = self.ghost_opt.get('iters_per_epoch')
        if given is not None:
            return given
        train_opt = self.opt.get('datasets', {}).get('train')
        if train_opt is None:
            return 1000
        num_images = len(build_dataset(train_opt))
        batch = train_opt['batch_size_per_gpu'] * self.opt.get('world_size', 1)
        iters = math.ceil(num_images * train_opt.get('dataset_enlarge_ratio', 1) / batch)
        get_root_logger().info(f'GhostSRModel: Gumbel epoch = {iters} iterations ({num_images} images, batch {batch}).')
        return max(iters, 1)

    def _build_teacher(self):
        """The frozen plain teacher of ``distill:`` (eval mode, no gradients, never saved)."""
        opt = self.distill_opt
        weight = opt.get('loss_weight', 1.0)
        path = opt.get('teacher_path') or self.ghost_init_opt.get('pretrain_path')
        network_opt = teacher_options(self.opt)
        teacher = build_network(dict(network_opt))
        param_key = opt.get('param_key', self.ghost_init_opt.get('param_key', 'params'))
        state_dict = load_checkpoint(path, param_key)
        check_state_dict_fits(teacher, state_dict, path)
        teacher.load_state_dict(state_dict)
        get_root_logger().info(f'GhostSRModel: distilling from {network_opt["type"]} {path} '
                               f'(L1 to its output, weight {weight}).')
        return teacher.to(self.device).eval().requires_grad_(False)

    def _ghost_init(self, bare):
        """§3.2 / Alg. 1 lines 1-3: cluster the pre-trained plain model into this Ghost network (every rank the same
        way: same seed), and write the per-layer report to ``<experiment>/ghost_init.json``."""
        from ghostsr_plugin.compress.clustering import cluster_init, plain_state_for, report_summary
        from ghostsr_plugin.utils.atomic import atomic_write_json
        init = self.ghost_init_opt
        plain = load_checkpoint(init['pretrain_path'], init.get('param_key', 'params'))
        plain = plain_state_for(self.opt['network_g'], plain, init['pretrain_path'])  # SPAN / ECBSR: merged first
        report = cluster_init(
            bare,
            plain,
            seed=init.get('seed', 0),
            n_init=init.get('n_init', 10),
            init_offset=init.get('init_offset'),
            offset_margin=init.get('offset_margin', 0.01),
            progress=False)
        get_root_logger().info(f'GhostSRModel: clustered from {init["pretrain_path"]}\n{report_summary(report)}')
        if self.opt['rank'] == 0:
            atomic_write_json(report, os.path.join(self.opt['path']['experiments_root'], 'ghost_init.json'))

    def setup_optimizers(self):
        """BasicSR's optimizer, with the shift logits W' in their own group at ``ghost: shift_lr_mult`` x lr
        (default 1, the paper's setting; a short run can raise it so the offsets can move within its budget)."""
        mult = self.ghost_opt.get('shift_lr_mult', 1)
        train_opt = self.opt['train']
        logits, others = [], []
        for name, param in self.net_g.named_parameters():
            if param.requires_grad:
                (logits if name.endswith('shift_logits') else others).append(param)
        optim_opt = dict(train_opt['optim_g'])
        optim_type = optim_opt.pop('type')
        groups = [{'params': others}] + ([{'params': logits, 'lr': optim_opt['lr'] * mult}] if logits else [])
        self.optimizer_g = self.get_optimizer(optim_type, groups, **optim_opt)
        self.optimizers.append(self.optimizer_g)

    # ------------------------------------------------------------------------------------------- training
    def optimize_parameters(self, current_iter):
        schedule = getattr(self.get_bare_model(self.net_g), 'ghost_schedule', None)
        if schedule is not None:
            schedule.set_iteration(current_iter, self.iters_per_epoch)
        if self.freeze_iter is not None and current_iter >= self.freeze_iter and self.offsets_frozen_at is None:
            self.freeze_offsets(current_iter)
        if self.teacher is None:
            super().optimize_parameters(current_iter)
        else:
            self._optimize_with_teacher()
        if schedule is not None:
            self.log_dict.update(self._schedule_log(schedule, current_iter))

    def freeze_offsets(self, current_iter):
        """Fix every learnable offset of net_g (and of its EMA copy, with the same logits) at argmax W'."""
        layers = [m for m in ghost_layers(self.net_g_bare()) if m.shift_logits is not None]
        ema_layers = ghost_layers(self.net_g_ema) if getattr(self, 'net_g_ema', None) is not None else [None] * len(layers)
        for layer, ema in zip(layers, ema_layers):
            layer.freeze_offset()
            if ema is not None and ema.shift_logits is not None:
                ema.shift_logits.data.copy_(layer.shift_logits.data)
                ema.freeze_offset()
        self.offsets_frozen_at = current_iter
        if layers:
            offsets = ' '.join(f'{k}={v[0]:+d},{v[1]:+d}' for k, v in ghost_offsets(self.net_g_bare()).items())
            get_root_logger().info(f'GhostSRModel: offsets frozen at iteration {current_iter} (argmax W\'): {offsets}')

    def feed_data(self, data):
        """SRModel's, and for a batch without ground truth (``LRFolderDataset``) with a ``distill:`` teacher, the
        teacher's output as ``gt``: the training target, and in validation what the metrics compare with (PSNR to
        ``gt`` is then the fidelity to the original network)."""
        super().feed_data(data)
        self.gt_from_teacher = 'gt' not in data and self.teacher is not None
        if self.gt_from_teacher:
            with torch.no_grad():
                self.gt = self.teacher(self.lq)

    def _optimize_with_teacher(self):
        """SRModel's step with the distillation term ``l_distill`` added to the configured losses."""
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq)
        if getattr(self, 'gt_from_teacher', False):
            target = self.gt  # the teacher's output, computed in feed_data
        else:
            with torch.no_grad():
                target = self.teacher(self.lq)
        losses = OrderedDict()
        losses['l_distill'] = self.distill_opt.get('loss_weight', 1.0) * (self.output - target).abs().mean()
        if self.cri_pix:
            losses['l_pix'] = self.cri_pix(self.output, self.gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            losses.update({k: v for k, v in (('l_percep', l_percep), ('l_style', l_style)) if v is not None})
        sum(losses.values()).backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(losses)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _schedule_log(self, schedule, current_iter):
        state = schedule.state()
        layers = [m for m in ghost_layers(self.get_bare_model(self.net_g)) if m.shift_logits is not None]
        moved = [int(m.shift_logits.argmax()) != centre_offset(m.d) for m in layers]
        print_freq = self.opt.get('logger', {}).get('print_freq', 100)
        if self.ghost_opt.get('log_offsets', True) and layers and current_iter % print_freq == 0:
            offsets = ' '.join(f'{k}={v[0]:+d},{v[1]:+d}' for k, v in ghost_offsets(self.net_g_bare()).items())
            get_root_logger().info(f'[ghost offsets (dy,dx) iter {current_iter}] {offsets}')
        return {
            'gumbel_tau': state.tau,
            'gumbel_noise': state.noise_scale,
            'gumbel_epoch': float(state.epoch),
            'ghost_moved': sum(moved) / max(len(moved), 1),
            'ghost_frozen': float(self.offsets_frozen_at is not None),
        }

    def net_g_bare(self):
        return self.get_bare_model(self.net_g)

    def model_ema(self, decay=0.999):
        """BasicSR's EMA of the parameters, plus a copy of the ghost channel maps (buffers)."""
        super().model_ema(decay)
        source = dict(self.net_g_bare().named_buffers())
        for name, buffer in self.net_g_ema.named_buffers():
            if name.endswith('ghost_index'):
                buffer.copy_(source[name])

    # ------------------------------------------------------------------------------------- checkpoints
    def load_network(self, net, load_path, strict=True, param_key='params'):
        bare = self.get_bare_model(net)
        state_dict = load_checkpoint(load_path, param_key)
        if strict:
            check_state_dict_fits(bare, state_dict, load_path)
        get_root_logger().info(f'Loading {type(bare).__name__} model from {load_path}, with param key: [{param_key}].')
        bare.load_state_dict(state_dict, strict=strict)

    def _update_best_metric_result(self, dataset_name, metric, val, current_iter):
        """BasicSR's best-figure log, plus ``val: save_best``: a better figure of the first validation set writes
        ``net_g_best.pth`` and ``best.json`` (atomically; the previous best stays until the new one is complete)."""
        super()._update_best_metric_result(dataset_name, metric, val, current_iter)
        if metric != self.best_metric:
            return
        if self.best is None:
            better = self.opt['val']['metrics'][metric].get('better', 'higher')
            self.best = {'dataset': dataset_name, 'metric': metric, 'value': None, 'iter': None, 'better': better}
        best = self.best
        if dataset_name != best['dataset']:
            return
        improved = best['value'] is None or (val > best['value'] if best['better'] == 'higher' else val < best['value'])
        if improved:  # BasicSR validates once more after the loop, with current_iter past total_iter
            best.update(value=float(val), iter=min(int(current_iter), int(self.opt['train']['total_iter'])))
            self._save_best()

    @master_only
    def _save_best(self):
        from ghostsr_plugin.utils.atomic import atomic_write_json
        models = self.opt['path']['models']
        if getattr(self, 'net_g_ema', None) is not None:
            self.save_network([self.net_g, self.net_g_ema], 'net_g', 'best', param_key=['params', 'params_ema'])
        else:
            self.save_network(self.net_g, 'net_g', 'best')
        atomic_write_json(self.best, os.path.join(models, 'best.json'))
        get_root_logger().info(f'GhostSRModel: best {self.best["dataset"]} {self.best["metric"]} '
                               f'{self.best["value"]:.4f} at iteration {self.best["iter"]}: saved net_g_best.pth')

    def save_training_state(self, epoch, current_iter):
        """BasicSR's training state (written atomically by :mod:`ghostsr_plugin.models.atomic_saves`, rank 0 only)
        plus ``ghost``: the Gumbel epoch length, the iteration the offsets were frozen at, the best record."""
        super().save_training_state(epoch, current_iter, ghost={
            'iters_per_epoch': self.iters_per_epoch,
            'offsets_frozen_at': self.offsets_frozen_at,
            'best': self.best,
            'saved_at': time.time()
        })

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        self.best = resume_state.get('ghost', {}).get('best')
        frozen_at = resume_state.get('ghost', {}).get('offsets_frozen_at')
        if frozen_at is not None:  # the loaded logits hold the frozen argmax
            self.freeze_offsets(frozen_at)
        saved = resume_state.get('ghost', {}).get('iters_per_epoch')
        if saved is not None and saved != self.iters_per_epoch:
            get_root_logger().warning(f'GhostSRModel: the run was saved with iters_per_epoch={saved}, now '
                                      f'{self.iters_per_epoch}; keeping {saved} so the Gumbel schedule continues.')
            self.iters_per_epoch = saved


def check_options(opt):
    """GhostSRModel's option blocks, checked (allowed keys, values, what ``ghost_init`` / ``distill`` need) and
    returned as ``(ghost, ghost_init, distill)``; a ValueError names the bad option. The model calls it, and so do
    the entry points' up-front checks (``ghostsr_plugin.pipeline.options``) before BasicSR makes any folder."""
    ghost = _checked_block(opt, 'ghost', GHOST_OPTION_KEYS)
    ghost_init = _checked_block(opt, 'ghost_init', GHOST_INIT_KEYS)
    distill = _checked_block(opt, 'distill', DISTILL_KEYS)
    iters = ghost.get('iters_per_epoch')
    if iters is not None and (isinstance(iters, bool) or not isinstance(iters, int) or iters < 1):
        raise ValueError(f'ghost: iters_per_epoch must be a positive integer or null (derived from the train set), '
                         f'got {iters!r}')
    _positive('ghost: shift_lr_mult', ghost.get('shift_lr_mult', 1))
    _freeze_iteration(ghost.get('freeze_offsets_at'), opt)
    _best_metric_option(opt)
    if ghost_init and not ghost_init.get('pretrain_path'):
        raise ValueError('ghost_init: pretrain_path (the pre-trained plain model to cluster) is required')
    if distill:
        _positive('distill: loss_weight', distill.get('loss_weight', 1.0))
        if not (distill.get('teacher_path') or ghost_init.get('pretrain_path')):
            raise ValueError('distill: teacher_path is required (or ghost_init: pretrain_path, its default)')
    return ghost, ghost_init, distill


def _positive(option, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f'{option} must be a positive number, got {value!r}')


def _freeze_iteration(value, opt):
    """``ghost: freeze_offsets_at`` as an iteration: an int >= 1, or a float in (0, 1) times ``train: total_iter``."""
    if value is None:
        return None
    total = (opt.get('train') or {}).get('total_iter')
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'ghost: freeze_offsets_at must be an iteration (int >= 1) or a fraction of total_iter '
                         f'(float in (0, 1)), got {value!r}')
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f'ghost: freeze_offsets_at must be an iteration >= 1 or a fraction in (0, 1), got {value}')
        return value
    if not 0 < value < 1 or not total:
        raise ValueError(f'ghost: freeze_offsets_at as a float is a fraction of train: total_iter, in (0, 1); '
                         f'got {value!r} (total_iter {total!r})')
    return max(1, round(value * int(total)))


def _best_metric_option(opt):
    """``val: save_best``: the metric (a key of ``val: metrics``) whose best value keeps ``net_g_best.pth``."""
    val = opt.get('val') or {}
    metric = val.get('save_best')
    if metric is None or metric is False:
        return None
    metrics = list((val.get('metrics') or {}).keys())
    if metric is True and metrics:
        return metrics[0]
    if metric not in metrics:
        raise ValueError(f'val: save_best must name a metric of val: metrics ({", ".join(metrics) or "none defined"}) '
                         f'or be true (the first), got {metric!r}')
    return metric


def _checked_block(opt, name, allowed):
    block = opt.get(name) or {}
    if not isinstance(block, dict):
        raise ValueError(f'{name}: must be a mapping with keys {", ".join(allowed)}; got {block!r}')
    unknown = sorted(set(block) - set(allowed))
    if unknown:
        raise ValueError(f'{name}: unknown option(s) {", ".join(unknown)}; allowed: {", ".join(allowed)}')
    return dict(block)


def check_model_options(opt):
    """The option blocks of GhostSRModel (and models derived from it): allowed keys and values, what
    ``ghost_init`` / ``distill`` need, the distillation teacher's network. Returns the teacher (unloaded) or None."""
    if not issubclass(MODEL_REGISTRY.get(opt['model_type']), GhostSRModel):
        return None
    _, _, distill = check_options(opt)
    if not distill:
        return None
    network = teacher_options(opt)
    if network.get('type') not in ARCH_REGISTRY:
        raise UserInputError(f'distill: network type {network.get("type")!r} is not a registered architecture')
    return build_unloaded(network, 'distill: network')
