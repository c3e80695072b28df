"""GhostSR for any SR network: turn the eligible convolutions of an ``nn.Module`` into ghost layers (Nie et al., §3.1,
§4.1), found by tracing one forward rather than by a per-network list.

    net = ghostify(EDSR(3, 3, upscale=2))          # a Ghost network; GhostSRModel, ghost_init:, distill: work on it
    print(format_report(net.ghostify_report))      # which layers were ghosted, why the others were not

Rules (the default, §4.1):

* eligible: an ``nn.Conv2d`` (not a subclass) with a k×k kernel, odd k > 1, stride 1, dilation 1, zero "same"
  padding, at least two output channels per group, called as a module in the traced forward;
* kept plain: the first convolution on the input (its input depends only on the network input), the last ones (their
  output reaches the network output without another eligible convolution in between) and those that feed an
  upsampler (PixelShuffle or interpolation, through channel-wise ops such as activations);
* ``include`` / ``exclude`` (``fnmatch`` patterns on module names) override the kept-plain rules (``exclude`` wins).

Re-parameterised blocks (SPAN's ``Conv3XC``, ECBSR's ``ECB``: branches merged into one 3×3 kernel in eval mode)
are first replaced by their deploy form, one plain 3×3 conv (``reparameterize=True``, the default;
:mod:`ghostsr_plugin.compress.reparam`), which can then be ghosted like any other. Limitation: such a Ghost network
trains the merged deploy convs directly, not the original branches.

Each ghosted layer becomes a :class:`~ghostsr_plugin.ops.ghost_conv.GhostConv2d` under the same name (state-dict
``weight`` / ``bias`` keep their names with the intrinsic filters only), initialised with the plain layer's first
(1-λ)·c_o filters. The network gets ``ghost_schedule`` (a :class:`~ghostsr_plugin.ops.schedule.GhostSchedule`, as
every registered Ghost arch) and a forward pre-hook that plans the offsets of all its ghost layers at the start
of each forward (:func:`~ghostsr_plugin.ops.schedule.attach_schedule`).

Fused epilogues (the same values, fewer passes over the features), found in the same trace:

* ``conv -> nn.ReLU`` or ``conv -> nn.LeakyReLU`` module (ESRGAN's shared ``lrelu``), when that module only ever
  sees such outputs: the activation runs inside the ghost op and an ``nn.Identity`` takes the module's place (as in
  GhostRDN / GhostCARN / GhostCARN_M); the same for ``conv -> nn.PReLU`` (Compact), whose place a
  :class:`~ghostsr_plugin.ops.ghost_conv.FusedPReLU` takes, keeping its trained slopes and their state-dict name;
* ``x + conv(...) * s`` / ``x + conv(...)`` in the ``forward`` of a block (any module below the root whose direct
  child is a ghosted conv), found with ``torch.fx`` on that block alone (its children are leaves): the block is
  replaced by the rewritten ``GraphModule`` (same child names, so the same state-dict names), checked to give the
  same output on the traced input. Blocks that ``torch.fx`` cannot trace keep their unfused forward.
"""
import copy
import fnmatch
import operator
from collections import OrderedDict

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ghostsr_plugin.compress.reparam import merge_reparameterized
from ghostsr_plugin.ops.ghost_conv import FusedPReLU, GhostOptions, ghost_layers
from ghostsr_plugin.ops.schedule import GhostSchedule, attach_schedule

__all__ = ['ghostify', 'ghost_arch', 'format_report', 'GHOST_ARGS', 'GHOST_ARGS_DOC', 'UPSAMPLERS']

# The ghost arguments of every Ghost network (``type: Ghost``, GhostEDSR, ...) and their defaults.
GHOST_ARGS = OrderedDict(ghost_ratio=0.5, ghost_d=1, shift_mode='learnable', fixed_offset=(0, -1), gumbel_a=0.97,
                         gumbel_tau=1.0, iters_per_epoch=1000, gumbel_seed=0)
