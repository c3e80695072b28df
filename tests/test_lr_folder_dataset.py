"""LRFolderDataset (ghostsr_plugin.data.lr_folder_dataset), the training set without ground truth: built through
BasicSR's build_dataset it serves LR patches of any folder of images (as-is: a crop of the image itself; downscale: a
crop down-scaled with the project's MATLAB bicubic, exactly), flipped / rotated as BasicSR's augment does; images
too small for a patch are left out, and bad folders or options are one error naming them. GhostSRModel then trains
with the teacher as its only target (no pixel_opt), through `ghostsr train`, and the up-front checks refuse the
combinations that cannot work before any folder is made."""
import os
import re

import cv2
import numpy as np
import pytest
import torch
import yaml

from basicsr.data import build_dataset
from basicsr.utils import img2tensor
from conftest import SCALE, python, run, train_options, write_options
from ghostsr_plugin.data.bicubic import bicubic_downscale

TINY_NET = {'type': 'GhostEDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': SCALE}


def _folder(tmp_path, sizes, name='photos'):
    """A folder of random images of the given (height, width) sizes, named img0.png, img1.png, ..."""
    folder = tmp_path / name
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (height, width) in enumerate(sizes):
        cv2.imwrite(str(folder / f'img{i}.png'), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return folder


def _dataset(root, **opt):
    return build_dataset({'name': 'photos', 'type': 'LRFolderDataset', 'phase': 'train', 'scale': SCALE,
                          'dataroot_lq': str(root), 'io_backend': {'type': 'disk'}, **opt})


def _as_tensor(img):
    return img2tensor(img.astype(np.float32) / 255., bgr2rgb=True, float32=True)


def test_as_is_serves_the_image_itself(tmp_path):
    """An image of exactly one patch, no augmentation: the item is that image (RGB, [0, 1])."""
    folder = _folder(tmp_path, [(12, 12)])
    item = _dataset(folder, lq_size=12, use_hflip=False, use_rot=False)[0]
    assert set(item) == {'lq', 'lq_path'} and item['lq_path'] == str(folder / 'img0.png')
    assert torch.equal(item['lq'], _as_tensor(cv2.imread(str(folder / 'img0.png'))))


def test_downscale_is_the_matlab_bicubic_of_the_crop(tmp_path):
    """inputs: downscale crops lq_size x scale pixels and down-scales them with MATLAB bicubic, bit for bit."""
    folder = _folder(tmp_path, [(12 * SCALE, 12 * SCALE)])
    item = _dataset(folder, lq_size=12, inputs='downscale', use_hflip=False, use_rot=False)[0]
    expected = bicubic_downscale(cv2.imread(str(folder / 'img0.png')), SCALE)
    assert item['lq'].shape == (3, 12, 12) and torch.equal(item['lq'], _as_tensor(expected))


def test_input_scales_resize_a_larger_crop_with_matlab_bicubic(tmp_path):
    """input_scales [0.5]: an image of exactly one 24x24 region gives the 12x12 patch BasicSR's MATLAB imresize makes
    of it (one rounding to 8 bits); with [1, 0.5] a 12x12 image, too small for the 0.5 region, is still served at 1,
    as itself; an image too small for the largest factor is left out, named with the size it needs."""
    from basicsr.utils.matlab_functions import imresize
    folder = _folder(tmp_path, [(24, 24)])
    item = _dataset(folder, lq_size=12, input_scales=[0.5], use_hflip=False, use_rot=False)[0]
    image = cv2.imread(str(folder / 'img0.png')).astype(np.float32) / 255.
    expected = np.clip(np.round(imresize(image, 0.5) * 255.), 0, 255).astype(np.uint8)
    assert item['lq'].shape == (3, 12, 12) and torch.equal(item['lq'], _as_tensor(expected))
    flipped = _dataset(folder, lq_size=12, input_scales=[0.5], use_hflip=True, use_rot=True)  # BasicSR's in-place
    assert all(flipped[0]['lq'].shape == (3, 12, 12) for _ in range(8))                       # flips take it
    small = _folder(tmp_path, [(12, 12)], name='small')
    dataset = _dataset(small, lq_size=12, input_scales=[1, 0.5], use_hflip=False, use_rot=False)
    assert all(torch.equal(dataset[0]['lq'], _as_tensor(cv2.imread(str(small / 'img0.png')))) for _ in range(5))
    with pytest.raises(ValueError, match=r'a patch of 24x24 pixels \(lq_size 12, inputs: as-is, cut at 1/0.5 of that '
                                         r'before resizing: input_scales\)'):
        _dataset(small, lq_size=12, input_scales=[0.5])


def test_random_patches_stay_inside_and_augment(tmp_path):
    """Larger images give lq_size patches that are pieces of the image (a flip or rotation of one)."""
    folder = _folder(tmp_path, [(40, 31), (17, 50)])
    dataset = _dataset(folder, lq_size=8)
    assert len(dataset) == 2
    for index in range(2):
        img = _as_tensor(cv2.imread(dataset.paths[index]))
        for _ in range(5):
            patch = dataset[index]['lq']
            assert patch.shape == (3, 8, 8)
            variants = [patch, patch.flip(-1), patch.flip(-2), patch.transpose(-1, -2), patch.flip(-1).flip(-2),
                        patch.transpose(-1, -2).flip(-1), patch.transpose(-1, -2).flip(-2),
                        patch.transpose(-1, -2).flip(-1).flip(-2)]
            windows = img.unfold(1, 8, 1).unfold(2, 8, 1)  # [3, H-7, W-7, 8, 8]
            assert any(((windows - v[:, None, None]).abs().amax(dim=(0, 3, 4)) == 0).any() for v in variants)


def test_small_images_are_left_out_and_named(tmp_path):
    """Images smaller than a patch (here 24x24: lq_size 12 x scale 2, downscale) are not served."""
    folder = _folder(tmp_path, [(30, 30), (10, 40), (25, 25)])
    dataset = _dataset(folder, lq_size=12, inputs='downscale')  # needs 24x24
    assert [os.path.basename(p) for p in dataset.paths] == ['img0.png', 'img2.png']


@pytest.mark.parametrize('case,message', [
    ('too small', 'dataroot_lq: no image is large enough for a patch of 96x96 pixels (lq_size 48 x scale 2, '
                  'inputs: downscale)'),
    ('no images', 'holds no image'),
    ('missing', 'is not a folder'),
    ('inputs', "inputs: 'bicubic' is not an input mode; allowed: as-is, downscale"),
    ('lq_size', 'lq_size: must be a positive integer (the LR patch side), got 0'),
    ('input_scales', 'input_scales: [1, 2]; allowed a list of resize factors in (0, 1], e.g. [1, 0.5]'),
])
def test_bad_folders_and_options_are_named(case, message, tmp_path):
    """A folder with no image large enough, without images, missing, or a bad option: one error naming it."""
    folder = _folder(tmp_path, [(40, 40)])
    opt = {'inputs': 'downscale'} if case == 'too small' else {}
    if case == 'no images':
        (folder / 'img0.png').rename(folder / 'notes.txt')
    if case == 'missing':
        folder = tmp_path / 'nowhere'
    if case == 'inputs':
        opt = {'inputs': 'bicubic'}
    if case == 'lq_size':
        opt = {'lq_size': 0}
    if case == 'input_scales':
        opt = {'input_scales': [1, 2]}
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        _dataset(folder, **opt)
    assert message in str(err.value)


def _teacher_only_options(tmp_path, tiny_data, photos, **changes):
    """A GhostSRModel run whose training set is LRFolderDataset and whose only target is the plain twin's output."""
    from basicsr.archs import build_network
    teacher = tmp_path / 'edsr.pth'
    if not teacher.exists():
        plain = {k: v for k, v in TINY_NET.items() if k != 'type'}
        torch.save({'params': build_network({'type': 'EDSR', **plain}).state_dict()}, teacher)
    opt = train_options('teacher_only', TINY_NET, tiny_data, total_iter=3)
    opt['datasets']['train'] = {'name': 'photos', 'type': 'LRFolderDataset', 'dataroot_lq': str(photos),
                                'inputs': 'as-is', 'lq_size': 8, 'use_hflip': True, 'use_rot': True,
                                'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1,
                                'prefetch_mode': None, 'io_backend': {'type': 'disk'}}
    opt['distill'] = {'loss_weight': 1.0, 'teacher_path': str(teacher)}
    del opt['train']['pixel_opt']
    for key, value in changes.items():
        section, _, name = key.partition('.')
        if value is None:
            opt[section].pop(name, None) if name else opt.pop(section, None)
        elif name:
            opt[section][name] = value
        else:
            opt[section] = value
    return write_options(opt, tmp_path)


def test_teacher_only_training_runs_without_ground_truth(tiny_data, tmp_path):
    """`ghostsr train` with LRFolderDataset and no pixel_opt: the only loss is l_distill, the run reaches total_iter,
    validates on the paired set and writes its checkpoint."""
    photos = _folder(tmp_path, [(20, 20), (16, 24), (7, 7)])  # the 7x7 one cannot hold an 8x8 patch
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', _teacher_only_options(tmp_path, tiny_data, photos)],
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'the only loss is l_distill' in log and 'l_distill:' in log and 'l_pix' not in log
    assert 'iter:       3' in log and '# psnr:' in log and 'left out: img2.png' in log
    assert (tmp_path / 'experiments' / 'teacher_only' / 'models' / 'net_g_latest.pth').is_file()


@pytest.mark.parametrize('change,message', [
    ({'train.pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
     'train.pixel_opt: needs ground truth, which datasets.train (LRFolderDataset) does not have'),
    ({'distill': None}, 'datasets.train: LRFolderDataset has no ground truth; it needs model_type: GhostSRModel with '
                        'a distill: teacher'),
    ({}, 'datasets.train.dataroot_lq: no image is large enough for a patch of 64x64 pixels'),
])
def test_impossible_runs_are_refused_before_any_folder(change, message, tiny_data, tmp_path):
    """A ground-truth loss on LRFolderDataset, LRFolderDataset without a teacher, images smaller than a patch: one
    line, exit 2, before BasicSR makes experiments/."""
    photos = _folder(tmp_path, [(20, 20)])
    opt_path = _teacher_only_options(tmp_path, tiny_data, photos, **change)
    if not change:  # lq_size larger than every image
        text = open(opt_path).read().replace('lq_size: 8', 'lq_size: 64')
        open(opt_path, 'w').write(text)
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', opt_path], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith('ghostsr train: error: ') and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / 'experiments').exists()


def test_validation_items_are_whole_images(tmp_path):
    """In a val phase an item is the whole image (as-is), or its mod-cropped MATLAB down-scale (downscale)."""
    folder = _folder(tmp_path, [(11, 13)])
    img = cv2.imread(str(folder / 'img0.png'))
    as_is = _dataset(folder, phase='val')[0]['lq']
    down = _dataset(folder, phase='val', inputs='downscale')[0]['lq']
    assert torch.equal(as_is, _as_tensor(img))
    assert torch.equal(down, _as_tensor(bicubic_downscale(np.ascontiguousarray(img[:10, :12]), SCALE)))


def test_fidelity_validation_measures_against_the_teacher(tiny_data, tmp_path):
    """A val set of LRFolderDataset under GhostSRModel with a teacher: the logged PSNR is that of the Ghost network's
    output against the teacher's (recomputed here from the saved checkpoint and the teacher, to 4 decimals)."""
    from basicsr.archs import build_network
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img
    photos = _folder(tmp_path, [(20, 20), (16, 24)])
    held_out = _folder(tmp_path, [(10, 12), (9, 9)], name='held_out')
    with open(_teacher_only_options(tmp_path, tiny_data, photos)) as file:
        opt = yaml.safe_load(file)
    opt['datasets']['val'] = {'name': 'held_out', 'type': 'LRFolderDataset', 'dataroot_lq': str(held_out),
                              'inputs': 'as-is', 'io_backend': {'type': 'disk'}}
    opt['val']['metrics'] = {'fidelity': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}
    opt_path = write_options(opt, tmp_path)
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', opt_path], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = float(re.findall(r'# fidelity: ([0-9.]+)', proc.stdout + proc.stderr)[-1])
    ghost = build_network(dict(TINY_NET)).eval()
    ghost.load_state_dict(torch.load(tmp_path / 'experiments' / 'teacher_only' / 'models' / 'net_g_latest.pth',
                                     weights_only=True)['params'])
    teacher = build_network({'type': 'EDSR', **{k: v for k, v in TINY_NET.items() if k != 'type'}}).eval()
    teacher.load_state_dict(torch.load(tmp_path / 'edsr.pth', weights_only=True)['params'])
    psnrs = []
    with torch.no_grad():
        for name in ('img0.png', 'img1.png'):
            lq = _as_tensor(cv2.imread(str(held_out / name)))[None]
            psnrs.append(calculate_psnr(tensor2img(ghost(lq)), tensor2img(teacher(lq)), crop_border=0))
    assert abs(np.mean(psnrs) - logged) < 1e-3, (psnrs, logged)
    assert 20 < logged < 100  # a real comparison, not the identity


def test_fidelity_validation_needs_a_teacher(tiny_data, tmp_path):
    """Validating on LRFolderDataset without a distill: teacher (nothing to compare with) is refused up front."""
    photos = _folder(tmp_path, [(20, 20)])
    opt = train_options('no_teacher', TINY_NET, tiny_data, total_iter=2)
    opt['datasets']['val'] = {'name': 'held_out', 'type': 'LRFolderDataset', 'dataroot_lq': str(photos),
                              'io_backend': {'type': 'disk'}}
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', write_options(opt, tmp_path)], cwd=tmp_path)
    assert proc.returncode == 2 and 'datasets.val: LRFolderDataset has no ground truth; validating on it needs' in \
        proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / 'experiments').exists()


def test_image_list_keeps_only_the_listed_images(tmp_path):
    """image_list (a file, one path a line; from Python also a list) serves exactly those images, from any
    folders when dataroot_lq is left out; a listed path outside dataroot_lq, a missing file or an empty list is one
    error naming it."""
    folder = _folder(tmp_path, [(16, 16)] * 3)
    listed = [str(folder / 'img2.png'), str(folder / 'img0.png')]
    (tmp_path / 'list.txt').write_text('\n'.join(listed) + '\n')
    dataset = build_dataset({'name': 'x', 'type': 'LRFolderDataset', 'phase': 'train', 'scale': SCALE, 'lq_size': 8,
                             'image_list': str(tmp_path / 'list.txt'), 'io_backend': {'type': 'disk'}})
    assert dataset.paths == listed
    assert _dataset(folder, lq_size=8, image_list=listed[:1]).paths == listed[:1]
    other = _folder(tmp_path, [(16, 16)], name='other')
    with pytest.raises(ValueError, match='img0.png, which is not directly inside dataroot_lq'):
        _dataset(folder, lq_size=8, image_list=[str(other / 'img0.png')])
    with pytest.raises(ValueError, match='missing.png, which is not an image file'):
        _dataset(folder, lq_size=8, image_list=[str(folder / 'missing.png')])
    (tmp_path / 'empty.txt').write_text('\n')
    with pytest.raises(ValueError, match='names no image'):
        _dataset(folder, lq_size=8, image_list=str(tmp_path / 'empty.txt'))


def test_val_crop_serves_the_centre_of_each_image(tmp_path):
    """In a validation phase val_crop serves the centre val_crop x val_crop LR pixels (after the down-scaling of
    inputs: downscale), the whole side where the image is smaller."""
    folder = _folder(tmp_path, [(20, 30)])
    image = _as_tensor(cv2.imread(str(folder / 'img0.png')))
    item = _dataset(folder, phase='val', val_crop=10)[0]
    assert torch.equal(item['lq'], image[:, 5:15, 10:20])
    assert _dataset(folder, phase='val', val_crop=25)[0]['lq'].shape == (3, 20, 25)
    with pytest.raises(ValueError, match='val_crop: must be a positive integer'):
        _dataset(folder, phase='val', val_crop=0)


def test_downscale_patches_flip_and_rotate(tmp_path):
    """inputs: downscale with flips and rotations on: every patch is the MATLAB bicubic of a crop, flipped or rotated
    (BasicSR's augment flips in place, which needs a contiguous array)."""
    folder = _folder(tmp_path, [(8 * SCALE, 8 * SCALE)])
    small = _as_tensor(bicubic_downscale(cv2.imread(str(folder / 'img0.png')), SCALE))
    variants = [torch.rot90(t, k, (1, 2)) for t in (small, small.flip(2)) for k in range(4)]
    dataset = _dataset(folder, lq_size=8, inputs='downscale', use_hflip=True, use_rot=True)
    for _ in range(8):
        lq = dataset[0]['lq']
        assert any(torch.equal(lq, v) for v in variants), [float((lq - v).abs().max()) for v in variants]
