"""tools/gpu_pack.py: the data carried to a GPU machine is pixel-for-pixel the source data (lossless WebP, checked
on every image), and a re-encoding that changed any pixel is refused with the file named."""
import importlib.util
import os

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_T91 = os.path.join(ROOT, '..', 'shared', 'data', 'train', 'T91')


def load_gpu_pack():
    spec = importlib.util.spec_from_file_location('gpu_pack', os.path.join(ROOT, 'tools', 'gpu_pack.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_pack = load_gpu_pack()


@pytest.mark.parametrize('channels', [3, 1], ids=['rgb', 'grey'])
def test_webp_is_exact(tmp_path, channels):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, channels), dtype=np.uint8).squeeze()  # noise: the hardest case
    src, dst = str(tmp_path / 'a.png'), str(tmp_path / 'a.webp')
    cv2.imwrite(src, image)
    gpu_pack.webp_lossless(src, dst)
    assert np.array_equal(cv2.imread(dst), cv2.imread(src))  # as BasicSR reads both (grey: three equal channels)


@pytest.mark.skipif(not os.path.isdir(SHARED_T91), reason='needs ../shared/data/train/T91')
def test_real_training_image_is_exact(tmp_path):
    name = sorted(os.listdir(SHARED_T91))[0]
    src, dst = os.path.join(SHARED_T91, name), str(tmp_path / 'b.webp')
    gpu_pack.webp_lossless(src, dst)
    assert np.array_equal(cv2.imread(dst), cv2.imread(src))


def test_changed_pixels_are_refused(tmp_path, monkeypatch):
    src = str(tmp_path / 'c.png')
    cv2.imwrite(src, np.full((8, 8, 3), 100, np.uint8))
    real_decode = cv2.imdecode

    def off_by_one(data, flags):
        image = real_decode(data, flags)
        image[0, 0, 0] += 1
        return image

    monkeypatch.setattr(gpu_pack.cv2, 'imdecode', off_by_one)
    with pytest.raises(ValueError, match='c.png: lossless WebP did not reproduce'):
        gpu_pack.webp_lossless(src, str(tmp_path / 'c.webp'))


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'not an image')
    with pytest.raises(ValueError, match='bad.png: not a readable image'):
        gpu_pack.webp_lossless(str(bad), str(tmp_path / 'bad.webp'))
