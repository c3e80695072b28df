"""Clustering init from the command line (§3.2): build the Ghost network of an option file, initialise it from a
pre-trained plain checkpoint, write a BasicSR checkpoint and the per-layer JSON report. The library is
:mod:`ghostsr_plugin.compress.cluster`.

    python -m ghostsr_plugin.cluster -opt options/train_GhostCARN_M_x2.yml \\
        --pretrained experiments/pretrained/CARN_M_x2.pth --out experiments/pretrained/GhostCARN_M_x2_init.pth
"""
import argparse
import sys

from ghostsr_plugin.compress.cluster import cluster_init, load_state_dict_file, plain_state_for, report_summary
from ghostsr_plugin.utils.checkpoint import atomic_torch_save, atomic_write_json
from ghostsr_plugin.utils.cli import run_command
from ghostsr_plugin.utils.network import build_network_from_options, network_options


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m ghostsr_plugin.cluster',
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

    net = build_network_from_options(args.opt, args.network_key)
    plain = plain_state_for(network_options(args.opt, args.network_key),
                            load_state_dict_file(args.pretrained, args.param_key), args.pretrained)
    report = cluster_init(net, plain, seed=args.seed, n_init=args.n_init, init_offset=args.init_offset,
                          offset_margin=args.offset_margin, progress=not args.no_progress)
    report.update({'network': type(net).__name__, 'option_file': args.opt, 'pretrained': args.pretrained,
                   'param_key': args.param_key})
    atomic_torch_save({'params': net.state_dict()}, args.out)
    atomic_write_json(report, args.out + '.json')
    print(report_summary(report))
    print(f'wrote {args.out} and {args.out}.json')
    return 0


if __name__ == '__main__':
    sys.exit(run_command('ghostsr_plugin.cluster', main))
