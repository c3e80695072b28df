"""Parameters and multiply-adds of a network, counted by PyTorch (``torch.utils.flop_counter``), not by hand.

FLOPs in SR papers are multiply-accumulates (GhostSR's Table 1: EDSR x2, 10679 G for a 3x512x512 LR input);
``FlopCounterMode`` counts 2 per multiply-add, so :func:`count_macs` halves its total. A ghost
move is a data movement and counts zero (the compiled op has no FLOP formula; the reference path is indexing).
"""
import copy
import inspect
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['count_params', 'count_macs', 'forward_kwargs']


def count_params(net, include_buffers=False):
    """Number of parameters of ``net`` (shared modules once, as ``nn.Module.parameters`` does)."""
    total = sum(p.numel() for p in net.parameters())
    if include_buffers:
        total += sum(b.numel() for b in net.buffers())
    return total


def forward_kwargs(net, scale=None):
    """``{'scale': scale}`` for a multi-scale network whose forward takes the scale, else ``{}``."""
    if scale is not None and 'scale' in inspect.signature(net.forward).parameters:
        return {'scale': scale}
    return {}


def count_macs(net, input_size=(1, 3, 512, 512), scale=None, device='meta', cpu_fallback=True):
    """Multiply-adds of one forward of ``net`` (eval mode, hard offsets) on an input of ``input_size``.

    By default the count runs on the ``meta`` device (no memory, no compute) on a deep copy of ``net`` whose ghost
    layers have their offsets fixed first at argmax W' (what eval mode picks; a meta tensor has no value to pick
    from); a network that cannot run there is counted on the CPU (unless ``cpu_fallback`` is False).
    """
    probe = copy.deepcopy(net).eval()
    for layer in probe.modules():  # the ghost layers (utils imports nothing of the package to name their class)
        if hasattr(layer, 'freeze_offset'):
            layer.freeze_offset()
    probe = probe.to(device)
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='.*no kernel for meta tensors')  # the reference runs instead
            probe(torch.zeros(input_size, device=device), **forward_kwargs(probe, scale))
    except (NotImplementedError, RuntimeError):
        if device == 'cpu' or not cpu_fallback:
            raise
        return count_macs(net, input_size, scale, device='cpu')
    return counter.get_total_flops() // 2
