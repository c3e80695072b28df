"""Short training and test runs through the plugin's entry points (``ghostsr train`` / ``ghostsr test``,
ghostsr_plugin.pipeline.training) and through BasicSR's own, unmodified train.py / test.py.

Proves: every Ghost arch trains and validates (PSNR/SSIM logged) from disk and LMDB data; BasicSR's train.py finds
the Ghost archs through the installed autoload hook alone; --auto_resume continues the run and its Gumbel schedule;
a user's option file with only `type` changed works under plain SRModel; a second run with the name of a running one
is refused and the running one finishes in its own folder (the experiment lock, ghostsr_plugin/pipeline/lock.py).
"""
import glob
import os
import re
import shutil

import pytest
import torch

import basicsr
from basicsr.archs import build_network
from conftest import SCALE, python, run, train_options, write_options

TINY_NETS = {
    'GhostEDSR': {'type': 'GhostEDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2},
    'GhostRDN': {'type': 'GhostRDN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 2, 'num_layer': 2,
                 'num_grow_ch': 8, 'upscale': 2},
    'GhostCARN': {'type': 'GhostCARN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'upscale': 2},
    'GhostCARN_M': {'type': 'GhostCARN_M', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'upscale': 2},
}
BASICSR_DIR = os.path.dirname(basicsr.__file__)


def _metrics(log_text):
    psnr = re.findall(r'# psnr: ([\d.]+)', log_text)
    ssim = re.findall(r'# ssim: ([\d.]+)', log_text)
    return [float(v) for v in psnr], [float(v) for v in ssim]


def _log(root, name):
    logs = sorted(glob.glob(os.path.join(root, 'experiments', name, 'train_*.log')))
    assert logs, f'no training log under {root}/experiments/{name}'
    return open(logs[-1]).read()


@pytest.mark.parametrize('arch', sorted(TINY_NETS))
@pytest.mark.parametrize('entry,backend', [('plugin', 'disk'), ('basicsr', 'lmdb')])
def test_ghost_arch_trains(arch, entry, backend, tiny_data, tmp_path):
    """Each Ghost arch trains 4 iterations and validates (PSNR/SSIM in the log, the schedule at iteration 4),
    through the plugin from disk data and through BasicSR's own train.py from LMDB data."""
    name = f'test_{arch}_{entry}_{backend}_{os.getpid()}'
    opt_path = write_options(train_options(name, TINY_NETS[arch], tiny_data, backend=backend), tmp_path)
    if entry == 'plugin':
        root = tmp_path
        proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', opt_path], cwd=tmp_path)
    else:  # BasicSR's own train.py: root is BasicSR's install folder (its behaviour, not ours)
        root = os.path.dirname(BASICSR_DIR)
        proc = run([python(), os.path.join(BASICSR_DIR, 'train.py'), '-opt', opt_path], cwd=tmp_path)
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        log = _log(root, name)
        psnr, ssim = _metrics(log)
        assert psnr and ssim and all(0 < v < 100 for v in psnr) and all(0 < v <= 1 for v in ssim), log[-2000:]
        assert 'gumbel_tau' in log and 'ghost offsets' in log
        state = torch.load(os.path.join(root, 'experiments', name, 'models', 'net_g_latest.pth'), weights_only=True)
        assert int(state['params']['ghost_schedule.iteration']) == 4
    finally:
        for sub in ('experiments', 'tb_logger', 'results'):
            shutil.rmtree(os.path.join(root, sub, name), ignore_errors=True)


def test_auto_resume_continues_schedule(tiny_data, tmp_path):
    """A run stopped at iter 4 resumes at 4 with --auto_resume; the Gumbel iteration continues to 6, not 2."""
    name = 'resume_run'
    opt = train_options(name, TINY_NETS['GhostEDSR'], tiny_data, total_iter=4)
    opt['ghost'] = {'iters_per_epoch': 2}
    opt['train']['scheduler']['periods'] = [6]  # the whole run's cosine; the first part stops at 4
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    opt['train']['total_iter'] = 6
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, tmp_path), '--auto_resume'],
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = _log(tmp_path, name)
    assert 'Resuming training from epoch: 1, iter: 4' in log
    assert 'iter:       5' in log and 'iter:       1,' not in log
    # iters_per_epoch=2: iteration 6 is epoch 3, noise scale 0.97^2
    assert 'gumbel_epoch: 3.0000e+00' in log and 'gumbel_noise: 9.4090e-01' in log
    state = torch.load(tmp_path / 'experiments' / name / 'models' / 'net_g_latest.pth', weights_only=True)
    assert int(state['params']['ghost_schedule.iteration']) == 6
    assert not glob.glob(str(tmp_path / 'experiments' / name / '**' / '*.tmp'), recursive=True)


