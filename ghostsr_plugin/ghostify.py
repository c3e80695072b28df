"""Compress any SR network with GhostSR: ghostify it and cluster its pre-trained checkpoint into it (§3.2).

    python -m ghostsr_plugin.ghostify --model any.pth --out ghost.pth            # spandrel detects the architecture
    python -m ghostsr_plugin.ghostify -opt options/train_EDSR_x2.yml --pretrained EDSR_x2.pth --out ghost.pth
    python -m ghostsr_plugin.ghostify --arch CARN_M --arch_args '{"upscale": 2}' --pretrained CARN_M_x2.pth \\
        --out ghost.pth

It writes the Ghost checkpoint (``{'params': state_dict}``), ``<out>.json`` (which layers were ghosted and why, and
the clustering report) and a BasicSR ``network_g`` (``type: Ghost``) that builds the same network (printed, and
written by ``--opt_out``), so ``python -m ghostsr_plugin.evaluate -opt <that file> --ckpt ghost.pth`` and
GhostSRModel fine-tuning load it. Without a checkpoint (``-opt`` / ``--arch`` and no ``--pretrained``) the Ghost
network keeps the plain network's initialisation.

Re-parameterised blocks (SPAN's Conv3XC, ECBSR's ECB) are merged into their deploy 3×3 conv first, in the network and
in the checkpoint clustered into it (:mod:`ghostsr_plugin.compress.reparam`; ``--no_reparameterize`` keeps them, and
ghostify then refuses their convs). The Ghost network then trains the merged convs directly, without the branches.

As a module attribute, ``ghostsr_plugin.ghostify`` stays callable: ``ghostsr_plugin.ghostify(net)`` is
:func:`ghostsr_plugin.compress.ghostify.ghostify` whether or not this command module was imported.
"""
import argparse
import copy
import json
import sys
import types

import yaml

from ghostsr_plugin.compress.ghostify import GHOST_ARGS, format_report, ghostify as ghostify_network
from ghostsr_plugin.utils.checkpoint import atomic_torch_save, atomic_write
from ghostsr_plugin.utils.cli import UserInputError, run_command


