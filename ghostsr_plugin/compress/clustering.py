"""Ghost features from a pre-trained plain model: the clustering init of GhostSR (Nie et al., §3.2, Alg. 1 lines 1-3).

For every ghosted layer, in forward order:

1. vectorise the plain layer's filters ``[c_o, c_i/g, s, s] -> [c_o, c_i/g*s*s]``;
2. if the layer's input comes directly (through channel-wise ops such as ReLU, or a channel concatenation) from
   earlier ghosted layers, keep only the input channels at those layers' intrinsic positions (Eq. 9);
3. k-means the vectors into ``(1-λ)·c_o`` clusters (Eq. 7; scikit-learn ``KMeans``, seeded). A group convolution
   is clustered group by group, so that each group keeps ``(1-λ)·c_o/g`` intrinsic filters, as the Ghost layer's
   own group convolution requires;
4. in each cluster the member nearest the centroid is the intrinsic filter (Eq. 8); its full weights and bias are
   copied into an intrinsic slot of the Ghost layer (Alg. 1 line 3);
5. every output channel keeps its ORIGINAL position: the intrinsic filter's position reads its slot unshifted,
   every other member of the cluster becomes a ghost of that slot (channel map value ``n + slot``, see
   :mod:`ghostsr_plugin.ops.shift`). Residual streams, dense connections and cascades keep their meaning and all
   downstream layers, ghosted or not, keep their pre-trained weights unchanged.

Everything else of the plain state dict (non-ghosted layers, the input channels of ghosted layers) is copied as is;
the Ghost net and its plain twin share state-dict names (``GhostConv2d`` keeps ``weight``/``bias``).

Producer -> consumer links (for Eq. 9) are found by tracing one forward of the Ghost net on a tiny input
(:func:`trace_ghost_inputs`): each tensor remembers which ghosted layer's output channels it carries, through
channel-wise ops (ReLU, scaling by a number, ...) and ``torch.cat`` along channels; a ghost layer called with a
fused ``residual`` epilogue, or anything else (a residual add, a 1x1 fusion, PixelShuffle) breaks the link. This is
generic over the four families (EDSR block conv1->conv2, CARN/CARN_M ``body.0 -> body.2``, RDN's dense
concatenations) without a per-family list; the links found are
written to the report (``inputs_from``) so they can be checked.

Offline use (the Ghost net is read from a BasicSR option file, as ``basicsr/train.py`` would build it)::

    ghostsr cluster -opt options/train_GhostCARN_M_x2.yml \\
        --pretrained experiments/pretrained/CARN_M_multiscale.pth --out experiments/pretrained/GhostCARN_M_x2_init.pth

writes ``{'params': state_dict}`` (BasicSR format) and ``<out>.json``, the per-layer report.
"""
import warnings
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ghostsr_plugin.ops.ghost_conv import GhostConv2d
from ghostsr_plugin.ops.schedule import GhostSchedule
from ghostsr_plugin.ops.shift import centre_offset, shift_to_offset
from ghostsr_plugin.archs.twins import plain_twin_options
from ghostsr_plugin.utils.checkpoint import load_checkpoint

__all__ = [
    'cluster_checkpoint', 'check_plain_state_dict', 'plain_state_for', 'trace_ghost_inputs',
    'cluster_filters', 'screen_mask', 'cluster_init', 'set_offset_logits', 'report_summary'
]

# ---------------------------------------------------------------------------------------------------------------
# Which state-dict entries the clustering owns, and the fit check of the plain checkpoint
# ---------------------------------------------------------------------------------------------------------------


def _ghost_modules(net):
    """{name: GhostConv2d} in registration order (shared layers once, under their first name)."""
    layers, seen = OrderedDict(), set()
    for name, module in net.named_modules():
        if isinstance(module, GhostConv2d) and id(module) not in seen:
            seen.add(id(module))
            layers[name] = module
    return layers


def _ghost_only_keys(net):
    """State-dict keys the plain twin does not have: channel maps, shift logits, the Gumbel schedule's buffers."""
    keys = set()
    for name, module in net.named_modules():
        prefix = f'{name}.' if name else ''
        if isinstance(module, GhostConv2d):
            keys.update({prefix + 'ghost_index', prefix + 'shift_logits'})
        if isinstance(module, GhostSchedule):
            keys.update(prefix + k for k, _ in module.state_dict().items())
    return keys