def test_plain_srmodel_with_only_type_changed(tiny_data, tmp_path):
    """A user's EDSR option file with only `type: EDSR` -> `type: GhostEDSR` trains under SRModel; the schedule
    advances by itself and a warning says what GhostSRModel would add."""
    net = dict(TINY_NETS['GhostEDSR'])
    opt = train_options('plain_model', net, tiny_data, model_type='SRModel')
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Use model_type: GhostSRModel' in proc.stderr
    state = torch.load(tmp_path / 'experiments' / 'plain_model' / 'models' / 'net_g_latest.pth', weights_only=True)
    assert int(state['params']['ghost_schedule.iteration']) == 4


def test_user_script_builds_ghost_net(tmp_path):
    """`import ghostsr_plugin` in a script, then BasicSR's build_network knows the Ghost archs (autoload off)."""
    script = ('import ghostsr_plugin, torch\n'
              'from basicsr.archs import build_network\n'
              "net = build_network({'type': 'GhostEDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, "
              "'num_block': 1, 'upscale': 2}).eval()\n"
              'print(tuple(net(torch.rand(1, 3, 8, 8)).shape))\n')
    proc = run([python(), '-c', script], cwd=tmp_path, env={'GHOSTSR_NO_AUTOLOAD': '1'})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == '(1, 3, 16, 16)'


def test_autoload_hook(tmp_path):
    """Installed plugin: importing basicsr registers the Ghost archs, with no torch import at interpreter start;
    GHOSTSR_NO_AUTOLOAD=1 switches the hook off."""
    probe = ('import sys; print("torch" in sys.modules); from basicsr.utils.registry import ARCH_REGISTRY; '
             'print("GhostRDN" in ARCH_REGISTRY._obj_map)')
    proc = run([python(), '-c', probe], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ['False', 'True']
    off = run([python(), '-c', 'import ghostsr_autoload, basicsr'], cwd=tmp_path, env={'GHOSTSR_NO_AUTOLOAD': '1'})
    assert off.returncode != 0 and 'functional_tensor' in off.stderr


@pytest.mark.parametrize('change,message', [
    ({'network_g': {'type': 'GhostNope'}}, 'network_g: type "GhostNope" is not a registered architecture; allowed:'),
    ({'model_type': 'NopeModel'}, 'model_type: "NopeModel" is not a registered model'),
    ({'datasets.train.dataroot_gt': '/nonexistent/hr'}, 'datasets.train.dataroot_gt: folder /nonexistent/hr does not exist'),
    ({'network_g.ghost_ratio': 1.5}, 'ghost_ratio (λ, the share of ghost features) must be in (0, 1), got 1.5'),
    ({'network_g.ghost_d': 0}, 'ghost_d (maximum shift offset d) must be an integer >= 1, got 0'),
    ({'network_g.upscale': 5}, 'upscale'),
    ({'ghost': {'iters_per_epch': 3}}, 'ghost: unknown option(s) iters_per_epch; allowed: iters_per_epoch'),
])
def test_bad_options_fail_clearly(change, message, tiny_data, tmp_path):
    """A bad option stops `ghostsr train` (a real process) with one line naming it, exit code 2, and no
    experiments/ folder made."""
    opt = train_options('bad', dict(TINY_NETS['GhostEDSR']), tiny_data)
    for key, value in change.items():
        *parents, leaf = key.split('.')
        target = opt
        for part in parents:
            target = target[part]
        target[leaf] = value
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, tmp_path)], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith('ghostsr train: error: ') and len(proc.stderr.splitlines()) == 1
    assert message in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / 'experiments').exists() and 'Rename it to' not in proc.stdout


def test_unreadable_validation_image(tiny_data, tmp_path):
    """An undecodable validation image is named before any folder is made."""
    broken = tmp_path / 'broken_hr'
    shutil.copytree(tiny_data['hr'], broken)
    (broken / 'img0.png').write_bytes(b'not a png')
    opt = train_options('broken', dict(TINY_NETS['GhostEDSR']), tiny_data)
    opt['datasets']['val']['dataroot_gt'] = str(broken)
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, tmp_path)], cwd=tmp_path)
    assert proc.returncode == 2
    assert f'{broken / "img0.png"}: not a readable PNG image' in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / 'experiments').exists()


