"""Prepare BasicSR training data from folders of HR images: sub-images, MATLAB-bicubic LR images, LMDBs.

BasicSR's own data-preparation scripts are not in its wheel; this is their counterpart for this plugin::

    ghostsr prepare_data --hr datasets/DIV2K/DIV2K_train_HR --name DIV2K --out datasets/DIV2K \\
        --scales 2 3 4 --crop-size 480 --step 240 --lmdb --workers 4
    ghostsr prepare_data --hr ../shared/data/train/T91 ../shared/data/train/BSD200 \\
        --name T291 --scales 2

Steps, per HR image (grey images are read as 3-channel BGR, any format OpenCV reads: PNG, BMP, JPEG, TIFF, ...):

1. mod-crop to ``lcm(scales)`` (bottom/right), so that ONE HR folder pairs exactly with the LR folder of every scale
   (BasicSR's ``paired_random_crop`` requires GT size == LR size x scale). With a single scale this is the usual
   ``modcrop(HR, scale)``; DIV2K images are multiples of 12 already, so nothing is cut from them.
2. LR = MATLAB bicubic ``imresize(HR, 1/scale)`` of the whole mod-cropped image, bit-exact with MATLAB on uint8
   images by default (it reproduces the standard benchmark LR files), or BasicSR's float ``imresize`` (see
   :func:`bicubic_downscale`).
3. optionally, sub-images as BasicSR's ``extract_subimages`` makes them (``crop_size``/``step``/``thresh_size``, e.g.
   480/240/0 for DIV2K): HR tiles of the mod-cropped image, LR tiles cut from the LR image at the same place
   (``/ scale``), both named ``<stem>_s001.png``, ``<stem>_s002.png``, ... (row-major). A side shorter than
   ``crop_size`` is kept whole (BasicSR's script fails on such images).
4. optionally, LMDBs of every folder with ``basicsr.utils.lmdb_util.make_lmdb_from_imgs`` (keys = file stems,
   ``meta_info.txt`` inside).

Output layout (BasicSR's DIV2K layout; ``_sub`` only with sub-images, ``split`` is ``train`` by default)::

    <out>/<name>_<split>_HR[_sub]/<stem>[_sNNN].png
    <out>/<name>_<split>_LR_bicubic/X<s>[_sub]/<stem>[_sNNN].png      (same file names: filename_tmpl '{}')
    <out>/<name>_<split>_HR[_sub].lmdb
    <out>/<name>_<split>_LR_bicubic_X<s>[_sub].lmdb

Output file stems are the source stems with characters other than ``A-Z a-z 0-9 _ -`` replaced by ``_`` (LMDB keys
must be ASCII and BasicSR splits ``meta_info.txt`` names at the first dot).

Atomic and restartable: every output folder (and LMDB) is written inside a hidden temporary folder in ``<out>`` and
renamed into place only when complete, with a ``.prepare_data.json`` manifest of how it was made. A later run reuses
a folder whose manifest matches its inputs and settings, and refuses (unless ``overwrite``) one that does not, so a
killed run never leaves a half-written image folder or LMDB that a later run trusts. Temporary folders of dead runs
are removed.
"""
import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from functools import reduce
from os import path as osp

import cv2
import numpy as np
import torch
from tqdm import tqdm

from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from ghostsr_plugin.data.bicubic import RESIZE_MODES, bicubic_downscale, modcrop
from ghostsr_plugin.utils.images import IMAGE_EXTENSIONS, read_image

MANIFEST = '.prepare_data.json'
MANIFEST_FORMAT = 1
PNG_COMPRESSION = 3  # as BasicSR's extract_subimages
TMP_PREFIX = '.prepare_tmp_'
# make_lmdb_from_imgs with multiprocessing_read holds every encoded image in memory: only for small sets
LMDB_PARALLEL_READ_MAX_BYTES = 4 << 30


class PrepareDataError(ValueError):
    """Bad input or settings for :func:`prepare`; the message names the path or option and what is expected."""