GHOST_ARGS_DOC = """ghost_ratio (float): λ, the share of ghost features per layer, in (0, 1). Default 0.5.
        ghost_d (int): maximum shift offset d (window (2d+1)x(2d+1)). Default 1.
        shift_mode (str): 'learnable' (Gumbel-softmax), 'fixed' or 'copy'. Default 'learnable'.
        fixed_offset (tuple[int]): (dy, dx) of 'fixed' mode. Default (0, -1).
        gumbel_a (float): noise decay a of Eq. 3. Default 0.97.
        gumbel_tau (float): temperature τ of Eq. 4. Default 1.
        iters_per_epoch (int): epoch length for Eq. 3 when no GhostSRModel sets it. Default 1000.
        gumbel_seed (int): seed of the Gumbel noise. Default 0."""

UPSAMPLERS = {'pixel_shuffle', 'interpolate', 'upsample', 'upsample_nearest2d', 'upsample_bilinear2d',
              'upsample_bicubic2d', 'conv_transpose2d'}
# Ops through which "this conv's output" stays the same channels, pointwise (an upsampler link survives them).
_CHANNELWISE = {
    'relu', 'relu_', 'leaky_relu', 'leaky_relu_', 'relu6', 'hardtanh', 'hardtanh_', 'elu', 'elu_', 'gelu', 'silu',
    'silu_', 'prelu', 'sigmoid', 'tanh', 'mish', 'hardswish', 'clone', 'contiguous', 'to', 'type_as', 'float',
    'half', 'mul', 'mul_', '__mul__', '__rmul__', 'div', 'div_', '__truediv__'
}
# Reads that use no values (not consumers of a conv output for the ReLU fusion).
_METADATA = {'size', 'dim', '__get__', 'numel', 'is_contiguous', 'is_floating_point', 'element_size', 'stride',
             'ndimension', 'nelement', 'get_device', '__len__', '__format__', '__bool__'}
_RELU = {'relu', 'relu_', 'leaky_relu', 'leaky_relu_', 'prelu'}


# ---------------------------------------------------------------------------------------------------------------
# Which convolutions can be ghost layers
# ---------------------------------------------------------------------------------------------------------------


