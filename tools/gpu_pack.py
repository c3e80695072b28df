"""Pack what tools/gpu_check.sh needs on a GPU machine into ``.gpu/`` (git-ignored), where the data is, before the run.

    python tools/gpu_pack.py [--data ../shared/data]

The GPU machine the checks were prepared for has its own Python 3.12 / torch / nvcc but no basicsr or lmdb, no
internet and no ``../shared``, and takes at most 64 MiB with the project. So ``.gpu/`` holds
  * ``whl/``: basicsr 1.4.2 (pure Python; built here from PyPI's sdist) and lmdb as cp312 manylinux wheels;
  * ``data/``: the subset of ``../shared/data`` the checks read, in its layout: the training images
    (``train/T91``, ``train/BSD200``) re-encoded as lossless WebP (every image is decoded again and compared with
    its source, so the pixels are exactly the same), ``weights/carn_m.pth`` and Set5 x2 (training validation).
Benchmark sets are not packed: the checkpoints come back and are evaluated here
(``python tools/ghost_init_experiment.py --checkpoints DIR``). Fails if ``.gpu/`` would exceed 60 MiB.
"""
import argparse
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT_MIB = 60
IMAGE_EXTENSIONS = ('.png', '.bmp')


def webp_lossless(src, dst):
    """Re-encode ``src`` as lossless WebP at ``dst``; raises if the decoded pixels differ from the source's. Both are
    read as 3-channel colour images, as prepare_data and BasicSR's datasets read them."""
    image = cv2.imread(src, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'{src}: not a readable image')
    ok, data = cv2.imencode('.webp', image, [cv2.IMWRITE_WEBP_QUALITY, 101])  # quality > 100: lossless
    back = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
    if back is None or back.shape != image.shape or not np.array_equal(back, image):
        raise ValueError(f'{src}: lossless WebP did not reproduce the image exactly')
    with open(dst, 'wb') as file:
        file.write(data.tobytes())


def pack_images(src_dir, dst_dir):
    os.makedirs(dst_dir, exist_ok=True)
    names = sorted(n for n in os.listdir(src_dir) if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
    if not names:
        raise ValueError(f'{src_dir}: no {"/".join(IMAGE_EXTENSIONS)} images')
    for name in tqdm(names, desc=os.path.relpath(src_dir), unit='img'):
        webp_lossless(os.path.join(src_dir, name), os.path.join(dst_dir, os.path.splitext(name)[0] + '.webp'))


def fetch_wheels(dst):
    os.makedirs(dst, exist_ok=True)
    pip = [sys.executable, '-m', 'pip']
    subprocess.run(pip + ['wheel', '--no-deps', '--no-build-isolation', '-q', 'basicsr==1.4.2', '-w', dst], check=True)
    import lmdb
    subprocess.run(pip + ['download', '--no-deps', '--only-binary=:all:', '--python-version', '3.12', '--implementation',
                          'cp', '--platform', 'manylinux_2_28_x86_64', '--platform', 'manylinux_2_17_x86_64',
                          '--platform', 'manylinux2014_x86_64', '-q', '-d', dst, f'lmdb=={lmdb.__version__}'],
                   check=True)


def folder_mib(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files) / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', default=os.path.join(ROOT, '..', 'shared', 'data'))
    args = parser.parse_args()
    data, out = os.path.abspath(args.data), os.path.join(ROOT, '.gpu')
    shutil.rmtree(out, ignore_errors=True)
    fetch_wheels(os.path.join(out, 'whl'))
    for part in ('T91', 'BSD200'):
        pack_images(os.path.join(data, 'train', part), os.path.join(out, 'data', 'train', part))
    os.makedirs(os.path.join(out, 'data', 'weights'))
    shutil.copy(os.path.join(data, 'weights', 'carn_m.pth'), os.path.join(out, 'data', 'weights'))
    for sub in ('HR', os.path.join('LR_bicubic', 'X2')):
        shutil.copytree(os.path.join(data, 'benchmark', 'Set5', sub), os.path.join(out, 'data', 'benchmark', 'Set5', sub))
    size = folder_mib(out)
    if size > LIMIT_MIB:
        sys.exit(f'.gpu/ is {size:.1f} MiB, over {LIMIT_MIB} MiB: it would not travel with the working tree')
    print(f'.gpu/ ready ({size:.1f} MiB): copy the project with .gpu/ to the GPU machine and run tools/gpu_check.sh there')


if __name__ == '__main__':
    main()
