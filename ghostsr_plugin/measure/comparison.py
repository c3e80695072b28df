"""The Table-1 report: params, FLOPs, latency and Y-PSNR/SSIM of networks given by option files (and checkpoints),
each Ghost network next to its plain twin; written as markdown, JSON and a PNG plot.

* **FLOPs** are multiply-adds of one forward on a 3x512x512 LR input (Table 1's convention; its EDSR x2 is 10679 G),
  counted by :func:`ghostsr_plugin.measure.complexity.count_macs` (``torch.utils.flop_counter``); a shift is 0.
* **Latency**: each plain network and its Ghost twins are timed interleaved in one run (:func:`measure.bench.
  interleaved`: warm-up calls, then one call of each per repetition in alternating order); the median and the best
  time are reported (on a shared machine, where other load only adds time, the best is the steadiest), every time
  is in the JSON, with the device, threads, dtype and layout.
* **Quality**: Y-PSNR / Y-SSIM with crop_border = scale (:func:`ghostsr_plugin.measure.quality.evaluate`) on the benchmark
  sets named, for networks with a checkpoint.
* **Twins**: a Ghost network (type ``GhostX``) is compared with the first plain network of type ``X``, the same
  scale and the same arguments (``cluster.plain_twin_options``); its rows give the ratios to that twin.
* **Deploy form**: re-parameterised blocks (SPAN's Conv3XC, ECBSR's ECB) are merged into their deploy 3x3 conv
  before anything is measured (:func:`ghostsr_plugin.compress.reparam.merge_reparameterized`; the eval output is
  the same), so a plain network is counted and timed as it is deployed, not with its training branches.

The plot: with PSNR, PSNR against latency (when measured) and against FLOPs, one row per set, an arrow from each
plain network to each of its Ghost twins (cost axes from 0 unless logarithmic); without PSNR, the Ghost / plain
ratios of params, FLOPs (and latency) of every pair as bars (or, with no pairs, latency or params against FLOPs).
"""
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from ghostsr_plugin.measure.speed import Timer, device_name, interleaved, ratio_stats
from ghostsr_plugin.measure.complexity import count_macs, count_params, forward_kwargs
from ghostsr_plugin.utils.errors import UserInputError

__all__ = ['Entry', 'PAPER_TABLE1', 'parse_network_spec', 'load_entries', 'pair_twins', 'measure', 'markdown',
           'write_report', 'plot', 'DTYPES', 'parse_size', 'run_report']

# Table 1 of the paper (Params M, FLOPs G for 3x512x512): {(plain type, scale): ((conv), (GhostSR))}
PAPER_TABLE1 = {
    ('EDSR', 2): ((40.72, 10679), (21.63, 5734)), ('RDN', 2): ((22.11, 5798), (11.54, 3011)),
    ('CARN', 2): ((1.59, 317), (1.19, 219)), ('CARN_M', 2): ((0.41, 114), (0.33, 105)),
    ('EDSR', 3): ((43.71, 11462), (24.53, 6516)), ('RDN', 3): ((22.33, 5849), (11.73, 3062)),
    ('CARN', 3): ((1.59, 373), (1.19, 276)), ('CARN_M', 3): ((0.41, 130), (0.33, 121)),
    ('EDSR', 4): ((43.14, 13175), (23.93, 8229)), ('RDN', 4): ((22.21, 5958), (11.64, 3171)),
    ('CARN', 4): ((1.59, 493), (1.19, 395)), ('CARN_M', 4): ((0.41, 162), (0.33, 150)),
}


@dataclass
class Entry:
    """One network of the report and what was measured of it."""
    label: str
    opt: str
    ckpt: str = None
    type: str = ''
    scale: int = 0
    network: dict = field(default_factory=dict)
    twin: str = None  # label of the plain twin (Ghost entries)
    params: int = None
    macs: int = None
    paper: dict = None  # Table 1's params (M) and FLOPs (G), with --paper, for the paper's configurations
    latency: dict = None  # median_ms, best_ms, times_ms
    quality: dict = field(default_factory=dict)  # set -> {psnr, ssim}
    merged: list = field(default_factory=list)  # classes of the re-parameterised blocks merged before measuring

    @property
    def is_ghost(self):
        return self.type.startswith('Ghost')


def parse_network_spec(spec):
    """``options.yml`` or ``options.yml:checkpoint.pth`` -> (option path, checkpoint or None)."""
    if os.path.isfile(spec):
        return spec, None
    for ext in ('.yml:', '.yaml:'):
        if ext in spec:
            opt, ckpt = spec.split(ext, 1)
            return opt + ext[:-1], ckpt or None
    return spec, None


