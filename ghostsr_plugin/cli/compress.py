"""``ghostsr compress``: the SR network you have, on the images you have, into a faster Ghost network that keeps its
output — no ground truth (:func:`ghostsr_plugin.pipeline.compression.compress`).

    ghostsr compress --model realesr-animevideov3.pth --images photos/ --out compressed/ --minutes 60
    ghostsr compress --model carn_m_x2.pth --images ../shared/data/train/T91 --inputs downscale \\
        --out carn_m_ghost/ --minutes 30 --bench Set5 Set14
    ghostsr compress -opt options/train_EDSR_x2.yml --pretrained EDSR_x2.pth --images photos/ --out edsr_ghost/
"""
import argparse
import functools

from ghostsr_plugin.cli.arguments import add_network_source
from ghostsr_plugin.data.benchmark import DEFAULT_DATA
from ghostsr_plugin.data.lr_folder_dataset import INPUT_MODES
from ghostsr_plugin.ops.ghost_conv import SHIFT_MODES
from ghostsr_plugin.pipeline.compression import BASELINES, STARTS, compress


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='ghostsr compress',
        description='Ghostify any SR network, start it close to the original and fine-tune it on your images with '
        'the original as the only target (BasicSR training, no ground truth); writes the Ghost checkpoint, its '
        'options, a report (fidelity, params, FLOPs, latency) and a picture of crops.')
    add_network_source(parser)
    parser.add_argument('--images', nargs='+', required=True, help='folders of images (directly inside)')
    parser.add_argument('--out', required=True, help='output folder (new, or an earlier run with --auto_resume)')
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument('--minutes', type=float, help='fine-tune budget in minutes of this machine (default 15)')
    budget.add_argument('--iters', type=int, help='fine-tune budget in iterations')
    parser.add_argument('--inputs', choices=INPUT_MODES, default='as-is',
                        help='as-is: the images are the network\'s inputs (real-world models); downscale: MATLAB '
                        'bicubic LR of them (bicubic-trained models) (as-is)')
    parser.add_argument('--val', nargs='+', help='folders of held-out images for the fidelity (default: a share of '
                        '--images set aside)')
    parser.add_argument('--val_share', type=float, default=0.1, help='share of --images held out (0.1, 1 to 8 images)')
    parser.add_argument('--bench', nargs='+', default=[], help='benchmark sets (Set5 Set14 ...) for Y-PSNR/SSIM too')
    parser.add_argument('--data', default=DEFAULT_DATA, help='data folder with benchmark/ (../shared/data)')
    parser.add_argument('--ghost_ratio', type=float, default=0.5, help='λ, the share of ghost features (0.5)')
    parser.add_argument('--shift_mode', choices=SHIFT_MODES, default='learnable',
                        help='learnable: each ghost layer learns its offset (Gumbel-softmax, §3.1); copy: ghosts are '
                        'unshifted copies (the paper\'s ablation; a cheaper step); fixed: the offset (0, -1) '
                        '(learnable)')
    parser.add_argument('--start', choices=STARTS, default='calibrate',
                        help='calibrate: fitted to the original\'s layer outputs on your images, each layer\'s λ '
                        'chosen so that its convolutions, timed here, take no longer than at uniform --ghost_ratio; '
                        'calibrate_flops: the same at the FLOPs of uniform --ghost_ratio; cluster: §3.2\'s k-means '
                        'of the weights (calibrate)')
    parser.add_argument('--baseline', choices=BASELINES,
                        help='prune: instead of the Ghost network, the plain one with its channels pruned '
                        '(Torch-Pruning DepGraph, magnitude), through the same fine-tune and report')
    parser.add_argument('--prune_ratio', type=float, help='with --baseline prune: share of every hidden conv\'s '
                        'channels removed (default: the share that leaves the Ghost network\'s params)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'), help='training device (cpu)')
    parser.add_argument('--nproc', type=int, default=1, help='training processes (torch.distributed.run) (1)')
    parser.add_argument('--lq_size', type=int, default=48, help='LR patch side (48)')
    parser.add_argument('--input_scales', type=float, nargs='+', default=[1.0],
                        help='also cut training patches from the images resized by these factors, e.g. 1 0.5 0.25 (1)')
    parser.add_argument('--batch_size', type=int, default=16, help='patches per step (16)')
    parser.add_argument('--lr', type=float, default=5e-4, help='Adam learning rate, cosine decay (5e-4)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--export', action='store_true', help='also write ghost.onnx, checked against PyTorch')
    parser.add_argument('--auto_resume', action='store_true', help='go on with the run in --out after a kill')
    parser.add_argument('--no_progress', action='store_true', help='no progress bars')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    args = parser.parse_args(argv)
    compress(args.out, args.images, args.model, args.opt, args.arch, args.arch_args, args.pretrained,
             args.param_key, args.network_key, args.minutes, args.iters, args.inputs, args.val, args.val_share,
             args.bench, args.data, args.ghost_ratio, args.start, args.device, args.export, args.auto_resume,
             args.lq_size, args.batch_size, args.lr, args.nproc, args.seed, progress=not args.no_progress,
             log=functools.partial(print, flush=True), baseline=args.baseline, prune_ratio=args.prune_ratio,
             shift_mode=args.shift_mode, input_scales=args.input_scales)
    return 0
