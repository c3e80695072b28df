"""Re-parameterised blocks in their deploy form, so that ghostify can ghost their 3×3 convolution.

Some SR networks train a block as parallel branches (1×1, 3×3, Sobel, ...) and, in eval mode, merge the branches into
one 3×3 kernel at every forward. Their 3×3 weights are then read outside their own conv's forward, which a ghost
layer (fewer output filters) would break, so ghostify cannot ghost them as they are.

    net, merged = merge_reparameterized(SPAN(num_in_ch=3, num_out_ch=3))   # {block name: block class}
    ghost = ghostify(net)       # ghostify(..., reparameterize=True), the default, does the same merge first

:func:`merge_reparameterized` replaces every known block by its deploy form: one plain ``nn.Conv2d`` 3×3 (padding 1)
holding the merged kernel and bias, followed by the block's own epilogue. The merged network's eval output is the
original's eval output (up to float rounding). The merged kernels come from each block's own merge code (spandrel's
``Conv3XC.update_params``, BasicSR's ``ECB.rep_params``); nothing here re-derives that algebra.

Known blocks (``_BLOCKS``, keyed by class):

* spandrel's ``Conv3XC`` (SPAN): the conv is named ``eval_conv``, so the merged keys are the ``...eval_conv.weight``
  / ``bias`` that spandrel checkpoints already hold; then leaky_relu 0.05 when the block has ``has_relu``;
* BasicSR's ``ECB`` (ECBSR): the conv is named ``rep_conv`` (ECBSR checkpoints have no merged kernel, and the name
  ``conv3x3`` is their 3×3 branch alone); then the block's ``act`` (none for ``act_type: linear``).

A class is looked up only in the modules already imported (a network holding the block has imported its module), so
nothing here imports spandrel, an optional dependency.

Limitation: the deploy form has no branches. A Ghost network built from it, and any fine-tuning of that network,
trains the merged 3×3 convs directly; the branches' training-time parameterisation is not kept.
"""
import copy
import sys
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from ghostsr_plugin.utils.checkpoint import check_state_dict_fits

__all__ = ['merge_reparameterized', 'merged_state_dict', 'DeployConv3XC', 'DeployECB']


class DeployConv3XC(nn.Module):
    """spandrel's Conv3XC in eval mode: the merged 3×3 conv ``eval_conv``, then leaky_relu 0.05 if ``has_relu``."""

    def __init__(self, eval_conv, has_relu):
        super().__init__()
        self.eval_conv = eval_conv
        self.has_relu = has_relu

    def forward(self, x):
        out = self.eval_conv(x)
        return F.leaky_relu(out, negative_slope=0.05) if self.has_relu else out


class DeployECB(nn.Module):
    """BasicSR's ECB in eval mode: the merged 3×3 conv ``rep_conv``, then the block's activation ``act``
    (``nn.Identity`` for ``act_type: linear``)."""

    def __init__(self, rep_conv, act):
        super().__init__()
        self.rep_conv = rep_conv
        self.act = act

    def forward(self, x):
        return self.act(self.rep_conv(x))


def _conv3x3(weight, bias, stride=1):
    """A trainable ``nn.Conv2d`` 3×3 (padding 1) holding copies of ``weight`` / ``bias``."""
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, stride=stride, padding=1, bias=bias is not None)
    conv.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _deploy_conv3xc(block):
    """Conv3XC: its own ``update_params()`` writes the merged kernel of its ``sk`` and ``conv`` branches into its
    ``eval_conv`` (what its eval forward does at every call)."""
    block.update_params()
    merged = block.eval_conv
    return DeployConv3XC(_conv3x3(merged.weight, merged.bias, merged.stride), block.has_relu)


def _deploy_ecb(block):
    """ECB: its own ``rep_params()`` gives the merged kernel and bias of its five branches (and of the identity, with
    ``with_idt``), as its eval forward computes them at every call."""
    with torch.no_grad():
        weight, bias = block.rep_params()
    act = nn.Identity() if block.act_type == 'linear' else block.act
    return DeployECB(_conv3x3(weight, bias), act)


# (module that defines the block, class name, deploy builder)
_BLOCKS = [
    ('spandrel.architectures.SPAN.__arch.span', 'Conv3XC', _deploy_conv3xc),
    ('basicsr.archs.ecbsr_arch', 'ECB', _deploy_ecb),
]


def _known_blocks():
    """{block class: deploy builder} for the block classes whose module is imported."""
    known = {}
    for module_name, class_name, build in _BLOCKS:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if cls is not None:
            known[cls] = build
    return known


def _set_module(net, name, module):
    parent_name, _, child = name.rpartition('.')
    setattr(net.get_submodule(parent_name) if parent_name else net, child, module)


def merge_reparameterized(net, inplace=False):
    """Replace every known re-parameterised block of ``net`` by its deploy form (see the module docstring).

    Args:
        net (nn.Module): any network.
        inplace (bool): modify ``net`` itself instead of a deep copy.

    Returns:
        (nn.Module, OrderedDict): the network (a deploy module if ``net`` is itself a known block) and
        ``{block name: block class name}`` of the merged blocks (empty when there was none).
    """
    if not inplace:
        net = copy.deepcopy(net)
    known = _known_blocks()
    if type(net) in known:
        deploy = known[type(net)](net).train(net.training)
        return deploy, OrderedDict([('', type(net).__name__)])
    blocks = OrderedDict()  # id -> (block, all its names): a shared block is merged once, replaced everywhere
    for name, module in net.named_modules(remove_duplicate=False):
        if type(module) in known:
            blocks.setdefault(id(module), (module, []))[1].append(name)
    report = OrderedDict()
    for block, names in blocks.values():
        deploy = known[type(block)](block).train(block.training)
        for name in names:
            _set_module(net, name, deploy)
        report[names[0]] = type(block).__name__
    return net, report


def merged_state_dict(net, state_dict=None, source='checkpoint'):
    """The deploy-form state dict of the plain network ``net``: load ``state_dict`` (strictly; ``source`` names it in
    the error when it does not fit) -> merge -> state dict. ``net`` itself is left as it was."""
    net = copy.deepcopy(net)
    if state_dict is not None:
        check_state_dict_fits(net, state_dict, source)
        net.load_state_dict(state_dict, strict=True)
    return merge_reparameterized(net, inplace=True)[0].state_dict()