def _structural_reason(conv):
    """Why a Conv2d cannot be a ghost layer, or None when it can."""
    if type(conv) is not nn.Conv2d:
        return f'{type(conv).__name__} is a Conv2d subclass (its own forward)'
    k = conv.kernel_size
    if k[0] != k[1] or k[0] % 2 == 0 or k[0] == 1:
        return f'kernel {k[0]}x{k[1]} (ghost layers are k x k, odd k > 1)'
    if conv.stride != (1, 1):
        return f'stride {conv.stride}'
    if conv.dilation != (1, 1):
        return f'dilation {conv.dilation}'
    if conv.padding_mode != 'zeros':
        return f'padding_mode {conv.padding_mode!r} (ghost layers pad with zeros)'
    if conv.padding not in ('same', (k[0] // 2, k[0] // 2)):
        return f'padding {conv.padding} (not "same")'
    if conv.out_channels // conv.groups < 2:
        return f'{conv.out_channels // conv.groups} output channel per group (depthwise): no room for a ghost'
    return None


def _convs(net):
    """{name: Conv2d} of ``net`` (shared modules once, under their first name)."""
    found, seen = OrderedDict(), set()
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and id(module) not in seen:
            seen.add(id(module))
            found[name] = module
    return found


# ---------------------------------------------------------------------------------------------------------------
# One traced forward: first / last / upsampler roles, conv -> ReLU links, block inputs
# ---------------------------------------------------------------------------------------------------------------


def _flat_tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _flat_tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _flat_tensors(item)]
    return []


class _RoleTrace(TorchFunctionMode):
    """Tags every tensor with ``sources`` (the network input and/or the eligible convs whose output reached it with no
    eligible conv in between) and ``chan`` (the eligible conv whose output it is, through channel-wise ops only)."""

    def __init__(self):
        super().__init__()
        self.sources, self.chan, self._alive = {}, {}, []
        self.feeds_upsampler = set()
        self.watch = {}  # id(conv output) -> conv name, for the ReLU fusion
        self.consumers = {}  # conv name -> list of (op name, ReLU module id or None)
        self.active_relu = []  # stack of (ReLU module id, id of its input)
        self.weight_owner = {}  # id(conv weight or bias) -> conv name
        self.active_convs = []  # names of the convs whose forward is running
        self.weights_used_elsewhere = set()

    def keep(self, tensor):
        self._alive.append(tensor)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, '__name__', '')
        inputs = _flat_tensors(args) + _flat_tensors(kwargs)
        relu_reads = []
        for tensor in inputs:
            owner = self.weight_owner.get(id(tensor))
            if owner is not None and owner not in self.active_convs:
                self.weights_used_elsewhere.add(owner)
            conv = self.watch.get(id(tensor))
            if conv is not None and name not in _METADATA:
                relu = self.active_relu[-1][0] if (self.active_relu and self.active_relu[-1][1] == id(tensor)
                                                   and name in _RELU) else None
                self.consumers.setdefault(conv, []).append((name, relu))
                if relu is not None:
                    relu_reads.append(tensor)
        out = func(*args, **kwargs)
        for tensor in relu_reads:
            if out is tensor:  # in place: later reads see the ReLU's output, as the fused layer gives it
                del self.watch[id(tensor)]
        outputs = [t for t in _flat_tensors(out) if t.is_floating_point()]
        if not outputs:
            return out
        sources = frozenset().union(*[self.sources.get(id(t), frozenset()) for t in inputs])
        first = inputs[0] if inputs else None
        chan = self.chan.get(id(first)) if first is not None else None
        if chan is not None and name in UPSAMPLERS:
            self.feeds_upsampler.add(chan)
        for tensor in outputs:
            if sources:
                self.sources[id(tensor)] = sources
                self.keep(tensor)
            elif tensor is not first:
                self.sources.pop(id(tensor), None)
            # mul / div by a number or a parameter (PReLU's slopes), not by another activation
            scalar_only = all(t is first or isinstance(t, nn.Parameter) for t in inputs)
            if chan is not None and name in _CHANNELWISE and scalar_only and tensor.shape[:2] == first.shape[:2]:
                self.chan[id(tensor)] = chan
                self.keep(tensor)
            elif tensor is not first or name not in _CHANNELWISE:
                self.chan.pop(id(tensor), None)
        return out