@dataclass
class PreparedData:
    """Where :func:`prepare` put the data (absolute paths).

    Attributes:
        hr (str): HR folder: mod-cropped images, or their sub-images (``..._HR_sub``).
        lr (dict[int, str]): scale -> LR folder (``..._LR_bicubic/X<s>[_sub]``), same file names as ``hr``.
        hr_lmdb (str | None): HR LMDB (``..._HR[_sub].lmdb``), None without ``lmdb``.
        lr_lmdb (dict[int, str]): scale -> LR LMDB (``..._LR_bicubic_X<s>[_sub].lmdb``), empty without ``lmdb``.
        num_images (int): source HR images.
        num_files (int): files per folder (images or sub-images).
    """
    hr: str
    lr: dict
    hr_lmdb: str = None
    lr_lmdb: dict = field(default_factory=dict)
    num_images: int = 0
    num_files: int = 0

    def dataset_opt(self, scale, lmdb=False):
        """The data part of a BasicSR ``PairedImageDataset`` option dict for ``scale`` (disk or LMDB)."""
        if scale not in self.lr:
            raise PrepareDataError(f'scale {scale} was not prepared (prepared: {sorted(self.lr)})')
        if lmdb and self.hr_lmdb is None:
            raise PrepareDataError('LMDBs were not prepared: call prepare(..., lmdb=True) (--lmdb)')
        return {
            'type': 'PairedImageDataset',
            'dataroot_gt': self.hr_lmdb if lmdb else self.hr,
            'dataroot_lq': self.lr_lmdb[scale] if lmdb else self.lr[scale],
            'filename_tmpl': '{}',
            'io_backend': {
                'type': 'lmdb' if lmdb else 'disk'
            },
        }


# ---------------------------------------------------------------------------------------------------- sub-images
def tile_positions(length, crop_size, step, thresh_size=0):
    """Start positions of sub-image crops along one side of ``length`` pixels (BasicSR's extract_subimages rule).

    Crops start every ``step`` pixels; one more crop flush with the end is added when more than ``thresh_size``
    pixels would be left uncovered. A side shorter than ``crop_size`` gives one crop of the whole side.
    """
    if length <= crop_size:
        return [0]
    positions = list(range(0, length - crop_size + 1, step))
    if length - (positions[-1] + crop_size) > thresh_size:
        positions.append(length - crop_size)
    return positions


def tiles(height, width, crop_size, step, thresh_size=0):
    """Sub-image boxes ``(top, left, h, w)`` of an image, row-major, in the order of the ``_sNNN`` suffixes."""
    return [(top, left, min(crop_size, height), min(crop_size, width))
            for top in tile_positions(height, crop_size, step, thresh_size)
            for left in tile_positions(width, crop_size, step, thresh_size)]


# ------------------------------------------------------------------------------------------------------ planning
def _list_images(hr_dir):
    if not osp.exists(hr_dir):
        raise PrepareDataError(f'HR folder {hr_dir!r} does not exist; expected a folder of HR images '
                               f'({", ".join(IMAGE_EXTENSIONS)})')
    if not osp.isdir(hr_dir):
        raise PrepareDataError(f'HR folder {hr_dir!r} is not a folder; expected a folder of HR images '
                               f'({", ".join(IMAGE_EXTENSIONS)})')
    names = sorted(entry.name for entry in os.scandir(hr_dir)
                   if entry.is_file() and not entry.name.startswith('.')
                   and osp.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS)
    if not names:
        raise PrepareDataError(f'HR folder {hr_dir!r} contains no images; expected files ending in '
                               f'{", ".join(IMAGE_EXTENSIONS)} (sub-folders are not searched)')
    return [osp.join(hr_dir, name) for name in names]


def output_stem(filename):
    """The output stem of a source image: its stem with characters other than A-Z a-z 0-9 _ - replaced by '_'."""
    return re.sub(r'[^A-Za-z0-9_-]', '_', osp.splitext(osp.basename(filename))[0])


def _collect_sources(hr_dirs):
    """[(source path, output stem)] of every image of every folder; output stems must be unique."""
    sources, owner = [], {}
    for hr_dir in hr_dirs:
        for src in _list_images(hr_dir):
            stem = output_stem(src)
            if stem in owner:
                raise PrepareDataError(f'images {owner[stem]!r} and {src!r} would both be written as {stem!r}.png; '
                                       'rename one of them (output names are the file stems)')
            owner[stem] = src
            sources.append((src, stem))
    return sources


def _sources_digest(sources):
    lines = [f'{stem}\t{osp.basename(src)}\t{osp.getsize(src)}' for src, stem in sources]
    return hashlib.sha1('\n'.join(lines).encode()).hexdigest()


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_temp_dirs(out_dir):
    """Remove temporary folders left by killed runs (their pid is part of the name)."""
    for entry in os.scandir(out_dir):
        match = re.fullmatch(re.escape(TMP_PREFIX) + r'(\d+)_.*', entry.name)
        if match and entry.is_dir() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)


