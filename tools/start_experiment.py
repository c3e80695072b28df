"""Issue item 2: the calibrated start (ghostsr_plugin.compress.calibration) against §3.2's clustering start.

    python tools/start_experiment.py [--data ../shared/data] [--nets imdn pan carn_m compact] [--crops 16]
                                     [--crop-size 64] [--train-seconds 150] [--out experiments/start.md]

Networks:
  imdn     a small x2 net with IMDN-style channel splits + concatenations (trained here on T91 for --train-seconds);
  pan      a small x2 net with PAN-style pixel attention x * sigmoid(conv1x1(x)) (trained the same way);
  carn_m   the authors' CARN_M, x2 head (../shared/data/weights/carn_m.pth);
  compact  Real-ESRGAN's realesr-animevideov3 (Compact x4), loaded through plain_network(model=...).
Every x2 network is scored by Set5 (and CARN_M also Set14) Y-PSNR: plain, bicubic, §3.2's clustering start (ghostify at
λ = 0.5 + cluster_init, init_offset centre, and for CARN_M also its default random offsets) and the calibrated start,
calibrated on --crops crops of --crop-size px of T91 images bicubic-downscaled x2 (MATLAB bicubic,
ghostsr_plugin.data.bicubic). Compact is scored by fidelity: the RGB PSNR of each start's output against the
original's on six held-out 96x96 centre crops of Set14 LR x4 images (the first six at least 96 px a side), calibrated on
crops of BSD200 images bicubic-downscaled x4. Writes the markdown tables to --out and the full reports to <out>.json.
"""
import argparse
import copy
import glob
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ghostsr_plugin  # noqa: E402,F401
from basicsr.archs import build_network  # noqa: E402
from basicsr.utils.registry import ARCH_REGISTRY  # noqa: E402
from ghostsr_plugin.compress.calibration import calibrated_ghost  # noqa: E402
from ghostsr_plugin.compress.clustering import cluster_init  # noqa: E402
from ghostsr_plugin.compress.conversion import convert_carn  # noqa: E402
from ghostsr_plugin.compress.from_checkpoint import plain_network  # noqa: E402
from ghostsr_plugin.compress.ghostifier import ghostify  # noqa: E402
from ghostsr_plugin.compress.reparam import merged_state_dict  # noqa: E402
from ghostsr_plugin.data.benchmark import DEFAULT_DATA  # noqa: E402
from ghostsr_plugin.data.bicubic import bicubic_downscale, modcrop  # noqa: E402
from ghostsr_plugin.measure.complexity import count_macs  # noqa: E402
from ghostsr_plugin.pipeline.main_job import bicubic_scores, net_scores  # noqa: E402
from ghostsr_plugin.utils.checkpoint import load_checkpoint  # noqa: E402
from ghostsr_plugin.utils.images import read_image  # noqa: E402

SEED = 0


# ---------------------------------------------------------------------------------------------------------------
# Two small x2 networks with the structures §3.2 handles worst
# ---------------------------------------------------------------------------------------------------------------


@ARCH_REGISTRY.register()
class StartToyIMDN(nn.Module):
    """IMDN-style x2: conv 3->32; 3 distillation blocks, each conv3x3 32->32, then three times (split off 12
    channels, conv3x3 20->32 on the other 20; the last conv 20->12), concatenation of the four 12-channel parts and
    a 1x1 fusion 48->32 plus the block input; conv3x3 32->12 and PixelShuffle(2). LeakyReLU 0.05."""

    def __init__(self, num_feat=32, distilled=12, num_block=3):
        super().__init__()
        self.distilled, rest = distilled, num_feat - distilled
        self.head = nn.Conv2d(3, num_feat, 3, padding=1)
        self.blocks = nn.ModuleList()
        for _ in range(num_block):
            block = nn.ModuleDict({
                'c1': nn.Conv2d(num_feat, num_feat, 3, padding=1),
                'c2': nn.Conv2d(rest, num_feat, 3, padding=1),
                'c3': nn.Conv2d(rest, num_feat, 3, padding=1),
                'c4': nn.Conv2d(rest, distilled, 3, padding=1),
                'fuse': nn.Conv2d(4 * distilled, num_feat, 1),
            })
            self.blocks.append(block)
        self.act = nn.LeakyReLU(0.05)
        self.tail = nn.Conv2d(num_feat, 3 * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        feat = self.head(x)
        for block in self.blocks:
            kept, out = [], self.act(block['c1'](feat))
            for name in ('c2', 'c3'):
                part, rest = torch.split(out, [self.distilled, out.shape[1] - self.distilled], 1)
                kept.append(part)
                out = self.act(block[name](rest))
            part, rest = torch.split(out, [self.distilled, out.shape[1] - self.distilled], 1)
            kept += [part, block['c4'](rest)]
            feat = feat + block['fuse'](torch.cat(kept, 1))
        return self.shuffle(self.tail(feat)) + F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)


