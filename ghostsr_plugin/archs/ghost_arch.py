"""``type: Ghost``: the Ghost version of any registered network, and ``type: SpandrelNet``: a spandrel network.

An option file becomes a Ghost one by wrapping its network (checkpoints of the plain network cluster into it with
``ghost_init:``; ``distill:`` takes the wrapped network as the teacher)::

    network_g:
      type: Ghost
      network: {type: MSRResNet, num_in_ch: 3, num_out_ch: 3, upscale: 4}
      ghost_ratio: 0.5          # and the other ghost arguments, include / exclude
      reparameterize: true      # the default: re-parameterised blocks (SPAN, ECBSR) are merged first
      layer_ratios: {body.3.conv1: 0.25}   # per-layer λ (a calibrated start writes them)

A network with re-parameterised blocks (SPAN's Conv3XC, ECBSR's ECB) is ghostified in its deploy form (each block
one 3×3 conv, :mod:`ghostsr_plugin.compress.reparam`); its checkpoints, which hold the branches, are merged the same
way before clustering (:func:`ghostsr_plugin.compress.clustering.plain_state_for`), and the ``distill:`` teacher is the
original network. Limitation: such a Ghost network trains the merged 3×3 convs directly, without the branches.
"""
import copy

from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.compress.ghostifier import GHOST_ARGS, GHOST_ARGS_DOC, ghostify


@ARCH_REGISTRY.register()
def Ghost(network, include=None, exclude=None, fuse=True, trace_size=16, reparameterize=True, layer_ratios=None,
          **ghost_args):
    """Build ``network`` (BasicSR options of the plain network) and return its Ghost version
    (:func:`ghostsr_plugin.compress.ghostifier.ghostify`): the plain network's class and state-dict names, plus the
    ghost layers' channel maps / shift logits and ``ghost_schedule``.

    Args:
        network (dict): options of the plain network (``type`` and its arguments).
        {ghost_args}
        include, exclude (list[str]): ``fnmatch`` patterns of convolutions to ghost / keep plain beyond §4.1's rule.
        fuse (bool): fuse ReLU / residual epilogues into the ghost op. Default True.
        trace_size (int): side of the input of the tracing forward (raise it for networks that need more). Default 16.
        reparameterize (bool): merge re-parameterised blocks into their deploy 3×3 conv first, so that they are
            ghosted (and then trained) as plain convs. Default True.
        layer_ratios (dict[str, float]): ``{conv name: λ}`` overriding ``ghost_ratio`` for those ghosted layers, as a
            calibrated start (:mod:`ghostsr_plugin.compress.calibration`) chooses them. Default none.
    """
    if not isinstance(network, dict) or 'type' not in network:
        raise ValueError(f'network_g: type Ghost needs network: {{type: <plain arch>, ...}}, got {network!r}')
    if network['type'] == 'Ghost':
        raise ValueError('network_g: type Ghost cannot wrap another Ghost network')
    unknown = [k for k in ghost_args if k not in GHOST_ARGS]
    if unknown:
        raise ValueError(f'network_g: type Ghost has no option {unknown[0]!r}; allowed: network, '
                         f'{", ".join(GHOST_ARGS)}, include, exclude, fuse, trace_size, reparameterize, layer_ratios')
    plain = copy.deepcopy(network)
    # the registry's class itself, not basicsr.archs.build_network: that one sets BasicSR's logger up on its first
    # call, and a Ghost network built by the up-front option checks would then leave the run without its log file
    net = ARCH_REGISTRY.get(plain.pop('type'))(**plain)
    return ghostify(net, **ghost_args, include=include, exclude=exclude, fuse=fuse, trace_size=trace_size,
                    reparameterize=reparameterize, layer_ratios=layer_ratios, inplace=True)


Ghost.__doc__ = Ghost.__doc__.replace('{ghost_args}', GHOST_ARGS_DOC)


@ARCH_REGISTRY.register()
def SpandrelNet(arch, model=None, hyperparameters=None):
    """A network of spandrel (optional dependency) rebuilt from its architecture id, class name and stored
    hyperparameters, as ``ghostsr ghostify --model file.pth`` writes them."""
    from ghostsr_plugin.compress.spandrel_io import build_spandrel_net
    return build_spandrel_net(arch, model, hyperparameters)
