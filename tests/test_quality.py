"""ghostsr evaluate (ghostsr_plugin.measure.quality): every bad input is one line naming the path (unreadable images, missing pairs, stray
files, checkpoints that do not fit: the first key or shape), LR/HR size mismatches are errors naming the image,
both sizes and the scale (or, with --skip-mismatched, left out and named); grey / RGBA / 16-bit images are read as
BasicSR reads them and said once per set."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

from basicsr.archs import build_network
from conftest import SCALE
from ghostsr_plugin.cli import evaluate as command
from ghostsr_plugin.data.benchmark import set_pairs
from ghostsr_plugin.measure.quality import evaluate
from ghostsr_plugin.utils.errors import run_command

NET = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': SCALE}


@pytest.fixture
def bench(tiny_data, tmp_path):
    """A benchmark root with one set 'Tiny' of 4 pairs in the EDSR layout, and a checkpoint of NET."""
    root = tmp_path / 'bench'
    hr_dir, lr_dir = root / 'Tiny' / 'HR', root / 'Tiny' / 'LR_bicubic' / f'X{SCALE}'
    hr_dir.mkdir(parents=True)
    lr_dir.mkdir(parents=True)
    for name in sorted(os.listdir(tiny_data['hr']))[:4]:
        shutil.copy(os.path.join(tiny_data['hr'], name), hr_dir / name)
        shutil.copy(os.path.join(tiny_data['lr'], name), lr_dir / f'{name[:-4]}x{SCALE}.png')
    torch.manual_seed(0)
    torch.save({'params': build_network(dict(NET)).state_dict()}, tmp_path / 'net.pth')
    return root


def _run(bench, *extra, net=None, ckpt=None):
    args = ['--arch', 'EDSR', '--arch_args', json.dumps({k: v for k, v in (net or NET).items() if k != 'type'}),
            '--ckpt', str(ckpt or bench.parent / 'net.pth'), '--set', 'Tiny', '--scale', str(SCALE),
            '--data', str(bench), *map(str, extra)]
    return run_command('ghostsr evaluate', command.main, args)


def _one_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('ghostsr evaluate: error: '), err
    return err[0]


def test_a_good_set_evaluates(bench, capsys):
    assert _run(bench, '--json', bench.parent / 'r.json') == 0
    assert 'EDSR x2 Tiny: Y-PSNR' in capsys.readouterr().out
    result = json.loads((bench.parent / 'r.json').read_text())['sets']['Tiny']
    assert len(result['images']) == 4 and 'skipped' not in result


@pytest.mark.parametrize('case', ['zero-byte HR', 'text LR', 'missing LR', 'stray HR file', 'stray LR file'])
def test_bad_files_are_named(case, bench, capsys):
    """Before: 'NoneType' object has no attribute 'astype' (or is not subscriptable), naming no file."""
    hr_dir, lr_dir = bench / 'Tiny' / 'HR', bench / 'Tiny' / 'LR_bicubic' / f'X{SCALE}'
    path, message = {
        'zero-byte HR': (hr_dir / 'img1.png', 'not a readable PNG image (empty file)'),
        'text LR': (lr_dir / 'img1x2.png', 'not a readable PNG image'),
        'missing LR': (lr_dir / 'img2x2.png', 'missing, the LR image of'),
        'stray HR file': (hr_dir / 'README.txt', 'stray file in the HR folder of Tiny'),
        'stray LR file': (lr_dir / 'img9x2.png', 'stray file in the LR folder of Tiny'),
    }[case]
    if case == 'missing LR':
        path.unlink()
    else:
        path.write_bytes(b'' if case == 'zero-byte HR' else b'hello')
    (hr_dir / '.DS_Store').write_bytes(b'ignored')  # hidden files are not strays
    assert _run(bench) == 2
    line = _one_error(capsys)
    assert f'{path}: {message}' in line, line


def test_checkpoint_that_does_not_fit(bench, capsys):
    """Before: PyTorch's whole list of size mismatches (8950 bytes)."""
    assert _run(bench, net=dict(NET, num_feat=16)) == 2
    assert _one_error(capsys) == (f'ghostsr evaluate: error: {bench.parent / "net.pth"} does not fit EDSR: '
                                  '"conv_first.weight" has shape (8, 3, 3, 3), the network needs (16, 3, 3, 3)')


def test_damaged_checkpoint(bench, capsys):
    ckpt = bench.parent / 'cut.pth'
    ckpt.write_bytes((bench.parent / 'net.pth').read_bytes()[:3000])
    assert _run(bench, ckpt=ckpt) == 2
    assert f'{ckpt} is truncated or damaged (3000 bytes' in _one_error(capsys)


@pytest.mark.parametrize('crop,lr_size', [(-2, '14x14'), (2, '18x18')])
def test_size_mismatch(crop, lr_size, bench, capsys):
    """Before: a smaller LR gave a PSNR without a word; a larger one an AssertionError naming no image."""
    lr_path = bench / 'Tiny' / 'LR_bicubic' / f'X{SCALE}' / 'img3x2.png'
    lr = cv2.imread(str(lr_path))
    cv2.imwrite(str(lr_path), lr[:crop, :crop] if crop < 0 else cv2.copyMakeBorder(lr, 0, crop, 0, crop,
                                                                                     cv2.BORDER_REFLECT))
    problem = f'img3: LR {lr_size} does not fit HR 32x32 at scale 2 (expected 16x16)'
    assert _run(bench) == 2
    assert f'Tiny x2: {problem}' in _one_error(capsys)
    assert _run(bench, '--skip-mismatched', '--json', bench.parent / 'r.json') == 0
    out = capsys.readouterr().out
    assert f'note: Tiny x2: skipped 1 of 4 pairs whose sizes do not fit: {problem}' in out
    assert '(3 images, 1 skipped' in out
    result = json.loads((bench.parent / 'r.json').read_text())['sets']['Tiny']
    assert sorted(result['images']) == ['img0', 'img1', 'img2'] and result['skipped'] == [problem]


