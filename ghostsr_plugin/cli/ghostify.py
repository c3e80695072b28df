"""Compress any SR network with GhostSR: ghostify it and cluster its pre-trained checkpoint into it (§3.2).

    ghostsr ghostify --model any.pth --out ghost.pth            # spandrel detects the architecture
    ghostsr ghostify -opt options/train_EDSR_x2.yml --pretrained EDSR_x2.pth --out ghost.pth
    ghostsr ghostify --arch CARN_M --arch_args '{"upscale": 2}' --pretrained CARN_M_x2.pth \\
        --out ghost.pth

It writes the Ghost checkpoint (``{'params': state_dict}``), ``<out>.json`` (which layers were ghosted and why, and
the clustering report) and a BasicSR ``network_g`` (``type: Ghost``) that builds the same network (printed, and
written by ``--opt_out``), so ``ghostsr evaluate -opt <that file> --ckpt ghost.pth`` and
GhostSRModel fine-tuning load it. Without a checkpoint (``-opt`` / ``--arch`` and no ``--pretrained``) the Ghost
network keeps the plain network's initialisation.

Re-parameterised blocks (SPAN's Conv3XC, ECBSR's ECB) are merged into their deploy 3×3 conv first, in the network and
in the checkpoint clustered into it (:mod:`ghostsr_plugin.compress.reparam`; ``--no_reparameterize`` keeps them, and
ghostify then refuses their convs). The Ghost network then trains the merged convs directly, without the branches.
"""
import argparse

from ghostsr_plugin.cli.arguments import add_network_source
from ghostsr_plugin.compress.from_checkpoint import ghostify_checkpoint
from ghostsr_plugin.compress.ghostifier import GHOST_ARGS


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='ghostsr ghostify',
        description='GhostSR for any SR network: build the Ghost version of a plain network (spandrel checkpoint, '
        'BasicSR option file or registered arch), cluster its pre-trained weights into it (§3.2) and write a '
        'checkpoint plus the BasicSR options that build it.')
    add_network_source(parser)
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
    ghostify_checkpoint(args.out, args.model, args.opt, args.arch, args.arch_args, args.network_key, args.pretrained,
                        args.param_key, args.opt_out, args.include, args.exclude, args.trace_size,
                        reparameterize=not args.no_reparameterize, cluster=not args.no_cluster, seed=args.seed,
                        n_init=args.n_init, init_offset=args.init_offset, progress=not args.no_progress,
                        **{name: tuple(getattr(args, name)) if isinstance(default, tuple) else getattr(args, name)
                           for name, default in GHOST_ARGS.items()})
    return 0
