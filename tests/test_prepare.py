"""ghostsr prepare_data: mod-crop, MATLAB-bicubic LR, sub-images, LMDBs, atomic outputs, errors."""
import glob
import os
import shutil
from os import path as osp

import cv2
import numpy as np
import pytest

import ghostsr_plugin  # noqa: F401  (makes basicsr importable)
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils.matlab_functions import imresize
from ghostsr_plugin import cli
from ghostsr_plugin.data import prepare as pd
from ghostsr_plugin.data.bicubic import bicubic_downscale, modcrop
from ghostsr_plugin.data.prepare import PrepareDataError, prepare

SHARED = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '..', 'shared', 'data')


def _image(rng, h, w, grey=False):
    y, x = np.mgrid[0:h, 0:w]
    base = 128 + 90 * np.sin(x / rng.uniform(2, 5) + y / rng.uniform(2, 5))
    channels = 1 if grey else 3
    img = np.stack([base + rng.normal(0, 20, (h, w)) for _ in range(channels)], -1)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img[..., 0] if grey else img


@pytest.fixture()
def hr_dirs(tmp_path):
    """Two HR folders: PNG colour + PNG grey, and a BMP; odd sizes so mod-cropping matters."""
    rng = np.random.default_rng(0)
    a, b = tmp_path / 'hr_a', tmp_path / 'hr_b'
    a.mkdir()
    b.mkdir()
    cv2.imwrite(str(a / 'colour.png'), _image(rng, 38, 51))
    cv2.imwrite(str(a / 'grey.png'), _image(rng, 45, 41, grey=True))
    cv2.imwrite(str(b / 'bitmap.bmp'), _image(rng, 36, 30))
    (b / 'notes.txt').write_text('not an image, ignored')
    return [str(a), str(b)]


