"""A data-driven start of a Ghost network from its pre-trained plain network and a few of the user's images.

§3.2 of the paper clusters filter *weights* (Eq. 7-9) and copies them; on real networks the copies lose much of what
the network computes (CARN_M: 3 dB; a Compact x4 keeps 23.5 dB fidelity to itself). This start works on the
*features* of calibration inputs instead:

1. **Per-layer ratios.** Every layer ghostify would ghost is fitted alone (steps 3-4) at each λ of
   :data:`RATIO_CHOICES` on the plain network's own features of a few crops, giving e_L(λ), its relative squared
   output error. One forward with that layer ghosted at the uniform λ, every later convolution refitted as in step 5
   (their compensation, which halves what early layers cost in a Compact x4), measures what its error does at the
   network output: s_L, output squared error per unit of e_L. The λ_L minimise Σ s_L·e_L(λ_L) under the budget
   (a multiple-choice knapsack, solved by dynamic programming over the saved multiply-adds, or with
   ``cost='time'`` over the saved milliseconds of each layer's convolution, timed on this machine); λ = 0 keeps a
   layer plain (``exclude``).
2. **Calibration.** One forward of the plain network caches each convolution's output (the targets); one forward of
   the Ghost network then fits each convolution just before its first call, on its actual input there, so what the
   layers before it lost is seen and compensated rather than compounded.
3. A ghosted layer's **channel map and offset**: k-medoids (PAM) of its output channels, where output c costs
   min(‖T_c − T_j‖², ‖T_c − shift(T_j)‖²) when it copies medoid j (Eq. 1 with the centre one-hot W, or with the
   layer's offset, Eq. 2); every offset of the window is tried and the cheapest kept. The medoids are the intrinsic
   channels (Eq. 8's "nearest the centroid", in feature space instead of weight space); group by group, as the
   ghost layer's own group convolution needs.
4. Each **intrinsic filter**: least squares from the layer's input to the mean of its members' targets (each aligned
   by its copy's offset), ridge-pulled to the medoid's pre-trained filter.
5. Every **other convolution** from the first ghost layer on: least squares from its new input to its plain output,
   ridge-pulled to its pre-trained weights (which it keeps where its input did not change).

A layer called several times (shared weights, CARN_M's cascades) is fitted on its first call. A network with
re-parameterised blocks (SPAN) is matched in its merged deploy form, as ghostify builds it. Memory: the targets of all
convolutions on the calibration batch are held at once (about 1 GB for CARN_M on 16 crops of 96x96).
"""
import copy
import functools
import math
import time
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ghostsr_plugin.compress.ghostifier import GHOST_ARGS, ghostify
from ghostsr_plugin.compress.reparam import merge_reparameterized
from ghostsr_plugin.utils.timing import Timer, interleaved
from ghostsr_plugin.utils.complexity import count_macs
from ghostsr_plugin.ops.ghost_conv import GhostConv2d, num_intrinsic_channels
from ghostsr_plugin.ops.shift import centre_offset, ghost_shift, offset_to_shift, shift2d, shift_to_offset, window_size

__all__ = ['calibrated_ghost', 'RATIO_CHOICES']

RATIO_CHOICES = (0.25, 0.375, 0.5, 0.625, 0.75)  # the λ a layer may get (besides 0: stays plain)
RIDGE = 1e-3  # ridge weight, relative to the mean input energy of a patch
FIT_SAMPLES = 2**15  # output positions per layer for the least squares (at least 16 per unknown)
SELECT_PIXELS = 2**17  # output pixels per layer for the channel-map distances
PROBE_CROPS = 8  # crops for the per-layer ratio probe
PROBE_SAMPLES = 2**13  # output positions per layer for the probe's least squares
OFFSET_MARGIN = 3.0  # learnable layers: the chosen offset's lead in W', so early Gumbel noise keeps it (Eq. 3-5)
BUDGET_TOLERANCE = 1e-4  # the budget is met to this share of the plain network's multiply-adds (or conv time)
TIME_REPS = 7  # cost='time': timed runs of each candidate width of a layer
COSTS = ('flops', 'time')
SEED = 0


# ---------------------------------------------------------------------------------------------------------------
# One convolution's data: sampled input patches, targets, least squares
# ---------------------------------------------------------------------------------------------------------------


def _refittable(conv):
    """A Conv2d (or ghost layer) whose output this module can fit: zero padding, trainable weights (not, e.g.,
    CARN's frozen mean shifters)."""
    return type(conv) in (nn.Conv2d, GhostConv2d) and conv.padding_mode == 'zeros' and conv.weight.requires_grad