def _read_manifest(folder):
    try:
        with open(osp.join(folder, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_manifest(folder, manifest):
    with open(osp.join(folder, MANIFEST), 'w') as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


def _image_files(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith('.png') and not name.startswith('.'))


def _is_ready(folder, settings, count_files):
    """True when ``folder`` holds a complete output made with ``settings``; False when it does not exist.

    Raises:
        PrepareDataError: ``folder`` exists but was made otherwise (or not by this tool).
    """
    if not osp.exists(folder):
        return False
    manifest = _read_manifest(folder)
    if manifest is None:
        why = f'has no readable {MANIFEST} (it was not made by prepare_data)'
    elif manifest.get('settings') != settings:
        made = manifest.get('settings') or {}
        diffs = [f'{key} {made.get(key)!r} -> {settings.get(key)!r}' for key in sorted(set(made) | set(settings))
                 if made.get(key) != settings.get(key)]
        why = 'was made from other HR images or settings (' + ', '.join(diffs) + ')'
        if 'mod' in made and made.get('mod') != settings.get('mod'):
            why += '; HR is mod-cropped to the least common multiple of all --scales'
    elif manifest.get('files') != count_files(folder):
        why = f'holds {count_files(folder)} files but its manifest lists {manifest.get("files")}'
    else:
        print(f'prepare_data: reusing {folder} (complete, same HR images and settings)')
        return True
    raise PrepareDataError(f'{folder!r} exists but {why}; delete it or pass --overwrite (overwrite=True) to '
                           'replace it')


def _count_lmdb_keys(lmdb_dir):
    try:
        with open(osp.join(lmdb_dir, 'meta_info.txt')) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return -1


def _png_size(path):
    """(width, height) from a PNG header."""
    with open(path, 'rb') as f:
        header = f.read(24)
    if header[:8] != b'\x89PNG\r\n\x1a\n':
        raise PrepareDataError(f'{path!r} is not a PNG file')
    return struct.unpack('>II', header[16:24])


@dataclass(frozen=True)
class _Plan:
    mod: int
    scales: tuple
    crop: tuple  # (crop_size, step, thresh_size) or None
    resize: str
    hr_dest: str  # temporary folder to write, or None when the HR folder is ready
    lr_dests: tuple  # ((scale, temporary folder or None), ...)


def _process_image(plan, src, stem):
    """Read, mod-crop, down-scale and crop one HR image into the plan's folders; returns the number of files."""
    hr = modcrop(read_image(src, bgr8=True), plan.mod)
    h, w = hr.shape[:2]
    if h == 0 or w == 0:
        raise PrepareDataError(f'image {src!r} ({w}x{h} after mod-crop) is smaller than {plan.mod} pixels, the '
                               f'least common multiple of the scales {list(plan.scales)}')
    if plan.crop is None:
        boxes, names = [(0, 0, h, w)], [f'{stem}.png']
    else:
        boxes = tiles(h, w, *plan.crop)
        names = [f'{stem}_s{i:03d}.png' for i in range(1, len(boxes) + 1)]

    outputs = [(plan.hr_dest, 1, hr)] if plan.hr_dest else []
    outputs += [(dest, scale, bicubic_downscale(hr, scale, plan.resize)) for scale, dest in plan.lr_dests if dest]
    for dest, scale, img in outputs:
        for (top, left, ch, cw), name in zip(boxes, names):
            tile = img[top // scale:(top + ch) // scale, left // scale:(left + cw) // scale]
            path = osp.join(dest, name)
            if not cv2.imwrite(path, tile, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]):
                raise OSError(f'could not write {path!r}')
    return len(boxes)


def _process_image_star(args):
    return _process_image(*args)


def _init_worker():
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _worker_context():
    """Workers forked from a fresh server process, not from this one: a child forked after OpenCV's thread pool ran
    here deadlocks in OpenCV. The server imports this module once, so starting pools later is quick."""
    context = multiprocessing.get_context('forkserver')
    context.set_forkserver_preload(['ghostsr_plugin.data.prepare'])
    return context


def _run_jobs(plan, sources, workers, desc):
    jobs = [(plan, src, stem) for src, stem in sources]
    total = 0
    with tqdm(total=len(jobs), unit='image', desc=desc) as bar:
        if workers <= 1:
            for job in jobs:
                total += _process_image_star(job)
                bar.update(1)
        else:
            with _worker_context().Pool(workers, initializer=_init_worker) as pool:
                for count in pool.imap_unordered(_process_image_star, jobs):
                    total += count
                    bar.update(1)
    return total


def _make_lmdb(image_dir, lmdb_tmp, workers):
    names = _image_files(image_dir)
    raw_bytes = sum(w * h * 3 + 4096 for w, h in (_png_size(osp.join(image_dir, n)) for n in names))
    parallel_read = workers > 1 and raw_bytes <= LMDB_PARALLEL_READ_MAX_BYTES
    make_lmdb_from_imgs(
        image_dir,
        lmdb_tmp,
        names, [osp.splitext(n)[0] for n in names],
        multiprocessing_read=parallel_read,
        n_thread=max(workers, 1),
        map_size=int(raw_bytes * 1.2) + (64 << 20))


def _check_args(scales, crop_size, step, thresh_size, resize, workers):
    scales = tuple(scales)
    if not scales or any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 2 for s in scales):
        raise PrepareDataError(f'scales must be integers >= 2 (e.g. 2 3 4), got {list(scales)}')
    scales = tuple(sorted(set(int(s) for s in scales)))
    mod = reduce(math.lcm, scales)
    if resize not in RESIZE_MODES:
        raise PrepareDataError(f'resize must be one of {RESIZE_MODES}, got {resize!r}')
    if not isinstance(workers, int) or workers < 1:
        raise PrepareDataError(f'workers must be an integer >= 1, got {workers!r}')
    if crop_size is None:
        if step is not None:
            raise PrepareDataError('step (--step) needs crop_size (--crop-size)')
        return scales, mod, None
    if step is None:
        step = crop_size // 2
    for option, value, minimum in (('crop_size (--crop-size)', crop_size, mod), ('step (--step)', step, mod)):
        if not isinstance(value, int) or value < minimum or value % mod:
            raise PrepareDataError(f'{option} must be a positive multiple of {mod} (the least common multiple of the '
                                   f'scales {list(scales)}, so every HR sub-image has an exact LR twin), got {value!r}')
    if not isinstance(thresh_size, int) or thresh_size < 0:
        raise PrepareDataError(f'thresh_size (--thresh-size) must be an integer >= 0, got {thresh_size!r}')
    return scales, mod, (crop_size, step, thresh_size)


# ---------------------------------------------------------------------------------------------------------- main
def prepare(hr_dirs,
            out_dir,
            name,
            scales=(2, 3, 4),
            *,
            crop_size=None,
            step=None,
            thresh_size=0,
            lmdb=False,
            workers=1,
            split='train',
            resize='matlab',
            overwrite=False):
    """Make BasicSR's DIV2K-layout training data (HR, bicubic LR, optional sub-images and LMDBs) from HR folders.

    Args:
        hr_dirs (str | list[str]): folder(s) of HR images (not searched recursively). Output names are the file stems,
            which must be unique over all folders.
        out_dir (str): output root, e.g. ``datasets/DIV2K``; created if missing.
        name (str): dataset name, the prefix of every output folder (``<name>_<split>_HR``, ...).
        scales (iterable[int]): down-scaling factors (each >= 2). HR is mod-cropped to their least common multiple.
        crop_size (int | None): HR sub-image size (e.g. 480); None keeps whole images. Must be a multiple of
            ``lcm(scales)``.
        step (int | None): distance between sub-images (default ``crop_size // 2``); multiple of ``lcm(scales)``.
        thresh_size (int): add a last sub-image flush with the border when more than this many pixels are left.
        lmdb (bool): also make LMDBs of every folder.
        workers (int): processes for reading/resizing/writing (1 = in this process).
        split (str): the ``train`` of ``DIV2K_train_HR``; e.g. ``valid``.
        resize (str): ``'matlab'`` (bit-exact MATLAB uint8 imresize) or ``'basicsr'`` (BasicSR's float imresize),
            see :func:`bicubic_downscale`.
        overwrite (bool): replace outputs that exist but were made from other inputs or settings (otherwise an
            error). Outputs made from the same inputs and settings are always reused.

    Returns:
        PreparedData: the HR folder, the LR folder per scale, the LMDBs (with ``lmdb``) and counts; its
        ``dataset_opt(scale, lmdb)`` gives the matching BasicSR ``PairedImageDataset`` options.

    Raises:
        PrepareDataError: a missing folder, a folder without images, an unreadable image, bad settings, or an
            existing output made otherwise (without ``overwrite``).
    """
    if isinstance(hr_dirs, (str, os.PathLike)):
        hr_dirs = [hr_dirs]
    hr_dirs = [osp.abspath(os.fspath(d)) for d in hr_dirs]
    if not hr_dirs:
        raise PrepareDataError('no HR folder given (--hr)')
    if not name or not re.fullmatch(r'[A-Za-z0-9_.-]+', name):
        raise PrepareDataError(f'name must be a non-empty folder-name prefix (letters, digits, _ . -), got {name!r}')
    scales, mod, crop = _check_args(scales, crop_size, step, thresh_size, resize, workers)
    sources = _collect_sources(hr_dirs)

    out_dir = osp.abspath(os.fspath(out_dir))
    sub = '_sub' if crop else ''
    base = osp.join(out_dir, f'{name}_{split}')
    hr_dir = f'{base}_HR{sub}'
    lr_dirs = {s: osp.join(f'{base}_LR_bicubic', f'X{s}{sub}') for s in scales}
    for src_dir in hr_dirs:
        if src_dir in (hr_dir, *lr_dirs.values()):
            raise PrepareDataError(f'HR folder {src_dir!r} is also an output folder; choose another --out or --name')

    common = {
        'made_by': 'ghostsr_plugin.data.prepare',
        'format': MANIFEST_FORMAT,
        'sources': _sources_digest(sources),
        'mod': mod,
        'crop': list(crop) if crop else None
    }
    settings = {hr_dir: dict(common, kind='HR')}
    settings.update({lr_dirs[s]: dict(common, kind='LR', scale=s, resize=resize) for s in scales})
    lmdb_dirs = {}
    if lmdb:
        lmdb_dirs[hr_dir] = f'{hr_dir}.lmdb'
        lmdb_dirs.update({lr_dirs[s]: f'{base}_LR_bicubic_X{s}{sub}.lmdb' for s in scales})

    def count_images(folder):
        return len(_image_files(folder))

    def ready(folder, folder_settings, counter):
        try:
            return _is_ready(folder, folder_settings, counter)
        except PrepareDataError:
            if overwrite:
                return False
            raise

    todo_images = [d for d in settings if not ready(d, settings[d], count_images)]
    # an LMDB made with the same settings holds the same images even when its folder is rebuilt
    todo_lmdbs = [d for d in lmdb_dirs if not ready(lmdb_dirs[d], settings[d], _count_lmdb_keys)]

    os.makedirs(out_dir, exist_ok=True)
    _remove_dead_temp_dirs(out_dir)
    tmp_root = tempfile.mkdtemp(prefix=f'{TMP_PREFIX}{os.getpid()}_', dir=out_dir)
    try:
        staged = {}  # final path -> complete temporary copy
        if todo_images:
            temp = {d: osp.join(tmp_root, f'img{i}') for i, d in enumerate(todo_images)}
            for folder in temp.values():
                os.makedirs(folder)
            plan = _Plan(mod, scales, crop, resize, temp.get(hr_dir), tuple((s, temp.get(lr_dirs[s])) for s in scales))
            files = _run_jobs(plan, sources, workers, desc=f'{name}: HR -> x{"/x".join(map(str, scales))}')
            for final, folder in temp.items():
                _write_manifest(folder, {'settings': settings[final], 'files': files})
                staged[final] = folder
        _publish(staged, tmp_root)

        staged = {}
        for i, image_dir in enumerate(todo_lmdbs):
            lmdb_tmp = osp.join(tmp_root, f'db{i}', osp.basename(lmdb_dirs[image_dir]))
            os.makedirs(osp.dirname(lmdb_tmp))
            _make_lmdb(image_dir, lmdb_tmp, workers)
            _write_manifest(lmdb_tmp, {'settings': settings[image_dir], 'files': _count_lmdb_keys(lmdb_tmp)})
            staged[lmdb_dirs[image_dir]] = lmdb_tmp
        _publish(staged, tmp_root)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    return PreparedData(
        hr=hr_dir,
        lr=dict(lr_dirs),
        hr_lmdb=lmdb_dirs.get(hr_dir),
        lr_lmdb={s: lmdb_dirs[lr_dirs[s]] for s in scales} if lmdb else {},
        num_images=len(sources),
        num_files=count_images(hr_dir))


def _publish(staged, tmp_root):
    """Rename complete temporary folders into place (each rename is atomic), moving replaced ones out first."""
    for i, (final, folder) in enumerate(staged.items()):
        os.makedirs(osp.dirname(final), exist_ok=True)
        if osp.exists(final):
            os.rename(final, osp.join(tmp_root, f'replaced{i}'))
        os.rename(folder, final)