class _CallableModule(types.ModuleType):
    """``ghostsr_plugin.ghostify(net, ...)`` keeps working after ``import ghostsr_plugin.ghostify``."""

    def __call__(self, *args, **kwargs):
        return ghostify_network(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


def plain_network(args):
    """(plain net with its weights, its BasicSR options, trace size, source name)."""
    import ghostsr_plugin  # noqa: F401  (registers the archs)
    from basicsr.archs import build_network
    if args.model:
        from ghostsr_plugin.compress.spandrel_io import load_model, network_options, size_for_trace
        descriptor = load_model(args.model)
        opts = network_options(descriptor)
        return descriptor.model.float(), opts, size_for_trace(descriptor, args.trace_size), descriptor.architecture.id
    if args.opt:
        from ghostsr_plugin.utils.network import network_options
        opts = network_options(args.opt, args.network_key)
    else:
        try:
            opts = {'type': args.arch, **json.loads(args.arch_args)}
        except json.JSONDecodeError as err:
            raise UserInputError(f'--arch_args is not JSON ({err}): {args.arch_args!r}') from err
    if opts['type'] == 'Ghost':
        raise UserInputError(f'{args.opt}: network {args.network_key} is already type Ghost; give the plain network')
    net = build_network(copy.deepcopy(opts))
    if args.pretrained:
        from ghostsr_plugin.utils.network import load_weights
        load_weights(net, args.pretrained, args.param_key)
    return net, opts, args.trace_size, opts['type']


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m ghostsr_plugin.ghostify',
        description='GhostSR for any SR network: build the Ghost version of a plain network (spandrel checkpoint, '
        'BasicSR option file or registered arch), cluster its pre-trained weights into it (§3.2) and write a '
        'checkpoint plus the BasicSR options that build it.')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--model', help='checkpoint of any architecture spandrel identifies (.pth/.safetensors)')
    source.add_argument('-opt', help='BasicSR option file whose network (--network_key) is the plain network')
    source.add_argument('--arch', help='registered BasicSR arch of the plain network (with --arch_args)')
    parser.add_argument('--arch_args', default='{}', help='JSON arguments of --arch')
    parser.add_argument('--network_key', default='network_g', help='option section of the network (network_g)')
    parser.add_argument('--pretrained', help='plain checkpoint for -opt / --arch (BasicSR or bare state dict)')
    parser.add_argument('--param_key', default='params', help="state-dict key of --pretrained ('params')")
    parser.add_argument('--out', required=True, help='Ghost checkpoint to write; the report goes to <out>.json')
    parser.add_argument('--opt_out', help='also write the network_g options (YAML) here')
    for name, default in GHOST_ARGS.items():
        kind = type(default[0]) if isinstance(default, tuple) else type(default)
        parser.add_argument(f'--{name}', type=kind, default=default, nargs=2 if isinstance(default, tuple) else None,
                            help=f'({default})')
    parser.add_argument('--include', nargs='+', help='fnmatch patterns of convs to ghost beyond the §4.1 rule')
    parser.add_argument('--exclude', nargs='+', help='fnmatch patterns of convs to keep plain')
    parser.add_argument('--trace_size', type=int, default=16, help='side of the tracing input (16)')
    parser.add_argument('--no_reparameterize', action='store_true',
                        help='keep re-parameterised blocks (SPAN, ECBSR) as they are instead of merging each into its '
                        'deploy 3x3 conv first (their convs are then refused)')
    parser.add_argument('--no_cluster', action='store_true',
                        help='keep the plain weights\' first filters instead of clustering (§3.2)')
    parser.add_argument('--seed', type=int, default=0, help='k-means random_state (0)')
    parser.add_argument('--n_init', type=int, default=10, help='k-means restarts (10)')
    parser.add_argument('--init_offset', default=None, help="'centre' or 'DY,DX': argmax of every shift logit")
    parser.add_argument('--no_progress', action='store_true', help='no progress bar')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an input error')
    args = parser.parse_args(argv)
    if args.model and args.pretrained:
        raise UserInputError('--pretrained goes with -opt / --arch; --model is the checkpoint itself')

    from ghostsr_plugin.compress.cluster import cluster_init, report_summary
    from ghostsr_plugin.compress.reparam import merged_state_dict
    from ghostsr_plugin.utils.checkpoint import atomic_write_json
    net, plain_opts, trace_size, source = plain_network(args)
    ghost_args = {k: (list(getattr(args, k)) if isinstance(v, tuple) else getattr(args, k)) for k, v in
                  GHOST_ARGS.items()}
    ghost_opts = {'type': 'Ghost', 'network': plain_opts, **ghost_args}
    for key in ('include', 'exclude'):
        if getattr(args, key):
            ghost_opts[key] = list(getattr(args, key))
    if trace_size != 16:
        ghost_opts['trace_size'] = trace_size
    if args.no_reparameterize:
        ghost_opts['reparameterize'] = False
    # the checkpoint as the Ghost network needs it: its re-parameterised blocks merged as ghostify merges them
    plain_state = net.state_dict() if args.no_reparameterize else merged_state_dict(net)
    ghost = ghostify_network(net, **ghost_args, include=args.include, exclude=args.exclude, trace_size=trace_size,
                             reparameterize=not args.no_reparameterize)
    print(format_report(ghost.ghostify_report))
    report = {'source': args.model or args.opt or args.arch, 'architecture': source, 'network_g': ghost_opts,
              'ghostify': ghost.ghostify_report}
    if not args.no_cluster and (args.model or args.pretrained):
        clustered = cluster_init(ghost, plain_state, seed=args.seed, n_init=args.n_init, init_offset=args.init_offset,
                                 progress=not args.no_progress)
        print(report_summary(clustered))
        report['cluster'] = clustered
    atomic_torch_save({'params': ghost.state_dict()}, args.out)
    atomic_write_json(report, args.out + '.json')
    snippet = yaml.safe_dump({'network_g': ghost_opts}, sort_keys=False, default_flow_style=None)
    if args.opt_out:
        atomic_write(args.opt_out, lambda file: file.write(snippet), mode='w')
    print(f'# BasicSR options of the Ghost network (load {args.out} with param_key params):\n{snippet}', end='')
    print(f'wrote {args.out}, {args.out}.json' + (f' and {args.opt_out}' if args.opt_out else ''))
    return 0


if __name__ == '__main__':
    sys.exit(run_command('ghostsr_plugin.ghostify', main))
