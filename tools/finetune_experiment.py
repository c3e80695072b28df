"""Issue 12: the GhostCARN_M x2 fine-tune recipe and Table 3 (learnable vs copy), one run at a time.

    python tools/finetune_experiment.py RUN [--iters N] [--workers W] [--set KEY=VALUE ...] [--results NAME]
    python tools/finetune_experiment.py --list
    python tools/finetune_experiment.py --report [--results NAME]      # table + curve from the recorded runs

A run is a named option file of ``RUNS`` (plus ``--set`` overrides such as ``ghost.freeze_offsets_at=0.8`` or
``manual_seed=1``, recorded with the run). It trains through ``ghostsr train`` (its BasicSR log
is kept under ``experiments/<run>/``), then evaluates the last and the best-validation checkpoints on Set5, Set14
(and ``--sets``), reads the validation curve (Set5 Y-PSNR against training minutes) from the log, and records the
ending offsets. Every finished run is added to ``docs/results/<NAME>.json`` at once (atomically), and
``docs/results/<NAME>.md`` / ``<NAME>.png`` are made again from all recorded runs, so a finished run is never lost
when a later one fails or is killed. Runs are meant to take at most about an hour each on the project's 2-core CPU
machine; start them in the background with their console kept, e.g.

    nohup .venv/bin/python tools/finetune_experiment.py learnable_s0 > experiments/learnable_s0.console 2>&1 &

``--iters N`` scales the run's budget (iterations, cosine period, Gumbel epoch, freeze point, validation and
checkpoint frequencies) to N, e.g. a larger budget on a GPU (``tools/gpu_check.sh``) or a dry run with 4.
"""
import argparse
import copy
import datetime
import json
import os
import re
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SCALE = 2
RECIPE = 'options/finetune_GhostCARN_M_x2.yml'
# name -> (option file, overrides). Table 3 at x2: learnable vs copy from the clustered real CARN_M, two seeds each,
# W' initialised as the paper does (near zero, no offset favoured); the from-scratch pair if the budget allows.
RUNS = {
    'learnable_s0': (RECIPE, {}),
    'learnable_s1': (RECIPE, {'manual_seed': 1, 'ghost_init.seed': 1, 'network_g.gumbel_seed': 1}),
    'copy_s0': (RECIPE, {'network_g.shift_mode': 'copy'}),
    'copy_s1': (RECIPE, {'network_g.shift_mode': 'copy', 'manual_seed': 1, 'ghost_init.seed': 1}),
    'scratch_learnable_s0': (RECIPE, {'ghost_init': None, 'distill': None}),  # random weights, ground truth only
}
# Iteration counts that scale with --iters (the shape of the schedule stays).
SCALED = ('train.total_iter', 'val.val_freq', 'logger.print_freq', 'logger.save_checkpoint_freq',
          'ghost.iters_per_epoch')


def _get(opt, dotted):
    for key in dotted.split('.'):
        if not isinstance(opt, dict) or key not in opt:
            return None
        opt = opt[key]
    return opt


def _set(opt, dotted, value):
    keys = dotted.split('.')
    for key in keys[:-1]:
        opt = opt.setdefault(key, {})
    opt[keys[-1]] = value


def run_options(name, base_path, overrides, iters=None, workers=None):
    """The option dict of run ``name``: ``base_path`` with ``overrides`` (dotted keys), renamed to ``name`` and,
    with ``iters``, the budget scaled to ``iters`` iterations."""
    with open(os.path.join(ROOT, base_path)) as file:
        opt = yaml.safe_load(file)
    for key, value in overrides.items():
        _set(opt, key, value)
    opt['name'] = name
    if iters is not None:
        ratio = iters / opt['train']['total_iter']
        for key in SCALED:
            if _get(opt, key) is not None:
                _set(opt, key, max(1, round(_get(opt, key) * ratio)))
        opt['train']['total_iter'] = iters
        opt['train']['scheduler']['periods'] = [iters]
        freeze = _get(opt, 'ghost.freeze_offsets_at')
        if isinstance(freeze, int) and not isinstance(freeze, bool):
            _set(opt, 'ghost.freeze_offsets_at', max(1, round(freeze * ratio)))
    if workers is not None:
        opt['datasets']['train']['num_worker_per_gpu'] = workers
    return opt