def test_checkpoint_that_does_not_fit(tiny_data, tmp_path):
    """A checkpoint of another width is refused with the first key whose shape does not fit."""
    other = train_options('wide', dict(TINY_NETS['GhostEDSR'], num_feat=16), tiny_data, total_iter=2)
    assert run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(other, tmp_path)],
               cwd=tmp_path).returncode == 0
    opt = train_options('narrow', dict(TINY_NETS['GhostEDSR']), tiny_data)
    opt['path']['pretrain_network_g'] = str(tmp_path / 'experiments' / 'wide' / 'models' / 'net_g_latest.pth')
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, tmp_path)], cwd=tmp_path)
    assert proc.returncode != 0
    assert 'does not fit GhostEDSR: "conv_first.weight" has shape (16, 3, 3, 3), the network needs (8, 3, 3, 3)' \
        in proc.stderr, proc.stderr[-2000:]


def test_ghost_init_clusters_before_training_and_not_on_resume(tiny_data, tmp_path):
    """`ghost_init:` clusters a pre-trained plain EDSR into GhostEDSR before the first step (report written), and a
    resumed run loads its own checkpoint instead of clustering again."""
    from basicsr.archs import build_network
    plain_opt = dict(TINY_NETS['GhostEDSR'], type='EDSR')
    torch.save({'params': build_network(plain_opt).state_dict()}, tmp_path / 'edsr.pth')
    opt = train_options('init_run', TINY_NETS['GhostEDSR'], tiny_data, total_iter=2)
    opt['ghost_init'] = {'pretrain_path': str(tmp_path / 'edsr.pth'), 'seed': 0, 'n_init': 2}
    opt['train']['scheduler']['periods'] = [4]
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = tmp_path / 'experiments' / 'init_run' / 'ghost_init.json'
    assert report.is_file() and 'body.0.conv2' in report.read_text()
    assert 'GhostSRModel: clustered from' in _log(tmp_path, 'init_run')
    opt['train']['total_iter'] = 4
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, tmp_path), '--auto_resume'],
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = _log(tmp_path, 'init_run')
    assert 'Resuming training' in log and 'clustered from' not in log


def test_run_reaches_total_iter_when_the_loader_drops_a_partial_batch(tiny_data, tmp_path):
    """6 images, batch 4: BasicSR counts 2 iterations an epoch, its loader yields 1 (drop_last), so BasicSR's own
    loop stopped at iteration 4 of 5; the plugin's entry point sizes the epochs by the loader and reaches 5."""
    opt = train_options('reach_total', TINY_NETS['GhostEDSR'], tiny_data, total_iter=5)
    opt['datasets']['train']['batch_size_per_gpu'] = 4
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '5 epochs, not 3, reach 5 iterations' in _log(tmp_path, 'reach_total')
    state = torch.load(tmp_path / 'experiments' / 'reach_total' / 'models' / 'net_g_latest.pth', weights_only=True)
    assert int(state['params']['ghost_schedule.iteration']) == 5


def test_training_loaders_keep_their_workers():
    """Training sets with worker processes get persistent_workers (BasicSR forks them every epoch otherwise); a set
    without workers (where torch refuses the option), a validation set and an explicit false are left as they are."""
    from ghostsr_plugin.pipeline.training import keep_workers
    opt = {'datasets': {'train': {'num_worker_per_gpu': 1}, 'train_2': {'num_worker_per_gpu': 0},
                        'train_3': {'num_worker_per_gpu': 2, 'persistent_workers': False},
                        'val': {'num_worker_per_gpu': 1}}}
    assert keep_workers(opt) == ['train']
    assert opt['datasets']['train']['persistent_workers'] is True
    assert 'persistent_workers' not in opt['datasets']['train_2'] and 'persistent_workers' not in opt['datasets']['val']
    assert opt['datasets']['train_3']['persistent_workers'] is False


def test_a_run_with_a_worker_keeps_it(tiny_data, tmp_path):
    """Through ``ghostsr train``: a 1-worker training set runs its epochs with one persistent worker."""
    opt = train_options('workers', TINY_NETS['GhostEDSR'], tiny_data, total_iter=4)
    opt['datasets']['train'].update(num_worker_per_gpu=1, batch_size_per_gpu=4)  # 1 batch an epoch: 4 epochs
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, tmp_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'datasets.train: the loader keeps its worker processes across epochs' in _log(tmp_path, 'workers')


# ----------------------------------------------------------------------------------------------------- testing
TEST_NET = {'type': 'GhostCARN_M', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'upscale': SCALE}


