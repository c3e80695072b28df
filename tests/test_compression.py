"""ghostsr compress (ghostsr_plugin.pipeline.compression): a whole run on a tiny network and generated images goes from
the plain checkpoint to a fine-tuned Ghost network with no ground truth (ghostify -> start -> teacher-only BasicSR
fine-tune -> report -> ONNX), and what it writes loads in evaluate, upscale and test; a killed run resumes from its
last state; bad input is one line naming it, exit code 2 (1 for a full disk), with nothing written and no earlier
run touched."""
import json
import os
import signal
import subprocess
import time

import cv2
import numpy as np
import pytest
import torch

from basicsr.archs import build_network
from conftest import ROOT, SHARED_DATA, python, run
from ghostsr_plugin.pipeline.compression import compress, split_images

ARCH_ARGS = {'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 2, 'upscale': 2, 'res_scale': 1,
             'img_range': 1.0, 'rgb_mean': [0.5, 0.5, 0.5]}


def _images(folder, count=5, size=(40, 52)):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        img = cv2.GaussianBlur((rng.random((*size, 3)) * 255).astype(np.uint8), (5, 5), 2)
        cv2.imwrite(str(folder / f'im{i}.png'), img)
    return folder


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Five 40x52 images and a plain EDSR (8 features, 2 blocks) checkpoint."""
    root = tmp_path_factory.mktemp('compress')
    images = _images(root / 'imgs')
    torch.manual_seed(0)
    net = build_network({'type': 'EDSR', **ARCH_ARGS})
    torch.save({'params': net.state_dict()}, root / 'edsr.pth')
    return root, images


def _args(root, images, out, *extra):
    return ['-m', 'ghostsr_plugin', 'compress', '--arch', 'EDSR', '--arch_args', json.dumps(ARCH_ARGS),
            '--pretrained', str(root / 'edsr.pth'), '--images', str(images), '--out', str(out), '--lq_size', '16',
            '--batch_size', '4', '--no_progress', *extra]


def _tree(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, files in os.walk(path) for f in files)


@pytest.fixture(scope='module')
def finished(setup):
    """One whole run: 6 iterations, §3.2 start, --export."""
    root, images = setup
    out = root / 'out'
    proc = run([python(), *_args(root, images, out, '--iters', '6', '--start', 'cluster', '--export')], root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, out, proc.stdout


def test_whole_run_writes_every_output(finished):
    """The run writes the Ghost checkpoint and its options, the report (md/json/png), the crops picture and the
    ONNX file; the report has the fidelity of the start and of the fine-tuned network and the twins' ratios."""
    _, out, stdout = finished
    for name in ('ghost.pth', 'ghost.yml', 'original.pth', 'original.yml', 'start.pth', 'train.yml', 'report.md',
                 'report.json', 'report.png', 'crops.png', 'ghost.onnx', 'compress.json'):
        assert (out / name).is_file(), name
    report = json.loads((out / 'report.json').read_text())
    assert set(report['fidelity']) == {'start', 'final'} and report['training']['total_iter'] == 6
    assert [n['label'] for n in report['networks']] == ['original', 'Ghost']
    assert report['networks'][1]['params'] < report['networks'][0]['params']
    assert json.loads((out / 'compress.json').read_text())['stage'] == 'done'
    assert 'Fidelity to the original network' in (out / 'report.md').read_text()


def test_fine_tune_has_no_ground_truth_and_the_teacher_as_target(finished):
    """train.yml trains GhostSRModel on LRFolderDataset patches with the original as distill teacher and no
    pixel_opt, validating the fidelity on the held-out images; the log says the teacher is the only loss."""
    import yaml
    _, out, _ = finished
    opt = yaml.safe_load((out / 'train.yml').read_text())
    assert opt['datasets']['train']['type'] == 'LRFolderDataset' and 'pixel_opt' not in opt['train']
    assert opt['distill']['teacher_path'] == str(out / 'original.pth')
    assert set(opt['val']['metrics']) == {'fidelity_rgb', 'fidelity_y'} and opt['val']['save_best'] == 'fidelity_rgb'
    log = next((out / 'experiments' / 'finetune').glob('train_*.log')).read_text()
    assert 'the only loss is l_distill' in log


