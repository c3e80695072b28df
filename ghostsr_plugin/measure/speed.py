"""The speed benchmarks behind ``ghostsr bench`` (its docstring says what they measure), on the timing helpers of
:mod:`ghostsr_plugin.utils.timing` (:class:`Timer`, :func:`interleaved`, :func:`ratio_stats`, imported here for the
report and the tools), and :func:`device_name`."""
import json
import platform
import statistics
import warnings

import torch

from ghostsr_plugin.utils.atomic import atomic_write
from ghostsr_plugin.utils.errors import UserInputError
from ghostsr_plugin.utils.timing import Timer, interleaved, ratio_stats  # noqa: F401  (the report's helpers)

RESULTS = []


def emit(line='', **record):
    """Print a line of the report and keep its numbers for --json."""
    print(line, flush=True)
    if record:
        RESULTS.append(record)


def device_name(device):
    """The GPU with torch / CUDA / cuDNN versions, or the CPU model with torch's thread count."""
    if device.type == 'cuda':
        return f'{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda}, ' \
               f'cuDNN {torch.backends.cudnn.version()})'
    model = platform.processor() or 'CPU'
    try:
        with open('/proc/cpuinfo') as info:
            model = next(line.split(':', 1)[1].strip() for line in info if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'{model}, {torch.get_num_threads()} threads (torch {torch.__version__})'


# ---------------------------------------------------------------------------------------------------------------
# The op alone.


def bench_op(device, quick):
    from ghostsr_plugin.ops import backend
    from ghostsr_plugin.ops.shift import default_index, ghost_shift_reference, shift_to_offset

    timer = Timer(device)
    if device.type == 'cuda':
        cases = [(torch.float16, True), (torch.float32, False), (torch.float16, False), (torch.bfloat16, True)]
        channels, size = 128, 512  # half of an EDSR-L layer at 512x512
    else:
        cases = [(torch.float32, False), (torch.float32, True)]
        channels, size = 32, 128  # half of an EDSR-baseline layer at 128x128
    reps = 5 if quick else 30
    offset = shift_to_offset(1, -1, 1)
    index = default_index(2 * channels, channels, device=device)
    emit(f'\n[op] ghost_shift of 1x{channels}x{size}x{size} -> 1x{2 * channels}x{size}x{size}, move (1, -1); '
         f'backend {backend.backend_name(device)}; bytes = input read + output written')
    emit(f'{"dtype":>9} {"layout":>13} {"op ms":>8} {"op GB/s":>8} {"copy GB/s":>9} {"op/copy":>7} {"best":>6} '
         f'{"ref GB/s":>8}')
    for dtype, channels_last in cases:
        x = torch.randn(1, channels, size, size, device=device, dtype=dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = backend.ghost_shift(x, index, offset, 1)
        src, dst = torch.empty_like(out), torch.empty_like(out)
        op_bytes = x.numel() * x.element_size() + out.numel() * out.element_size()
        copy_bytes = 2 * out.numel() * out.element_size()
        with torch.inference_mode():
            times = interleaved(
                timer, {
                    'op': lambda: backend.ghost_shift(x, index, offset, 1),
                    'copy': lambda: dst.copy_(src),
                    'reference': lambda: ghost_shift_reference(x, index, offset, 1),
                }, reps, 3)
        op_ms, copy_ms, ref_ms = (statistics.median(times[k]) for k in ('op', 'copy', 'reference'))
        op_bw, copy_bw, ref_bw = op_bytes / op_ms / 1e6, copy_bytes / copy_ms / 1e6, op_bytes / ref_ms / 1e6
        best = (op_bytes / min(times['op'])) / (copy_bytes / min(times['copy']))
        layout = 'channels_last' if channels_last else 'NCHW'
        emit(f'{str(dtype)[6:]:>9} {layout:>13} {op_ms:8.3f} {op_bw:8.1f} {copy_bw:9.1f} {op_bw / copy_bw:7.2f} '
             f'{best:6.2f} {ref_bw:8.1f}',
             what='op', dtype=str(dtype), layout=layout, op_ms=op_ms, op_GBps=op_bw, copy_GBps=copy_bw,
             op_over_copy=op_bw / copy_bw, best_op_over_copy=best, reference_GBps=ref_bw,
             best_op_ms=min(times['op']))
        del x, out, src, dst


# ---------------------------------------------------------------------------------------------------------------
# Networks.


def build_pair(device, num_feat, num_block, res_scale):
    import ghostsr_plugin  # noqa: F401  (BasicSR compatibility, registration)
    from basicsr.archs.edsr_arch import EDSR
    from ghostsr_plugin.archs.edsr_arch import GhostEDSR

    torch.manual_seed(0)
    kwargs = dict(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_block=num_block, upscale=2, res_scale=res_scale)
    return EDSR(**kwargs).to(device), GhostEDSR(**kwargs).to(device)


def report_pair(mode, times, ghost='ghost'):
    """One line: EDSR and ghost medians, ratio of medians, median of paired ratios, best times."""
    med, paired = ratio_stats(times, ghost, 'edsr')
    edsr_ms, ghost_ms = statistics.median(times['edsr']), statistics.median(times[ghost])
    edsr_best, ghost_best = min(times['edsr']), min(times[ghost])
    emit(f'{mode:<56} {edsr_ms:9.2f} {ghost_ms:9.2f} {med:6.3f} {paired:7.3f} {ghost_best / edsr_best:6.3f}   '
         f'(best {edsr_best:.2f} / {ghost_best:.2f} ms)',
         what='net', mode=mode, edsr_ms=edsr_ms, ghost_ms=ghost_ms, ratio=med, paired_ratio=paired,
         edsr_best_ms=edsr_best, ghost_best_ms=ghost_best, best_ratio=ghost_best / edsr_best)
    return edsr_ms, ghost_ms


# ratio: of the medians; paired: median of the per-repetition ratios; best: of the fastest runs (on a shared
# machine, where other load only ever adds time, the steadiest of the three).
NET_HEADER = f'{"mode":<56} {"EDSR ms":>9} {"Ghost ms":>9} {"ratio":>6} {"paired":>7} {"best":>6}'


def bench_nets_cpu(device, quick):
    edsr, ghost = build_pair(device, 64, 16, 1.0)
    edsr.eval(), ghost.eval()
    emit('\n[net] EDSR-baseline x2 (num_feat 64, num_block 16) vs GhostEDSR (λ 0.5), 1x3x128x128, fp32, eval')
    emit(NET_HEADER)
    best = {'edsr': [], 'ghost': []}
    for layout in ('NCHW', 'channels_last'):
        memory_format = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
        edsr.to(memory_format=memory_format), ghost.to(memory_format=memory_format)
        x = torch.rand(1, 3, 128, 128, device=device).contiguous(memory_format=memory_format)
        with torch.inference_mode():
            times = interleaved(Timer(device), {
                'edsr': lambda: edsr(x),
                'ghost': lambda: ghost(x),
            }, 3 if quick else 12, 2)
        edsr_ms, ghost_ms = report_pair(f'fp32 {layout} eager, GhostEDSR', times)
        best['edsr'].append((edsr_ms, f'fp32 {layout} eager'))
        best['ghost'].append((ghost_ms, f'fp32 {layout} eager'))
    report_fastest(best)


def report_fastest(best):
    (edsr_ms, edsr_mode), (ghost_ms, ghost_mode) = min(best['edsr']), min(best['ghost'])
    emit(f'fastest ghost / fastest EDSR: {ghost_ms:.2f} ms ({ghost_mode}) / {edsr_ms:.2f} ms ({edsr_mode}) = '
         f'{ghost_ms / edsr_ms:.3f}',
         what='fastest', ratio=ghost_ms / edsr_ms, ghost_mode=ghost_mode, edsr_mode=edsr_mode)


# --compile: which kinds of GPU measurement run
COMPILE_KINDS = {'both': ('eager', 'torch.compile'), 'skip': ('eager', ), 'only': ('torch.compile', )}


def _set_tf32(enabled):
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def bench_nets_cuda(device, quick, compile_modes='both', size=512, num_feat=256, num_block=32):
    reps, warmup = (3, 2) if quick else (15, 5)
    timer = Timer(device)
    torch.backends.cudnn.benchmark = True
    edsr, ghost = build_pair(device, num_feat, num_block, 0.1)
    edsr.eval(), ghost.eval()
    emit(f'\n[net] EDSR-L x2 (num_feat {num_feat}, num_block {num_block}, res_scale 0.1) vs GhostEDSR-L (λ 0.5), '
         f'1x3x{size}x{size}, eval')
    emit(NET_HEADER)
    best = {'edsr': [], 'ghost': []}

    def run(mode, plain, ghosted, x):
        times = interleaved(timer, {'edsr': lambda: plain(x), 'ghost': lambda: ghosted(x)}, reps, warmup)
        edsr_ms, ghost_ms = report_pair(f'{mode}, GhostEDSR', times)
        best['edsr'].append((edsr_ms, mode))
        best['ghost'].append((ghost_ms, mode))

    x32 = torch.rand(1, 3, size, size, device=device)
    kinds = COMPILE_KINDS[compile_modes]
    eager, compiled = 'eager' in kinds, 'torch.compile' in kinds
    with torch.inference_mode():
        for mode, tf32 in (('fp32 NCHW TF32 off, eager', False), ('fp32 NCHW TF32 on, eager', True)):
            if eager:
                _set_tf32(tf32)
                run(mode, edsr, ghost, x32)
    _set_tf32(False)
    edsr.half().to(memory_format=torch.channels_last)
    ghost.half().to(memory_format=torch.channels_last)
    x16 = x32.half().contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        if eager:
            run('fp16 channels_last, eager', edsr, ghost, x16)
        if compiled:
            run('fp16 channels_last, torch.compile', torch.compile(edsr), torch.compile(ghost), x16)
    report_fastest(best)
    del edsr, ghost
    torch.cuda.empty_cache()


def bench_train_cuda(device, quick, compile_modes='both', batch=16, patch=48, num_feat=256, num_block=32):
    """Training iteration: batch 16 of 48x48 LR (x2), bf16 autocast, L1 loss, Adam; learnable shift."""
    reps, warmup = (3, 3) if quick else (20, 10)
    timer = Timer(device)
    emit(f'\n[train] EDSR-L x2 vs GhostEDSR-L, batch {batch} of {patch}x{patch} LR, bf16 autocast, L1, Adam '
         '(learnable shift)')
    emit(NET_HEADER)
    lq = torch.rand(batch, 3, patch, patch, device=device)
    gt = torch.rand(batch, 3, 2 * patch, 2 * patch, device=device)
    for kind in COMPILE_KINDS[compile_modes]:
        edsr, ghost = build_pair(device, num_feat, num_block, 0.1)
        nets = [('edsr', edsr, edsr), ('ghost', ghost, ghost)]
        steps = {}
        for name, net, forward in nets:
            net.train()
            model = torch.compile(forward) if kind == 'torch.compile' else forward
            optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

            def step(model=model, optimizer=optimizer):
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = torch.nn.functional.l1_loss(model(lq), gt)
                loss.backward()
                optimizer.step()

            steps[name] = step
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # GhostSchedule: trained without GhostSRModel
            times = interleaved(timer, steps, reps, warmup)
        report_pair(f'training iteration, {kind}, GhostEDSR', times)
        del edsr, ghost, nets, steps
        torch.cuda.empty_cache()
    emit('note: the learnable offsets change between iterations; torch.compile guards on them (Python ints), so '
         'the compiled ghost net may recompile or fall back to eager for new offset combinations.')


def speed(args):
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserInputError('--device cuda: no CUDA device is available (allowed here: --device cpu)')
    if device.type == 'cpu':
        if args.compile == 'only':
            raise UserInputError('--compile only: the CPU benchmark has no torch.compile modes (allowed on the CPU: '
                                 '--compile both or skip)')
        torch.set_num_threads(args.threads)
    from ghostsr_plugin.ops import backend
    emit(f'device: {device_name(device)}', what='device', name=device_name(device), quick=args.quick,
         backend=backend.backend_name(device))
    if args.compile != 'only':
        bench_op(device, args.quick)
    if device.type == 'cuda':
        bench_nets_cuda(device, args.quick, args.compile)
        bench_train_cuda(device, args.quick, args.compile)
    else:
        bench_nets_cpu(device, args.quick)
    if args.json:
        atomic_write(args.json, lambda file: json.dump(RESULTS, file, indent=1), 'w')


def breakdown(args):
    """Per-op self time (ms per forward) of EDSR and GhostEDSR, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile
    device = torch.device(args.device)
    if device.type == 'cpu':
        torch.set_num_threads(args.threads)
    cuda = device.type == 'cuda'
    num_feat, num_block, res_scale, size = (256, 32, 0.1, 512) if cuda else (64, 16, 1.0, 128)
    memory_format = torch.channels_last if args.layout == 'channels_last' else torch.contiguous_format
    edsr, ghost = build_pair(device, num_feat, num_block, res_scale)
    x = torch.rand(1, 3, size, size, device=device).contiguous(memory_format=memory_format)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    reps = 5
    print(f'device: {device_name(device)}; 1x3x{size}x{size}, fp32 {args.layout}, eval; ms per forward')
    for name, net in (('EDSR', edsr), ('GhostEDSR', ghost)):
        net.eval().to(memory_format=memory_format)
        with torch.inference_mode():
            for _ in range(3):
                net(x)
            with profile(activities=activities, record_shapes=True) as prof:
                for _ in range(reps):
                    net(x)
                if cuda:
                    torch.cuda.synchronize()
        rows = []
        for event in prof.key_averages(group_by_input_shape=True):
            self_us = event.self_device_time_total if cuda else event.self_cpu_time_total
            if self_us > 0:
                rows.append((self_us / reps / 1e3, event.count // reps, event.key, event.input_shapes[:2]))
        rows.sort(reverse=True)
        total = sum(r[0] for r in rows)
        print(f'\n{name}: {total:.2f} ms of op self time per forward (under the profiler, which adds its own '
              'overhead per op: read the shares; `speed` measures the wall-clock ratio)')
        for ms, calls, key, shapes in rows[:args.rows]:
            print(f'{ms:9.2f} {100 * ms / total:5.1f}% {calls:4d}x  {key:<28} {shapes}')