def _read(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def _sources(hr_dirs):
    return {osp.splitext(osp.basename(p))[0]: cv2.imread(p, cv2.IMREAD_COLOR)
            for d in hr_dirs for p in glob.glob(osp.join(d, '*')) if not p.endswith('.txt')}


# ------------------------------------------------------------------------------------------------- down-scaling
def test_basicsr_mode_equals_basicsr_imresize_of_modcrop():
    img = _image(np.random.default_rng(1), 27, 34)
    for scale in (2, 3, 4):
        hr = modcrop(img, scale)
        expected = np.clip(np.floor(imresize(hr.astype(np.float32) / 255., 1 / scale) * 255. + 0.5), 0, 255)
        np.testing.assert_array_equal(bicubic_downscale(hr, scale, 'basicsr'), expected.astype(np.uint8))


def test_matlab_mode_reproduces_the_standard_set5_lr_files():
    hr_paths = sorted(glob.glob(osp.join(SHARED, 'benchmark', 'Set5', 'HR', '*.png')))
    if not hr_paths:
        pytest.skip(f'no Set5 in {SHARED}/benchmark')
    for scale in (2, 3, 4):
        for path in hr_paths:
            lr_path = path.replace(f'{os.sep}HR{os.sep}', f'{os.sep}LR_bicubic{os.sep}X{scale}{os.sep}')
            expected = cv2.imread(lr_path.replace('.png', f'x{scale}.png'), cv2.IMREAD_COLOR)
            got = bicubic_downscale(modcrop(cv2.imread(path, cv2.IMREAD_COLOR), scale), scale)
            np.testing.assert_array_equal(got, expected, err_msg=f'{path} x{scale}')


def test_matlab_mode_is_close_to_basicsr_imresize():
    hr = modcrop(_image(np.random.default_rng(2), 40, 40), 2)
    diff = bicubic_downscale(hr, 2, 'matlab').astype(int) - bicubic_downscale(hr, 2, 'basicsr')
    assert np.abs(diff).max() <= 2


# --------------------------------------------------------------------------------------------------- sub-images
def test_tile_positions_follow_extract_subimages():
    assert pd.tile_positions(100, 40, 20) == [0, 20, 40, 60]  # the last crop ends at the border
    assert pd.tile_positions(110, 40, 20) == [0, 20, 40, 60, 70]  # 10 px left over > thresh 0: one more
    assert pd.tile_positions(110, 40, 20, thresh_size=10) == [0, 20, 40, 60]
    assert pd.tile_positions(30, 40, 20) == [0]  # shorter than the crop: kept whole
    assert pd.tiles(60, 30, 24, 12) == [(top, left, 24, 24) for top in (0, 12, 24, 36) for left in (0, 6)]


def test_whole_images_lr_equals_imresize_of_modcrop(hr_dirs, tmp_path):
    out = prepare(hr_dirs, tmp_path / 'out', 'Tiny', scales=[2, 3], resize='basicsr')
    assert out.hr == str(tmp_path / 'out' / 'Tiny_train_HR')
    assert out.lr == {s: str(tmp_path / 'out' / 'Tiny_train_LR_bicubic' / f'X{s}') for s in (2, 3)}
    assert out.num_images == out.num_files == 3 and out.hr_lmdb is None and out.lr_lmdb == {}
    for stem, src in _sources(hr_dirs).items():
        hr = _read(osp.join(out.hr, f'{stem}.png'))
        np.testing.assert_array_equal(hr, modcrop(src, 6))  # one HR folder for all scales: lcm(2, 3)
        for s in (2, 3):
            expected = np.clip(np.floor(imresize(modcrop(src, 6).astype(np.float32) / 255., 1 / s) * 255 + .5), 0, 255)
            np.testing.assert_array_equal(_read(osp.join(out.lr[s], f'{stem}.png')), expected.astype(np.uint8))


def test_single_scale_modcrops_to_that_scale(hr_dirs, tmp_path):
    out = prepare(hr_dirs, tmp_path / 'out', 'Tiny', scales=[3])
    for stem, src in _sources(hr_dirs).items():
        hr = _read(osp.join(out.hr, f'{stem}.png'))
        np.testing.assert_array_equal(hr, modcrop(src, 3))
        np.testing.assert_array_equal(_read(osp.join(out.lr[3], f'{stem}.png')), bicubic_downscale(hr, 3))


def test_grey_input_becomes_three_channels(hr_dirs, tmp_path):
    out = prepare(hr_dirs, tmp_path / 'out', 'Tiny', scales=[2])
    for folder in (out.hr, out.lr[2]):
        img = _read(osp.join(folder, 'grey.png'))
        assert img.ndim == 3 and img.shape[2] == 3
        assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_sub_images_counts_positions_and_lr_twins(hr_dirs, tmp_path):
    out = prepare(hr_dirs, tmp_path / 'out', 'Tiny', scales=[2, 3], crop_size=18, step=12)
    assert out.hr.endswith('Tiny_train_HR_sub') and out.lr[3].endswith(osp.join('Tiny_train_LR_bicubic', 'X3_sub'))
    total = 0
    for stem, src in _sources(hr_dirs).items():
        hr = modcrop(src, 6)
        lr_full = {s: bicubic_downscale(hr, s) for s in (2, 3)}
        boxes = pd.tiles(hr.shape[0], hr.shape[1], 18, 12)
        total += len(boxes)
        assert not osp.exists(osp.join(out.hr, f'{stem}_s{len(boxes) + 1:03d}.png'))
        for i, (top, left, h, w) in enumerate(boxes, 1):
            name = f'{stem}_s{i:03d}.png'
            np.testing.assert_array_equal(_read(osp.join(out.hr, name)), hr[top:top + h, left:left + w])
            for s in (2, 3):  # LR sub-images are cut from the LR of the whole image, at the same place
                np.testing.assert_array_equal(
                    _read(osp.join(out.lr[s], name)), lr_full[s][top // s:(top + h) // s, left // s:(left + w) // s])
    # after mod-crop: colour 36x48 -> 3x4 crops (one flush with each border); grey 42x36 -> 3x3; bitmap 36x30 -> 3x2
    assert total == out.num_files == 12 + 9 + 6
    for folder in (out.hr, *out.lr.values()):
        assert len([f for f in os.listdir(folder) if f.endswith('.png')]) == total


def test_lmdb_is_read_by_basicsr_paired_dataset(hr_dirs, tmp_path):
    out = prepare(hr_dirs, tmp_path / 'out', 'Tiny', scales=[2], crop_size=16, step=8, lmdb=True)
    assert out.hr_lmdb == str(tmp_path / 'out' / 'Tiny_train_HR_sub.lmdb')
    assert out.lr_lmdb == {2: str(tmp_path / 'out' / 'Tiny_train_LR_bicubic_X2_sub.lmdb')}
    for db in (out.hr_lmdb, out.lr_lmdb[2]):
        assert {'data.mdb', 'meta_info.txt'} <= set(os.listdir(db))
    datasets = {}
    for lmdb in (False, True):
        opt = dict(out.dataset_opt(2, lmdb=lmdb), phase='val', scale=2, name='tiny')
        datasets[lmdb] = PairedImageDataset(opt)
        assert len(datasets[lmdb]) == out.num_files
    from_lmdb = datasets[True][3]
    assert from_lmdb['gt'].shape == (3, 16, 16) and from_lmdb['lq'].shape == (3, 8, 8)
    # the disk dataset lists files in directory order; find the same key there
    disk_index = [osp.basename(p['gt_path']) for p in datasets[False].paths].index(f"{from_lmdb['gt_path']}.png")
    from_disk = datasets[False][disk_index]
    for key in ('gt', 'lq'):
        assert (from_lmdb[key] == from_disk[key]).all()
    # the same LMDB as a train set (random 8x8 GT patch; one process may open an LMDB only once)
    datasets[True].opt.update(phase='train', gt_size=8, use_hflip=True, use_rot=True)
    assert datasets[True][0]['gt'].shape == (3, 8, 8)


def test_workers_give_the_same_files(hr_dirs, tmp_path):
    import torch
    torch.ones(64, 64) @ torch.ones(64, 64)  # torch's thread pool has run: worker processes must still not hang
    one = prepare(hr_dirs, tmp_path / 'one', 'Tiny', scales=[2], crop_size=16, step=8)
    two = prepare(hr_dirs, tmp_path / 'two', 'Tiny', scales=[2], crop_size=16, step=8, workers=2, lmdb=True)
    assert osp.isfile(osp.join(two.lr_lmdb[2], 'data.mdb'))
    for a, b in ((one.hr, two.hr), (one.lr[2], two.lr[2])):
        names = sorted(os.listdir(a))
        assert names == sorted(os.listdir(b))
        for name in names:
            if name.endswith('.png'):
                np.testing.assert_array_equal(_read(osp.join(a, name)), _read(osp.join(b, name)))


def test_real_t91_images(tmp_path):
    sources = sorted(glob.glob(osp.join(SHARED, 'train', 'T91', '*.bmp')))[:3]
    if len(sources) < 3:
        pytest.skip(f'no T91 in {SHARED}/train')
    hr_dir = tmp_path / 'T91_three'
    hr_dir.mkdir()
    for src in sources:
        os.symlink(osp.abspath(src), hr_dir / osp.basename(src))
    out = prepare(str(hr_dir), tmp_path / 'out', 'T91', scales=[2, 3, 4])
    for src in sources:
        stem = osp.splitext(osp.basename(src))[0]
        hr = modcrop(cv2.imread(src, cv2.IMREAD_COLOR), 12)
        np.testing.assert_array_equal(_read(osp.join(out.hr, f'{stem}.png')), hr)
        for s in (2, 3, 4):
            lr = _read(osp.join(out.lr[s], f'{stem}.png'))
            assert lr.shape == (hr.shape[0] // s, hr.shape[1] // s, 3)
            np.testing.assert_array_equal(lr, bicubic_downscale(hr, s))


# ------------------------------------------------------------------------------------ atomic, restartable outputs
def _output_folders(root):
    return sorted(p for p in glob.glob(osp.join(root, '**'), recursive=True) if osp.basename(p).startswith('Tiny_'))


@pytest.mark.parametrize('workers', [1, 2])
def test_failure_leaves_no_output_and_no_temp(hr_dirs, tmp_path, workers):
    with open(osp.join(hr_dirs[1], 'zz_broken.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n truncated')
    out_dir = tmp_path / 'out'
    with pytest.raises(ValueError, match=r"zz_broken.png: not a readable PNG image \(corrupt"):
        prepare(hr_dirs, out_dir, 'Tiny', scales=[2], lmdb=True, workers=workers)
    assert os.listdir(out_dir) == []


def test_dead_run_temp_folders_are_removed_and_not_trusted(hr_dirs, tmp_path):
    out_dir = tmp_path / 'out'
    stale = out_dir / f'{pd.TMP_PREFIX}999999999_abc' / 'img0'
    stale.mkdir(parents=True)
    (stale / 'half.png').write_bytes(b'half')
    prepare(hr_dirs, out_dir, 'Tiny', scales=[2])
    assert not any(name.startswith(pd.TMP_PREFIX) for name in os.listdir(out_dir))


def test_killed_during_lmdb_then_rerun_reuses_complete_folders(hr_dirs, tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / 'out'

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd, '_make_lmdb', killed)
    with pytest.raises(KeyboardInterrupt):
        prepare(hr_dirs, out_dir, 'Tiny', scales=[2], lmdb=True)
    monkeypatch.undo()
    assert sorted(os.listdir(out_dir)) == ['Tiny_train_HR', 'Tiny_train_LR_bicubic']  # complete folders only
    stamp = os.stat(osp.join(out_dir, 'Tiny_train_HR', 'colour.png')).st_mtime_ns
    capsys.readouterr()
    out = prepare(hr_dirs, out_dir, 'Tiny', scales=[2], lmdb=True)
    assert 'reusing' in capsys.readouterr().out
    assert os.stat(osp.join(out.hr, 'colour.png')).st_mtime_ns == stamp
    assert osp.isfile(osp.join(out.hr_lmdb, 'data.mdb')) and osp.isfile(osp.join(out.lr_lmdb[2], 'data.mdb'))


def test_changed_or_damaged_outputs_are_refused_unless_overwrite(hr_dirs, tmp_path):
    out_dir = tmp_path / 'out'
    out = prepare(hr_dirs, out_dir, 'Tiny', scales=[2])
    os.remove(osp.join(out.lr[2], 'grey.png'))
    with pytest.raises(PrepareDataError, match=r'X2.*holds 2 files.*--overwrite'):
        prepare(hr_dirs, out_dir, 'Tiny', scales=[2])
    prepare(hr_dirs, out_dir, 'Tiny', scales=[2], overwrite=True)
    assert osp.isfile(osp.join(out.lr[2], 'grey.png'))
    with pytest.raises(PrepareDataError, match=r'Tiny_train_HR.*mod 2 -> 4'):
        prepare(hr_dirs, out_dir, 'Tiny', scales=[4])  # same folders, other settings
    foreign = out_dir / 'Other_train_HR'
    foreign.mkdir()
    with pytest.raises(PrepareDataError, match='not made by prepare_data'):
        prepare(hr_dirs, out_dir, 'Other', scales=[2])


# ------------------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors(hr_dirs, tmp_path):
    out = tmp_path / 'out'
    with pytest.raises(PrepareDataError, match=r"'.*missing' does not exist; expected a folder of HR images"):
        prepare(str(tmp_path / 'missing'), out, 'X')
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'readme.txt').write_text('no images here')
    with pytest.raises(PrepareDataError, match=r"'.*empty' contains no images; expected files ending in .png"):
        prepare(str(empty), out, 'X')
    shutil.copy(osp.join(hr_dirs[0], 'colour.png'), osp.join(hr_dirs[1], 'colour.bmp'))
    with pytest.raises(PrepareDataError, match=r"colour.png' and '.*colour.bmp' would both be written as 'colour'"):
        prepare(hr_dirs, out, 'X')
    with pytest.raises(PrepareDataError, match=r'crop_size \(--crop-size\) must be a positive multiple of 6'):
        prepare(hr_dirs[0], out, 'X', scales=[2, 3], crop_size=20)
    with pytest.raises(PrepareDataError, match=r'scales must be integers >= 2'):
        prepare(hr_dirs[0], out, 'X', scales=[1])
    with pytest.raises(PrepareDataError, match=r'resize must be one of'):
        prepare(hr_dirs[0], out, 'X', resize='pil')
    same = tmp_path / 'same'
    shutil.copytree(hr_dirs[0], same / 'S_train_HR')
    with pytest.raises(PrepareDataError, match=r'is also an output folder'):
        prepare(str(same / 'S_train_HR'), same, 'S', scales=[2])


def test_cli(hr_dirs, tmp_path, capsys):
    assert cli.run('prepare_data', ['--hr', *hr_dirs, '--name', 'Tiny', '--out', str(tmp_path / 'o'), '--scales', '2', '--lmdb']) == 0
    assert 'Tiny_train_LR_bicubic_X2.lmdb' in capsys.readouterr().out
    assert cli.run('prepare_data', ['--hr', str(tmp_path / 'nowhere'), '--name', 'Tiny', '--out', str(tmp_path / 'o')]) == 2
    assert 'nowhere' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.run('prepare_data', ['--help'])
    assert exit_info.value.code == 0
    assert 'filename_tmpl' in capsys.readouterr().out
