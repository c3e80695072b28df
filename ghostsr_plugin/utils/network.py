"""Build a network from a BasicSR option file and load a checkpoint into it: the one way every command does it."""
import copy

import torch

from ghostsr_plugin.utils.checkpoint import check_state_dict_fits, load_checkpoint

__all__ = ['network_options', 'build_network_from_options', 'load_weights', 'load_network']


def network_options(opt_path, network_key='network_g'):
    """``opt[network_key]`` of a BasicSR option file (a copy), or a ValueError naming the file and the sections."""
    from ghostsr_plugin.utils.options import load_options
    opt = load_options(opt_path)
    net_opt = opt.get(network_key)
    if not isinstance(net_opt, dict) or 'type' not in net_opt:
        sections = ', '.join(k for k in opt if str(k).startswith('network_')) or 'none'
        raise ValueError(f'{opt_path}: no {network_key!r} section with a network type (network sections there: '
                         f'{sections})')
    return copy.deepcopy(dict(net_opt))


def build_network_from_options(opt_path, network_key='network_g'):
    """Build ``opt[network_key]`` of a BasicSR option file through BasicSR's ARCH_REGISTRY."""
    import ghostsr_plugin  # noqa: F401  (registers the archs; BasicSR compat)
    from basicsr.archs import build_network
    return build_network(network_options(opt_path, network_key))


def load_weights(net, ckpt, param_key='params'):
    """Load checkpoint ``ckpt`` (BasicSR ``params``/``params_ema`` or a bare state dict; ``weights_only=True``)
    strictly into ``net``; a checkpoint that does not fit is refused naming the first key or shape."""
    state_dict = load_checkpoint(ckpt, param_key)
    check_state_dict_fits(net, state_dict, ckpt)
    net.load_state_dict(state_dict, strict=True)
    return net


def load_network(opt_path, ckpt=None, param_key='params', network_key='network_g', device='cpu'):
    """The network of an option file, with ``ckpt`` loaded when given, in eval mode on ``device``."""
    net = build_network_from_options(opt_path, network_key)
    if ckpt is not None:
        load_weights(net, ckpt, param_key)
    return net.eval().to(torch.device(device))