def test_converted_images_are_named_once_and_read_as_basicsr(bench, tmp_path):
    """Grey, 16-bit and RGBA files give the metrics of their 8-bit RGB reading (cv2.IMREAD_COLOR, BasicSR's), and
    one note per set names them."""
    net = build_network(dict(NET)).eval()
    net.load_state_dict(torch.load(bench.parent / 'net.pth', weights_only=True)['params'])
    hr_dir, lr_dir = bench / 'Tiny' / 'HR', bench / 'Tiny' / 'LR_bicubic' / f'X{SCALE}'
    cv2.imwrite(str(hr_dir / 'img0.png'), cv2.cvtColor(cv2.imread(str(hr_dir / 'img0.png')), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(hr_dir / 'img1.png'), cv2.imread(str(hr_dir / 'img1.png')).astype(np.uint16) * 257 + 100)
    cv2.imwrite(str(lr_dir / 'img2x2.png'), cv2.cvtColor(cv2.imread(str(lr_dir / 'img2x2.png')), cv2.COLOR_BGR2BGRA))
    plain = tmp_path / 'plain'
    shutil.copytree(bench, plain)
    for folder in (plain / 'Tiny' / 'HR', plain / 'Tiny' / 'LR_bicubic' / f'X{SCALE}'):
        for name in os.listdir(folder):  # what BasicSR reads, written as 8-bit RGB files
            cv2.imwrite(str(folder / name), cv2.imread(str(folder / name), cv2.IMREAD_COLOR))
    notes = []
    converted = evaluate(net, set_pairs(str(bench), 'Tiny', SCALE), SCALE, 'cpu', False,
                                 log=notes.append)
    reference = evaluate(net, set_pairs(str(plain), 'Tiny', SCALE), SCALE, 'cpu', False,
                                 log=notes.append)
    assert converted == reference
    assert notes == ['Tiny: 3 of 8 image files converted to 8-bit RGB as BasicSR reads them (16-bit: img1.png; '
                     'RGBA: img2x2.png; grey: img0.png)']


def test_a_data_folder_holding_the_benchmark_root_is_accepted(bench):
    """set_pairs takes the benchmark root or the data folder holding it as benchmark/ (compress's --data), giving the
    same pairs; a set in neither is an error naming the sets there."""
    data = bench.parent / 'data'
    data.mkdir()
    bench.rename(data / 'benchmark')
    assert set_pairs(str(data), 'Tiny', SCALE) == set_pairs(str(data / 'benchmark'), 'Tiny', SCALE)
    with pytest.raises(FileNotFoundError, match='set Nope: .* does not exist'):
        set_pairs(str(data), 'Nope', SCALE)


def test_scale_comes_from_the_option_file(bench, tmp_path, capsys):
    """With -opt and no --scale, the option file's ``scale`` is used; without one, the error says --scale is needed."""
    import yaml
    opt = tmp_path / 'net.yml'
    opt.write_text(yaml.safe_dump({'scale': SCALE, 'network_g': NET}))
    args = ['-opt', str(opt), '--ckpt', str(bench.parent / 'net.pth'), '--set', 'Tiny', '--data', str(bench)]
    assert run_command('ghostsr evaluate', command.main, args) == 0
    assert f'EDSR x{SCALE} Tiny: Y-PSNR' in capsys.readouterr().out
    opt.write_text(yaml.safe_dump({'network_g': NET}))
    assert run_command('ghostsr evaluate', command.main, args) == 2
    assert f'--scale is needed: {opt} has no scale' in capsys.readouterr().err


def test_fidelity_of_a_hand_made_case():
    """fidelity() is the PSNR between the two networks' outputs as 8-bit images: outputs 128/255 and 132/255
    everywhere differ by 4 grey levels, so RGB PSNR = 10 log10(255^2 / 16) = 36.1236 dB; on Y (BasicSR's
    rgb2ycbcr, 219/255 of the range) the difference is 4 * 219/255 levels."""
    import math
    from ghostsr_plugin.measure.quality import fidelity

    def constant(level):
        return lambda x: torch.full((1, 3, 2 * x.shape[-2], 2 * x.shape[-1]), level / 255.)

    result = fidelity(constant(132), constant(128), {'a': torch.zeros(1, 3, 4, 4), 'b': torch.zeros(1, 3, 6, 6)})
    assert result['psnr_rgb'] == pytest.approx(10 * math.log10(255 ** 2 / 16), abs=1e-4)
    y_diff = 4 * 65.481 / 255 + 4 * 128.553 / 255 + 4 * 24.966 / 255
    assert result['psnr_y'] == pytest.approx(10 * math.log10(255 ** 2 / y_diff ** 2), abs=0.05)
    assert set(result['images']) == {'a', 'b'}