def load_entries(specs, labels=None, network_key='network_g'):
    """Entries of ``specs`` (see :func:`parse_network_spec`), labelled ``<type> x<scale>`` plus the checkpoint's
    stem when one is given, or by ``labels``."""
    from ghostsr_plugin.utils.errors import UserInputError
    from ghostsr_plugin.archs.build import network_options
    from ghostsr_plugin.utils.option_file import load_options
    if labels and len(labels) != len(specs):
        raise UserInputError(f'--labels: {len(labels)} labels for {len(specs)} networks (give one per network)')
    entries = []
    for i, spec in enumerate(specs):
        opt_path, ckpt = parse_network_spec(spec)
        net_opt = network_options(opt_path, network_key)
        scale = load_options(opt_path).get('scale') or net_opt.get('upscale')
        if not isinstance(scale, int):
            raise UserInputError(f'{opt_path}: no integer "scale" (or {network_key}.upscale)')
        if ckpt is not None and not os.path.isfile(ckpt):
            raise FileNotFoundError(f'checkpoint not found: {ckpt} (given with {opt_path})')
        label = labels[i] if labels else f'{net_opt["type"]} x{scale}' + (
            f' ({os.path.splitext(os.path.basename(ckpt))[0]})' if ckpt else '')
        entries.append(Entry(label, opt_path, ckpt, net_opt['type'], scale, net_opt))
    duplicate = next((e.label for i, e in enumerate(entries) if e.label in [f.label for f in entries[:i]]), None)
    if duplicate:
        raise UserInputError(f'two networks are labelled {duplicate!r}; give --labels')
    return entries


def pair_twins(entries):
    """Set ``twin`` of every Ghost entry to the first plain entry with its plain twin's type, scale and arguments."""
    from ghostsr_plugin.archs.twins import plain_twin_options
    for ghost in (e for e in entries if e.is_ghost):
        twin_opt = plain_twin_options(ghost.network)
        ghost.twin = next((p.label for p in entries if not p.is_ghost and p.scale == ghost.scale
                           and p.network == twin_opt), None)
    return entries


def _paper_reference(entry):
    """Table 1's (params M, FLOPs G) for the paper's configurations (EDSR: the EDSR-L size), else None."""
    plain_type = entry.type.removeprefix('Ghost')
    if plain_type == 'EDSR' and (entry.network.get('num_feat'), entry.network.get('num_block')) != (256, 32):
        return None
    row = PAPER_TABLE1.get((plain_type, entry.scale))
    return None if row is None else dict(zip(('params_M', 'flops_G'), row[entry.is_ghost]))


def _load(entry, device, param_key):
    """The entry's network, loaded, in its deploy form (re-parameterised blocks merged); notes on ``entry.merged``
    which blocks were."""
    from ghostsr_plugin.compress.reparam import merge_reparameterized
    from ghostsr_plugin.archs.build import load_network
    net, merged = merge_reparameterized(load_network(entry.opt, entry.ckpt, param_key, device=device), inplace=True)
    entry.merged = sorted(set(merged.values()))
    return net


def _twin_groups(entries):
    """[[plain, its Ghost twins...], ...] and every other entry alone, in the order given."""
    groups, placed = [], set()
    for entry in entries:
        if entry.label in placed or entry.twin is not None:
            continue
        group = [entry] + [e for e in entries if e.twin == entry.label]
        placed.update(e.label for e in group)
        groups.append(group)
    return groups + [[e] for e in entries if e.label not in placed]