def _fmt(shape):
    return '(' + ', '.join(str(int(s)) for s in shape) + ')'


def check_plain_state_dict(net, plain_state):
    """Raise a ValueError naming the first key or shape of ``plain_state`` that does not fit ``net``'s plain twin.

    The plain twin has the Ghost net's state-dict names; a ghosted layer's plain ``weight`` has
    ``full_out_channels`` filters (the Ghost layer holds only the intrinsic ones), its ``bias`` as many entries.
    """
    layers = _ghost_modules(net)
    full_shapes = {}
    for name, layer in layers.items():
        prefix = f'{name}.' if name else ''
        full_shapes[prefix + 'weight'] = (layer.full_out_channels, *layer.weight.shape[1:])
        if layer.bias is not None:
            full_shapes[prefix + 'bias'] = (layer.full_out_channels, )
    ghost_only = _ghost_only_keys(net)
    expected = OrderedDict((k, tuple(full_shapes.get(k, v.shape))) for k, v in net.state_dict().items()
                           if k not in ghost_only)
    problems = []
    for key, shape in expected.items():
        if key not in plain_state:
            problems.append(f'key {key!r} {_fmt(shape)} is missing from the checkpoint')
        elif tuple(plain_state[key].shape) != shape:
            problems.append(f'key {key!r} has shape {_fmt(plain_state[key].shape)} in the checkpoint, the plain '
                            f'twin of this network needs {_fmt(shape)}')
    for key in plain_state:
        if key not in expected:
            problems.append(f'the checkpoint has key {key!r} {_fmt(plain_state[key].shape)}, which this network '
                            'does not have')
    if problems:
        more = f' (and {len(problems) - 1} more mismatches)' if len(problems) > 1 else ''
        raise ValueError(f'the pre-trained checkpoint does not fit {type(net).__name__}: {problems[0]}{more}. '
                         'Is it of another architecture, width or scale?')


def plain_state_for(network_opt, plain_state, source='checkpoint'):
    """``plain_state``, a checkpoint of the plain network, in the form :func:`cluster_init` needs for the Ghost
    network built from ``network_opt`` (the one place where a plain checkpoint is merged before clustering).

    A ``type: Ghost`` network merges its re-parameterised blocks first (``reparameterize``, default true; see
    :mod:`ghostsr_plugin.compress.reparam`), so it clusters from its plain twin's deploy form. A checkpoint that holds
    the blocks' branch weights is loaded into the plain twin (strictly; ``source`` names it in the error), merged,
    and its deploy-form state dict returned. Any other checkpoint (already in deploy form, of a network without
    such blocks, of a registered Ghost arch's twin) is returned as is; :func:`cluster_init` checks that it fits.
    """
    from basicsr.archs import build_network
    from ghostsr_plugin.compress.reparam import merge_reparameterized, merged_state_dict
    if network_opt.get('type') != 'Ghost' or not network_opt.get('reparameterize', True):
        return plain_state
    twin = build_network(plain_twin_options(network_opt))
    merged, blocks = merge_reparameterized(twin)
    branch_keys = set(twin.state_dict()) - set(merged.state_dict())
    if not blocks or branch_keys.isdisjoint(plain_state):
        return plain_state
    return merged_state_dict(twin, plain_state, source)


# ---------------------------------------------------------------------------------------------------------------
# Producer -> consumer links for Eq. 9: a channel-provenance trace of one forward
# ---------------------------------------------------------------------------------------------------------------

# Ops whose output channel c depends only on input channel c, pointwise: a link survives them.
_CHANNELWISE = {
    'relu', 'relu_', 'leaky_relu', 'leaky_relu_', 'relu6', 'hardtanh', 'hardtanh_', 'elu', 'elu_', 'gelu', 'silu',
    'prelu', 'sigmoid', 'tanh', 'clone', 'contiguous', 'detach', 'to', 'type_as', 'float', 'double', 'half'
}
# Ops that are channel-wise when their other operand is a plain number (e.g. res_scale).
_SCALAR_OPS = {'mul', 'mul_', '__mul__', '__rmul__', 'div', 'div_', '__truediv__'}
_CAT_OPS = {'cat', 'concat', 'concatenate'}


