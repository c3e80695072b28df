"""CPU latency of several networks timed interleaved in one run, each as a ratio to the first (the original): how
``compress``'s Ghost networks and its pruning baseline compare at one time, on one loaded machine.

    .venv/bin/python tools/latency_side_by_side.py OUT/original.yml OUT/ghost.yml OTHER/ghost.yml \
        [--labels original Ghost Pruned] [--threads 2] [--size 128] [--reps 20]

Each argument is an option file whose ``network_g`` builds the network (``compress`` writes them); weights do not
change the time, so none are loaded. Input 1 x 3 x size x size, float32, eval mode, no grad.
"""
import argparse
import statistics

import torch

import ghostsr_plugin  # noqa: F401  (registers the archs)
from ghostsr_plugin.archs.build import load_network
from ghostsr_plugin.measure.complexity import count_macs, count_params
from ghostsr_plugin.measure.speed import Timer, device_name, interleaved, ratio_stats


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('options', nargs='+', help='option files; the first is the reference of the ratios')
    parser.add_argument('--labels', nargs='+', help='one label per option file (default: the file names)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--size', type=int, default=128, help='input side (1 x 3 x size x size)')
    parser.add_argument('--reps', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    args = parser.parse_args()
    labels = args.labels or args.options
    if len(labels) != len(args.options):
        parser.error(f'--labels: {len(labels)} labels for {len(args.options)} option files')
    torch.set_num_threads(args.threads)
    x = torch.rand(1, 3, args.size, args.size)
    nets = {label: load_network(path) for label, path in zip(labels, args.options)}
    calls = {label: (lambda net=net: net(x)) for label, net in nets.items()}
    with torch.no_grad():
        times = interleaved(Timer(torch.device('cpu')), calls, args.reps, args.warmup)
    ref = labels[0]
    print(f'{device_name(torch.device("cpu"))}, input 1x3x{args.size}x{args.size}, '
          f'{args.reps} interleaved repetitions after {args.warmup} warm-up')
    print('| network | params | FLOPs | latency median (ms) | ratio of medians | median of paired ratios | best ratio |')
    print('|---|---|---|---|---|---|---|')
    size = tuple(x.shape)
    params, macs = count_params(nets[ref]), count_macs(nets[ref], size)
    for label, net in nets.items():
        med, paired = ratio_stats(times, label, ref)
        best = min(times[label]) / min(times[ref])
        print(f'| {label} | {count_params(net) / params:.2f}× | {count_macs(net, size) / macs:.2f}× | '
              f'{statistics.median(times[label]):.1f} | {med:.2f}× | {paired:.2f}× | {best:.2f}× |')


if __name__ == '__main__':
    main()