def measure(entries, sets=(), data_root=None, latency_size=(1, 3, 128, 128), flops_size=(1, 3, 512, 512),
            repeats=10, warmup=2, device='cpu', dtype=torch.float32, channels_last=False, latency=True,
            paper=False, param_key='params', progress=True):
    """Measure every entry in place; returns the settings (device, threads, dtype, sizes, ...) as a dict.

    Every checkpoint is loaded (and fitted) and every set listed first, before any progress bar, so bad input stops
    the run with one line; then complexity, the latency groups, and quality for entries with a checkpoint.
    """
    from ghostsr_plugin.data.benchmark import set_pairs
    from ghostsr_plugin.measure.quality import evaluate
    device = torch.device(device)
    pair_twins(entries)
    quality_entries = [e for e in entries if e.ckpt is not None]
    pairs = {(name, e.scale): set_pairs(data_root, name, e.scale) for e in quality_entries for name in sets}
    for entry in quality_entries:
        _load(entry, 'cpu', param_key)
    for entry in tqdm(entries, desc='params, FLOPs', unit='net', disable=not progress):
        net = _load(entry, 'cpu', param_key)
        entry.params = count_params(net)
        entry.macs = count_macs(net, flops_size, entry.scale)
        entry.paper = _paper_reference(entry) if paper else None
        del net
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if latency:
        groups = _twin_groups(entries)
        bar = tqdm(total=sum(len(g) for g in groups) * (repeats + warmup), desc='latency', unit='run',
                   disable=not progress)
        for group in groups:
            nets = {e.label: _load(e, device, param_key).to(dtype=dtype, memory_format=memory_format) for e in group}
            x = torch.rand(latency_size, device=device, dtype=dtype).contiguous(memory_format=memory_format)
            calls = {label: (lambda net=net, kwargs=forward_kwargs(net, e.scale): net(x, **kwargs))
                     for (label, net), e in zip(nets.items(), group)}
            with torch.inference_mode():
                times = interleaved(Timer(device), calls, repeats, warmup, progress=bar)
            for entry in group:
                entry.latency = {'median_ms': statistics.median(times[entry.label]),
                                 'best_ms': min(times[entry.label]), 'times_ms': times[entry.label]}
                if entry.twin is not None:
                    entry.latency['ratio'], entry.latency['paired_ratio'] = ratio_stats(times, entry.label,
                                                                                         entry.twin)
                    entry.latency['best_ratio'] = min(times[entry.label]) / min(times[entry.twin])
            del nets, calls
        bar.close()
    jobs = [(e, name) for e in quality_entries for name in sets]
    for entry, name in tqdm(jobs, desc='PSNR/SSIM', unit='set', disable=not progress or not jobs):
        net = _load(entry, device, param_key)
        result = evaluate(net, pairs[name, entry.scale], entry.scale, device, bool(forward_kwargs(net, entry.scale)))
        entry.quality[name] = {'psnr': result['psnr'], 'ssim': result['ssim']}
    return {
        'device': device_name(device), 'threads': torch.get_num_threads() if device.type == 'cpu' else None,
        'dtype': str(dtype).removeprefix('torch.'), 'layout': 'channels_last' if channels_last else 'NCHW',
        'latency_input': list(latency_size) if latency else None, 'repeats': repeats, 'warmup': warmup,
        'flops_input': list(flops_size), 'sets': list(sets), 'data_root': data_root,
        'date': time.strftime('%Y-%m-%d %H:%M'), 'torch': torch.__version__,
    }


def _ratio(value, base):
    return f' ({value / base:.2f}×)' if base else ''