class _ChannelProvenance(TorchFunctionMode):
    """Follows which ghosted layer's output channels each 4-D tensor carries, as a list of segments
    ``[(producer name or None, number of channels), ...]`` along dim 1. Tagged tensors are kept alive so that
    their ``id`` cannot be reused during the trace."""

    def __init__(self):
        super().__init__()
        self.tags = {}
        self._alive = []

    def tag(self, tensor, segments):
        if any(producer is not None for producer, _ in segments):
            self.tags[id(tensor)] = segments
            self._alive.append(tensor)
        else:
            self.tags.pop(id(tensor), None)

    def segments(self, tensor):
        return self.tags.get(id(tensor), [(None, int(tensor.shape[1]))])

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, '__name__', '')
        first = args[0] if args else None
        if not (isinstance(first, torch.Tensor) or name in _CAT_OPS):
            return out
        if name in _CAT_OPS:
            tensors = args[0] if args else kwargs.get('tensors')
            dim = args[1] if len(args) > 1 else kwargs.get('dim', 0)
            if isinstance(out, torch.Tensor) and out.dim() == 4 and dim in (1, -3):
                self.tag(out, [seg for t in tensors for seg in self.segments(t)])
            return out
        tagged = id(first) in self.tags
        channelwise = name in _CHANNELWISE or (name in _SCALAR_OPS and len(args) > 1
                                                and isinstance(args[1], (int, float)))
        if tagged and channelwise and isinstance(out, torch.Tensor) and out.shape[:2] == first.shape[:2]:
            self.tag(out, self.tags[id(first)])
        elif tagged and out is first:  # an in-place op that mixes in something else, e.g. `res += x`
            self.tags.pop(id(first))
        return out


def _default_trace_calls(net):
    """One forward on a tiny input (a multi-scale net runs its default scale: no ghosted layer is in a
    scale-specific head). The values do not matter to the trace; zeros leave the global RNG alone."""
    first_conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise ValueError(f'{type(net).__name__} has no convolution')
    channels = getattr(net, 'ghost_trace_channels', None) or first_conv.in_channels  # as ghostify traced it
    x = torch.zeros(1, channels, 8, 8, device=first_conv.weight.device, dtype=first_conv.weight.dtype)
    return [((x, ), {})]


