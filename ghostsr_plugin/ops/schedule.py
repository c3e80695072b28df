"""The per-network driver of the Gumbel schedule: every Ghost network holds one as ``net.ghost_schedule``, and a
forward pre-hook (:func:`attach_schedule`) makes it pick the offset of all the network's learnable ghost layers at
the start of every forward, in one go (one host sync per forward): sampled from the Gumbel schedule of
:mod:`ghostsr_plugin.ops.gumbel` when training (Eq. 3-5), argmax W' in ``eval()``.
"""
import warnings

import torch
from torch import nn

from ghostsr_plugin.ops.ghost_conv import ghost_layers
from ghostsr_plugin.ops.gumbel import gumbel_schedule, hard_offsets, sample_offsets

__all__ = ['GhostSchedule', 'attach_schedule']


class GhostSchedule(nn.Module):
    """Per-network driver of the Gumbel schedule (Eq. 3-5).

    GhostSRModel sets the iteration before each training step (:meth:`set_iteration`). Without it (e.g. BasicSR's
    plain ``SRModel``) the schedule advances by itself, one iteration per training forward, with
    ``iters_per_epoch`` from the network options, and warns once that GhostSRModel derives it from the data.
    The persistent buffer ``iteration`` keeps the position across checkpoints.
    """

    def __init__(self, a=0.97, tau=1.0, iters_per_epoch=1000, seed=0):
        super().__init__()
        if not 0 < a <= 1:
            raise ValueError(f'network_g: gumbel_a (noise decay a of Eq. 3) must be in (0, 1], got {a!r}')
        if not tau > 0:
            raise ValueError(f'network_g: gumbel_tau (temperature τ of Eq. 4) must be > 0, got {tau!r}')
        self.a, self.tau, self.iters_per_epoch, self.seed = a, tau, int(iters_per_epoch), int(seed)
        self.register_buffer('iteration', torch.zeros((), dtype=torch.long))
        self.driven = False  # True once a GhostSRModel sets the iteration
        self._warned = False

    def set_iteration(self, current_iter, iters_per_epoch=None):
        self.driven = True
        self.iteration.fill_(current_iter)
        if iters_per_epoch is not None:
            self.iters_per_epoch = int(iters_per_epoch)

    def state(self):
        return gumbel_schedule(int(self.iteration), self.iters_per_epoch, self.a, self.tau, self.seed)

    def plan(self, net, training):
        """Choose the offsets of all learnable ghost layers of ``net`` for this forward."""
        layers = [m for m in ghost_layers(net) if m.shift_logits is not None and m.fixed_offset is None]
        if not layers:
            return
        logits = torch.stack([m.shift_logits for m in layers])
        if training:
            if not self.driven:
                if not self._warned:
                    self._warned = True
                    warnings.warn('GhostSR: this Ghost network is trained without GhostSRModel; its Gumbel schedule '
                                  f'advances one iteration per training forward with iters_per_epoch='
                                  f'{self.iters_per_epoch} (network option). Use model_type: GhostSRModel to derive '
                                  'it from the dataset, log τ/noise/offsets and keep DDP ranks in step.')
                self.iteration += 1
            offsets, probs = sample_offsets(logits, self.state())
            for layer, offset, prob in zip(layers, offsets, probs):
                layer._plan = (offset, prob)
        else:
            for layer, offset in zip(layers, hard_offsets(logits.detach())):
                layer._plan = (offset, None)


def _plan_ghosts(module, args):
    """Forward pre-hook of a Ghost network: the Gumbel plan of all its ghost layers (one per forward)."""
    module.ghost_schedule.plan(module, module.training)


def attach_schedule(net, schedule):
    """Give ``net`` its ``ghost_schedule`` (moved to the network's device) and the pre-hook that plans every
    forward."""
    net.ghost_schedule = schedule.to(next(net.parameters()).device)
    net.register_forward_pre_hook(_plan_ghosts)
    return net