@ARCH_REGISTRY.register()
class StartToyPAN(nn.Module):
    """PAN-style x2 (SC-PA blocks): conv 3->40; 4 blocks, each two 1x1 branches 40->20 with LeakyReLU 0.2: the
    attention branch conv3x3 20->20, pixel attention y * sigmoid(conv1x1(y)), conv3x3 20->20; the other conv3x3
    20->20; concatenation, 1x1 fusion 40->40 plus the block input; conv3x3 40->12 and PixelShuffle(2), plus the
    bilinear-upsampled input."""

    def __init__(self, num_feat=40, num_block=4):
        super().__init__()
        half = num_feat // 2
        self.head = nn.Conv2d(3, num_feat, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({'split_a': nn.Conv2d(num_feat, half, 1), 'split_b': nn.Conv2d(num_feat, half, 1),
                           'a1': nn.Conv2d(half, half, 3, padding=1), 'pa': nn.Conv2d(half, half, 1),
                           'a2': nn.Conv2d(half, half, 3, padding=1), 'b1': nn.Conv2d(half, half, 3, padding=1),
                           'fuse': nn.Conv2d(num_feat, num_feat, 1)}) for _ in range(num_block))
        self.act = nn.LeakyReLU(0.2)
        self.tail = nn.Conv2d(num_feat, 3 * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        feat = self.head(x)
        for block in self.blocks:
            a, b = self.act(block['split_a'](feat)), self.act(block['split_b'](feat))
            a = block['a1'](a)
            a = self.act(block['a2'](a * torch.sigmoid(block['pa'](a))))
            b = self.act(block['b1'](b))
            feat = feat + block['fuse'](torch.cat([a, b], 1))
        return self.shuffle(self.tail(feat)) + F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def to_tensor(img_bgr):
    """uint8 BGR HxWx3 -> 1x3xHxW RGB float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img_bgr[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255.


def downscaled(folder, scale):
    """[(HR uint8 BGR mod-cropped, LR uint8 BGR)] of every image in ``folder``, LR by MATLAB's bicubic."""
    pairs = []
    for path in sorted(glob.glob(os.path.join(folder, '*'))):
        hr = modcrop(read_image(path, bgr8=True), scale)
        pairs.append((hr, bicubic_downscale(hr, scale)))
    return pairs


def lr_crops(pairs, num, size, seed=SEED):
    """``num`` LR crops of ``size`` px (tensors), one per image of evenly spaced images, at seeded positions."""
    rng = np.random.default_rng(seed)
    crops = []
    usable = [lr for _, lr in pairs if min(lr.shape[:2]) >= size]
    for i in np.linspace(0, len(usable) - 1, num).round().astype(int):
        lr = usable[i]
        top, left = rng.integers(0, lr.shape[0] - size + 1), rng.integers(0, lr.shape[1] - size + 1)
        crops.append(to_tensor(lr[top:top + size, left:left + size]))
    return crops


def patch_pool(pairs, count, patch=32, scale=2):
    """``count`` random (seeded) LR / HR patch pairs of ``pairs`` as two tensors, flipped at random."""
    rng = np.random.default_rng(SEED)
    usable = [(hr, lr) for hr, lr in pairs if min(lr.shape[:2]) >= patch]
    lqs, gts = [], []
    for _ in range(count):
        hr, lr = usable[rng.integers(len(usable))]
        top, left = rng.integers(0, lr.shape[0] - patch + 1), rng.integers(0, lr.shape[1] - patch + 1)
        lq, gt = lr[top:top + patch, left:left + patch], hr[scale * top:scale * (top + patch),
                                                          scale * left:scale * (left + patch)]
        if rng.random() < 0.5:
            lq, gt = lq[:, ::-1], gt[:, ::-1]
        lqs.append(to_tensor(lq))
        gts.append(to_tensor(gt))
    return torch.cat(lqs), torch.cat(gts)


def train_toy(net, pairs, seconds, batch=8, lr=2e-3, log=print):
    """Train ``net`` for ``seconds`` of wall time on T91 patches (Adam, L1, learning rate cosine over the time);
    returns the number of steps."""
    lqs, gts = patch_pool(pairs, 4000)
    generator = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    start, steps = time.time(), 0
    while time.time() - start < seconds:
        for group in optimizer.param_groups:
            group['lr'] = lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (time.time() - start) / seconds)))
        pick = torch.randint(len(lqs), (batch, ), generator=generator)
        loss = F.l1_loss(net(lqs[pick]), gts[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    net.eval()
    log(f'  trained {steps} steps in {time.time() - start:.0f} s, last L1 {loss.item():.4f}')
    return steps


# ---------------------------------------------------------------------------------------------------------------
# Starts
# ---------------------------------------------------------------------------------------------------------------


def cluster_start(plain, options, init_offset='centre'):
    """§3.2: ghostify at the options' uniform λ, then cluster_init from the (merged) plain weights."""
    arguments = {k: v for k, v in options.items() if k not in ('type', 'network')}
    torch.manual_seed(SEED)
    ghost = ghostify(plain, **arguments)
    cluster_init(ghost, merged_state_dict(plain), seed=SEED, init_offset=init_offset, progress=False)
    return ghost.eval()


def flops_ratio(net, plain, size):
    return count_macs(net, size) / count_macs(plain, size)


def fidelity(net, plain, crops):
    """RGB PSNR (dB) of ``net``'s outputs against ``plain``'s on ``crops`` (outputs clamped to [0, 1], mean MSE)."""
    with torch.no_grad():
        errors = [float(((net(x).clamp(0, 1) - plain(x).clamp(0, 1))**2).mean()) for x in crops]
    return 10 * math.log10(1 / np.mean(errors))


def ratios_text(options, report):
    chosen = [e['ratio'] for e in report['layers'].values() if 'ratio' in e]
    return ' '.join(f'{r:g}' for r in chosen)


# ---------------------------------------------------------------------------------------------------------------
# The experiments
# ---------------------------------------------------------------------------------------------------------------


def x2_rows(name, plain, options, crops, data, sets, log):
    """Rows (start, scores per set, FLOPs ratio, λ, seconds) of one x2 network, and the calibration report."""
    size = (1, 3, 64, 64)
    rows = [('plain', net_scores(plain, data, sets, 2, log), 1.0, '', 0.0)]
    rows.append(('bicubic', bicubic_scores(data, sets, 2), None, '', 0.0))
    offsets = ('centre', None) if name == 'carn_m' else ('centre', )
    for init_offset in offsets:
        start = time.time()
        clustered = cluster_start(plain, options, init_offset)
        label = f'§3.2 clustering (init_offset {init_offset or "default: random"})'
        rows.append((label, net_scores(clustered, data, sets, 2, log), flops_ratio(clustered, plain, size),
                     f'{options.get("ghost_ratio", 0.5):g} each', time.time() - start))
    ghost, ghost_options, report = calibrated_ghost(plain, options, crops, progress=False, log=log)
    rows.append(('calibrated start', net_scores(ghost, data, sets, 2, log), report['flops_ratio'],
                 ratios_text(ghost_options, report), report['seconds']))
    return rows, {'options': ghost_options, 'report': report}


def x2_table(rows, sets):
    lines = ['| start | ' + ' | '.join(f'{s} Y-PSNR' for s in sets) + ' | FLOPs ratio | λ per ghosted layer | s |',
             '|---|' + '---|' * (len(sets) + 3)]
    for label, scores, ratio, lambdas, seconds in rows:
        cells = ' | '.join(f'{scores[s]["psnr"]:.2f}' for s in sets)
        lines.append(f'| {label} | {cells} | {"" if ratio is None else f"{ratio:.3f}"} | {lambdas} | '
                     f'{seconds:.0f} |')
    return '\n'.join(lines)


def set14_holdout(data, size=96, count=6):
    """Centre crops of the first ``count`` Set14 LR x4 images at least ``size`` px a side."""
    crops = []
    for path in sorted(glob.glob(os.path.join(data, 'benchmark', 'Set14', 'LR_bicubic', 'X4', '*.png'))):
        img = read_image(path, bgr8=True)
        if min(img.shape[:2]) >= size and len(crops) < count:
            top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
            crops.append((os.path.basename(path), to_tensor(img[top:top + size, left:left + size])))
    return crops


def compact_rows(data, crops, log):
    plain, plain_opts, trace_size, _ = plain_network(model=os.path.join(data, 'weights', 'realesr-animevideov3.pth'))
    plain.eval()
    options = {'type': 'Ghost', 'network': plain_opts, 'ghost_ratio': 0.5}
    if trace_size != 16:
        options['trace_size'] = trace_size
    holdout = set14_holdout(data)
    log(f'  held-out crops: {", ".join(n for n, _ in holdout)}')
    held = [x for _, x in holdout]
    size = (1, 3, 64, 64)
    rows = []
    for init_offset in ('centre', None):
        start = time.time()
        clustered = cluster_start(plain, options, init_offset)
        rows.append((f'§3.2 clustering (init_offset {init_offset or "default: random"})',
                     fidelity(clustered, plain, held), flops_ratio(clustered, plain, size), '0.5 each',
                     time.time() - start))
    ghost, ghost_options, report = calibrated_ghost(plain, options, crops, progress=False, log=log)
    rows.append(('calibrated start', fidelity(ghost, plain, held), report['flops_ratio'],
                 ratios_text(ghost_options, report), report['seconds']))
    return rows, {'options': ghost_options, 'report': report, 'holdout': [n for n, _ in holdout]}


def compact_table(rows):
    lines = ['| start | fidelity on 6 held-out Set14 crops (RGB PSNR, dB) | FLOPs ratio | λ per ghosted layer | s |',
             '|---|---|---|---|---|']
    lines += [f'| {label} | {psnr:.2f} | {ratio:.3f} | {lambdas} | {seconds:.0f} |'
              for label, psnr, ratio, lambdas, seconds in rows]
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', default=DEFAULT_DATA)
    parser.add_argument('--nets', nargs='+', default=['imdn', 'pan', 'carn_m', 'compact'],
                        choices=['imdn', 'pan', 'carn_m', 'compact'])
    parser.add_argument('--crops', type=int, default=16, help='calibration crops (16)')
    parser.add_argument('--crop-size', type=int, default=64, help='side of the calibration crops in LR px (64)')
    parser.add_argument('--train-seconds', type=float, default=150, help='training time of each small net (150)')
    parser.add_argument('--out', default=os.path.join(ROOT, 'experiments', 'start.md'))
    args = parser.parse_args()
    data = os.path.abspath(args.data)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    log = print
    sections, reports = [], {}
    x2_pairs = None
    if {'imdn', 'pan', 'carn_m'} & set(args.nets):
        x2_pairs = downscaled(os.path.join(data, 'train', 'T91'), 2)
        x2_crops = lr_crops(x2_pairs, args.crops, args.crop_size)
    for name in args.nets:
        log(f'== {name}')
        if name in ('imdn', 'pan'):
            torch.manual_seed(SEED)
            plain_opts = {'type': 'StartToyIMDN' if name == 'imdn' else 'StartToyPAN'}
            plain = build_network(dict(plain_opts))
            steps = train_toy(plain, x2_pairs, args.train_seconds, log=log)
            rows, reports[name] = x2_rows(name, plain, {'type': 'Ghost', 'network': plain_opts}, x2_crops, data,
                                          ('Set5', ), log)
            reports[name]['train_steps'] = steps
            sections.append((name, x2_table(rows, ('Set5', ))))
        elif name == 'carn_m':
            state, plain_opts = convert_carn(load_checkpoint(os.path.join(data, 'weights', 'carn_m.pth'), None),
                                             'CARN_M', scale=2)
            plain = build_network(dict(plain_opts))
            plain.load_state_dict(state)
            plain.eval()
            rows, reports[name] = x2_rows(name, plain, {'type': 'Ghost', 'network': plain_opts}, x2_crops, data,
                                          ('Set5', 'Set14'), log)
            sections.append((name, x2_table(rows, ('Set5', 'Set14'))))
        else:
            crops = lr_crops(downscaled(os.path.join(data, 'train', 'BSD200'), 4), args.crops, args.crop_size)
            rows, reports[name] = compact_rows(data, crops, log)
            sections.append((name, compact_table(rows)))
        log(sections[-1][1])
    header = (f'{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} '
              f'threads; calibration: {args.crops} crops of {args.crop_size} px')
    text = header + '\n\n' + '\n\n'.join(f'### {name}\n\n{table}' for name, table in sections) + '\n'
    with open(args.out, 'w') as file:
        file.write(text)
    with open(args.out + '.json', 'w') as file:
        json.dump(reports, file, indent=1, default=str)
    log(f'wrote {args.out} and {args.out}.json')


if __name__ == '__main__':
    main()
