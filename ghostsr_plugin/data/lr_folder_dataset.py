"""LR patches from any folder of images, with no ground truth: the training set of a fine-tune whose only target is
the original network's output (GhostSRModel's ``distill:`` teacher), so that the images a user actually upscales are
all the data needed.

    datasets:
      train:
        name: my_photos
        type: LRFolderDataset
        dataroot_lq: photos/   # images directly inside (not sub-folders); a list of folders from Python
                               # (BasicSR's option parser takes one path)
        inputs: as-is          # as-is: each image is an input of the network (real-world models, e.g. Real-ESRGAN);
                               # downscale: each patch is first down-scaled by the scale with MATLAB bicubic
                               # (bicubic-trained models, e.g. EDSR, CARN)
        lq_size: 48            # side of the LR patch fed to the network
        input_scales: [1, 0.5] # optional: each patch is cut from the image resized by one of these factors (drawn per
                               # patch; MATLAB bicubic), so every image also serves at other sizes (default [1])
        use_hflip: true
        use_rot: true
        batch_size_per_gpu: 16
        num_worker_per_gpu: 2
        dataset_enlarge_ratio: 1
        io_backend: {type: disk}
        image_list: train.txt  # optional: only the images this file names (one path a line; any folders when
                               # dataroot_lq is left out), e.g. the training share of a held-out split
        val_crop: 128          # optional, validation: the centre val_crop x val_crop LR pixels of each image

Every item is ``{'lq': [3, lq_size, lq_size] RGB float tensor in [0, 1], 'lq_path': path}``: a random crop of one image
(of ``lq_size * scale`` pixels for ``downscale``, then down-scaled), flipped / rotated as BasicSR's ``augment`` does.
With ``input_scales`` the crop is first taken at ``1 / s`` times that side, for a factor ``s`` drawn per patch among
those the image is large enough for, and resized by ``s`` with BasicSR's MATLAB bicubic ``imresize``. In a
validation phase (``val``, ``val_<n>``) an item is a whole image (for ``downscale``: mod-cropped to the scale and
down-scaled; the centre ``val_crop`` LR pixels when set), not augmented; GhostSRModel then measures its metrics
against the ``distill:`` teacher's output, i.e. the fidelity of the Ghost network to the original (e.g.
``calculate_psnr`` with ``crop_border: 0``, ``test_y_channel: false`` for RGB fidelity). Images are read as BasicSR
reads them (8-bit BGR; grey, RGBA and 16-bit images converted).
Image sizes are read from the headers when the set is built: images smaller than a patch (at the largest of
``input_scales``) are left out and named once; a folder without an image large enough is an error naming it and the
size needed.
"""
import logging
import os
import random

import numpy as np
from torch.utils import data

from basicsr.data.transforms import augment
from basicsr.utils import img2tensor
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY
from ghostsr_plugin.data.bicubic import bicubic_downscale, modcrop
from ghostsr_plugin.utils.errors import UserInputError
from ghostsr_plugin.utils.images import IMAGE_EXTENSIONS, image_size, is_image_name, read_image

__all__ = ['INPUT_MODES', 'LRFolderDataset', 'check_input_scales', 'list_folder_images']

INPUT_MODES = ('as-is', 'downscale')


def list_folder_images(folders, option='dataroot_lq'):
    """The visible image files directly inside each of ``folders`` (a path or a list), sorted; an error names a
    missing folder or one without images."""
    folders = [folders] if isinstance(folders, str) else list(folders or [])
    if not folders:
        raise UserInputError(f'{option}: required, a folder of images or a list of folders')
    paths = []
    for folder in folders:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'{option}: {folder} is not a folder (allowed: folders of images '
                                    f'{", ".join(IMAGE_EXTENSIONS)})')
        found = [os.path.join(folder, name) for name in sorted(os.listdir(folder))
                 if not name.startswith('.') and is_image_name(name) and os.path.isfile(os.path.join(folder, name))]
        if not found:
            raise UserInputError(f'{option}: {folder} holds no image ({", ".join(IMAGE_EXTENSIONS)}; sub-folders are '
                                 'not searched)')
        paths += found
    return paths


def _listed(list_file, folder_paths=None):
    """The images named in ``list_file`` (one path a line; from Python also a list of paths); with ``folder_paths``
    (the dataroot_lq images) each must be one of them. A listed file that is missing or not an image is an error
    naming it."""
    if isinstance(list_file, (list, tuple)):
        listed, list_file = list(list_file), 'the list'
    else:
        try:
            with open(list_file, encoding='utf-8') as file:
                listed = [line.strip() for line in file if line.strip()]
        except OSError as err:
            raise UserInputError(f'image_list: cannot read {list_file} ({err.strerror})') from None
    if not listed:
        raise UserInputError(f'image_list: {list_file} names no image')
    known = None if folder_paths is None else {os.path.abspath(p) for p in folder_paths}
    for path in listed:
        if not (is_image_name(path) and os.path.isfile(path)):
            raise UserInputError(f'image_list: {list_file} names {path}, which is not an image file (allowed: '
                                 f'{", ".join(IMAGE_EXTENSIONS)})')
        if known is not None and os.path.abspath(path) not in known:
            raise UserInputError(f'image_list: {list_file} names {path}, which is not directly inside dataroot_lq')
    return listed


def check_input_scales(scales):
    """``input_scales`` checked: a non-empty list of numbers in (0, 1]."""
    if isinstance(scales, (int, float)) and not isinstance(scales, bool):
        scales = [scales]
    if (not isinstance(scales, (list, tuple)) or not scales
            or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 < s <= 1 for s in scales)):
        raise UserInputError(f'input_scales: {scales!r}; allowed a list of resize factors in (0, 1], e.g. [1, 0.5]')
    return sorted({float(s) for s in scales}, reverse=True)


