"""Structured channel pruning of any convolutional SR network with Torch-Pruning's DepGraph: the baseline that
``ghostsr compress`` sets against Ghost features (the same teacher-only fine-tune, the same minutes).

    pruned, keep = prune(plain, 0.5, torch.rand(1, 3, 16, 16))          # half of every hidden conv's channels
    ratio = ratio_for_params(plain, 0.52, torch.rand(1, 3, 16, 16))     # the ratio that leaves 52 % of the params

DepGraph finds the channels that must go together (a residual sum couples every conv that feeds it, a concat maps
its inputs' channels) and prunes each such group by its filters' magnitude. Never pruned: the network's input
channels (no conv produces them), the channels that reach its output, those feeding a PixelShuffle (Torch-Pruning
takes it for an element-wise op, which would break the upscale) and the convs no wider than the input image (a mean
shift). ``keep`` records, for every pruned module, the original channel indices it kept, per dimension
(``{name: {'out': [...], 'in': [...]}}``), so that :func:`apply_plan` (the ``Pruned`` arch,
:mod:`ghostsr_plugin.archs.pruned_arch`) rebuilds the same network from BasicSR options, without tracing.
"""
import copy

import torch
import torch_pruning as tp

__all__ = ['IMPORTANCES', 'prune', 'apply_plan', 'ratio_for_params', 'param_count']

IMPORTANCES = {'magnitude': 2, 'l1': 1}  # the norm of a channel's weights: Torch-Pruning's default L2, or L1
CHANNEL_REARRANGING = ('PixelShuffle', 'PixelUnshuffle', 'ChannelShuffle')  # not element-wise, whatever DepGraph says
SEARCHED_RATIOS = (0.0, 0.75)  # ratio_for_params: up to 3/4 of the channels, so groups of 4 keep one


def param_count(net):
    return sum(p.numel() for p in net.parameters())


def _unsafe_roots(net, example):
    """The convs to keep whole, with every conv coupled to them: those whose output channels reach the network's
    output or a channel-rearranging op, and those no wider than the input image (a mean shift, a colour transform)."""
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=example)
    unsafe = []
    for group in graph.get_all_groups(root_module_types=[tp.ops.TORCH_CONV]):
        root, nodes = group[0].dep.target.module, [dep.target for dep, _ in group]
        if root.out_channels <= example.shape[1] or any(
                not n.outputs or n.type == tp.ops.OPTYPE.ELEMENTWISE and
                type(n.grad_fn).__name__.startswith(CHANNEL_REARRANGING) for n in nodes):
            unsafe.append(root)
    return unsafe


def prune(plain, ratio, example_input, importance='magnitude'):
    """``(pruned copy of plain in eval mode, keep)``: every hidden conv's output channels cut by ``ratio`` (in
    [0, 1): each DepGraph group keeps ``int(channels * (1 - ratio))``, and is left whole where that is 0), the least
    important by ``importance`` (a key of :data:`IMPORTANCES`) first. ``example_input``: a batch the network takes
    (for tracing; its size does not matter). ``plain`` is untouched; the copy keeps its ``requires_grad`` flags."""
    if not 0 <= ratio < 1:
        raise ValueError(f'pruning ratio {ratio}: allowed a fraction in [0, 1)')
    if importance not in IMPORTANCES:
        raise ValueError(f'importance {importance!r}: allowed {", ".join(IMPORTANCES)}')
    trainable = {name: p.requires_grad for name, p in plain.named_parameters()}
    net = copy.deepcopy(plain).eval().requires_grad_(True)  # DepGraph traces the autograd graph
    names = {module: name for name, module in net.named_modules()}
    keep = {}
    with torch.no_grad():
        shape = net(example_input).shape
    with torch.enable_grad():
        pruner = tp.pruner.MetaPruner(net, example_input, importance=tp.importance.MagnitudeImportance(
            p=IMPORTANCES[importance]), pruning_ratio=ratio, ignored_layers=_unsafe_roots(net, example_input),
            root_module_types=[tp.ops.TORCH_CONV])
        for group in pruner.step(interactive=True):
            for dep, idxs in group:
                module = dep.target.module
                if module not in names:  # an op of the graph (sum, activation, reshape), nothing to prune
                    if dep.target.type == tp.ops.OPTYPE.PARAMETER:
                        raise ValueError(f'{type(plain).__name__}: DepGraph would prune a bare parameter; networks '
                                         'with those are not supported')
                    continue
                dim = 'out' if pruner.DG.is_out_channel_pruning_fn(dep.handler) else 'in'
                count = pruner.DG.get_out_channels(module) if dim == 'out' else pruner.DG.get_in_channels(module)
                if count is None:  # a layer without per-channel weights (PReLU with one slope)
                    continue
                kept = keep.setdefault(names[module], {}).setdefault(dim, list(range(count)))
                removed = {getattr(i, 'idx', i) for i in idxs}  # DepGraph's (index, root index) pairs or indices
                kept[:] = [index for position, index in enumerate(kept) if position not in removed]
            group.prune()
    for name, parameter in net.named_parameters():
        parameter.requires_grad_(trainable[name])
    with torch.no_grad():
        pruned_shape = net(example_input).shape
    if pruned_shape != shape:
        raise ValueError(f'{type(plain).__name__}: pruning changed the output shape {tuple(shape)} to '
                         f'{tuple(pruned_shape)}; an op that DepGraph does not model rearranges channels')
    return net, keep


def apply_plan(net, keep):
    """Prune ``net`` (in place, and returned) to the channels ``keep`` names: ``{module name: {'out' | 'in': kept
    original channel indices}}``, as :func:`prune` made it; with the plain network's weights loaded first it is
    the pruned network before any fine-tune."""
    for name, dims in keep.items():
        module = net.get_submodule(name)
        handler = tp.pruner.function.PrunerBox[tp.ops.module2type(module)]
        for dim, kept in dims.items():
            count = handler.get_out_channels(module) if dim == 'out' else handler.get_in_channels(module)
            if not set(kept) <= set(range(count)):
                raise ValueError(f'Pruned keep: {name} {dim} keeps channels outside 0..{count - 1}')
            handler(module, sorted(set(range(count)) - set(kept)), to_output=dim == 'out')
    return net


def ratio_for_params(plain, target_params_ratio, example_input, steps=12):
    """The smallest pruning ratio (bisection, ``steps`` halvings) whose pruned network has at most
    ``target_params_ratio`` of ``plain``'s parameters; e.g. a Ghost network's share, for a like-for-like baseline.
    The count does not depend on the importance (each group keeps a fixed number of channels)."""
    total = param_count(plain)

    def share(ratio):
        return param_count(prune(plain, ratio, example_input)[0]) / total

    low, high = SEARCHED_RATIOS
    if share(high) > target_params_ratio:
        raise ValueError(f'params ratio {target_params_ratio}: below what pruning reaches here ({share(high):.3f} '
                         f'at ratio {high})')
    for _ in range(steps):
        middle = (low + high) / 2
        low, high = (low, middle) if share(middle) <= target_params_ratio else (middle, high)
    return high
