"""A Ghost network's plain twin (``GhostX`` -> ``X``, ``type: Ghost`` -> its ``network``) and the options of the
``distill:`` teacher: the one place both are worked out."""
import inspect

__all__ = ['plain_twin_options', 'teacher_options']


def plain_twin_options(network_opt):
    """BasicSR network options of a Ghost arch's plain twin: ``type: Ghost`` -> its ``network``; type ``GhostX`` ->
    ``X`` (GhostEDSR -> BasicSR's EDSR), keeping the arguments the plain class accepts (the ghost ones, λ, d, shift
    mode, Gumbel, are dropped)."""
    from basicsr.utils.registry import ARCH_REGISTRY
    ghost_type = network_opt.get('type', '')
    if ghost_type == 'Ghost':  # the generic wrapper: its plain network is named in full
        return dict(network_opt['network'])
    plain_type = ghost_type.removeprefix('Ghost')
    if plain_type == ghost_type or plain_type not in ARCH_REGISTRY:
        raise ValueError(f'network type {ghost_type!r} has no registered plain twin; allowed: Ghost archs whose '
                         'plain version is registered (GhostEDSR, GhostRDN, GhostCARN, GhostCARN_M), or Ghost')
    accepted = inspect.signature(ARCH_REGISTRY.get(plain_type)).parameters
    return {'type': plain_type, **{k: v for k, v in network_opt.items() if k != 'type' and k in accepted}}


def teacher_options(opt):
    """BasicSR network options of the ``distill:`` teacher of option set ``opt``: ``distill: network`` when given,
    else the plain twin of ``network_g``."""
    return dict((opt.get('distill') or {}).get('network') or plain_twin_options(opt['network_g']))