def markdown(entries, settings):
    """The report as markdown: settings lines, then one row per network, each plain network followed by its Ghost
    twins (whose rows give the ratios / differences to it)."""
    by_label = {e.label: e for e in entries}
    latency = any(e.latency for e in entries)
    paper = any(e.paper for e in entries)
    sets = [s for s in settings['sets'] if any(s in e.quality for e in entries)]
    lines = [f'FLOPs: multiply-adds for a {"x".join(map(str, settings["flops_input"][1:]))} LR input.']
    if latency:
        lines.append(f'Latency: median / best of {settings["repeats"]} runs after {settings["warmup"]} warm-up, input '
                     f'{"x".join(map(str, settings["latency_input"]))}, {settings["dtype"]} {settings["layout"]}, '
                     f'{settings["device"]}; plain and Ghost twins timed interleaved in one run.')
    if sets:
        lines.append('PSNR / SSIM: Y channel, crop_border = scale; Ghost rows: (difference to the plain twin).')
    for entry in entries:
        if entry.merged:
            lines.append(f'{entry.label}: its re-parameterised blocks ({", ".join(entry.merged)}) merged into their '
                         'deploy 3x3 convs before measuring (same output).')
    header = ['network', 'params (M)', 'FLOPs (G)'] + (['paper params / FLOPs'] if paper else []) + (
        ['latency (ms), median / best'] if latency else []) + [f'{s} PSNR / SSIM' for s in sets]
    lines += ['', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for e in (e for group in _twin_groups(entries) for e in group):
        twin = by_label.get(e.twin)
        cells = [e.label, f'{e.params / 1e6:.3f}' + (_ratio(e.params, twin.params) if twin else ''),
                 f'{e.macs / 1e9:.1f}' + (_ratio(e.macs, twin.macs) if twin else '')]
        if paper:
            cells.append(f'{e.paper["params_M"]:.2f} / {e.paper["flops_G"]}' if e.paper else '-')
        if latency:
            cells.append(f'{e.latency["median_ms"]:.1f} / {e.latency["best_ms"]:.1f}' + (
                f' ({e.latency["ratio"]:.2f}× / {e.latency["best_ratio"]:.2f}×)' if twin else ''))
        for name in sets:
            q = e.quality.get(name)
            cell = f'{q["psnr"]:.2f} / {q["ssim"]:.4f}' if q else '-'
            if q and twin and name in twin.quality:
                cell += (f' ({q["psnr"] - twin.quality[name]["psnr"]:+.2f} / '
                         f'{q["ssim"] - twin.quality[name]["ssim"]:+.4f})')
            cells.append(cell)
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def _scatter(ax, entries, x_axis, y_axis):
    """One panel: a point per entry (x, y), labelled; an arrow from each plain twin to its Ghost network."""
    (x_name, x_of), (y_name, y_of) = x_axis, y_axis
    points = {e.label: (x_of(e), y_of(e)) for e in entries if x_of(e) is not None and y_of(e) is not None}
    for e in entries:
        if e.label in points:
            ax.scatter(*points[e.label], marker='o' if e.is_ghost else 's',
                       color='tab:red' if e.is_ghost else 'tab:blue', zorder=3)
            ax.annotate(e.label, points[e.label], textcoords='offset points', xytext=(6, -12 if e.is_ghost else 6),
                        fontsize=8)
        if e.twin in points and e.label in points:
            ax.annotate('', xy=points[e.label], xytext=points[e.twin],
                        arrowprops=dict(arrowstyle='->', color='dimgrey', lw=1.2, shrinkA=6, shrinkB=6))
    for values, set_scale in (([p[0] for p in points.values()], ax.set_xscale),
                              ([p[1] for p in points.values()], ax.set_yscale)):
        if values and min(values) > 0 and max(values) / min(values) > 20:
            set_scale('log')
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.grid(True, alpha=0.3)
    ax.margins(0.15)
    xs, ys = [p[0] for p in points.values()], [p[1] for p in points.values()]
    if xs and ax.get_xscale() == 'linear':  # costs from 0, so that a 3 % change looks like one
        ax.set_xlim(0, 1.3 * max(xs))
    if ys and ax.get_yscale() == 'linear' and 'PSNR' not in y_name:
        ax.set_ylim(0, 1.15 * max(ys))


def _ratio_bars(ax, entries, latency):
    """One panel: Ghost / plain ratios of params, FLOPs (and latency) for every Ghost network with a twin."""
    by_label = {e.label: e for e in entries}
    ghosts = [e for e in entries if e.twin][::-1]  # top to bottom in the given order
    measures = [('params', lambda e: e.params), ('FLOPs', lambda e: e.macs)]
    if latency:
        measures.append(('latency (ratio of medians)', None))
    height, largest = 0.8 / len(measures), 1.0
    for i, (name, value) in enumerate(measures):
        ratios = [e.latency['ratio'] if value is None else value(e) / value(by_label[e.twin]) for e in ghosts]
        bars = ax.barh([k - (i - (len(measures) - 1) / 2) * height for k in range(len(ghosts))], ratios, height,
                       label=name)
        ax.bar_label(bars, fmt='%.2f', fontsize=7, padding=2)
        largest = max(largest, *ratios)
    ax.axvline(1.0, color='black', lw=0.8)
    ax.set_xlim(0, 1.12 * largest)
    ax.set_yticks(range(len(ghosts)), [f'{e.label} / {e.twin}' for e in ghosts], fontsize=8)
    ax.set_xlabel('Ghost / plain twin (1 = no change)')
    ax.legend(fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.1), ncol=len(measures))
    ax.grid(True, axis='x', alpha=0.3)


