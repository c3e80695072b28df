"""Checkpoints of the authors' CARN-pytorch release (Ahn et al., ECCV 2018) -> BasicSR checkpoints of the plugin.

The plugin's ``CARN`` / ``CARN_M`` use the authors' state-dict names (``entry``, ``bK.bJ.body.I``, ``bK.cJ``,
``cJ.body.0``, ``upsample.up2/up3/up4`` for the released multi-scale networks, ``upsample.up`` for single scale,
``exit``, the frozen mean shifters ``sub_mean.shifter`` / ``add_mean.shifter``). Conversion therefore is:
read the bare state dict (a ``module.`` prefix removed), work out the network arguments from its shapes
(width, groups, multi-scale or the scale of a single head), load it strictly into the plugin's network (an error
names the first key or shape that does not fit), and write ``{'params': state_dict}`` atomically, which BasicSR's
``path: pretrain_network_g`` reads.

``--scale`` additionally cuts a multi-scale checkpoint down to the single-scale network of that scale (the head
``upsample.upS`` becomes ``upsample.up``; the other heads are dropped).

BasicSR's own EDSR checkpoints need no conversion: they load as they are into ``EDSR``, and into ``GhostEDSR``
through the clustering init (``ghostsr cluster`` or the ``ghost_init:`` option block).

    ghostsr convert --arch CARN_M --in ../shared/data/weights/carn_m.pth \\
        --out experiments/pretrained/CARN_M_multiscale.pth
"""
from collections import OrderedDict

from ghostsr_plugin.utils.checkpoint import check_state_dict_fits
from ghostsr_plugin.utils.errors import UserInputError

__all__ = ['CARN_ARCHS', 'check_carn', 'infer_carn_args', 'single_scale', 'convert_carn']

CARN_ARCHS = ('CARN', 'CARN_M')
MULTI_SCALE_HEADS = {2: 'upsample.up2', 3: 'upsample.up3', 4: 'upsample.up4'}
# a key that tells what another family's checkpoint is, for the message that refuses it
OTHER_FAMILIES = (('SFENet1.weight', 'an RDN'), ('conv_first.weight', 'an EDSR (BasicSR)'),
                  ('head.0.weight', 'an EDSR (EDSR-PyTorch)'))


def check_carn(state):
    """Raise an error unless ``state`` is a CARN-pytorch state dict, saying what it looks like instead."""
    if 'entry.weight' in state:
        return
    family = next((name for key, name in OTHER_FAMILIES if key in state), None)
    what = f'it looks like {family} checkpoint' if family else f'first keys: {", ".join(list(state)[:3])}'
    raise UserInputError(f'not a CARN-pytorch checkpoint: no key "entry.weight" ({what}); convert reads only the '
                         f"authors' CARN / CARN_M checkpoints")


def infer_carn_args(state, arch):
    """Network arguments of the plugin's ``arch`` (CARN or CARN_M) that fit the checkpoint ``state``.

    Width from ``entry.weight``; the group count of CARN_M from its first group conv; multi-scale when the heads
    ``upsample.up2/3/4`` are there, else single scale with the scale of ``upsample.up`` (x3: one step to 9x the
    width, x4: two steps, x2: one step to 4x the width).
    """
    if arch not in CARN_ARCHS:
        raise ValueError(f'--arch must be one of {", ".join(CARN_ARCHS)}, got {arch!r}')
    check_carn(state)
    num_feat = int(state['entry.weight'].shape[0])
    args = {'num_in_ch': int(state['entry.weight'].shape[1]), 'num_out_ch': int(state['exit.weight'].shape[0])
            if 'exit.weight' in state else 3, 'num_feat': num_feat}
    if arch == 'CARN_M':
        key = 'b1.b1.body.0.weight'
        if key not in state:
            raise ValueError(f'not a CARN_M checkpoint: no key "{key}" (is it a CARN one? try --arch CARN)')
        args['group'] = num_feat // int(state[key].shape[1])
    if f'{MULTI_SCALE_HEADS[2]}.body.0.weight' in state:
        args.update(multi_scale=True, upscale=2)
    elif 'upsample.up.body.0.weight' in state:
        expanded = int(state['upsample.up.body.0.weight'].shape[0])
        scale = 3 if expanded == 9 * num_feat else 4 if 'upsample.up.body.3.weight' in state else 2
        args.update(multi_scale=False, upscale=scale)
    else:
        raise ValueError('not a CARN checkpoint: no upsampling head "upsample.up2" (multi-scale) or "upsample.up" '
                         '(single scale)')
    return args


