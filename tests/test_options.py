"""options/*.yml: made by tools/make_options.py, the paper's settings, networks build, data paths fit the layouts."""
import importlib.util
import os
import re
from os import path as osp

import pytest
import torch
import yaml

import ghostsr_plugin  # noqa: F401  (registers the archs; makes basicsr importable)
from basicsr.archs import build_network
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils.options import ordered_yaml

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
OPTIONS = osp.join(ROOT, 'options')
SHARED = osp.join(ROOT, '..', 'shared', 'data')
ARCHS = ('EDSR', 'GhostEDSR', 'RDN', 'GhostRDN', 'CARN', 'GhostCARN', 'CARN_M', 'GhostCARN_M')
SCALES = (2, 3, 4)
FILES = [f'{kind}_{arch}_x{s}.yml' for kind in ('train', 'test') for arch in ARCHS for s in SCALES]
GHOST_DEFAULTS = {'ghost_ratio': 0.5, 'ghost_d': 1, 'shift_mode': 'learnable', 'gumbel_a': 0.97, 'gumbel_tau': 1.0}


def _make_options_module():
    spec = importlib.util.spec_from_file_location('make_options', osp.join(ROOT, 'tools', 'make_options.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(name):
    with open(osp.join(OPTIONS, name)) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def _parts(name):
    kind, rest = name[:-len('.yml')].split('_', 1)
    arch, scale = rest.rsplit('_x', 1)
    return kind, arch, int(scale)


def test_the_48_files_are_exactly_what_make_options_writes():
    expected = _make_options_module().all_files()
    assert sorted(expected) == sorted(FILES)
    generated = [f for f in os.listdir(OPTIONS) if f.endswith('.yml') and f.startswith(('train_', 'test_'))]
    assert sorted(generated) == sorted(FILES)
    for name, text in expected.items():
        with open(osp.join(OPTIONS, name)) as f:
            assert f.read() == text, f'{name} is stale: run python tools/make_options.py'


@pytest.mark.parametrize('name', FILES)
def test_paper_settings(name):
    kind, arch, scale = _parts(name)
    opt = load(name)
    ghost = arch.startswith('Ghost')
    assert opt['scale'] == scale and opt['num_gpu'] == 'auto'
    assert opt['model_type'] == ('GhostSRModel' if ghost else 'SRModel')
    assert (opt.get('ghost') == {'iters_per_epoch': None, 'log_offsets': True}) if ghost else 'ghost' not in opt
    net = opt['network_g']
    assert net['type'] == arch and net['upscale'] == scale
    assert all(net[k] == v for k, v in GHOST_DEFAULTS.items()) if ghost else not set(GHOST_DEFAULTS) & set(net)
    if 'EDSR' in arch:
        assert (net['num_feat'], net['num_block'], net['res_scale'], net['img_range']) == (256, 32, 0.1, 255.)
    assert net['rgb_mean'] == [0.4488, 0.4371, 0.4040]

    for metric in ('psnr', 'ssim'):
        assert opt['val']['metrics'][metric] == {
            'type': f'calculate_{metric}', 'crop_border': scale, 'test_y_channel': True}

    if kind == 'train':
        train_set = opt['datasets']['train']
        assert train_set['dataroot_gt'] == 'datasets/DIV2K/DIV2K_train_HR_sub'
        assert train_set['dataroot_lq'] == f'datasets/DIV2K/DIV2K_train_LR_bicubic/X{scale}_sub'
        assert train_set['io_backend'] == {'type': 'disk'} and train_set['filename_tmpl'] == '{}'
        assert (train_set['gt_size'], train_set['batch_size_per_gpu']) == (48 * scale, 16)
        assert train_set['use_hflip'] is True and train_set['use_rot'] is True
        assert opt['datasets']['val']['name'] == 'Set5'
        train = opt['train']
        assert train['optim_g'] == {'type': 'Adam', 'lr': 1e-4, 'weight_decay': 0, 'betas': [0.9, 0.999], 'eps': 1e-8}
        total = 1_200_000 if 'CARN' in arch else 300_000
        assert train['total_iter'] == total
        assert train['scheduler'] == {
            'type': 'CosineAnnealingRestartLR', 'periods': [total], 'restart_weights': [1], 'eta_min': 1e-7}
        assert train['pixel_opt']['type'] == 'L1Loss'
        assert opt['path']['pretrain_network_g'] is None
    else:
        assert [d['name'] for d in opt['datasets'].values()] == ['Set5', 'Set14', 'B100', 'Urban100']
        train_name = load(f'train_{arch}_x{scale}.yml')['name']
        assert opt['path'] == {
            'pretrain_network_g': f'experiments/{train_name}/models/net_g_latest.pth',
            'strict_load_g': True,
            'param_key_g': 'params'
        }
        assert opt['network_g'] == load(f'train_{arch}_x{scale}.yml')['network_g']
    for dataset in opt['datasets'].values():
        if dataset['name'] != 'DIV2K':
            assert dataset['dataroot_gt'] == f'datasets/benchmark/{dataset["name"]}/HR'
            assert dataset['dataroot_lq'] == f'datasets/benchmark/{dataset["name"]}/LR_bicubic/X{scale}'
            assert dataset['filename_tmpl'] == f'{{}}x{scale}'


@pytest.mark.parametrize('name', sorted(f for f in os.listdir(OPTIONS) if f.endswith('.yml')))
def test_every_option_file_builds_its_network(name):
    """Every file in options/ (the 48 generated ones and the hand-written experiment files) parses, names a
    registered model, and its network_g builds."""
    from basicsr.utils.registry import MODEL_REGISTRY
    opt = load(name)
    assert opt['model_type'] in MODEL_REGISTRY._obj_map
    assert isinstance(build_network(dict(opt['network_g'])), torch.nn.Module)


@pytest.mark.parametrize('arch', ARCHS)
def test_networks_build(arch):
    for scale in SCALES:
        net = build_network(dict(load(f'train_{arch}_x{scale}.yml')['network_g']))  # construct only, no forward
        assert type(net).__name__ == arch
        assert hasattr(net, 'ghost_schedule') == arch.startswith('Ghost')


def test_every_header_says_how_to_switch():
    for name in FILES:
        with open(osp.join(OPTIONS, name)) as f:
            head = f.read().split('\n\n')[0]
        assert head.startswith('#') and 'num_gpu: 0' in head and 'make_options.py' in head
        if name.startswith('train_'):
            assert 'LMDB' in head


# ------------------------------------------------------------------------------- data paths against real layouts
def _rooted(dataset_opt, root):
    opt = dict(dataset_opt)
    for key in ('dataroot_gt', 'dataroot_lq'):
        opt[key] = opt[key].replace('datasets/', f'{root}/', 1)
    opt['io_backend'] = dict(opt['io_backend'])
    return opt


@pytest.mark.parametrize('scale', SCALES)
def test_benchmark_paths_fit_the_shared_data(scale):
    if not osp.isdir(osp.join(SHARED, 'benchmark', 'Set5')):
        pytest.skip(f'no benchmark sets in {SHARED}')
    opt = load(f'test_GhostEDSR_x{scale}.yml')
    checked = []
    for dataset_opt in opt['datasets'].values():
        if not osp.isdir(osp.join(SHARED, 'benchmark', dataset_opt['name'])):
            continue  # Urban100 is not in the shared data
        dataset = PairedImageDataset(dict(_rooted(dataset_opt, SHARED), phase='test', scale=scale))
        item = dataset[0]
        assert item['gt'].shape[1:] == tuple(scale * n for n in item['lq'].shape[1:])
        checked.append(dataset_opt['name'])
    assert checked[:3] == ['Set5', 'Set14', 'B100'][:len(checked)] and 'Set5' in checked


def test_train_paths_fit_prepare_data_output(tmp_path):
    """prepare_data --name DIV2K --out <root>/DIV2K with sub-images and LMDBs gives what every train file reads."""
    import cv2
    import numpy as np
    from ghostsr_plugin.data.prepare import prepare

    hr_dir = tmp_path / 'DIV2K_train_HR'
    hr_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(hr_dir / f'{i + 1:04d}.png'), rng.integers(0, 256, (204, 216, 3), dtype=np.uint8))
    root = tmp_path / 'datasets'
    prepare(str(hr_dir), root / 'DIV2K', 'DIV2K', scales=SCALES, crop_size=192, step=96, lmdb=True)

    for scale in SCALES:
        name = f'train_GhostCARN_x{scale}.yml'
        train_opt = dict(load(name)['datasets']['train'], phase='train', scale=scale)
        with open(osp.join(OPTIONS, name)) as f:
            text = f.read()
        lmdb_roots = dict(re.findall(r'#\s*(dataroot_gt|dataroot_lq):\s*(\S+\.lmdb)', text))
        assert set(lmdb_roots) == {'dataroot_gt', 'dataroot_lq'} and re.search(r'#\s*type: lmdb', text)
        disk = _rooted(train_opt, root)
        lmdb = _rooted(dict(train_opt, **lmdb_roots, io_backend={'type': 'lmdb'}), root)
        for dataset_opt in (disk, lmdb):
            dataset = PairedImageDataset(dataset_opt)
            assert len(dataset) == 2 * 4  # 2x2 crops of 192x192 per 204x216 image (one flush with each border)
            item = dataset[0]
            assert item['gt'].shape == (3, 48 * scale, 48 * scale) and item['lq'].shape == (3, 48, 48)