def _trace_roles(net, convs, example):
    """Run one forward of ``net`` (eval, no grad) on ``example`` (args, kwargs) and collect the roles of the
    structurally eligible ``convs`` (the others are ops like any other: tags flow through them)."""
    convs = {n: m for n, m in convs.items() if _structural_reason(m) is None}
    mode = _RoleTrace()
    names = {id(m): n for n, m in convs.items()}
    called, first_on_input = set(), set()
    block_inputs = {}
    handles = []

    def conv_pre(module, args):
        name = names[id(module)]
        called.add(name)
        mode.active_convs.append(name)
        if mode.sources.get(id(args[0])) == frozenset(['input']):
            first_on_input.add(name)

    def conv_post(module, args, output):
        name = names[id(module)]
        mode.active_convs.pop()
        mode.sources[id(output)] = frozenset([name])
        mode.chan[id(output)] = name
        mode.watch[id(output)] = name
        mode.keep(output)

    def relu_pre(module, args):
        mode.active_relu.append((id(module), id(args[0])))
        relu_inputs.setdefault(id(module), []).append(mode.watch.get(id(args[0])))

    def relu_post(module, args, output):
        mode.active_relu.pop()

    def block_pre(name):
        def hook(module, args, kwargs):
            if name not in block_inputs:
                block_inputs[name] = (tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args), dict(kwargs))
        return hook

    relu_inputs, relu_names, relu_slopes = {}, {}, {}
    for conv in convs.values():
        handles += [conv.register_forward_pre_hook(conv_pre), conv.register_forward_hook(conv_post)]
    for name, module in net.named_modules():
        if type(module) in (nn.ReLU, nn.LeakyReLU, nn.PReLU) and id(module) not in relu_names:
            relu_names[id(module)] = name
            # nn.ReLU: 0; nn.PReLU: the module (its slopes are a parameter)
            relu_slopes[name] = module if type(module) is nn.PReLU else float(getattr(module, 'negative_slope', 0.0))
            handles += [module.register_forward_pre_hook(relu_pre), module.register_forward_hook(relu_post)]
        if name and any(isinstance(child, nn.Conv2d) for child in module.children()):
            handles.append(module.register_forward_pre_hook(block_pre(name), with_kwargs=True))
    for name, conv in convs.items():
        mode.weight_owner.update({id(p): name for p in conv.parameters(recurse=False)})
    args, kwargs = example
    was_training = net.training
    try:
        with torch.no_grad(), mode:
            net.train()
            net.eval()  # networks that re-parameterise on eval() (SPAN, ...) read conv weights here
            for tensor in _flat_tensors(args):
                mode.sources[id(tensor)] = frozenset(['input'])
            out = net(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    last = set().union(*[mode.sources.get(id(t), frozenset()) for t in _flat_tensors(out)]) - {'input'}
    return {
        'called': called,
        'weights_used_elsewhere': mode.weights_used_elsewhere,
        'first': first_on_input,
        'last': last,
        'upsampler': mode.feeds_upsampler,
        'consumers': mode.consumers,
        'relu_inputs': {relu_names[k]: v for k, v in relu_inputs.items()},
        'relu_ids': {relu_names[k]: k for k in relu_inputs},
        'relu_slopes': relu_slopes,
        'block_inputs': block_inputs,
    }


def _trace_with_default_input(net, convs, size):
    """Trace on 1 x C x size x size zeros, C the first convolution's input channels, else 3 or 1 (a network that
    reshapes its input first, e.g. RRDBNet x2's pixel-unshuffle)."""
    first = next(iter(convs.values()), None)
    if first is None:
        raise ValueError(f'ghostify: {type(net).__name__} has no nn.Conv2d; ghostify needs a convolutional network')
    errors = []
    for channels in dict.fromkeys((first.in_channels, 3, 1)):
        x = torch.zeros(1, channels, size, size, device=first.weight.device, dtype=first.weight.dtype)
        try:
            return _trace_roles(net, convs, ((x, ), {})), channels
        except (RuntimeError, ValueError, IndexError) as err:
            errors.append(f'{channels} channels: {err}'.splitlines()[0])
    raise ValueError(f'ghostify: {type(net).__name__} does not run on a {size}x{size} input of '
                     f'{" / ".join(str(c) for c in dict.fromkeys((first.in_channels, 3, 1)))} channels '
                     f'({"; ".join(errors)}); give example_inputs or another trace_size')


# ---------------------------------------------------------------------------------------------------------------
# Fusions
# ---------------------------------------------------------------------------------------------------------------


def _relu_fusions(roles, ghosted, convs):
    """{conv name: ReLU module name} for ghosted convs whose every output goes only into one nn.ReLU, nn.LeakyReLU
    or nn.PReLU (of one slope or one per channel) module that never sees anything else."""
    fusions = {}
    for conv in ghosted:
        uses = roles['consumers'].get(conv, [])
        relus = {relu for _, relu in uses}
        if uses and len(relus) == 1 and None not in relus:
            relu_id = relus.pop()
            relu_name = next(n for n, i in roles['relu_ids'].items() if i == relu_id)
            prelu = roles['relu_slopes'][relu_name]
            if isinstance(prelu, nn.PReLU) and prelu.weight.numel() not in (1, convs[conv].out_channels):
                continue
            if all(src is not None and src in ghosted for src in roles['relu_inputs'][relu_name]):
                fusions[conv] = relu_name
    return fusions


class _LeafTracer(torch.fx.Tracer):
    """Traces only the block's own forward: every child module is a leaf."""

    def is_leaf_module(self, module, qualified_name):
        return True


def _scalar(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _residual_pattern(node, ghost_names):
    """``(conv node, other operand, scale)`` when ``node`` is ``other + conv(...) [* s]`` with single-use
    intermediates, else None."""
    if not (node.op == 'call_function' and node.target in (operator.add, operator.iadd, torch.add)
            and len(node.args) == 2 and not node.kwargs):
        return None
    for term, other in (node.args, node.args[::-1]):
        if not isinstance(term, torch.fx.Node) or not isinstance(other, torch.fx.Node):
            continue
        scale, conv = 1.0, term
        if term.op == 'call_function' and term.target in (operator.mul, torch.mul) and len(term.users) == 1:
            a, b = term.args
            scale, conv = (b, a) if _scalar(b) else (a, b) if _scalar(a) else (None, None)
            if scale is None:
                continue
        if (isinstance(conv, torch.fx.Node) and conv.op == 'call_module' and conv.target in ghost_names
                and len(conv.users) == 1 and not conv.kwargs and len(conv.args) == 1):
            order = {n: i for i, n in enumerate(node.graph.nodes)}
            if order[other] < order[conv]:
                return conv, other, float(scale), term
    return None


def _fuse_residuals(net, block_name, block, ghosted, example):
    """Rewrite ``x + conv(...) * s`` in ``block``'s forward into ``conv(..., residual=x, scale=s)``; returns the
    names of the fused convs (relative to ``net``) and installs the rewritten block, or returns [] and leaves it."""
    ghost_names = {n for n, m in block.named_children() if f'{block_name}.{n}' in ghosted}
    if not ghost_names or isinstance(block, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return []
    try:
        graph = _LeafTracer().trace(block)
    except Exception:  # noqa: BLE001 - a forward torch.fx cannot trace keeps its unfused form
        return []
    fused = []
    for node in list(graph.nodes):
        found = _residual_pattern(node, ghost_names)
        if found is None:
            continue
        conv, other, scale, term = found
        conv.kwargs = {'residual': other, 'scale': scale}
        node.replace_all_uses_with(conv)
        graph.erase_node(node)
        if term is not conv:
            graph.erase_node(term)
        fused.append(f'{block_name}.{conv.target}')
    if not fused:
        return []
    graph.lint()
    module = torch.fx.GraphModule(block, graph, class_name=f'Fused{type(block).__name__}')
    for key, value in vars(block).items():  # plain attributes (res_scale, ...) the parent might read
        if not key.startswith('_') and key != 'training' and not hasattr(module, key):
            setattr(module, key, value)
    if set(module._modules) != set(block._modules):  # a child the forward never calls would be lost
        return []
    module._modules = OrderedDict((n, module._modules[n]) for n in block._modules)  # the block's order
    if list(module.state_dict()) != list(block.state_dict()):
        return []
    if example is not None:
        args, kwargs = example
        with torch.no_grad():
            was = block.training
            block.eval(), module.eval()
            try:
                same = torch.allclose(block(*args, **kwargs), module(*args, **kwargs), rtol=1e-4, atol=1e-5)
            except Exception:  # noqa: BLE001 - not the same forward: keep the original
                same = False
            block.train(was), module.train(was)
        if not same:
            return []
    _set_module(net, block_name, module)
    return fused


def _set_module(net, name, module):
    parent_name, _, child = name.rpartition('.')
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, module)


# ---------------------------------------------------------------------------------------------------------------
# The transform
# ---------------------------------------------------------------------------------------------------------------


def _match(patterns, names, what, candidates):
    """Names matched by each of ``patterns``; a pattern matching none of ``names`` is an error."""
    matched = set()
    for pattern in patterns or ():
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            shown = ', '.join(list(candidates)[:12]) + (' ...' if len(candidates) > 12 else '')
            raise ValueError(f'ghostify: {what} pattern {pattern!r} matches no convolution; the convolutions are: '
                             f'{shown}')
        matched.update(hits)
    return matched


def _layer_ratios(layer_ratios, report, ghost_ratio):
    """{ghosted conv name: λ}: ``ghost_ratio`` unless ``layer_ratios`` names the layer; a name that is not a ghosted
    convolution or a λ outside (0, 1) is an error."""
    ratios = {name: ghost_ratio for name, entry in report.items() if entry['ghosted']}
    for name, ratio in (layer_ratios or {}).items():
        if name not in report:
            raise ValueError(f'ghostify: layer_ratios names {name!r}, which is no convolution of the network')
        if not report[name]['ghosted']:
            raise ValueError(f'ghostify: layer_ratios names {name}, which stays plain ({report[name]["reason"]}); '
                             'drop its ratio or include it')
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
            raise ValueError(f'ghostify: layer_ratios[{name!r}] (λ, the share of ghost features) must be in (0, 1), '
                             f'got {ratio!r}')
        ratios[name] = float(ratio)
    return ratios


def ghostify(net,
             ghost_ratio=0.5,
             ghost_d=1,
             shift_mode='learnable',
             fixed_offset=(0, -1),
             gumbel_a=0.97,
             gumbel_tau=1.0,
             iters_per_epoch=1000,
             gumbel_seed=0,
             include=None,
             exclude=None,
             fuse=True,
             example_inputs=None,
             trace_size=16,
             inplace=False,
             reparameterize=True,
             layer_ratios=None):
    """The Ghost version of any convolutional SR network (see the module docstring for the rules).

    Args:
        net (nn.Module): the plain network (its weights initialise the intrinsic filters).
        ghost_ratio, ghost_d, shift_mode, fixed_offset, gumbel_a, gumbel_tau, iters_per_epoch, gumbel_seed: the
            ghost arguments of every Ghost arch (``GHOST_ARGS``).
        include (list[str] | None): ``fnmatch`` patterns of convolutions to ghost even if the §4.1 rules keep them
            plain (they must be eligible).
        exclude (list[str] | None): patterns of convolutions to keep plain (wins over ``include``).
        fuse (bool): fuse ReLU / LeakyReLU / PReLU / residual epilogues into the ghost op where the pattern allows.
            Default True.
        example_inputs ((tuple, dict) | None): forward arguments for the trace; default one 1 x C x 16 x 16 zeros
            input, C the first convolution's input channels.
        trace_size (int): side of the default trace input. Default 16.
        inplace (bool): transform ``net`` itself instead of a deep copy.
        reparameterize (bool): first replace the known re-parameterised blocks by their deploy form
            (:func:`ghostsr_plugin.compress.reparam.merge_reparameterized`): their merged 3×3 convs are then ghosted
            and trained directly, without the branches. Default True.
        layer_ratios (dict[str, float] | None): ``{conv name: λ}`` overriding ``ghost_ratio`` for those ghosted
            layers (a data-driven start gives fragile layers less ghosting; a layer not to ghost goes to
            ``exclude``). Default None.

    Returns:
        nn.Module: the Ghost network (the same class, the same state-dict names plus ``ghost_index`` /
        ``shift_logits`` per ghost layer and ``ghost_schedule.iteration``; a merged block's names are those of its
        deploy form), with ``ghostify_report``: ``{conv name: {'ghosted': bool, 'reason': str,
        'fused': None | 'relu' | 'leaky_relu' | 'prelu' | 'residual', 'merged': None | block class,
        'ratio': λ | None}}``
        (``merged``: the conv is the deploy form of that re-parameterised block; ``ratio``: a ghosted layer's λ).
    """
    if ghost_layers(net):
        raise ValueError(f'ghostify: {type(net).__name__} already has ghost layers (GhostConv2d); give the plain '
                         'network')
    ghost = GhostOptions(ghost_ratio, ghost_d, shift_mode, fixed_offset)  # validates the ghost options
    schedule = GhostSchedule(gumbel_a, gumbel_tau, iters_per_epoch, gumbel_seed)
    if not inplace:
        net = copy.deepcopy(net)
    merged = {}
    if reparameterize:
        net, merged = merge_reparameterized(net, inplace=True)
    convs = _convs(net)
    if example_inputs is not None:
        roles = _trace_roles(net, convs, example_inputs)
    else:
        roles, net.ghost_trace_channels = _trace_with_default_input(net, convs, trace_size)  # cluster's trace too
    included = _match(include, convs, 'include', convs)
    excluded = _match(exclude, convs, 'exclude', convs)

    report, ghosted = OrderedDict(), []
    for name, conv in convs.items():
        merged_from = merged.get(name.rpartition('.')[0])
        reason = _structural_reason(conv)
        if reason is None and name in roles['weights_used_elsewhere']:
            reason = ('its weights are also used outside its own forward (re-parameterisation or weight sharing), '
                      'which fewer output filters would break')
            if not reparameterize:
                reason += '; reparameterize=True merges the known re-parameterised blocks first'
        elif reason is None and name not in roles['called']:
            reason = 'not called as a module in the traced forward (its weights are used some other way)'
        if reason is not None:
            if name in included and name not in excluded:
                raise ValueError(f'ghostify: include matches {name}, which cannot be a ghost layer: {reason}')
            report[name] = {'ghosted': False, 'reason': reason, 'fused': None, 'merged': merged_from}
            continue
        kept = [why for why, hit in (('first convolution on the input (§4.1)', name in roles['first']),
                                     ('last convolution, produces the output (§4.1)', name in roles['last']),
                                     ('feeds an upsampler (§4.1)', name in roles['upsampler'])) if hit]
        if name in excluded:
            report[name] = {'ghosted': False, 'reason': 'excluded by pattern', 'fused': None, 'merged': merged_from}
        elif kept and name not in included:
            report[name] = {'ghosted': False, 'reason': '; '.join(kept), 'fused': None, 'merged': merged_from}
        else:
            report[name] = {'ghosted': True, 'reason': 'included by pattern' if kept else 'eligible', 'fused': None,
                            'merged': merged_from}
            ghosted.append(name)
    if not ghosted:
        by_reason = OrderedDict()
        for name, entry in report.items():
            by_reason.setdefault(entry['reason'], []).append(name)
        why = '; '.join(f'{reason}: {", ".join(names[:4])}{" ..." if len(names) > 4 else ""}'
                        for reason, names in by_reason.items())
        raise ValueError(f'ghostify: {type(net).__name__} has no convolution to ghost. Ghost layers are k x k convs '
                         '(odd k > 1, stride 1, dilation 1, zero "same" padding) other than the first, the last and '
                         f'those feeding an upsampler (include= overrides those three); here: {why or "no conv"}')
    ratios = _layer_ratios(layer_ratios, report, ghost_ratio)

    relu_fusions = _relu_fusions(roles, set(ghosted), convs) if fuse else {}
    slopes = {conv: roles['relu_slopes'][relu] for conv, relu in relu_fusions.items()}
    prelus = {relu: FusedPReLU.from_prelu(roles['relu_slopes'][relu]) for relu in set(relu_fusions.values())
              if isinstance(roles['relu_slopes'][relu], nn.PReLU)}
    for name in ghosted:
        conv = convs[name]
        options = ghost if ratios[name] == ghost_ratio else GhostOptions(ratios[name], ghost_d, shift_mode,
                                                                           fixed_offset)
        layer = options.conv(conv.in_channels, conv.out_channels, conv.kernel_size[0], groups=conv.groups,
                           bias=conv.bias is not None, name=name,
                           relu=name in relu_fusions and relu_fusions[name] not in prelus,
                           negative_slope=0.0 if relu_fusions.get(name) in prelus else slopes.get(name, 0.0))
        if relu_fusions.get(name) in prelus:
            layer.fuse_prelu(prelus[relu_fusions[name]])
        layer.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(conv.weight[:layer.out_channels])
            if conv.bias is not None:
                layer.bias.copy_(conv.bias[:layer.out_channels])
        for alias, module in net.named_modules(remove_duplicate=False):
            if module is conv:
                _set_module(net, alias, layer)
        if name in relu_fusions:
            kind = 'prelu' if relu_fusions[name] in prelus else 'leaky_relu' if slopes[name] else 'relu'
            report[name]['fused'] = kind
    for relu_name in set(relu_fusions.values()):
        _set_module(net, relu_name, prelus.get(relu_name, nn.Identity()))

    if fuse:
        modules = dict(net.named_modules())
        for block_name, block_example in roles['block_inputs'].items():
            if block_name in modules:
                for name in _fuse_residuals(net, block_name, modules[block_name], set(ghosted), block_example):
                    report[name]['fused'] = 'residual'

    for name, entry in report.items():
        entry['ratio'] = ratios.get(name)
    attach_schedule(net, schedule)
    net.ghostify_report = report
    return net


def format_report(report):
    """The ghostify report as text: one line per convolution."""
    lines = []
    for name, entry in report.items():
        mark = 'ghost' if entry['ghosted'] else 'plain'
        fused = f", fused {entry['fused']}" if entry['fused'] else ''
        merged = f", merged {entry['merged']}" if entry.get('merged') else ''
        ratio = f", λ={entry['ratio']:g}" if entry.get('ratio') is not None else ''
        lines.append(f'{mark}  {name}: {entry["reason"]}{ratio}{fused}{merged}')
    ghosted = sum(e['ghosted'] for e in report.values())
    merged = sum(bool(e.get('merged')) for e in report.values())
    lines.append(f'{ghosted} of {len(report)} convolutions ghosted'
                 + (f' ({merged} of them merged from re-parameterised blocks)' if merged else ''))
    return '\n'.join(lines)


def ghost_arch(plain_cls, name, summary, module, check=None):
    """A Ghost arch class over ``plain_cls``: its arguments plus :data:`GHOST_ARGS`; ``__init__`` builds the plain
    layout and ghostifies it in place (so the ghost wiring, its arguments and their docstring live here only).

    Args:
        plain_cls (type): the plain network class.
        name (str): the class name (``GhostX``); ``module`` (the caller's ``__name__``) must bind it to that name.
        summary (str): the first paragraphs of the docstring (what is ghosted); the arguments are appended.
        check (callable | None): called with the bound arguments before building (argument errors in Ghost terms).
    """
    import inspect
    plain_params = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
                    for p in inspect.signature(plain_cls).parameters.values()]
    ghost_params = [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v)
                    for k, v in GHOST_ARGS.items()]
    signature = inspect.Signature(plain_params + ghost_params)

    def __init__(self, *args, **kwargs):
        try:
            arguments = signature.bind(*args, **kwargs).arguments
        except TypeError as err:
            raise TypeError(f'{name}: {err}') from None
        ghost = {k: arguments.pop(k, default) for k, default in GHOST_ARGS.items()}
        if check is not None:
            check(arguments)
        plain_cls.__init__(self, **arguments)
        ghostify(self, **ghost, inplace=True)

    doc = (f'{summary}\n\n    Args:\n        {", ".join(p.name for p in plain_params)}: as {plain_cls.__name__}.\n'
           f'        {GHOST_ARGS_DOC}\n    ')
    cls = type(name, (plain_cls, ), {'__init__': __init__, '__doc__': doc, '__module__': module,
                                     '__qualname__': name, '__signature__': signature})
    return cls