_TIME = r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ INFO: '


def validation_curve(log_text, metric='psnr'):
    """[(minutes since training started, iteration, value)] of every validation in a BasicSR training log."""
    start, last_iter, pending, curve = None, 0, None, []
    for line in log_text.splitlines():
        stamp = re.match(_TIME, line)
        when = datetime.datetime.strptime(stamp.group(1), '%Y-%m-%d %H:%M:%S') if stamp else None
        if when is not None and 'Start training from epoch' in line:
            start = when
            last_iter = int(re.search(r'iter: (\d+)', line).group(1))
        elif when is not None and (found := re.search(r'\biter:\s*([\d,]+)', line)):
            last_iter = int(found.group(1).replace(',', ''))
        if when is not None and 'Validation ' in line:
            pending = when
        elif pending is not None and (found := re.match(rf'\s*# {metric}: ([\d.]+)', line)):
            if start is not None and not (curve and curve[-1][1] == last_iter):  # BasicSR's extra final validation
                curve.append((round((pending - start).total_seconds() / 60, 2), last_iter, float(found.group(1))))
            pending = None
    return curve


def trained_iter(checkpoint):
    """Iterations the network of ``checkpoint`` was trained for: its Gumbel schedule's counter, which GhostSRModel
    advances once per training step (BasicSR's own count can stop short of ``total_iter``, see ghostsr_plugin.pipeline.training)."""
    from ghostsr_plugin.utils.checkpoint import load_checkpoint
    return int(load_checkpoint(checkpoint)['ghost_schedule.iteration'])


def _results_path(results, ext):
    return os.path.join(ROOT, 'docs', 'results', f'{results}.{ext}')


def load_results(results):
    path = _results_path(results, 'json')
    if not os.path.exists(path):
        return {'runs': {}}
    with open(path) as file:
        return json.load(file)


def evaluate_checkpoint(opt, path, data, sets):
    """Y-PSNR/SSIM of checkpoint ``path`` in the run's network, and its offsets (argmax W'). The EMA weights when
    the run kept them (``train.ema_decay`` > 0), as BasicSR's validation does; else the trained ones."""
    from basicsr.archs import build_network
    from ghostsr_plugin.data.benchmark import set_pairs
    from ghostsr_plugin.measure.quality import evaluate
    from ghostsr_plugin.ops.ghost_conv import ghost_offsets
    from ghostsr_plugin.archs.build import load_weights
    net = load_weights(build_network(copy.deepcopy(opt['network_g'])), path, 'params_ema').eval()
    scores = {}
    for name in sets:
        result = evaluate(net, set_pairs(os.path.join(data, 'benchmark'), name, SCALE), SCALE, 'cpu', False)
        scores[name] = {'psnr': result['psnr'], 'ssim': result['ssim']}
    return scores, {k: list(v) for k, v in ghost_offsets(net).items()}


