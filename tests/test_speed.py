"""The benchmark runs end to end on the CPU (a smoke test: timings are not asserted, only that every comparison
of issue 4 is measured and reported with its device); the command ``ghostsr bench`` drives the
library ``ghostsr_plugin.measure.speed`` and reports bad options in one line with exit code 2 (the interleaved timer
it uses: tests/test_timing.py)."""
import json

from ghostsr_plugin.cli import bench as command
from ghostsr_plugin.measure import speed as bench
from ghostsr_plugin.utils.errors import run_command


def test_speed_quick_reports_every_cpu_comparison(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    bench.RESULTS.clear()
    command.main(['speed', '--device', 'cpu', '--quick', '--threads', '1', '--json', str(out)])
    records = json.loads(out.read_text())
    assert records[0]['what'] == 'device' and records[0]['backend'] == 'cpp'
    ops = [r for r in records if r['what'] == 'op']
    assert {r['layout'] for r in ops} == {'NCHW', 'channels_last'}
    assert all(r['op_GBps'] > 0 and r['copy_GBps'] > 0 for r in ops)
    nets = [r for r in records if r['what'] == 'net']
    assert [r['mode'] for r in nets] == ['fp32 NCHW eager, GhostEDSR', 'fp32 channels_last eager, GhostEDSR']
    assert all(r['ratio'] == r['ghost_ms'] / r['edsr_ms'] for r in nets)
    fastest = [r for r in records if r['what'] == 'fastest']
    assert len(fastest) == 1 and fastest[0]['ratio'] > 0
    assert 'fastest ghost / fastest EDSR' in capsys.readouterr().out


def test_breakdown_lists_the_ops_of_both_networks(capsys):
    command.main(['breakdown', '--device', 'cpu', '--threads', '1', '--rows', '3', '--layout', 'NCHW'])
    text = capsys.readouterr().out
    assert 'EDSR:' in text and 'GhostEDSR:' in text
    assert '[32, 64, 3, 3]' in text  # the intrinsic conv: 32 of GhostEDSR's 64 filters


def test_gpu_tables_run_their_eager_modes_on_small_nets(capsys):
    """The GPU tables' code (inference modes and the training step) runs here too, on tiny nets on the CPU, so a
    first GPU run does not find its bugs; ``--compile skip`` leaves out exactly the torch.compile modes."""
    import torch
    bench.RESULTS.clear()
    cpu = torch.device('cpu')
    bench.bench_nets_cuda(cpu, True, 'skip', size=16, num_feat=8, num_block=1)
    bench.bench_train_cuda(cpu, True, 'skip', batch=2, patch=8, num_feat=8, num_block=1)
    modes = [r['mode'] for r in bench.RESULTS if r['what'] == 'net']
    assert modes == ['fp32 NCHW TF32 off, eager, GhostEDSR', 'fp32 NCHW TF32 on, eager, GhostEDSR',
                     'fp16 channels_last, eager, GhostEDSR', 'training iteration, eager, GhostEDSR']
    assert all(r['edsr_ms'] > 0 and r['ghost_ms'] > 0 for r in bench.RESULTS if r['what'] == 'net')


def test_compile_only_is_refused_on_the_cpu(capsys):
    code = run_command('ghostsr bench', command.main, ['speed', '--device', 'cpu', '--compile', 'only'])
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1
    assert err.startswith('ghostsr bench: error: --compile only:') and 'allowed on the CPU' in err
