"""The README's main job, cut to 2 training iterations and Set5: it runs end to end on the real data and prints the
table, with the converted CARN_M at its reference Set5 x2 figure (37.68 dB), and freezes the offsets for the last
quarter of the fine-tune as issue 12's recipe does."""
import os
import re

import pytest

from conftest import SHARED_DATA, python, run


@pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason=f'needs the shared data folder {SHARED_DATA}')
def test_demo_end_to_end(tmp_path):
    proc = run([python(), '-m', 'ghostsr_plugin', 'demo', '--data', SHARED_DATA, '--iters', '2', '--sets', 'Set5'],
               cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = dict(re.findall(r'^\| ([^|]+?) \| [^|]+ \| ([\d.]+) / [\d.]+ \|$', proc.stdout, re.M))
    assert float(rows['CARN_M (pre-trained)']) == pytest.approx(37.68, abs=0.01)
    assert float(rows['bicubic']) < float(rows['GhostCARN_M, clustered, no training']) < 37.68
    assert (tmp_path / 'experiments' / 'GhostCARN_M_x2_demo' / 'results.json').is_file()
    log = next((tmp_path / 'experiments' / 'GhostCARN_M_x2_demo').glob('train_*.log')).read_text()
    assert "offsets frozen at iteration 2 (argmax W')" in log  # the last quarter of 2 iterations, as the recipe


def test_demo_names_missing_data(tmp_path):
    proc = run([python(), '-m', 'ghostsr_plugin', 'demo', '--data', str(tmp_path / 'nowhere')], cwd=tmp_path)
    assert proc.returncode != 0
    assert 'lacks train/T91' in proc.stderr and 'weights/carn_m.pth' in proc.stderr


def test_step_timing_draws_real_batches(tiny_data, monkeypatch):
    """The main job sizes its fine-tune from steps that take their batches from the training set's loader (so the
    data loading is in the measure); the teacher sees exactly those batches."""
    import torch
    from basicsr.archs import build_network
    from conftest import train_options
    from ghostsr_plugin.pipeline import main_job as demo
    opt = train_options('timing', demo.ghost_network(2), tiny_data)['datasets']['train']
    teacher = build_network({'type': 'CARN_M', 'upscale': 2}).eval()
    seen = []
    teacher.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    seconds = demo.time_per_iteration(2, teacher, opt, min_steps=4, min_seconds=0)
    assert seconds > 0
    assert seen == [torch.Size([opt['batch_size_per_gpu'], 3, 8, 8])] * 5  # LR crops of gt_size 16 at x2; the first step + 4 timed