def test_outputs_load_in_evaluate_upscale_and_test(finished):
    """ghost.yml + ghost.pth build the same network in evaluate (benchmark Y-PSNR), upscale and test (which
    upscales the held-out images)."""
    root, out, _ = finished
    proc = run([python(), '-m', 'ghostsr_plugin', 'upscale', '-i', str(root / 'imgs'), '-o', str(root / 'up'),
                '-opt', str(out / 'ghost.yml')], root)
    assert proc.returncode == 0, proc.stderr
    assert len(os.listdir(root / 'up')) == 5
    proc = run([python(), '-m', 'ghostsr_plugin', 'test', '-opt', str(out / 'ghost.yml')], root)
    assert proc.returncode == 0, proc.stderr
    assert list((root / 'results' / 'compress_ghost' / 'visualization' / 'held_out').glob('*_ghost.png'))
    if os.path.isdir(os.path.join(SHARED_DATA, 'benchmark', 'Set5')):
        proc = run([python(), '-m', 'ghostsr_plugin', 'evaluate', '-opt', str(out / 'ghost.yml'), '--ckpt',
                    str(out / 'ghost.pth'), '--data', os.path.join(SHARED_DATA, 'benchmark')], root)
        assert proc.returncode == 0 and 'Y-PSNR' in proc.stdout, proc.stderr


def test_ghost_checkpoint_matches_the_reported_fidelity(finished):
    """The written ghost.pth, rebuilt from ghost.yml, gives the final fidelity of the report on the held-out
    images (what was reported is what was written)."""
    from ghostsr_plugin.archs.build import load_network
    from ghostsr_plugin.measure.quality import fidelity
    from ghostsr_plugin.pipeline.compression import _held_out_inputs
    import yaml
    _, out, _ = finished
    ghost = load_network(str(out / 'ghost.yml'), str(out / 'ghost.pth')).eval()
    original = load_network(str(out / 'original.yml'), str(out / 'original.pth')).eval()
    val_set = yaml.safe_load((out / 'train.yml').read_text())['datasets']['val']
    measured = fidelity(ghost, original, _held_out_inputs(val_set))
    report = json.loads((out / 'report.json').read_text())['fidelity']['final']
    assert measured['psnr_rgb'] == pytest.approx(report['psnr_rgb'])


def test_split_holds_out_a_share_evenly():
    """Every k-th image is held out (10 %, at least one, at most 8); the two parts cover the folder once."""
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / 'imgs'
        folder.mkdir()
        for i in range(30):
            cv2.imwrite(str(folder / f'{i:02d}.png'), np.zeros((4, 4, 3), np.uint8))
        train, held = split_images([str(folder)], val_share=0.1)
        assert len(held) == 3 and len(train) == 27 and not set(train) & set(held)
        assert [os.path.basename(p) for p in held] == ['05.png', '15.png', '25.png']


