"""Clustering init from the command line (§3.2): build the Ghost network of an option file, initialise it from a
pre-trained plain checkpoint, write a BasicSR checkpoint and the per-layer JSON report. The library is
:mod:`ghostsr_plugin.compress.clustering`.

    ghostsr cluster -opt options/train_GhostCARN_M_x2.yml \\
        --pretrained experiments/pretrained/CARN_M_x2.pth --out experiments/pretrained/GhostCARN_M_x2_init.pth
"""
import argparse

from ghostsr_plugin.compress.clustering import cluster_checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='ghostsr cluster',
        description='GhostSR clustering init (Nie et al. §3.2, Eq. 7-9): build the Ghost network of an option '
        'file, initialise it from a pre-trained plain checkpoint, write a BasicSR checkpoint and a JSON report.')
    parser.add_argument('-opt', required=True,
                        help='BasicSR option file (train or test) whose network_g is a Ghost arch')
    parser.add_argument('--network_key', default='network_g', help='option section of the network (network_g)')
    parser.add_argument('--pretrained', required=True, help='checkpoint of the plain twin (BasicSR or bare state dict)')
    parser.add_argument('--param_key', default='params', help="state-dict key in a BasicSR checkpoint ('params')")
    parser.add_argument('--seed', type=int, default=0, help='k-means random_state (0)')
    parser.add_argument('--n_init', type=int, default=10, help='k-means restarts (10)')
    parser.add_argument('--init_offset', default=None,
                        help="'centre' (no move) or 'DY,DX': make it the argmax of every shift logit; default: "
                        'leave the logits unbiased')
    parser.add_argument('--offset_margin', type=float, default=0.01, help='argmax margin for --init_offset (0.01)')
    parser.add_argument('--out', required=True, help='output Ghost checkpoint; the report goes to <out>.json')
    parser.add_argument('--no_progress', action='store_true', help='no progress bar')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)

    cluster_checkpoint(args.opt, args.pretrained, args.out, args.network_key, args.param_key, args.seed, args.n_init,
                       args.init_offset, args.offset_margin, progress=not args.no_progress)
    return 0
