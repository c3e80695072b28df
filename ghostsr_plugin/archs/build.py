"""Build a network from a BasicSR option file and load a checkpoint into it: the one way every command does it."""
import copy
import json

import torch

from ghostsr_plugin.utils.checkpoint import check_state_dict_fits, load_checkpoint
from ghostsr_plugin.utils.errors import UserInputError
from ghostsr_plugin.utils.option_file import load_options

__all__ = ['build_unloaded', 'network_options', 'network_spec', 'build_network_spec', 'build_network_from_options',
           'load_weights',
           'load_network']


def network_options(opt_path, network_key='network_g'):
    """``opt[network_key]`` of a BasicSR option file (a copy), or a ValueError naming the file and the sections."""
    opt = load_options(opt_path)
    net_opt = opt.get(network_key)
    if not isinstance(net_opt, dict) or 'type' not in net_opt:
        sections = ', '.join(k for k in opt if str(k).startswith('network_')) or 'none'
        raise ValueError(f'{opt_path}: no {network_key!r} section with a network type (network sections there: '
                         f'{sections})')
    return copy.deepcopy(dict(net_opt))


def network_spec(opt_path=None, network_key='network_g', arch=None, arch_args='{}'):
    """(BasicSR network options with ``type``, where they came from) of option file ``opt_path``'s ``network_key``,
    or of the registered ``arch`` with the JSON object ``arch_args`` (the commands' ``-opt`` / ``--arch``)."""
    if opt_path:
        return network_options(opt_path, network_key), f'{opt_path} {network_key}'
    try:
        args = json.loads(arch_args)
    except (json.JSONDecodeError, TypeError) as err:
        raise UserInputError(f'--arch_args {arch_args!r} is not a JSON object of arguments ({err})') from err
    if not isinstance(args, dict):
        raise UserInputError(f'--arch_args {arch_args!r} is not a JSON object of arguments')
    return {'type': arch, **args}, '--arch_args'


def build_network_spec(net_opt, source='options'):
    """Build ``net_opt`` (``type`` + arguments) through BasicSR's ARCH_REGISTRY; an unknown type or a wrong argument
    is an error naming ``source`` and the allowed types."""
    import ghostsr_plugin  # noqa: F401  (registers the archs; BasicSR compat)
    from basicsr.utils.registry import ARCH_REGISTRY
    net_opt = dict(net_opt)
    net_type = net_opt.pop('type')
    if net_type not in ARCH_REGISTRY:
        raise UserInputError(f'network type {net_type!r} is not a registered architecture; allowed: '
                             f'{", ".join(sorted(ARCH_REGISTRY._obj_map))}')
    try:
        return ARCH_REGISTRY.get(net_type)(**net_opt)
    except TypeError as err:
        raise UserInputError(f'{source}: {net_type}: {err}') from err


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


def build_unloaded(net_opt, where):
    """The network of ``net_opt`` for checks: on the meta device (no memory for weights) where the arch allows it,
    else on the CPU (constructors that compute with tensors: value checks, traces), whose error is the one reported,
    naming ``where``."""
    net_opt = dict(net_opt)
    from basicsr.utils.registry import ARCH_REGISTRY
    arch = ARCH_REGISTRY.get(net_opt.pop('type'))
    try:
        with torch.device('meta'):
            return arch(**net_opt)
    except Exception:  # noqa: BLE001 - the CPU build below decides
        pass
    try:
        return arch(**net_opt)
    except TypeError as err:
        raise UserInputError(f'{where}: {err}') from err
    except (ValueError, AssertionError, KeyError) as err:
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        raise UserInputError(message if message.startswith(f'{where}:') else f'{where}: {message}') from err
