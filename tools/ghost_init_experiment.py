"""Issue 3, item 4: GhostCARN_M x2 from the real pre-trained CARN_M, on this machine's CPU (Table 3 of the paper, small).

    python tools/ghost_init_experiment.py [--data ../shared/data] [--skip-train] [--iters N] [--workers W]
                                          [--train-only] [--checkpoints DIR]

Reports Y-PSNR/SSIM on Set5, Set14 and B100 (crop_border = 2) of
  (i)   the converted CARN_M (x2 head of the authors' multi-scale checkpoint);
  (ii)  GhostCARN_M right after the clustering init (§3.2), no training;
  (iii) (ii) fine-tuned on T91 + BSD200 with learnable shifts   options/ghostinit_GhostCARN_M_x2_finetune.yml
  (iv)  GhostCARN_M trained from scratch, same budget           options/ghostinit_GhostCARN_M_x2_scratch.yml
  (v)   (iii) with "copy" ghosts instead of shifts              options/ghostinit_GhostCARN_M_x2_copy.yml
Each training run goes through ``ghostsr train`` (BasicSR's pipeline); the option files hold the
budget (600 iterations: ~55 minutes on this project's 2-core CPU machines). ``--iters N`` (and ``--workers W`` data
loader processes) runs the same recipe with another budget, e.g. on a GPU: the option files are then copied to
``experiments/ghost_init_options/`` with ``total_iter``, the cosine period, the Gumbel epoch and the validation /
checkpoint / print frequencies scaled to N. Writes ``docs/results/ghost_init_x2.{json,md}`` (``--results NAME``: other
names) with the budget and device used.

Training and evaluation can run on different machines (tools/gpu_check.sh trains on a GPU machine): ``--train-only``
trains and writes ``experiments/ghost_init_train.json`` (minutes per run, budget, device); ``--checkpoints DIR``
evaluates ``DIR/<run>.pth`` with the times of ``DIR/ghost_init_train.json`` instead of training.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ghostsr_plugin  # noqa: E402,F401
from basicsr.archs import build_network  # noqa: E402
from ghostsr_plugin.compress.clustering import cluster_init  # noqa: E402
from ghostsr_plugin.utils.atomic import atomic_write_json  # noqa: E402
from ghostsr_plugin.compress.conversion import convert_carn  # noqa: E402
from ghostsr_plugin.measure.speed import device_name  # noqa: E402
from ghostsr_plugin.pipeline.main_job import LR_PATCH, bicubic_scores, ghost_network, large_enough, net_scores  # noqa: E402
from ghostsr_plugin.data.prepare import prepare  # noqa: E402
from ghostsr_plugin.utils.checkpoint import load_checkpoint
from ghostsr_plugin.utils.atomic import atomic_torch_save  # noqa: E402

SCALE = 2
SETS = ('Set5', 'Set14', 'B100')
RUNS = {
    '(iii) GhostCARN_M, clustered + fine-tune (learnable shift)': 'ghostinit_GhostCARN_M_x2_finetune',
    '(iv) GhostCARN_M from scratch, same budget': 'ghostinit_GhostCARN_M_x2_scratch',
    '(v) GhostCARN_M, clustered + fine-tune, copy ghosts': 'ghostinit_GhostCARN_M_x2_copy',
}


def budgeted_options(name, iters, workers):
    """The option file of run ``name``, or a copy under experiments/ with ``iters`` iterations / ``workers``."""
    path = os.path.join('options', f'{name}.yml')
    with open(path) as file:
        opt = yaml.safe_load(file)
    train, loader = opt['train'], opt['datasets']['train']
    if iters is None and workers is None:
        return path, {'total_iter': train['total_iter'], 'num_worker_per_gpu': loader['num_worker_per_gpu']}
    if iters is not None:
        ratio = iters / train['total_iter']
        train['total_iter'] = iters
        train['scheduler']['periods'] = [iters]
        opt['val']['val_freq'] = max(1, round(opt['val']['val_freq'] * ratio))
        opt['logger']['print_freq'] = max(1, round(opt['logger']['print_freq'] * ratio))
        opt['logger']['save_checkpoint_freq'] = max(1, round(opt['logger']['save_checkpoint_freq'] * ratio))
        opt['ghost']['iters_per_epoch'] = max(1, round(opt['ghost']['iters_per_epoch'] * ratio))  # same schedule shape
    if workers is not None:
        loader['num_worker_per_gpu'] = workers
    os.makedirs(os.path.join('experiments', 'ghost_init_options'), exist_ok=True)
    copy = os.path.join('experiments', 'ghost_init_options', f'{name}.yml')
    with open(copy, 'w') as file:
        yaml.safe_dump(opt, file, sort_keys=False)
    return copy, {'total_iter': train['total_iter'], 'num_worker_per_gpu': loader['num_worker_per_gpu']}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', default=os.path.join(ROOT, '..', 'shared', 'data'))
    parser.add_argument('--skip-train', action='store_true', help='evaluate the runs already in experiments/')
    parser.add_argument('--iters', type=int, default=None, help='training iterations per run (default: the option '
                        "files' 600)")
    parser.add_argument('--workers', type=int, default=None, help='data loader processes per run (default: the '
                        "option files' 1)")
    parser.add_argument('--train-only', action='store_true',
                        help='train, write experiments/ghost_init_train.json, do not evaluate')
    parser.add_argument('--checkpoints', default=None,
                        help='evaluate DIR/<run>.pth (and the times in DIR/ghost_init_train.json) instead of training')
    parser.add_argument('--results', default='ghost_init_x2',
                        help='name of the result files docs/results/<NAME>.{json,md} (ghost_init_x2)')
    args = parser.parse_args()
    if args.train_only and (args.skip_train or args.checkpoints):
        parser.error('--train-only trains: it cannot go with --skip-train or --checkpoints')
    if args.iters is not None and args.iters < 1:
        parser.error(f'--iters must be >= 1, got {args.iters}')
    if args.workers is not None and args.workers < 0:
        parser.error(f'--workers must be >= 0, got {args.workers}')
    os.chdir(ROOT)
    data = os.path.abspath(args.data)

    checkpoints = os.path.abspath(args.checkpoints) if args.checkpoints else None
    train = not (args.skip_train or checkpoints)
    if train:
        train_data = prepare([os.path.join(data, 'train', 'T91'), os.path.join(data, 'train', 'BSD200')],
                             os.path.join('datasets', 'T91_BSD200'), 'T91_BSD200', scales=(SCALE, ),
                             workers=min(8, os.cpu_count() or 1))
        large_enough(train_data, SCALE, os.path.join('datasets', 'T91_BSD200', f'meta_x{SCALE}_lr{LR_PATCH}.txt'))
    plain_state, plain_opt = convert_carn(load_checkpoint(os.path.join(data, 'weights', 'carn_m.pth'), None),
                                          'CARN_M', scale=SCALE)
    atomic_torch_save({'params': plain_state}, os.path.join('experiments', 'pretrained', f'CARN_M_x{SCALE}.pth'))

    times_path = os.path.join(checkpoints or 'experiments', 'ghost_init_train.json')
    minutes, budget, train_device = {}, None, None
    if train:
        train_device = device_name(torch.device('cuda' if torch.cuda.is_available() else 'cpu'))
        for label, name in RUNS.items():
            opt_path, budget = budgeted_options(name, args.iters, args.workers)
            start = time.time()
            proc = subprocess.run([sys.executable, '-m', 'ghostsr_plugin', 'train', '-opt', opt_path])
            if proc.returncode != 0:
                sys.exit(f'{name}: training failed (exit {proc.returncode})')
            minutes[label] = round((time.time() - start) / 60, 1)
        atomic_write_json({'minutes': minutes, 'budget': budget, 'device': train_device}, times_path)
        if args.train_only:
            print(f'trained; times in {times_path}')
            return
    elif os.path.exists(times_path):
        with open(times_path) as file:
            times = json.load(file)
        minutes, budget, train_device = times['minutes'], times['budget'], times['device']

    plain = build_network(plain_opt)
    plain.load_state_dict(plain_state)
    clustered = build_network(ghost_network(SCALE))
    cluster_init(clustered, plain_state, seed=0, init_offset='centre', progress=False)
    rows = [('bicubic', None), ('(i) CARN_M, converted', plain), ('(ii) GhostCARN_M, clustered, no training', clustered)]
    for label, name in RUNS.items():
        net = build_network(ghost_network(SCALE) | ({'shift_mode': 'copy'} if name.endswith('copy') else {}))
        path = (os.path.join(checkpoints, f'{name}.pth') if checkpoints else
                os.path.join('experiments', name, 'models', 'net_g_latest.pth'))
        net.load_state_dict(load_checkpoint(path))
        rows.append((label, net))

    results = []
    for label, net in rows:
        scores = bicubic_scores(data, SETS, SCALE) if net is None else net_scores(net, data, SETS, SCALE)
        trained = label in minutes
        results.append({'model': label, 'train_minutes': minutes.get(label), 'train_budget': budget if trained else None,
                        'train_device': train_device if trained else None, **scores})
        print(label, {s: round(scores[s]['psnr'], 2) for s in SETS}, flush=True)
    lines = ['| model | ' + ' | '.join(f'{s} PSNR / SSIM' for s in SETS) + ' | train time (min) |',
             '|---|' + '---|' * (len(SETS) + 1)]
    for row in results:
        cells = ' | '.join(f'{row[s]["psnr"]:.2f} / {row[s]["ssim"]:.4f}' for s in SETS)
        lines.append(f'| {row["model"]} | {cells} | {row["train_minutes"] if row["train_minutes"] else "-"} |')
    if budget:
        lines.append(f'\nTraining: {budget["total_iter"]} iterations per run, {budget["num_worker_per_gpu"]} data loader '
                     f'process(es), on {train_device}.')
    os.makedirs(os.path.join('docs', 'results'), exist_ok=True)
    atomic_write_json(results, os.path.join('docs', 'results', f'{args.results}.json'))
    with open(os.path.join('docs', 'results', f'{args.results}.md'), 'w') as file:
        file.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