def centre_crop(img, size):
    """The centre ``size`` x ``size`` pixels of an H x W (x C) image (the whole side where it is smaller)."""
    top, left = max(img.shape[0] - size, 0) // 2, max(img.shape[1] - size, 0) // 2
    return img[top:top + size, left:left + size]


@DATASET_REGISTRY.register()
class LRFolderDataset(data.Dataset):
    """LR patches from folders of images, no ground truth (see the module docstring for the options)."""

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.inputs = opt.get('inputs', 'as-is')
        if self.inputs not in INPUT_MODES:
            raise UserInputError(f'inputs: {self.inputs!r} is not an input mode; allowed: {", ".join(INPUT_MODES)}')
        self.scale = opt.get('scale')
        if isinstance(self.scale, bool) or not isinstance(self.scale, int) or self.scale < 1:
            raise UserInputError(f'scale: must be a positive integer (the network\'s upscale factor), got '
                                 f'{self.scale!r}')
        self.lq_size = opt.get('lq_size', 48)
        if isinstance(self.lq_size, bool) or not isinstance(self.lq_size, int) or self.lq_size < 1:
            raise UserInputError(f'lq_size: must be a positive integer (the LR patch side), got {self.lq_size!r}')
        backend = (opt.get('io_backend') or {}).get('type', 'disk')
        if backend != 'disk':
            raise UserInputError(f'io_backend: {backend!r} is not supported by LRFolderDataset; allowed: disk')
        self.train = opt.get('phase', 'train') == 'train'
        self.crop = (self.lq_size if self.train else 1) * (self.scale if self.inputs == 'downscale' else 1)
        self.input_scales = check_input_scales(opt.get('input_scales', [1]))
        if self.train:  # the crop side before resizing, per factor (the factor 1 crops the patch itself)
            self.regions = {s: max(self.crop, round(self.crop / s)) for s in self.input_scales}
        self.val_crop = opt.get('val_crop')
        if self.val_crop is not None and (isinstance(self.val_crop, bool) or not isinstance(self.val_crop, int)
                                          or self.val_crop < 1):
            raise UserInputError(f'val_crop: must be a positive integer (LR pixels), got {self.val_crop!r}')
        if opt.get('image_list'):
            folder_paths = list_folder_images(opt['dataroot_lq']) if opt.get('dataroot_lq') else None
            paths = _listed(opt['image_list'], folder_paths)
        else:
            paths = list_folder_images(opt.get('dataroot_lq'))
        self.paths = self._large_enough(paths)

    def _large_enough(self, paths):
        """The images a ``crop`` x ``crop`` patch fits in (sizes from the headers; with ``input_scales``, at the
        largest factor); the others named once."""
        side = self.regions[self.input_scales[0]] if self.train else self.crop
        kept, small = [], []
        for path in paths:
            height, width = image_size(path)
            (kept if min(height, width) >= side else small).append(path)
        patch = f'lq_size {self.lq_size}' if self.train else 'whole images'
        need = f'{side}x{side} pixels ({patch}' + \
            (f' x scale {self.scale}, inputs: downscale' if self.inputs == 'downscale' else ', inputs: as-is')
        cut = f', cut at 1/{self.input_scales[0]:g} of that before resizing: input_scales' if side != self.crop else ''
        need += cut + ')'
        if not kept:
            raise UserInputError(f'dataroot_lq: no image is large enough for a patch of {need}; allowed: images of at '
                                 'least that size, or a smaller lq_size')
        if small:
            names = ', '.join(os.path.basename(p) for p in small[:5]) + (' ...' if len(small) > 5 else '')
            # BasicSR's logger, not get_root_logger(): the up-front checks build this set before BasicSR has set
            # its logger up (with its log file), and get_root_logger() would set it up without the file
            logging.getLogger('basicsr').warning(f'LRFolderDataset: {len(small)} of {len(paths)} images are smaller '
                                                 f'than a patch of {need} and are left out: {names}')
        return kept

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        path = self.paths[index]
        img = read_image(path, bgr8=True)
        if not self.train:  # validation: the whole image (down-scaled after BasicSR's mod-crop), no augmentation
            if self.inputs == 'downscale':
                img = bicubic_downscale(np.ascontiguousarray(modcrop(img, self.scale)), self.scale)
            if self.val_crop:
                img = centre_crop(img, self.val_crop)
            return {'lq': img2tensor(img.astype(np.float32) / 255., bgr2rgb=True, float32=True), 'lq_path': path}
        factor = random.choice([s for s in self.input_scales if self.regions[s] <= min(img.shape[:2])])
        region = self.regions[factor]
        top = random.randint(0, img.shape[0] - region)
        left = random.randint(0, img.shape[1] - region)
        patch = img[top:top + region, left:left + region]
        if region != self.crop:  # down-sized by the factor (float MATLAB bicubic, one rounding to 8 bits)
            resized = imresize(patch.astype(np.float32) / 255., self.crop / region)[:self.crop, :self.crop]
            patch = np.ascontiguousarray(np.clip(np.round(resized * 255.), 0, 255).astype(np.uint8))
        if self.inputs == 'downscale':  # contiguous again: BasicSR's augment flips in place with OpenCV
            patch = np.ascontiguousarray(bicubic_downscale(np.ascontiguousarray(patch), self.scale))
        patch = augment(patch, self.opt.get('use_hflip', True), self.opt.get('use_rot', True))
        lq = img2tensor(patch.astype(np.float32) / 255., bgr2rgb=True, float32=True)
        return {'lq': lq, 'lq_path': path}