def _test_options(name, checkpoint, data):
    return {
        'name': name, 'model_type': 'GhostSRModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': data['hr'],
                                'dataroot_lq': data['lr'], 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}}},
        'network_g': TEST_NET,
        'path': {'pretrain_network_g': str(checkpoint), 'strict_load_g': True, 'param_key_g': 'params'},
        'val': {'save_img': True, 'suffix': None,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': True},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': SCALE, 'test_y_channel': True}}},
    }


@pytest.mark.parametrize('entry', ['plugin', 'basicsr'])
def test_ghost_net_tests_with_metrics(entry, tiny_data, tmp_path):
    """A Ghost net tests with PSNR/SSIM and saved images (save_img with suffix: ~) through the plugin and through
    BasicSR's own test.py."""
    import yaml
    torch.manual_seed(0)
    checkpoint = tmp_path / 'ghost.pth'
    torch.save({'params': build_network(TEST_NET).state_dict()}, checkpoint)
    name = f'test_entry_{entry}_{os.getpid()}'
    opt_path = tmp_path / f'{name}.yml'
    opt_path.write_text(yaml.safe_dump(_test_options(name, checkpoint, tiny_data)))
    if entry == 'plugin':
        root = tmp_path
        proc = run([python(), '-m', 'ghostsr_plugin', 'test', '-opt', str(opt_path)], cwd=tmp_path)
    else:
        root = os.path.dirname(os.path.dirname(basicsr.__file__))
        proc = run([python(), os.path.join(os.path.dirname(basicsr.__file__), 'test.py'), '-opt', str(opt_path)],
                   cwd=tmp_path)
    try:
        assert proc.returncode == 0, proc.stderr[-3000:]
        log = open(glob.glob(os.path.join(root, 'results', name, 'test_*.log'))[0]).read()
        psnr = [float(v) for v in re.findall(r'# psnr: ([\d.]+)', log)]
        ssim = [float(v) for v in re.findall(r'# ssim: ([\d.]+)', log)]
        assert len(psnr) == 1 and 0 < psnr[0] < 100 and len(ssim) == 1 and 0 < ssim[0] <= 1
        assert len(glob.glob(os.path.join(root, 'results', name, 'visualization', 'tiny', '*.png'))) == 6
    finally:
        shutil.rmtree(os.path.join(root, 'results', name), ignore_errors=True)


def test_second_run_with_the_same_name_is_refused(tiny_data, tmp_path):
    """Issue 18 item 7, with real processes. Before: a second `ghostsr train` with the name of a running one renamed
    the running one's folder to <name>_archived_<time> and both wrote into one new folder. Now the second is
    refused (one line naming the folder and the first run's process id, exit code 2) while the first one, held
    just after BasicSR made its folder, goes on and finishes in its own folder, which nothing archived."""
    import subprocess
    import sys
    import time
    opt_path = write_options(train_options('same', TINY_NETS['GhostEDSR'], tiny_data, total_iter=2), tmp_path)
    first_script = ('import os, sys, time\n'
                    'import ghostsr_plugin\n'
                    'import basicsr.train as bt\n'
                    'build = bt.build_model\n'
                    'def held(opt):  # the experiment folder is made: wait here until the test says go\n'
                    '    deadline = time.time() + 300\n'
                    '    while not os.path.exists("go") and time.time() < deadline:\n'
                    '        time.sleep(0.05)\n'
                    '    return build(opt)\n'
                    'bt.build_model = held\n'
                    'from ghostsr_plugin.cli import main\n'
                    f'sys.exit(main(["train", "-opt", {opt_path!r}]))\n')
    first = subprocess.Popen([sys.executable, '-c', first_script], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    lock, log_glob = tmp_path / 'experiments' / 'same.lock', str(tmp_path / 'experiments' / 'same' / 'train_*.log')
    try:
        deadline = time.time() + 300
        while not (lock.exists() and glob.glob(log_glob)) and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert lock.exists() and first.poll() is None, first.communicate()[1][-3000:] if first.poll() else 'timeout'
        second = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', opt_path], cwd=tmp_path)
        assert second.returncode == 2, second.stderr[-3000:]
        assert second.stderr == (f'ghostsr train: error: experiments/same is in use by process {first.pid} (ghostsr '
                                 f'train -opt {opt_path}): another run with this name is writing it (lock '
                                 'experiments/same.lock); wait for it to end or use another name (if no run is using '
                                 'it, remove the lock file)\n')
        assert 'Disable distributed' not in second.stdout
    finally:
        (tmp_path / 'go').touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert sorted(os.listdir(tmp_path / 'experiments')) == ['same']  # nothing archived, the lock removed
    psnr, _ = _metrics(_log(tmp_path, 'same'))
    assert psnr and len(glob.glob(log_glob)) == 1