def test_killed_run_resumes(setup):
    """A run killed (SIGKILL) during its fine-tune, after a training state was saved, goes on from that state with
    --auto_resume and finishes; without --auto_resume the folder is refused and left as it was."""
    root, images = setup
    out = root / 'killed'
    args = _args(root, images, out, '--iters', '400', '--start', 'cluster')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    proc = subprocess.Popen([python(), *args], cwd=str(root), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    states = out / 'experiments' / 'finetune' / 'training_states'
    deadline = time.time() + 240
    while time.time() < deadline and not (states.is_dir() and list(states.glob('*.state'))):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.stem) for p in states.glob('*.state'))
    assert saved and saved[-1] < 400, 'no state saved before the kill'
    before = _tree(out)
    refused = run([python(), *args], root)
    assert refused.returncode == 2 and 'add --auto_resume' in refused.stderr and _tree(out) == before
    resumed = run([python(), *args, '--auto_resume'], root, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = sorted((out / 'experiments' / 'finetune').glob('train_*.log'))[-1].read_text()
    assert f'Resuming training from epoch' in log and f'iter: {saved[-1]}' in log
    assert json.loads((out / 'compress.json').read_text())['stage'] == 'done'


# ------------------------------------------------------------------------------------------------- bad input
def _refused(root, args, needle, out):
    before = _tree(root)
    proc = run([python(), *args], root)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith('ghostsr compress: error: ') and needle in lines[-1], proc.stderr
    assert _tree(root) == before and not os.path.exists(f'{out}.lock')


def test_bad_input_is_one_line_and_writes_nothing(setup, tmp_path):
    root, images = setup
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'notes.txt').write_text('no image')
    broken = tmp_path / 'broken'
    broken.mkdir()
    for i in range(3):
        (broken / f'b{i}.png').write_bytes(b'not a png')
    small = _images(tmp_path / 'small', size=(8, 8))
    (tmp_path / 'junk.pth').write_bytes(b'junk')
    torch.save({'params': {'conv.weight': torch.zeros(2, 2, 3, 3)}}, tmp_path / 'unknown.pth')
    ghost_opt = tmp_path / 'ghost.yml'
    ghost_opt.write_text('network_g: {type: GhostEDSR, num_feat: 8, num_block: 1, upscale: 2}\n')
    out = str(tmp_path / 'out')
    base = ['-m', 'ghostsr_plugin', 'compress', '--images', str(images), '--out', out]
    cases = [
        (_args(root, empty, out), 'holds no image'),
        (_args(root, broken, out), 'b0.png'),
        (_args(root, small, out), 'no image is large enough'),
        (_args(root, images, out, '--minutes', '0'), '--minutes 0.0: allowed a number > 0'),
        (_args(root, images, out, '--minutes', '-3'), 'allowed a number > 0'),
        (base + ['--model', str(tmp_path / 'junk.pth')], 'junk.pth'),
        (base + ['--model', str(tmp_path / 'unknown.pth')], 'unknown.pth'),
        (base + ['-opt', str(ghost_opt)], 'GhostEDSR'),
    ]
    for args, needle in cases:
        _refused(tmp_path, args, needle, out)


def test_out_folder_of_another_run_is_refused(finished, tmp_path):
    """An output folder that holds other files, or a compress run with other arguments (even with --auto_resume),
    is refused by name and left untouched."""
    root, out, _ = finished
    before = _tree(out)
    proc = run([python(), *_args(root, root / 'imgs', out, '--iters', '7', '--auto_resume')], root)
    assert proc.returncode == 2 and 'iters=6' in proc.stderr and _tree(out) == before
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'keep.txt').write_text('mine')
    proc = run([python(), *_args(root, root / 'imgs', other, '--iters', '2')], root)
    assert proc.returncode == 2 and 'not empty' in proc.stderr and _tree(other) == ['keep.txt']


def test_full_disk_is_exit_1_and_leaves_no_partial_file(setup, tmp_path, full_disk):
    """A full disk while writing the run's files: one line, exit code 1 (from run_command), and no file of the
    run is half-written (each either complete or absent)."""
    from ghostsr_plugin.cli import run as run_cli
    root, images = setup
    out = tmp_path / 'out'
    code = run_cli('compress', _args(root, images, out, '--iters', '2', '--start', 'cluster')[3:])
    assert code == 1 and full_disk
    for name in _tree(out) if out.exists() else []:
        assert not name.endswith('.tmp'), name
        if name.endswith('.json'):
            json.loads((out / name).read_text())  # complete, not truncated