def train_and_record(run, args):
    """Train run ``run`` as experiment ``<--prefix><run>``, evaluate it and record it under that name."""
    from ghostsr_plugin.utils.atomic import atomic_write_json
    base, overrides = RUNS[run]
    overrides = {**overrides, **dict(parse_set(s) for s in args.set)}
    name = args.prefix + run
    opt = run_options(name, base, overrides, args.iters, args.workers)
    folder = os.path.join(ROOT, 'experiments', 'finetune_options')
    os.makedirs(folder, exist_ok=True)
    opt_path = os.path.join(folder, f'{name}.yml')
    train_set = opt['datasets']['train']  # the meta file of the run's patch size
    train_set['meta_info_file'] = prepare_inputs(args.data, train_set['gt_size'] // SCALE)
    with open(opt_path, 'w') as file:
        yaml.safe_dump(opt, file, sort_keys=False)
    start = time.time()
    proc = subprocess.run([sys.executable, '-m', 'ghostsr_plugin', 'train', '-opt', opt_path], cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f'{name}: training failed (exit {proc.returncode}); its log is under experiments/{name}/')
    minutes = (time.time() - start) / 60
    exp = os.path.join(ROOT, 'experiments', name)
    logs = sorted(f for f in os.listdir(exp) if f.startswith('train_') and f.endswith('.log'))
    with open(os.path.join(exp, logs[-1])) as file:
        curve = validation_curve(file.read())
    record = {'run': run, 'base': base, 'overrides': overrides, 'total_iter': opt['train']['total_iter'],
              'trained_iter': trained_iter(os.path.join(exp, 'models', 'net_g_latest.pth')),
              'wall_minutes': round(minutes, 1), 'machine': machine(), 'curve_set5_psnr': curve}
    for label, ckpt in (('last', 'net_g_latest.pth'), ('best', 'net_g_best.pth')):
        path = os.path.join(exp, 'models', ckpt)
        if os.path.exists(path):
            record[label], record[f'{label}_offsets'] = evaluate_checkpoint(opt, path, args.data, args.sets)
    if os.path.exists(os.path.join(exp, 'models', 'best.json')):
        with open(os.path.join(exp, 'models', 'best.json')) as file:
            record['best_validation'] = json.load(file)
    results = load_results(args.results)
    results['runs'][name] = record
    atomic_write_json(results, _results_path(args.results, 'json'))
    write_report(results, args.results)


def parse_set(text):
    if '=' not in text:
        raise SystemExit(f'--set needs KEY=VALUE (dotted keys, e.g. ghost.freeze_offsets_at=0.8), got {text!r}')
    key, value = text.split('=', 1)
    value = yaml.safe_load(value)
    if isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string; the option files write !!float
        try:
            value = float(value)
        except ValueError:
            pass
    return key.strip(), value


def machine():
    """Where the run trained: the GPU when there is one (``num_gpu: auto``), else the CPU and its cores."""
    import torch
    from ghostsr_plugin.measure.speed import device_name
    cpu = f'{device_name(torch.device("cpu"))}, {os.cpu_count()} cores'
    return f'{torch.cuda.get_device_name(0)} (host: {cpu})' if torch.cuda.is_available() else cpu


def prepare_inputs(data, lr_patch):
    """The training pairs (cached under datasets/), the converted CARN_M the option files point at, and the meta-info
    file of the training images whose LR side fits ``lr_patch``, returned relative to the project root (e.g.
    ``datasets/T91_BSD200/meta_x2_lr48.txt``, the option file's)."""
    from ghostsr_plugin.compress.conversion import convert_carn
    from ghostsr_plugin.pipeline.main_job import large_enough
    from ghostsr_plugin.data.prepare import prepare
    from ghostsr_plugin.utils.checkpoint import load_checkpoint
    from ghostsr_plugin.utils.atomic import atomic_torch_save
    train = prepare([os.path.join(data, 'train', 'T91'), os.path.join(data, 'train', 'BSD200')],
                    os.path.join(ROOT, 'datasets', 'T91_BSD200'), 'T91_BSD200', scales=(SCALE, ), workers=2)
    meta = os.path.join('datasets', 'T91_BSD200', f'meta_x{SCALE}_lr{lr_patch}.txt')
    large_enough(train, SCALE, os.path.join(ROOT, meta), lr_patch)
    pretrained = os.path.join(ROOT, 'experiments', 'pretrained', f'CARN_M_x{SCALE}.pth')
    if not os.path.exists(pretrained):
        state, _ = convert_carn(load_checkpoint(os.path.join(data, 'weights', 'carn_m.pth'), None), 'CARN_M', SCALE)
        atomic_torch_save({'params': state}, pretrained)
    return meta


def lever(name, record):
    """The ``--set`` overrides a recorded run added to its named run (what a lever run changed), or '-'."""
    own = RUNS.get(record.get('run', name), (None, {}))[1]
    extra = {k: v for k, v in record.get('overrides', {}).items() if k not in own or own[k] != v}
    return ', '.join(f'`{k}={v}`' for k, v in extra.items()) or '-'


def write_report(results, name):
    """docs/results/<name>.md (table of every recorded run) and <name>.png (Set5 validation curves)."""
    from ghostsr_plugin.utils.atomic import atomic_write
    runs = results['runs']
    sets = sorted({s for r in runs.values() for s in r.get('last', {})}, key=['Set5', 'Set14', 'B100'].index)
    lines = ['| run | lever (--set) | iters | train min | ' + ' | '.join(f'{s} last / best' for s in sets) +
             ' | offsets at the end |', '|---|---|---|---|' + '---|' * len(sets) + '---|']
    for run, r in runs.items():
        cells = ' | '.join(f'{r["last"][s]["psnr"]:.2f} / {r["best"][s]["psnr"]:.2f}' if 'best' in r else
                           f'{r["last"][s]["psnr"]:.2f} / -' for s in sets)
        moved = sum(v != [0, 0] for v in r.get('last_offsets', {}).values())
        iters = r.get('trained_iter', r['total_iter'])
        lines.append(f'| {run} | {lever(run, r)} | {iters} | {r["wall_minutes"]} | {cells} | '
                     f'{moved} of {len(r.get("last_offsets", {}))} moved |')
    machines = sorted({r['machine'] for r in runs.values()})
    lines.append('\nY-PSNR (dB), crop_border 2. "best": the checkpoint of the best Set5 validation (`val: save_best`). '
                 f'Machine: {"; ".join(machines)}.')
    atomic_write(_results_path(name, 'md'), lambda f: f.write('\n'.join(lines) + '\n'), mode='w')

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    # Against iterations (the schedule) and against training minutes (the budget; a run slowed by other work on
    # the machine looks stretched there, not in the first panel).
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    colours = plt.get_cmap('tab20').colors  # one colour a run (the default cycle repeats after ten)
    for i, (run, r) in enumerate(runs.items()):
        if r['curve_set5_psnr']:
            minutes, iters, psnr = zip(*r['curve_set5_psnr'])
            for ax, x in zip(axes, (iters, minutes)):
                ax.plot(x, psnr, marker='o', ms=3, label=run, color=colours[i % len(colours)])
    for ax, label in zip(axes, ('iteration', 'training minutes')):
        ax.axhline(37.68, color='k', ls='--', lw=1, label='CARN_M (37.68)')
        ax.axhline(37.58, color='grey', ls=':', lw=1, label='CARN_M - 0.10 dB')
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('Set5 Y-PSNR (dB), BasicSR validation')
    axes[1].legend(fontsize=7)
    fig.suptitle('GhostCARN_M x2 fine-tune from the clustered CARN_M')
    fig.tight_layout()
    atomic_write(_results_path(name, 'png'), lambda f: fig.savefig(f, format='png', dpi=110))
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('run', nargs='?', choices=sorted(RUNS), help='the run to train and record')
    parser.add_argument('--list', action='store_true', help='list the runs and their overrides')
    parser.add_argument('--report', action='store_true', help='write the table and curve of the recorded runs')
    parser.add_argument('--iters', type=int, default=None, help="scale the run's budget to N iterations")
    parser.add_argument('--workers', type=int, default=None, help='data loader processes')
    parser.add_argument('--set', action='append', default=[], help='override KEY=VALUE (dotted keys; repeatable)')
    parser.add_argument('--sets', nargs='+', default=['Set5', 'Set14'], help='evaluation sets (Set5 Set14)')
    parser.add_argument('--data', default=os.path.normpath(os.path.join(ROOT, '..', 'shared', 'data')))
    parser.add_argument('--results', default='finetune_x2', help='docs/results/<NAME>.{json,md,png}')
    parser.add_argument('--prefix', default='', help="experiment name = PREFIX + run (e.g. 'gpu_'; 'dry_' for a "
                        'trial that leaves the real runs alone)')
    args = parser.parse_args()
    if args.list:
        for name, (base, overrides) in RUNS.items():
            print(f'{name}: {base} {overrides or ""}')
        return
    if args.report:
        write_report(load_results(args.results), args.results)
        return
    if args.run is None:
        parser.error('name a run (see --list), or give --report')
    if args.iters is not None and args.iters < 1:
        parser.error(f'--iters must be >= 1, got {args.iters}')
    import ghostsr_plugin  # noqa: F401  (registers the archs; BasicSR compat)
    train_and_record(args.run, args)


if __name__ == '__main__':
    main()
