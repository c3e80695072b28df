"""Testing a Ghost network with the plugin's test entry point and with BasicSR's own, unmodified test.py."""
import glob
import os
import re
import shutil

import pytest
import torch

import basicsr
from basicsr.archs import build_network
from conftest import SCALE, python, run

NET = {'type': 'GhostCARN_M', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'upscale': SCALE}


def _test_options(name, checkpoint, data):
    return {
        'name': name, 'model_type': 'GhostSRModel', 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': data['hr'],
                                'dataroot_lq': data['lr'], 'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}}},
        'network_g': NET,
        'path': {'pretrain_network_g': str(checkpoint), 'strict_load_g': True, 'param_key_g': 'params'},
        'val': {'save_img': True, 'suffix': None,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': True},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': SCALE, 'test_y_channel': True}}},
    }


@pytest.mark.parametrize('entry', ['plugin', 'basicsr'])
def test_ghost_net_tests_with_metrics(entry, tiny_data, tmp_path):
    import yaml
    torch.manual_seed(0)
    checkpoint = tmp_path / 'ghost.pth'
    torch.save({'params': build_network(NET).state_dict()}, checkpoint)
    name = f'test_entry_{entry}_{os.getpid()}'
    opt_path = tmp_path / f'{name}.yml'
    opt_path.write_text(yaml.safe_dump(_test_options(name, checkpoint, tiny_data)))
    if entry == 'plugin':
        root = tmp_path
        proc = run([python(), '-m', 'ghostsr_plugin.test', '-opt', str(opt_path)], cwd=tmp_path)
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
