"""The calibrated start's two budgets against latency: the plain network, ghostify at uniform λ, and the calibrated
start with per-layer λ budgeted by FLOPs (``cost='flops'``) and by measured conv time (``cost='time'``), timed
interleaved in one run.

    .venv/bin/python tools/start_budget_latency.py --model ../shared/data/weights/realesr-animevideov3.pth
    .venv/bin/python tools/start_budget_latency.py --arch CARN_M --arch_args '{"upscale": 2}' \
        --pretrained experiments/pretrained/CARN_M_x2.pth

Calibration inputs: 16 random 64x64 crops of --images (BSD200 as they are; latency does not depend on them, the
printed fidelity on them does). Latency: 1 x 3 x --size x --size, float32, --threads threads, --reps interleaved.
"""
import argparse
import os
import statistics

import numpy as np
import torch

import ghostsr_plugin  # noqa: F401  (registers the archs)
from ghostsr_plugin.compress.calibration import calibrated_ghost
from ghostsr_plugin.compress.from_checkpoint import plain_network
from ghostsr_plugin.compress.ghostifier import ghostify
from ghostsr_plugin.data.benchmark import DEFAULT_DATA
from ghostsr_plugin.measure.complexity import count_macs
from ghostsr_plugin.measure.speed import Timer, device_name, interleaved
from ghostsr_plugin.utils.images import list_inputs, read_image


def crops(folder, count=16, size=64, seed=0):
    rng = np.random.default_rng(seed)
    files = list_inputs(folder)
    found = []
    for path in rng.permutation(files):
        image = read_image(path, bgr8=True)[:, :, ::-1].astype(np.float32) / 255  # RGB [0, 1], HWC
        if min(image.shape[:2]) < size:
            continue
        y, x = rng.integers(0, image.shape[0] - size + 1), rng.integers(0, image.shape[1] - size + 1)
        found.append(torch.from_numpy(np.ascontiguousarray(image[y:y + size, x:x + size])).permute(2, 0, 1)[None])
        if len(found) == count:
            return found
    raise SystemExit(f'--images {folder}: fewer than {count} images of at least {size} px a side')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model')
    parser.add_argument('--arch')
    parser.add_argument('--arch_args', default='{}')
    parser.add_argument('--pretrained')
    parser.add_argument('--images', default=os.path.join(DEFAULT_DATA, 'train', 'BSD200'))
    parser.add_argument('--ghost_ratio', type=float, default=0.5)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--reps', type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    plain, opts, _, _ = plain_network(model=args.model, arch=args.arch, arch_args=args.arch_args,
                                      pretrained=args.pretrained)
    plain.eval()
    inputs = crops(args.images)
    ghost_options = {'type': 'Ghost', 'network': opts, 'ghost_ratio': args.ghost_ratio}
    nets = {'plain': plain, f'ghostify, uniform λ={args.ghost_ratio:g}': ghostify(plain, ghost_ratio=args.ghost_ratio)}
    for cost in ('flops', 'time'):
        nets[f'calibrated, {cost} budget'] = calibrated_ghost(plain, ghost_options, inputs, cost=cost,
                                                              progress=False)[0]
    x = torch.rand(1, 3, args.size, args.size)
    with torch.no_grad():
        times = interleaved(Timer(torch.device('cpu')), {k: (lambda n=n.eval(): n(x)) for k, n in nets.items()},
                            args.reps, 2)
    size = tuple(x.shape)
    print(f'{device_name(torch.device("cpu"))}, input 1x3x{args.size}x{args.size}, {args.reps} repetitions interleaved')
    print('| network | FLOPs | latency median (ms) | latency ratio |')
    print('|---|---|---|---|')
    for name, net in nets.items():
        print(f'| {name} | {count_macs(net, size) / count_macs(plain, size):.3f}× | '
              f'{statistics.median(times[name]):.1f} | '
              f'{statistics.median(times[name]) / statistics.median(times["plain"]):.2f}× |')


if __name__ == '__main__':
    main()