def trace_ghost_inputs(net, calls=None):
    """Where each ghosted layer's input channels come from, from one traced forward per call.

    Args:
        net (nn.Module): a Ghost network.
        calls (list[(tuple, dict)] | None): forward arguments to trace; default: one 8x8 input of zeros (a
            multi-scale network runs its default head; ghosted layers are never in a scale-specific head).

    Returns:
        (list[str], dict[str, list[(str | None, int)]]): ghosted layer names in the order of their first call,
        and per layer its input segments ``[(producer or None, channels), ...]``; ``None`` as producer marks
        channels that do not come straight from a ghosted layer. A layer whose calls disagree (shared weights
        used in different places) gets one plain segment, i.e. no screening.
    """
    layers = _ghost_modules(net)
    names = {id(m): n for n, m in layers.items()}
    mode = _ChannelProvenance()
    order, inputs = [], {}

    def pre_hook(module, args):
        name = names[id(module)]
        segments = mode.segments(args[0])
        if name not in inputs:
            order.append(name)
            inputs[name] = segments
        elif inputs[name] != segments:
            inputs[name] = [(None, int(args[0].shape[1]))]

    def post_hook(module, args, kwargs, output):
        if kwargs.get('residual') is None:  # a fused residual add mixes in other channels: no link
            mode.tag(output, [(names[id(module)], int(output.shape[1]))])

    handles = [h for m in layers.values() for h in (m.register_forward_pre_hook(pre_hook),
                                                    m.register_forward_hook(post_hook, with_kwargs=True))]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), mode:
            for args, kwargs in (calls if calls is not None else _default_trace_calls(net)):
                net(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return order, inputs


# ---------------------------------------------------------------------------------------------------------------
# Eq. 7-9
# ---------------------------------------------------------------------------------------------------------------


def screen_mask(segments, intrinsic_positions, num_inputs):
    """Eq. 9: which input channels of a layer take part in its clustering.

    Channels from a ghosted producer are kept only at that producer's intrinsic positions; channels from anything
    else (the network input, a residual sum, a plain layer) are all kept.

    Args:
        segments (list[(str | None, int)]): the layer's input segments (:func:`trace_ghost_inputs`).
        intrinsic_positions (dict[str, list[int]]): intrinsic output positions of the layers clustered so far.
        num_inputs (int): the layer's input channels.

    Returns:
        (BoolTensor [num_inputs], list[str]): the mask, and the producers that screened it.
    """
    if sum(c for _, c in segments) != num_inputs:
        return torch.ones(num_inputs, dtype=torch.bool), []
    mask, used, start = torch.ones(num_inputs, dtype=torch.bool), [], 0
    for producer, channels in segments:
        if producer is not None and producer in intrinsic_positions:
            keep = torch.zeros(channels, dtype=torch.bool)
            keep[torch.as_tensor(intrinsic_positions[producer], dtype=torch.long)] = True
            mask[start:start + channels] = keep
            if producer not in used:
                used.append(producer)
        start += channels
    return mask, used


def cluster_filters(vectors, num_clusters, seed=0, n_init=10, name='layer'):
    """Eq. 7 and 8 on one set of filter vectors.

    k-means (scikit-learn, ``random_state=seed``, ``n_init`` restarts) into ``num_clusters`` clusters; μ_k is the
    mean of the final members (Eq. 7); the intrinsic filter of each cluster is its member nearest μ_k (Eq. 8; the
    lowest index on ties, the only member of a singleton). If k-means leaves a cluster empty (fewer distinct
    filters than clusters), the member farthest from its centroid in the largest cluster moves there, so every
    cluster has an intrinsic filter. Clusters are numbered by their intrinsic filter's index.

    Args:
        vectors (array [m, D]): the vectorised filters.
        num_clusters (int): (1-λ)·m.
        seed (int), n_init (int): k-means seed and restarts.
        name (str): layer name for errors.

    Returns:
        dict: ``labels`` [m] (cluster of each filter), ``intrinsic`` [k] (filter index per cluster, ascending),
        ``centroids`` [k, D], ``distances`` [m] (each filter's distance to its centroid).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    num = vectors.shape[0]
    if not 1 <= num_clusters <= num:
        raise ValueError(f'{name}: cannot cluster {num} filters into {num_clusters} clusters; (1-λ)·c_o must be '
                         f'between 1 and the number of filters (check ghost_ratio)')
    if num_clusters == num:
        labels = np.arange(num)
    elif num_clusters == 1:
        labels = np.zeros(num, dtype=np.int64)
    else:
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits
        # One thread: a layer's k-means is tiny, and thread start-up would cost more than the work.
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter('ignore')  # "fewer distinct clusters than n_clusters": handled below
            labels = KMeans(num_clusters, n_init=n_init, random_state=seed).fit(vectors).labels_.astype(np.int64)
    labels = _fill_empty_clusters(vectors, labels, num_clusters)
    centroids = np.stack([vectors[labels == k].mean(0) for k in range(num_clusters)])
    distances = np.linalg.norm(vectors - centroids[labels], axis=1)
    intrinsic = np.array([np.flatnonzero(labels == k)[np.argmin(distances[labels == k])] for k in range(num_clusters)])
    order = np.argsort(intrinsic, kind='stable')
    relabel = np.empty(num_clusters, dtype=np.int64)
    relabel[order] = np.arange(num_clusters)
    return {'labels': relabel[labels], 'intrinsic': intrinsic[order], 'centroids': centroids[order],
            'distances': distances}


def _fill_empty_clusters(vectors, labels, num_clusters):
    labels = labels.copy()
    for empty in [k for k in range(num_clusters) if not np.any(labels == k)]:
        sizes = np.bincount(labels, minlength=num_clusters)
        donor = int(np.argmax(sizes))
        members = np.flatnonzero(labels == donor)
        centroid = vectors[members].mean(0)
        labels[members[np.argmax(np.linalg.norm(vectors[members] - centroid, axis=1))]] = empty
    return labels


def _cluster_layer(name, layer, weight, bias, mask, seed, n_init):
    """Cluster one ghosted layer, group by group, and write its intrinsic weights and channel map."""
    groups, full_out, num_slots = layer.groups, layer.full_out_channels, layer.num_intrinsic
    per_group_out, per_group_slots, per_group_in = full_out // groups, num_slots // groups, layer.in_channels // groups
    index = torch.empty(full_out, dtype=torch.long)
    slot_source = torch.empty(num_slots, dtype=torch.long)
    sizes, intrinsic, distances, norms, unscreened_groups = [], [], [], [], []
    for g in range(groups):
        rows = slice(g * per_group_out, (g + 1) * per_group_out)
        keep = mask[g * per_group_in:(g + 1) * per_group_in]
        if not keep.any():  # the producer has no intrinsic channel in this group's inputs
            keep = torch.ones_like(keep)
            unscreened_groups.append(g)
        vectors = weight[rows][:, keep].reshape(per_group_out, -1).double().cpu().numpy()
        found = cluster_filters(vectors, per_group_slots, seed, n_init, name=f'{name} (group {g})' if groups > 1
                                else name)
        slots = g * per_group_slots + np.arange(per_group_slots)
        members = g * per_group_out + np.arange(per_group_out)
        for local, cluster in enumerate(found['labels']):
            position, slot = members[local], slots[cluster]
            index[position] = slot if local == found['intrinsic'][cluster] else num_slots + slot
        slot_source[torch.as_tensor(slots)] = torch.as_tensor(members[found['intrinsic']])
        sizes += np.bincount(found['labels'], minlength=per_group_slots).tolist()
        intrinsic += members[found['intrinsic']].tolist()
        distances.append(found['distances'])
        norms.append(np.linalg.norm(vectors, axis=1))
    with torch.no_grad():
        layer.weight.copy_(weight[slot_source].to(layer.weight))
        if layer.bias is not None:
            layer.bias.copy_(bias[slot_source].to(layer.bias))
    layer.set_index(index)
    return {
        'groups': groups,
        'out_channels': full_out,
        'intrinsic_channels': num_slots,
        'cluster_sizes': sizes,
        'intrinsic': intrinsic,
        'mean_distance': float(np.concatenate(distances).mean()),
        'mean_filter_norm': float(np.concatenate(norms).mean()),
        'groups_not_screened': unscreened_groups,
        'index': index.tolist(),
    }


def set_offset_logits(layer, offset, margin=0.01):
    """Make ``offset`` the argmax of a learnable layer's shift logits W' by ``margin`` over the largest other logit.

    The other logits keep their (tiny, random) initial values, so with ``margin`` small against the Gumbel noise
    of Eq. 3 the first sampled offsets stay nearly unbiased, while evaluation (argmax, Eq. 5) uses ``offset``.
    """
    with torch.no_grad():
        logits = layer.shift_logits
        others = torch.cat([logits[:offset], logits[offset + 1:]])
        logits[offset] = others.max() + margin


def _parse_offset(init_offset, d):
    if init_offset is None:
        return None
    if isinstance(init_offset, str):
        if init_offset.lower() in ('centre', 'center'):
            return centre_offset(d)
        try:
            init_offset = tuple(int(v) for v in init_offset.split(','))
        except ValueError:
            init_offset = ()
    if not (isinstance(init_offset, (tuple, list)) and len(init_offset) == 2):
        raise ValueError(f"init_offset must be None, 'centre' or (dy, dx), got {init_offset!r}")
    return shift_to_offset(int(init_offset[0]), int(init_offset[1]), d)


def cluster_init(net, plain_state, seed=0, n_init=10, init_offset=None, offset_margin=0.01, trace_calls=None,
                 progress=True):
    """Initialise the Ghost network ``net`` in place from the state dict of its pre-trained plain twin (§3.2).

    Alg. 1 lines 1-3: every ghosted layer, in forward order, is clustered (Eq. 7) into its ``(1-λ)·c_o``
    intrinsic filters (Eq. 8) after screening its inputs by the previous layer's intrinsic positions (Eq. 9); the
    intrinsic filters inherit the pre-trained weights; every other channel becomes a ghost of its cluster's
    intrinsic filter at its original position. All other parameters and buffers are copied from ``plain_state``.

    Args:
        net (nn.Module): a Ghost network (any family); modified in place.
        plain_state (dict[str, Tensor]): the plain twin's state dict (as
            :func:`ghostsr_plugin.utils.checkpoint.load_checkpoint` reads one).
        seed (int): k-means ``random_state``. Default 0.
        n_init (int): k-means restarts. Default 10.
        init_offset (None | 'centre' | (dy, dx)): ``None`` leaves the shift logits as the network initialised them
            (no direction favoured); otherwise that offset becomes their argmax (:func:`set_offset_logits`).
        offset_margin (float): by how much, for ``init_offset``. Default 0.01.
        trace_calls (list[(tuple, dict)] | None): forward arguments for :func:`trace_ghost_inputs`.
        progress (bool): show a tqdm bar.

    Returns:
        dict: the report, ``{'seed', 'n_init', 'init_offset', 'layers': {name: {...}}}`` with per layer the
        producers that screened its inputs (``inputs_from``), the input channels used, cluster sizes, mean
        distance to the centroid, the intrinsic channel (original position) of every slot, and the channel map.
    """
    from tqdm import tqdm
    layers = _ghost_modules(net)
    if not layers:
        raise ValueError(f'{type(net).__name__} has no ghost layer (GhostConv2d): clustering needs a Ghost network')
    check_plain_state_dict(net, plain_state)
    _parse_offset(init_offset, next(iter(layers.values())).d)  # a bad init_offset fails before any work

    # Everything the clustering does not own comes from the plain checkpoint as is.
    owned = _ghost_only_keys(net)
    for name in layers:
        owned.update({f'{name}.weight', f'{name}.bias'})
    with torch.no_grad():
        for key, value in net.state_dict(keep_vars=True).items():
            if key not in owned:
                value.copy_(plain_state[key].to(value))

    order, inputs = trace_ghost_inputs(net, trace_calls)
    order += [name for name in layers if name not in order]  # not reached by the trace: registration order
    intrinsic_positions, report = {}, OrderedDict()
    for name in tqdm(order, desc='GhostSR clustering', unit='layer', disable=not progress):
        layer = layers[name]
        segments = inputs.get(name, [(None, layer.in_channels)])
        mask, producers = screen_mask(segments, intrinsic_positions, layer.in_channels)
        result = _cluster_layer(name, layer, plain_state[f'{name}.weight'], plain_state.get(f'{name}.bias'), mask,
                                seed, n_init)
        intrinsic_positions[name] = result['intrinsic']
        offset = _parse_offset(init_offset, layer.d)
        if offset is not None and layer.shift_logits is not None:
            set_offset_logits(layer, offset, offset_margin)
        report[name] = {
            'traced': name in inputs,
            'inputs_from': producers,
            'input_channels_used': torch.nonzero(mask).flatten().tolist() if producers else 'all',
            'shift_mode': layer.shift_mode,
            **result,
        }
    return {'seed': seed, 'n_init': n_init, 'init_offset': init_offset if init_offset is None else str(init_offset),
            'layers': report}


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


def report_summary(report):
    """One line per layer of a :func:`cluster_init` report (for logs and the CLI)."""
    lines = []
    for name, layer in report['layers'].items():
        sizes = layer['cluster_sizes']
        screened = f" screened by {','.join(layer['inputs_from'])}" if layer['inputs_from'] else ''
        lines.append(f"{name}: {layer['out_channels']} -> {layer['intrinsic_channels']} intrinsic, cluster sizes "
                     f"{min(sizes)}..{max(sizes)}, mean distance {layer['mean_distance']:.4g} "
                     f"(mean filter norm {layer['mean_filter_norm']:.4g}){screened}")
    return '\n'.join(lines)


def cluster_checkpoint(opt_path, pretrained, out, network_key='network_g', param_key='params', seed=0, n_init=10,
                       init_offset=None, offset_margin=0.01, progress=True, log=print):
    """The ``cluster`` command: build the Ghost network of option file ``opt_path`` (``network_key``), initialise it
    from the plain checkpoint ``pretrained`` (:func:`cluster_init`), write ``{'params': state_dict}`` to ``out`` and
    the per-layer report to ``<out>.json`` (both atomically). Returns the report."""
    from ghostsr_plugin.archs.build import build_network_from_options, network_options
    from ghostsr_plugin.utils.atomic import atomic_torch_save, atomic_write_json
    net = build_network_from_options(opt_path, network_key)
    plain = plain_state_for(network_options(opt_path, network_key), load_checkpoint(pretrained, param_key), pretrained)
    report = cluster_init(net, plain, seed=seed, n_init=n_init, init_offset=init_offset, offset_margin=offset_margin,
                          progress=progress)
    report.update({'network': type(net).__name__, 'option_file': opt_path, 'pretrained': pretrained,
                   'param_key': param_key})
    atomic_torch_save({'params': net.state_dict()}, out)
    atomic_write_json(report, out + '.json')
    log(report_summary(report))
    log(f'wrote {out} and {out}.json')
    return report