def plot(entries, settings, path):
    """Write the PNG plot (see the module docstring) to ``path`` (atomically)."""
    import io

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from ghostsr_plugin.utils.atomic import write_bytes

    flops = ('FLOPs (G, 3x512x512 LR)', lambda e: e.macs / 1e9)
    lat = (f'median latency (ms, {"x".join(map(str, settings["latency_input"] or []))}, {settings["dtype"]})',
           lambda e: e.latency and e.latency['median_ms'])
    sets = [s for s in settings['sets'] if any(s in e.quality for e in entries)]
    latency = any(e.latency for e in entries)
    paired = sum(1 for e in entries if e.twin)
    if sets:
        panels = [(x, (f'{s} Y-PSNR (dB)', lambda e, s=s: e.quality.get(s, {}).get('psnr')))
                  for s in sets for x in ([lat] if latency else []) + [flops]]
        columns = 2 if latency else 1
        rows = (len(panels) + columns - 1) // columns
        size = (6.4 * columns, 4.8 * rows)
    else:
        rows = columns = 1
        size = (7.5, 1.8 + 0.25 * paired * (3 if latency else 2)) if paired else (6.4, 4.8)
    fig, axes = plt.subplots(rows, columns, figsize=size, squeeze=False)
    if sets:
        for ax, (x_axis, y_axis) in zip(axes.flat, panels):
            _scatter(ax, entries, x_axis, y_axis)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        title = 'plain (squares) -> Ghost (circles)'
    elif paired:
        _ratio_bars(axes[0, 0], entries, latency)
        title = 'Ghost networks against their plain twins'
    else:
        _scatter(axes[0, 0], entries, flops, lat if latency else ('params (M)', lambda e: e.params / 1e6))
        title = 'networks (no Ghost / plain pairs)'
    fig.suptitle(f'{title}; {settings["device"]}' if latency else title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=110)
    plt.close(fig)
    write_bytes(path, buffer.getvalue())


def write_report(entries, settings, prefix):
    """Write ``<prefix>.md``, ``<prefix>.json`` and ``<prefix>.png``; returns their paths."""
    from ghostsr_plugin.utils.atomic import write_bytes
    paths = [f'{prefix}.md', f'{prefix}.json', f'{prefix}.png']
    write_bytes(paths[0], markdown(entries, settings).encode())
    data = {'settings': settings, 'networks': [asdict(e) for e in entries]}
    write_bytes(paths[1], json.dumps(data, indent=1).encode())
    plot(entries, settings, paths[2])
    return paths


# ------------------------------------------------------------------------------------------- the report command
DTYPES = ('float32', 'float16', 'bfloat16')


def parse_size(text, option, dims):
    """``1x3x128x128`` -> (1, 3, 128, 128); a UserInputError naming ``option`` otherwise."""
    try:
        size = tuple(int(v) for v in text.lower().split('x'))
    except ValueError:
        size = ()
    if len(size) != dims or min(size) < 1:
        example = '1x3x128x128' if dims == 4 else '3x512x512'
        raise UserInputError(f'{option} {text!r}: allowed {dims} positive sizes joined by x, e.g. {example}')
    return size


def run_report(networks, labels=None, sets=('Set5', 'Set14'), data=None, out='results/report', device='cpu',
               latency_size=None, flops_size='3x512x512', repeats=10, warmup=2, threads=None, dtype='float32',
               channels_last=False, latency=True, paper=False, param_key='params', log=print):
    """The ``report`` command: measure ``networks`` (``OPT[:CKPT]`` strings) as :func:`measure` does, write
    ``<out>.md/.json/.png`` and log the table. Sizes are ``NxCxHxW`` / ``CxHxW`` strings. Returns the written paths."""
    from ghostsr_plugin.data.benchmark import DEFAULT_BENCHMARK
    from ghostsr_plugin.deploy.tiling import resolve_device
    if dtype not in DTYPES:
        raise UserInputError(f'--dtype {dtype!r}: allowed {", ".join(DTYPES)}')
    device = resolve_device(device)
    if repeats < 1 or warmup < 0:
        raise UserInputError(f'--repeats {repeats} / --warmup {warmup}: allowed repeats >= 1, warmup >= 0')
    if threads is not None:
        if threads < 1:
            raise UserInputError(f'--threads {threads}: allowed 1 or more')
        torch.set_num_threads(threads)
    latency_size = parse_size(latency_size or ('1x3x128x128' if device.type == 'cpu' else '1x3x512x512'),
                              '--latency-size', 4)
    flops_size = (1, *parse_size(flops_size, '--flops-size', 3))
    entries = load_entries(networks, labels)
    data = data or DEFAULT_BENCHMARK
    settings = measure(entries, sets, data, latency_size, flops_size, repeats, warmup, device, getattr(torch, dtype),
                       channels_last, latency, paper, param_key)
    paths = write_report(entries, settings, out)
    log(markdown(entries, settings))
    log('wrote ' + ', '.join(paths))
    return paths