def _flat_weight(weight, bias):
    """[out, in/g*k*k (+1)]: a filter per row, its bias last."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    return torch.cat([flat, bias.detach()[:, None]], 1) if bias is not None else flat


class _LayerData:
    """A convolution's input ``x``, plain output ``target`` and pre-trained output ``output`` (its own weights on
    ``x``; the target itself where ``x`` is the plain input) on the calibration batch; its input patches at a seeded
    sample of output positions (least squares) and, on demand, the channel-distance statistics (the channel map)."""

    def __init__(self, conv, x, target, generator, output=None, samples=FIT_SAMPLES):
        self.conv, self.x, self.target = conv, x, target
        self.groups, self.has_bias = conv.groups, conv.bias is not None
        num, _, height, width = target.shape
        patch = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1] + self.has_bias
        count = min(num * height * width, max(samples, 16 * patch))
        flat = torch.randperm(num * height * width, generator=generator)[:count].sort().values
        self.crop, self.row, self.col = flat // (height * width), flat % (height * width) // width, flat % width
        self.patches = self._sample_patches()  # [groups, patch, samples]
        self.start = self.sample(target if output is None else output)  # the pre-trained filters' outputs
        self._factors, self._channels, self._energy, self._distances, self._moved = {}, None, None, {}, {}

    def _sample_patches(self):
        """The k×k input patches (the weight's (in, ky, kx) order) under the sampled output positions."""
        conv = self.conv
        padding = tuple(k // 2 for k in conv.kernel_size) if conv.padding == 'same' else conv.padding
        padded = F.pad(self.x, (padding[1], padding[1], padding[0], padding[0]))
        height, width = padded.shape[-2:]
        by_channel = padded.transpose(0, 1).reshape(padded.shape[1], -1)  # [in, crops*h*w]
        rows = self.row[:, None] * conv.stride[0] + torch.arange(conv.kernel_size[0]) * conv.dilation[0]
        cols = self.col[:, None] * conv.stride[1] + torch.arange(conv.kernel_size[1]) * conv.dilation[1]
        where = (self.crop[:, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]  # [samples, ky, kx]
        patches = by_channel.index_select(1, where.permute(1, 2, 0).flatten())
        patches = patches.reshape(self.groups, -1, len(self.crop))
        if self.has_bias:
            patches = torch.cat([patches, patches.new_ones(self.groups, 1, patches.shape[2])], 1)
        return patches

    def target_at(self, dy=0, dx=0):
        """The sampled target moved by (dy, dx), see :meth:`sample` (cached)."""
        if (dy, dx) not in self._moved:
            self._moved[dy, dx] = self.sample(self.target, dy, dx)
        return self._moved[dy, dx]

    def sample(self, features, dy=0, dx=0):
        """[channels, samples]: ``features[n, :, y - dy, x - dx]`` (0 outside) at the sampled positions (y, x) of
        crop n; a shifted copy ``shift(I)`` with offset (dy, dx) puts ``I[y, x]`` at (y - dy, x - dx)."""
        height, width = features.shape[-2:]
        rows, cols = self.row - dy, self.col - dx
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        values = features[self.crop, :, rows.clamp(0, height - 1), cols.clamp(0, width - 1)]
        return (values * inside[:, None]).T

    def gram(self, group):
        """(UUᵀ, Cholesky factor of UUᵀ + αI) of ``group``'s patches U, α = RIDGE·mean patch energy (float64)."""
        if group not in self._factors:  # one factorisation per group, shared by every λ tried
            patches = self.patches[group]
            gram = (patches @ patches.T).double()
            alpha = RIDGE * float(gram.diagonal().mean()) + 1e-12
            self._factors[group] = gram, torch.linalg.cholesky(gram + alpha * torch.eye(len(gram), dtype=gram.dtype))
        return self._factors[group]

    def ridge_step(self, group, residual):
        """(Δ, R·Uᵀ): the change of the filters [rows, patch] of ``group`` that minimises ‖Δ·U − R‖² + α‖Δ‖² for
        the sampled residuals R of their pre-trained filters, so that those come back exactly where they already fit
        (R = 0), and the pre-trained filters are kept where the data leave them free (duplicated inputs)."""
        rhs = (residual @ self.patches[group].T).double()
        return torch.cholesky_solve(rhs.T, self.gram(group)[1]).T, rhs

    def distances(self, offset, d):
        """(‖T_c‖², ⟨T_c, shift(T_j)⟩, ‖shift(T_j)‖²) of the target's channels over up to SELECT_PIXELS output
        pixels (float64)."""
        if self._channels is None:
            target = self.target
            keep = max(1, min(target.shape[0], SELECT_PIXELS // (target.shape[2] * target.shape[3])))
            crops = torch.as_tensor(np.unique(np.linspace(0, target.shape[0] - 1, keep).round().astype(int)))
            self._channels = target[crops].transpose(0, 1).contiguous()  # [channels, crops, h, w]
            self._energy = (self._channels**2).flatten(1).sum(1).double()
        if offset not in self._distances:
            channels = self._channels
            moved = shift2d(channels, *offset_to_shift(offset, d)).reshape(channels.shape[0], -1)
            self._distances[offset] = (self._energy, (channels.reshape(channels.shape[0], -1) @ moved.T).double(),
                                       (moved**2).sum(1).double())
        return self._distances[offset]


def _relative_error(output, target):
    return float(((output - target)**2).sum() / (target**2).sum().clamp_min(1e-30))


# ---------------------------------------------------------------------------------------------------------------
# Steps 3-4: the channel map, the offset and the intrinsic filters of one ghost layer
# ---------------------------------------------------------------------------------------------------------------


def _k_medoids(cost, k):
    """Sorted indices of ``k`` medoids minimising Σ_c min_j cost[c, j]: greedy build, then the best single swap
    while one helps (PAM)."""
    m = cost.shape[0]
    chosen, best = [], np.full(m, np.inf)
    for _ in range(k):
        totals = np.minimum(best[:, None], cost).sum(0)
        totals[chosen] = np.inf
        chosen.append(int(np.argmin(totals)))
        best = np.minimum(best, cost[:, chosen[-1]])
    chosen = np.array(chosen)
    for _ in range(10 * m):
        sub = cost[:, chosen]
        order = np.argsort(sub, axis=1, kind='stable')
        first = sub[np.arange(m), order[:, 0]]
        second = sub[np.arange(m), order[:, 1]] if k > 1 else np.full(m, np.inf)
        without = np.where(order[None, :, 0] == np.arange(k)[:, None], second[None], first[None])  # [k, m]
        totals = np.minimum(without[:, None, :], cost.T[None]).sum(2)  # [removed medoid, new medoid]
        totals[:, chosen] = np.inf
        i, h = np.unravel_index(np.argmin(totals), totals.shape)
        if not totals[i, h] < first.sum() * (1 - 1e-9):
            break
        chosen[i] = h
    return np.sort(chosen)


def _channel_map(data, num_intrinsic, offset, d):
    """(cost, index, shifted, medoids) of ``offset``: per group, k-medoids of the output channels under the cost of
    copying a medoid unshifted or shifted (step 3); ``index`` is the ghost layer's channel map, ``shifted[c]`` whether
    output c is a shifted copy, ``medoids`` the original channel of each intrinsic slot."""
    energy, inner0, _ = data.distances(centre_offset(d), d)
    plain = energy[:, None] + energy[None, :] - 2 * inner0
    if offset != centre_offset(d):
        _, inner, moved = data.distances(offset, d)
        moved_cost = energy[:, None] + moved[None, :] - 2 * inner
        use_shift = moved_cost < plain
        cost = torch.minimum(plain, moved_cost)
    else:
        use_shift, cost = torch.zeros_like(plain, dtype=torch.bool), plain
    cost = cost.clamp_min(0).fill_diagonal_(0).numpy()
    m, groups = cost.shape[0], data.groups
    per_out, per_slot = m // groups, num_intrinsic // groups
    index, shifted, medoids, total = torch.empty(m, dtype=torch.long), torch.zeros(m, dtype=torch.bool), [], 0.0
    for g in range(groups):
        rows = slice(g * per_out, (g + 1) * per_out)
        block = cost[rows, rows]
        chosen = _k_medoids(block, per_slot)
        nearest = chosen[np.argmin(block[:, chosen], axis=1)]
        nearest[chosen] = chosen  # a medoid is its own slot's intrinsic channel, also when another copies it as well
        for local in range(per_out):
            c, j = g * per_out + local, g * per_out + int(nearest[local])
            slot = g * per_slot + int(np.searchsorted(chosen, nearest[local]))
            shifted[c] = bool(use_shift[c, j]) and c != j
            index[c] = slot + num_intrinsic * int(shifted[c])
        medoids += (g * per_out + chosen).tolist()
        total += float(block[np.arange(per_out), nearest].sum())
    return total, index, shifted, medoids


def _fit_ghost(data, weight, bias, ratio, offsets, d):
    """Weights, bias, channel map and offset of the ghost version (λ = ``ratio``) of the conv with plain ``weight`` /
    ``bias``, fitted on ``data`` (steps 3-4; the cheapest of ``offsets``), and its relative output error at the
    sampled positions."""
    m = weight.shape[0]
    num_intrinsic = num_intrinsic_channels(m, ratio, data.groups)
    centre_first = sorted(offsets, key=lambda offset: offset != centre_offset(d))  # ties: no move
    _, index, shifted, medoids, offset = min(((*_channel_map(data, num_intrinsic, offset, d), offset)
                                              for offset in centre_first), key=lambda found: found[0])
    plain = data.target_at()
    aligned = torch.where(shifted[:, None], data.target_at(*offset_to_shift(offset, d)), plain)
    slot = index % num_intrinsic
    counts = torch.bincount(slot, minlength=num_intrinsic)
    start = data.start[medoids]
    residual = F.one_hot(slot, num_intrinsic).T.to(aligned.dtype) @ aligned / counts[:, None] - start
    rows = num_intrinsic // data.groups
    delta, rhs = map(torch.cat, zip(*(data.ridge_step(g, residual[g * rows:(g + 1) * rows])
                                      for g in range(data.groups))))
    # Σ_c ‖aligned_c − W_slot·U‖² = Σ_c ‖aligned_c − start_slot‖² − Σ_slot n_slot (2 Δ·RUᵀ − Δ·G·Δ)
    curvature = torch.cat([(delta[g * rows:(g + 1) * rows] @ data.gram(g)[0]) for g in range(data.groups)])
    error = ((aligned - start[slot])**2).sum().double() - (counts * ((2 * rhs - curvature) * delta).sum(1)).sum()
    fitted = _flat_weight(weight, bias)[medoids] + delta.to(weight.dtype)
    return {'weight': fitted[:, :weight[0].numel()].reshape(num_intrinsic, *weight.shape[1:]),
            'bias': fitted[:, -1] if bias is not None else None, 'index': index, 'offset': offset,
            'medoids': medoids, 'error': float(error / (plain**2).sum().double().clamp_min(1e-30))}


def _fit_plain(data, weight, bias):
    """Step 5: the conv's weights and bias refitted on ``data``."""
    rows = weight.shape[0] // data.groups
    residual = data.target_at() - data.start
    delta = torch.cat([data.ridge_step(g, residual[g * rows:(g + 1) * rows])[0] for g in range(data.groups)])
    fitted = _flat_weight(weight, bias) + delta.to(weight.dtype)
    return {'weight': fitted[:, :weight[0].numel()].reshape(weight.shape),
            'bias': fitted[:, -1] if bias is not None else None}


def _conv_output(conv, x, fit, d):
    """The output of ``conv``'s geometry with the weights of ``fit`` (and its channel map, for a ghost fit)."""
    output = F.conv2d(x, fit['weight'], fit['bias'], conv.stride, conv.padding, conv.dilation, conv.groups)
    return ghost_shift(output, fit['index'], fit['offset'], d) if 'index' in fit else output


def _allowed_offsets(shift_mode, fixed_offset, d):
    if shift_mode == 'learnable':
        return list(range(window_size(d)))
    return [centre_offset(d) if shift_mode == 'copy' else shift_to_offset(*fixed_offset, d)]


# ---------------------------------------------------------------------------------------------------------------
# Step 1: per-layer ratios under the FLOPs budget
# ---------------------------------------------------------------------------------------------------------------


def _first_calls(net, batch, keep_inputs=True):
    """Output of ``net`` on ``batch`` and {name: [module, input (or None), output of its first call, number of
    calls, multiply-adds per crop over all calls]} of its refittable convs, in the order of their first call (cloned:
    an in-place activation after a conv must not change them)."""
    found, handles = OrderedDict(), []

    def hook(name):
        def record(module, args, output):
            macs = output[0].numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
            if name in found:
                found[name][3] += 1
                found[name][4] += macs
            else:
                found[name] = [module, args[0].detach().clone() if keep_inputs else None, output.detach().clone(),
                               1, macs]
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in net.named_modules() if _refittable(m)]
    try:
        with torch.no_grad():
            output = net(batch)
    finally:
        for handle in handles:
            handle.remove()
    return output, found


def _probe(plain, batch, candidates, ghost_args, progress, timed=False):
    """Step 1's measurements on ``batch``: {layer: {'macs', 'errors': {λ: s_L·e_L(λ)}}} for the candidate layers,
    with ``timed`` also 'ms': {λ: its convolution's milliseconds on ``batch`` (0: all filters)}."""
    from tqdm import tqdm
    d, reference = ghost_args['ghost_d'], ghost_args['ghost_ratio']
    offsets = _allowed_offsets(ghost_args['shift_mode'], ghost_args['fixed_offset'], d)
    expected, convs = _first_calls(plain, batch)
    order = list(convs)
    generator = torch.Generator().manual_seed(SEED)
    found = {}
    for name in tqdm(candidates, desc='GhostSR calibration: ratio probe', unit='layer', disable=not progress):
        conv, x, target, calls, macs = convs[name]
        with torch.no_grad():
            data = _LayerData(conv, x, target, generator, samples=PROBE_SAMPLES)
            fits = {reference: _fit_ghost(data, conv.weight, conv.bias, reference, offsets, d)}
            offset = [fits[reference]['offset']]  # the other λ keep the reference's offset (fewer k-medoids runs)
            fits.update({ratio: _fit_ghost(data, conv.weight, conv.bias, ratio, offset, d)
                         for ratio in RATIO_CHOICES if ratio != reference and _valid_ratio(conv, ratio)})
            # output squared error per unit of relative layer error, the later convs compensating as in step 5
            # (1 where the layer is exact: nothing to scale)
            error = fits[reference]['error']
            following = order[order.index(name) + 1:]
            sensitivity = _output_error(plain, conv, fits[reference], d, batch, expected,
                                        [convs[n] for n in following], generator) / error if error > 1e-9 else 1.0
        found[name] = {'macs': macs, 'out_channels': conv.out_channels, 'groups': conv.groups,
                       'errors': {ratio: sensitivity * fit['error'] for ratio, fit in fits.items()}}
        if timed:
            found[name]['ms'] = _conv_times(conv, x, list(fits), calls)
    return found


def _valid_ratio(conv, ratio):
    return 0 < num_intrinsic_channels(conv.out_channels, ratio, conv.groups) < conv.out_channels


def _output_error(net, conv, fit, d, batch, expected, following, generator):
    """Squared output error of ``net`` on ``batch`` with ``conv`` (every call) replaced by its ghost ``fit`` and the
    ``following`` convs ([module, input, output of the first call, ...]) refitted as step 5 would (their own
    compensation of the ghost layer's error)."""
    fits = {}

    def replace(module, args, output):
        return _conv_output(conv, args[0], fit, d)

    def refit(module, args, output):
        if module not in fits:
            target = next(f[2] for f in following if f[0] is module)
            data = _LayerData(module, args[0], target, generator, output, PROBE_SAMPLES)
            fits[module] = _fit_plain(data, module.weight, module.bias)
        return _conv_output(module, args[0], fits[module], d)

    handles = [conv.register_forward_hook(replace)] + [f[0].register_forward_hook(refit) for f in following]
    try:
        return float(((net(batch) - expected)**2).sum())
    finally:
        for handle in handles:
            handle.remove()


def _saving(layer, ratio):
    """What ghosting ``layer`` at λ = ``ratio`` saves (0: plain): the measured milliseconds of its convolution
    when the probe timed it (``cost='time'``), else multiply-adds per crop."""
    if ratio == 0:
        return 0.0
    if 'ms' in layer:
        return layer['ms'][0] - layer['ms'][ratio]
    m = layer['out_channels']
    return layer['macs'] * (m - num_intrinsic_channels(m, ratio, layer['groups'])) / m


def _conv_times(conv, x, ratios, calls, reps=TIME_REPS):
    """{λ: milliseconds} of ``conv``'s convolution on ``x`` with all its filters (λ = 0) and with the intrinsic
    filters each λ of ``ratios`` keeps (random weights: the time does not depend on them), ``calls`` times per
    forward; the median of ``reps`` runs after one warm-up, timed as the report times networks
    (:func:`~ghostsr_plugin.utils.timing.interleaved`: alternating order, the project's malloc settings)."""
    widths = {0: conv.out_channels}
    widths.update({r: num_intrinsic_channels(conv.out_channels, r, conv.groups) for r in ratios})
    convs = {r: nn.Conv2d(conv.in_channels, n, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                          conv.groups, conv.bias is not None).to(x.device) for r, n in widths.items()}
    with torch.no_grad():
        times = interleaved(Timer(x.device), {r: functools.partial(layer, x) for r, layer in convs.items()},
                            reps, warmup=1)
    return {r: calls * float(np.median(t)) for r, t in times.items()}


def _allocate(layers, need, tolerance):
    """{layer: λ} minimising the predicted output error Σ s_L·e_L(λ_L) with savings ≥ ``need`` − ``tolerance``
    (multiply-adds), None when no choice reaches it: a multiple-choice knapsack solved by dynamic programming over
    the savings, each rounded down to a unit of tolerance / layers (so that every choice saving ``need`` is
    feasible). Ties go to the lower λ."""
    names = list(layers)
    options = {n: [(0, 0.0, 0.0)] + [(r, _saving(layers[n], r), e) for r, e in sorted(layers[n]['errors'].items())]
               for n in names}
    if need <= tolerance:
        return {n: 0 for n in names}
    unit = tolerance / max(1, len(names))
    resolution = math.ceil((need - tolerance) / unit)
    best = np.full(resolution + 1, np.inf)  # least error reaching each saving (the last state: the need met)
    best[0] = 0.0
    picks = []
    for name in names:
        new = np.full(resolution + 1, np.inf)
        pick = np.zeros((resolution + 1, 2), dtype=np.int64)  # (option, state before) per state after
        for k, (_, saving, error) in enumerate(options[name]):
            units = min(resolution, max(0, int(saving // unit)))  # a measured time may not drop
            candidate, source = np.full(resolution + 1, np.inf), np.arange(resolution + 1) - units
            candidate[units:resolution] = best[:resolution - units] + error
            tail = best[resolution - units:]  # every state from here meets the need with this option
            source[resolution] = resolution - units + int(np.argmin(tail))
            candidate[resolution] = tail.min() + error
            better = candidate < new
            new[better], pick[better] = candidate[better], np.stack([np.full(better.sum(), k), source[better]], 1)
        best = new
        picks.append(pick)
    if not np.isfinite(best[resolution]):
        return None
    chosen, state = {}, resolution
    for name, pick in zip(reversed(names), reversed(picks)):
        k, state = pick[state]
        chosen[name] = options[name][k][0]
    return {n: chosen[n] for n in names}


# ---------------------------------------------------------------------------------------------------------------
# Steps 2-5: the calibration forward
# ---------------------------------------------------------------------------------------------------------------


def _calibrate(ghost_net, plain, batch, ghost_args, progress):
    """Steps 2-5 on ``ghost_net`` in place; returns its output on ``batch``, the plain output and the per-layer
    report."""
    from tqdm import tqdm
    d = ghost_args['ghost_d']
    offsets = _allowed_offsets(ghost_args['shift_mode'], ghost_args['fixed_offset'], d)
    expected, calls = _first_calls(plain, batch, keep_inputs=False)
    targets = OrderedDict((name, call[2]) for name, call in calls.items())
    del calls
    plain_modules, ghost_modules = dict(plain.named_modules()), dict(ghost_net.named_modules())
    order = list(targets)
    first_ghost = next(i for i, n in enumerate(order) if isinstance(ghost_modules.get(n), GhostConv2d))
    for name in order[:first_ghost]:  # before the first ghost layer the inputs are the plain ones
        del targets[name]
    todo = [n for n in order[first_ghost:] if _refittable(ghost_modules.get(n, nn.Identity()))]
    report, generator = OrderedDict(), torch.Generator().manual_seed(SEED)
    bar = tqdm(total=len(todo), desc='GhostSR calibration: fit', unit='layer', disable=not progress)

    def fit(name):
        def pre_hook(layer, args):
            if name in report:
                return
            original = plain_modules[name]
            target = targets.pop(name)
            x = args[0].detach()
            before = original(x)
            if before.shape != target.shape:
                raise RuntimeError(f'calibration: {name} sees an input of another shape in the Ghost network '
                                   f'({tuple(x.shape)}); its forward is not the plain one')
            data = _LayerData(original, x, target, generator, before)
            entry = {'error_before': _relative_error(before, target)}
            if isinstance(layer, GhostConv2d):
                found = _fit_ghost(data, original.weight, original.bias, layer.ratio, offsets, d)
                layer.set_index(found['index'])
                if layer.shift_logits is not None and layer.fixed_offset is None:
                    _lead_logits(layer, found['offset'])
                    layer._plan = (found['offset'], None)  # this forward was planned before the fit
                entry.update(action='ghost: channel map by k-medoids of the outputs, intrinsic filters by least '
                             'squares', ratio=layer.ratio, intrinsic=layer.num_intrinsic,
                             offset=list(offset_to_shift(found['offset'], d)), intrinsic_of=found['medoids'])
            else:
                found = _fit_plain(data, original.weight, original.bias)
                entry['action'] = 'refit by least squares'
            with torch.no_grad():
                layer.weight.copy_(found['weight'])
                if layer.bias is not None:
                    layer.bias.copy_(found['bias'])
            entry['error_after'] = _relative_error(_conv_output(original, x, found, d), target)
            report[name] = entry
            bar.update()
        return pre_hook

    handles = [ghost_modules[n].register_forward_pre_hook(fit(n)) for n in todo]
    try:
        with torch.no_grad():
            output = ghost_net(batch)
    finally:
        for handle in handles:
            handle.remove()
        bar.close()
    return output, expected, report


def _lead_logits(layer, offset):
    """Make ``offset`` the argmax of W' by OFFSET_MARGIN over the other (tiny, random) logits."""
    with torch.no_grad():
        logits = layer.shift_logits
        logits[offset] = torch.cat([logits[:offset], logits[offset + 1:]]).max() + OFFSET_MARGIN


# ---------------------------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------------------------


def _batch(inputs, log):
    """The inputs as one batch (centre-cropped to their smallest height and width when they differ)."""
    if not inputs:
        raise ValueError('calibration: no input images')
    height, width = min(x.shape[-2] for x in inputs), min(x.shape[-1] for x in inputs)
    if any(x.shape[-2:] != (height, width) for x in inputs):
        log(f'calibration: inputs centre-cropped to {width}x{height}, the smallest of them')
    crops = [x[..., (x.shape[-2] - height) // 2:, (x.shape[-1] - width) // 2:][..., :height, :width] for x in inputs]
    return torch.cat([x.reshape(-1, *x.shape[-3:]) for x in crops]).float()


def _ghost(plain, options):
    """ghostify of ``plain`` as ``build_network(options)`` builds it (seeded: W' tie-breaks are reproducible)."""
    arguments = {k: v for k, v in options.items() if k not in ('type', 'network')}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return ghostify(plain, **arguments).eval()


def calibrated_ghost(plain, ghost_options, inputs, flops_budget=None, cost='flops', progress=True, log=print):
    """The Ghost network of ``plain`` started from features of ``inputs`` (the module docstring's steps 1-5).

    Args:
        plain (nn.Module): the plain network with its pre-trained weights (not modified).
        ghost_options (dict): ``type: Ghost`` options; ``network`` the plain network's options, the others as
            ghostify takes them (``ghost_ratio``: the uniform λ of the default budget; ``layer_ratios``: kept as given).
        inputs (list[Tensor]): LR inputs, each 1 x C x h x w in [0, 1] (a dozen or more crops of the user's images).
        flops_budget (float | None): the Ghost network's multiply-adds over the plain network's (met to
            BUDGET_TOLERANCE); default: what ghosting every eligible layer at ``ghost_ratio`` gives.
        cost (str): what the budget counts. 'flops': multiply-adds. 'time': the eligible convolutions' time measured
            on this machine (each width timed on the probe crops): the λ are chosen so that those convolutions take
            no longer than at uniform ``ghost_ratio`` (a convolution's time is not proportional to its filters: on a
            CPU a 64 -> 16 conv can cost what 64 -> 32 does), at whatever FLOPs that gives (no ``flops_budget``).
            The choice then depends on the timings; the written options hold it.
        progress (bool): tqdm bars. log (callable): where the summary lines go.

    Returns:
        (nn.Module, dict, dict): the Ghost network (eval mode); its options, with the chosen ``layer_ratios`` and the
        layers left plain in ``exclude`` (``build_network`` of them loads its state dict and gives the same
        outputs); a JSON-able report (budget, FLOPs ratio, fidelity on the inputs, and per convolution the ratio,
        the relative output errors before / after the fit and what was done).
    """
    start = time.time()
    options = copy.deepcopy(ghost_options)
    ghost_args = {k: options.get(k, v) for k, v in GHOST_ARGS.items()}
    batch = _batch(inputs, log)
    reference = copy.deepcopy(plain).eval()
    if options.get('reparameterize', True):
        reference, _ = merge_reparameterized(reference, inplace=True)
    uniform = _ghost(plain, options)
    fixed = dict(options.get('layer_ratios') or {})
    candidates = [n for n, e in uniform.ghostify_report.items() if e['ghosted'] and n not in fixed]
    probe_crops = torch.as_tensor(np.unique(np.linspace(0, len(batch) - 1, PROBE_CROPS).round().astype(int)))
    if cost not in COSTS:
        raise ValueError(f'calibration: cost must be one of {", ".join(COSTS)}, got {cost!r}')
    if cost == 'time' and flops_budget is not None:
        raise ValueError("calibration: flops_budget is for cost='flops'; cost='time' budgets the time of uniform λ")
    layers = _probe(reference, batch[probe_crops], candidates, ghost_args, progress, timed=cost == 'time')

    size = (1, *batch.shape[1:])
    total = count_macs(reference, size)
    uniform_ratio = count_macs(uniform, size) / total
    budget = uniform_ratio if flops_budget is None else float(flops_budget)
    if not 0 < budget < 1:
        raise ValueError(f'calibration: flops_budget (Ghost / plain multiply-adds) must be in (0, 1), got {budget}')
    if cost == 'time':
        need = sum(_saving(layer, ghost_args['ghost_ratio']) for layer in layers.values())
        tolerance = BUDGET_TOLERANCE * sum(layer['ms'][0] for layer in layers.values())
        if need <= tolerance:  # convs this small take no measurable time less when ghosted: budget the FLOPs
            log(f'calibration: ghosting at uniform λ={ghost_args["ghost_ratio"]:g} saves no measurable conv time on '
                'this machine; the λ are budgeted by FLOPs instead')
            cost = 'flops'
            for layer in layers.values():
                del layer['ms']
    if cost == 'time':
        chosen = _allocate(layers, need, tolerance)
    else:  # the FLOPs ratio with the candidate layers plain, then what they must save
        fixed_ratio = uniform_ratio + sum(_saving(layer, ghost_args['ghost_ratio']) for layer in layers.values()) / total
        chosen = _allocate(layers, (fixed_ratio - budget) * total, BUDGET_TOLERANCE * total)
    if chosen is None:  # (the FLOPs budget only: uniform λ always meets the time budget)
        lowest = fixed_ratio - sum(_saving(layer, max(layer['errors'])) for layer in layers.values()) / total
        raise ValueError(f'calibration: a FLOPs ratio of {budget:.4f} is out of reach; ghosting every eligible layer '
                         f'at λ={max(RATIO_CHOICES)} gives {lowest:.4f}')
    if not fixed and not any(chosen.values()):
        raise ValueError(f'calibration: a FLOPs ratio of {budget:.4f} needs no ghost layer (the plain network is '
                         'within it)')
    ratio = ghost_args['ghost_ratio']
    options['layer_ratios'] = {**fixed, **{n: r for n, r in chosen.items() if r not in (0, ratio)}}
    plain_layers = [n for n, r in chosen.items() if r == 0]
    if plain_layers:
        options['exclude'] = list(options.get('exclude') or []) + plain_layers
    if not options['layer_ratios']:
        del options['layer_ratios']

    ghost_net = _ghost(plain, options)
    output, expected, fits = _calibrate(ghost_net, reference, batch, ghost_args, progress)
    flops_ratio = count_macs(ghost_net, size) / total
    mse = float(((output.clamp(0, 1) - expected.clamp(0, 1))**2).mean())
    for name, layer in layers.items():
        fits.setdefault(name, {'action': 'kept plain, before the first ghost layer: weights unchanged'})
        fits[name]['ratio'] = chosen[name]
        fits[name]['predicted_output_error'] = {f'{r:g}': e for r, e in sorted(layer['errors'].items())}
        if 'ms' in layer:
            fits[name]['conv_ms'] = {f'{r:g}': t for r, t in sorted(layer['ms'].items())}
    report = {
        'inputs': {'crops': len(batch), 'size': list(batch.shape[-2:]), 'probe_crops': len(probe_crops)},
        'cost': cost,
        'budget': budget if cost == 'flops' else None,
        'uniform_flops_ratio': uniform_ratio,
        'flops_ratio': flops_ratio,
        'fidelity_psnr': 10 * math.log10(1 / max(mse, 1e-20)),
        'seconds': time.time() - start,
        'layers': fits,
    }
    budget_text = f'budget {budget:.4f}'
    if cost == 'time':
        report['conv_ms'] = {'plain': sum(layer['ms'][0] for layer in layers.values()),
                             'uniform': sum(layer['ms'][0] - _saving(layer, ratio) for layer in layers.values()),
                             'chosen': sum(layer['ms'][0] - _saving(layer, chosen[n]) for n, layer in layers.items())}
        budget_text = (f'the ghosted convs timed at {report["conv_ms"]["chosen"]:.1f} ms against '
                       f'{report["conv_ms"]["uniform"]:.1f} at uniform λ={ratio:g}, {report["conv_ms"]["plain"]:.1f} '
                       'plain')
    ghosted = {n: e['ratio'] for n, e in fits.items() if e.get('intrinsic')}
    log(f'calibrated start: {len(ghosted)} ghost layers (λ {", ".join(f"{r:g}" for r in ghosted.values())}), '
        f'{len(plain_layers)} kept plain; FLOPs ratio {flops_ratio:.4f} ({budget_text}); fidelity to the plain '
        f'network on the {len(batch)} inputs {report["fidelity_psnr"]:.2f} dB ({report["seconds"]:.0f} s)')
    return ghost_net, options, report
