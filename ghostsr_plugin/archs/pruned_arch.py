"""``type: Pruned``: a network with structured channel pruning (Torch-Pruning's DepGraph), rebuilt from options.

The baseline of ``ghostsr compress`` against Ghost features: :func:`ghostsr_plugin.compress.pruning.prune` cuts the
plain network's channels and returns ``keep``, which these options replay without tracing::

    network_g:
      type: Pruned
      network: {type: SpandrelNet, arch: Compact, hyperparameters: {num_feat: 64, num_conv: 16, upscale: 4}}
      keep: {body.0: {out: [0, 2, 3, ...]}, body.1: {out: [0, 2, 3, ...]}, body.2: {in: [...], out: [...]}, ...}

A checkpoint of the pruned network (its ``state_dict()``) loads into it strictly.
"""
import copy

from basicsr.utils.registry import ARCH_REGISTRY


@ARCH_REGISTRY.register()
def Pruned(network, keep):
    """Build ``network`` (BasicSR options of the plain network) and prune it to the channels of ``keep``
    (``{module name: {'out' | 'in': kept original channel indices}}``)."""
    from ghostsr_plugin.compress.pruning import apply_plan  # Torch-Pruning is imported when a Pruned net is built
    if not isinstance(network, dict) or 'type' not in network:
        raise ValueError(f'network_g: type Pruned needs network: {{type: <plain arch>, ...}}, got {network!r}')
    plain = copy.deepcopy(network)
    # the registry's class itself, not basicsr.archs.build_network, as type: Ghost does (BasicSR's logger set-up)
    return apply_plan(ARCH_REGISTRY.get(plain.pop('type'))(**plain), keep)