def single_scale(state, scale):
    """Keep only the head of ``scale`` of a multi-scale CARN state dict, renamed to the single-scale ``upsample.up``."""
    if scale not in MULTI_SCALE_HEADS:
        raise ValueError(f'--scale must be 2, 3 or 4, got {scale!r}')
    check_carn(state)
    head = MULTI_SCALE_HEADS[scale] + '.'
    if not any(k.startswith(head) for k in state):
        single = 'upsample.up.body.0.weight' in state
        raise ValueError(f'the checkpoint has no head "{head[:-1]}": '
                         + ('it is a single-scale CARN checkpoint; convert it without --scale' if single
                            else 'it is not a multi-scale CARN checkpoint'))
    result = OrderedDict()
    for key, value in state.items():
        if key.startswith(head):
            result['upsample.up.' + key[len(head):]] = value
        elif not any(key.startswith(h + '.') for h in MULTI_SCALE_HEADS.values()):
            result[key] = value
    return result


def convert_carn(state, arch, scale=None):
    """Validate and convert an authors' CARN / CARN_M state dict.

    Args:
        state (dict[str, Tensor]): the authors' state dict (``module.`` prefix already removed).
        arch (str): 'CARN' or 'CARN_M'.
        scale (int | None): cut a multi-scale checkpoint down to this scale; None keeps it as it is.

    Returns:
        (OrderedDict, dict): the plugin network's state dict (its key order), and the ``network_g`` options
        (``type`` and arguments) that build the network it loads into.
    """
    import ghostsr_plugin  # noqa: F401  (registers the archs)
    from basicsr.utils.registry import ARCH_REGISTRY

    if scale is not None:
        state = single_scale(state, scale)
    args = infer_carn_args(state, arch)
    net = ARCH_REGISTRY.get(arch)(**args)
    check_state_dict_fits(net, state, source=f'the {arch} checkpoint')
    net.load_state_dict(state, strict=True)
    return OrderedDict((k, v.detach().clone()) for k, v in net.state_dict().items()), {'type': arch, **args}


def convert_carn_file(arch, inp, out, scale=None, log=print):
    """The ``convert`` command: the authors' checkpoint ``inp`` (weights-only) converted by :func:`convert_carn` and
    written to ``out`` as ``{'params': state_dict}`` (atomically); logs what was written and the ``network_g``
    options that load it. Returns those options."""
    from ghostsr_plugin.utils.atomic import atomic_torch_save
    from ghostsr_plugin.utils.checkpoint import load_checkpoint
    if arch in ('EDSR', 'GhostEDSR'):
        raise UserInputError('BasicSR EDSR checkpoints need no conversion: they load as they are ("params" key) into '
                             'EDSR, and into GhostEDSR through `ghostsr cluster` (clustering init)')
    if arch not in CARN_ARCHS:
        raise UserInputError(f'--arch must be one of {", ".join(CARN_ARCHS)}, got {arch!r}')
    state = load_checkpoint(inp, param_key='params')
    try:
        converted, network = convert_carn(state, arch, scale)
    except ValueError as err:
        raise UserInputError(f'{inp}: {err}') from err
    atomic_torch_save({'params': converted}, out)
    num_params = sum(v.numel() for k, v in converted.items() if 'mean.shifter' not in k)
    options = ', '.join(f'{k}: {str(v).lower() if isinstance(v, bool) else v}' for k, v in network.items())
    log(f'wrote {out}: {arch}, {num_params:,} parameters (mean shifters excluded), {len(converted)} tensors\n'
        f'network_g: {{{options}}}')
    return network