def test_two_processes_train_under_the_distributed_launcher(setup):
    """--nproc 2 runs the fine-tune under torch.distributed.run with BasicSR's pytorch launcher, two CPU processes
    joined with gloo (what several GPUs or hosts do with nccl): it finishes, both ranks train (world size 2 in the
    log) and rank 0 validates and writes the outputs."""
    root, images = setup
    out = root / 'ddp'
    proc = run([python(), *_args(root, images, out, '--iters', '4', '--start', 'cluster', '--nproc', '2')], root,
               timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = next((out / 'experiments' / 'finetune').glob('train_*.log')).read_text()
    assert 'World size (gpu number): 2' in log and 'DistributedDataParallel' in log
    assert (out / 'ghost.pth').is_file() and json.loads((out / 'compress.json').read_text())['stage'] == 'done'


def test_prune_baseline_runs_the_same_pipeline(setup):
    """--baseline prune starts from the plain network with its channels pruned by Torch-Pruning (by default to the
    Ghost network's share of the params) and goes through the same fine-tune and report; its options rebuild the
    pruned network (type: Pruned)."""
    import yaml
    root, images = setup
    out = root / 'pruned'
    proc = run([python(), *_args(root, images, out, '--iters', '2', '--baseline', 'prune')], root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert yaml.safe_load((out / 'ghost.yml').read_text())['network_g']['type'] == 'Pruned'
    report = json.loads((out / 'report.json').read_text())
    assert report['start']['method'] == 'prune' and report['start']['params_share'] <= \
        report['start']['ghost_params_share']
    assert [n['label'] for n in report['networks']] == ['original', 'Pruned']
    assert report['networks'][1]['latency'] is not None


def test_shift_mode_copy_and_input_scales_reach_the_run(setup):
    """--shift_mode copy (the paper's ablation, a cheaper step) reaches the Ghost network: its options say so and
    every ghost layer of the written network copies without a move; --input_scales reaches the training set's
    options (LRFolderDataset's input_scales). An unknown mode and a factor outside (0, 1] are refused by name."""
    from ghostsr_plugin.archs.build import load_network
    from ghostsr_plugin.ops import ghost_layers
    from ghostsr_plugin.pipeline.compression import compress
    from ghostsr_plugin.utils.errors import UserInputError
    import yaml
    root, images = setup
    out = root / 'copy'
    proc = run([python(), *_args(root, images, out, '--iters', '1', '--start', 'cluster', '--shift_mode', 'copy',
                                 '--input_scales', '1', '0.5')], root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert yaml.safe_load((out / 'ghost.yml').read_text())['network_g']['shift_mode'] == 'copy'
    assert yaml.safe_load((out / 'train.yml').read_text())['datasets']['train']['input_scales'] == [1.0, 0.5]
    layers = ghost_layers(load_network(str(out / 'ghost.yml'), str(out / 'ghost.pth')))
    assert layers and all(layer.shift_mode == 'copy' and layer.shift_logits is None for layer in layers)
    with pytest.raises(UserInputError, match="--shift_mode 'shifty': allowed learnable, fixed, copy"):
        compress(str(root / 'never'), [str(images)], arch='EDSR', shift_mode='shifty')
    with pytest.raises(UserInputError, match=r'--input_scales 1 2: allowed resize factors in \(0, 1\]'):
        compress(str(root / 'never'), [str(images)], arch='EDSR', input_scales=[1, 2])
    assert not (root / 'never').exists()


def test_calibrated_start_is_the_default_and_beats_clustering(setup, finished):
    """Without --start, the run starts from the calibrated start (compress.calibration): the report says so, the
    start's fidelity on the held-out images is above the §3.2 clustering start's of the finished run above, and the
    written options (with the chosen per-layer λ) rebuild the network that ghost.pth loads into."""
    from ghostsr_plugin.archs.build import load_network
    root, images = setup
    out = root / 'calibrated'
    proc = run([python(), *_args(root, images, out, '--iters', '2')], root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / 'report.json').read_text())
    clustered = json.loads((finished[1] / 'report.json').read_text())
    assert report['start']['method'] == 'calibrate' and clustered['start']['method'] == 'cluster'
    assert report['fidelity']['start']['psnr_rgb'] > clustered['fidelity']['start']['psnr_rgb']
    net = load_network(str(out / 'ghost.yml'), str(out / 'ghost.pth'))
    assert net(torch.rand(1, 3, 10, 10)).shape == (1, 3, 20, 20)
