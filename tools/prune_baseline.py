"""Structured channel pruning (Torch-Pruning's DepGraph, magnitude importance, no fine-tune) of a real network, the
baseline of ``ghostsr compress``: params, CPU latency timed interleaved with the original's, and fidelity to the
original (RGB / Y PSNR of the two outputs) at ratio 0.5 and at the ratio that leaves the Ghost network's params.

    .venv/bin/python tools/prune_baseline.py [--model ../shared/data/weights/realesr-animevideov3.pth]

Fidelity is on centre ``--crop`` x ``--crop`` crops of the first ``--count`` images of ``--images`` that are large
enough (Set14 LR x4 by default).
"""
import argparse
import os
import statistics

import cv2
import torch

import ghostsr_plugin  # noqa: F401  (registers the archs)
from basicsr.archs import build_network
from ghostsr_plugin.compress.from_checkpoint import plain_network
from ghostsr_plugin.compress.pruning import param_count, prune, ratio_for_params
from ghostsr_plugin.data.benchmark import DEFAULT_DATA
from ghostsr_plugin.measure.quality import fidelity
from ghostsr_plugin.measure.speed import Timer, device_name, interleaved, ratio_stats
from ghostsr_plugin.utils.images import list_inputs, read_image


def crops(folder, count, size):
    """{name: 1 x 3 x size x size RGB tensor in [0, 1]}: centre crops of the first ``count`` images that fit."""
    out = {}
    for path in list_inputs(folder):
        img = read_image(path, bgr8=True)
        height, width = img.shape[:2]
        if min(height, width) >= size and len(out) < count:
            top, left = (height - size) // 2, (width - size) // 2
            rgb = cv2.cvtColor(img[top:top + size, left:left + size], cv2.COLOR_BGR2RGB)
            out[os.path.basename(path)] = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).unsqueeze(0)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default=os.path.join(DEFAULT_DATA, 'weights', 'realesr-animevideov3.pth'))
    parser.add_argument('--images', default=os.path.join(DEFAULT_DATA, 'benchmark', 'Set14', 'LR_bicubic', 'X4'))
    parser.add_argument('--count', type=int, default=6)
    parser.add_argument('--crop', type=int, default=96)
    parser.add_argument('--size', type=int, default=128, help='latency input side (1 x 3 x size x size)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--reps', type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    plain, plain_opts, trace_size, source = plain_network(model=args.model)
    plain.eval().requires_grad_(False)
    example = torch.rand(1, 3, trace_size, trace_size)
    ghost = build_network({'type': 'Ghost', 'network': plain_opts, 'ghost_ratio': 0.5, 'trace_size': trace_size})
    ghost_share = param_count(ghost) / param_count(plain)
    matched = ratio_for_params(plain, ghost_share, example)
    nets = {'original': (0.0, plain)}
    for ratio in (0.5, matched):
        nets[f'pruned {ratio:.3f}'] = (ratio, prune(plain, ratio, example)[0].eval().requires_grad_(False))

    inputs = crops(args.images, args.count, args.crop)
    x = torch.rand(1, 3, args.size, args.size)
    with torch.no_grad():
        times = interleaved(Timer(torch.device('cpu')), {name: (lambda n=net: n(x)) for name, (_, net) in nets.items()},
                            args.reps, warmup=2)
    print(f'{source} ({args.model}), {device_name(torch.device("cpu"))}; Ghost network (λ 0.5) params: '
          f'{ghost_share:.3f}x the original, matched by pruning ratio {matched:.3f}')
    print(f'latency: 1x3x{args.size}x{args.size}, {args.reps} interleaved repetitions; fidelity: {len(inputs)} centre '
          f'{args.crop}x{args.crop} crops of {args.images} ({", ".join(inputs)})\n')
    print('| network | ratio | params | params ratio | latency (ms, median) | latency ratio (medians / paired) '
          '| fidelity RGB (dB) | fidelity Y (dB) |')
    print('|---|---|---|---|---|---|---|---|')
    for name, (ratio, net) in nets.items():
        medians, paired = ratio_stats(times, name, 'original')
        scores = fidelity(net, plain, inputs) if net is not plain else None
        quality = f'{scores["psnr_rgb"]:.2f} | {scores["psnr_y"]:.2f}' if scores else '— | —'
        print(f'| {name} | {ratio:.3f} | {param_count(net):,} | {param_count(net) / param_count(plain):.3f} | '
              f'{statistics.median(times[name]):.1f} | {medians:.3f} / {paired:.3f} | {quality} |')


if __name__ == '__main__':
    main()
