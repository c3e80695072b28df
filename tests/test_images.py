"""ghostsr_plugin.utils.images, the one image reader of the package: read_image decodes unchanged or as BasicSR does
(bgr8) and names the file in every error; image_size reads the size from the header alone, so a header declaring
100000x100000 pixels costs nothing and a file that is no image is one error naming it; read_image's max_pixels
refuses such a header before decoding; write_image on a full disk leaves no zero-byte file."""
import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from ghostsr_plugin.utils.images import image_size, read_image


def _png_header_only(path, width, height):
    """A PNG whose header declares width x height but that holds no pixel data (a decompression-bomb probe)."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)) +
                     chunk(b'IEND', b''))


@pytest.mark.parametrize('ext,img', [('.png', np.zeros((7, 11, 3), np.uint8)), ('.bmp', np.zeros((5, 3), np.uint8)),
                                     ('.webp', np.zeros((9, 4, 3), np.uint8)),
                                     ('.tif', np.zeros((6, 2, 4), np.uint16))])
def test_image_size_is_the_decoded_size(ext, img, tmp_path):
    path = str(tmp_path / f'a{ext}')
    cv2.imwrite(path, img)
    assert image_size(path) == read_image(path).shape[:2] == img.shape[:2]


def test_image_size_reads_no_pixels(tmp_path):
    _png_header_only(tmp_path / 'bomb.png', 100000, 100000)
    assert image_size(str(tmp_path / 'bomb.png')) == (100000, 100000)


@pytest.mark.parametrize('name,data,message', [('empty.png', b'', 'not a readable PNG image (empty file)'),
                                               ('text.png', b'hello', 'not a readable PNG image (corrupt'),
                                               ('notes.txt', b'hello', "unknown image format '.txt'")])
def test_errors_name_the_file(name, data, message, tmp_path):
    path = tmp_path / name
    path.write_bytes(data)
    for read in (image_size, read_image):
        with pytest.raises(ValueError) as err:
            read(str(path))
        assert str(err.value).startswith(f'{path}: {message}')
    with pytest.raises(FileNotFoundError, match='image not found'):
        image_size(str(tmp_path / 'missing.png'))


def test_bgr8_reads_as_basicsr(tmp_path):
    """bgr8=True gives what cv2.IMREAD_COLOR gives (BasicSR's imfrombytes): grey and 16-bit become 8-bit BGR."""
    grey16 = (np.arange(30, dtype=np.uint16).reshape(5, 6) * 2000)
    cv2.imwrite(str(tmp_path / 'g.png'), grey16)
    assert read_image(str(tmp_path / 'g.png')).dtype == np.uint16
    assert np.array_equal(read_image(str(tmp_path / 'g.png'), bgr8=True),
                          cv2.imread(str(tmp_path / 'g.png'), cv2.IMREAD_COLOR))


def test_max_pixels_refuses_before_decoding(tmp_path, monkeypatch):
    """read_image(max_pixels=N) reads the header (image_size) and refuses more than N pixels without decoding, naming
    the file, both sizes and the limit; within the limit it decodes as without one. Before: no limit, and a header
    above OpenCV's own limit (2^30 pixels) raised a cv2.error naming no file."""
    import ghostsr_plugin.utils.images as images
    _png_header_only(tmp_path / 'bomb.png', 100000, 100000)
    cv2.imwrite(str(tmp_path / 'small.png'), np.zeros((5, 7, 3), np.uint8))
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(images.cv2, 'imdecode', lambda buf, flags: decoded.append(1) or real(buf, flags))
    with pytest.raises(ValueError, match=f'^{tmp_path / "bomb.png"}: 100000x100000 = 10,000,000,000 pixels, more '
                       'than the limit of 268,435,456; not decoded'):
        read_image(str(tmp_path / 'bomb.png'), max_pixels=16384 * 16384)
    with pytest.raises(ValueError, match='7x5 = 35 pixels, more than the limit of 34'):
        read_image(str(tmp_path / 'small.png'), max_pixels=34)
    assert decoded == []
    assert read_image(str(tmp_path / 'small.png'), max_pixels=35).shape == (5, 7, 3)
    data = (tmp_path / 'bomb.png').read_bytes()
    idat = zlib.compress(bytes(300001))  # one row: OpenCV checks its own limit when it starts on the pixels
    (tmp_path / 'bomb.png').write_bytes(data[:-12] + struct.pack('>I', len(idat)) + b'IDAT' + idat +
                                        struct.pack('>I', zlib.crc32(b'IDAT' + idat) & 0xffffffff) + data[-12:])
    with pytest.raises(ValueError, match=r'bomb.png: not a readable PNG image \(OpenCV refused it: '):
        read_image(str(tmp_path / 'bomb.png'))  # no limit of ours: OpenCV's, as one error naming the file


def test_write_image_on_a_full_disk(tmp_path, full_disk):
    """write_image (upscale's outputs, BasicSR's validation images through the plugin) on a full disk (simulated:
    the atomic writer's file takes 100 bytes, then ENOSPC): NoSpaceLeftError naming the folder, the image that was
    there intact, no zero-byte or temporary file."""
    from ghostsr_plugin.utils.atomic import NoSpaceLeftError
    from ghostsr_plugin.utils.images import write_image
    target = tmp_path / 'out' / 'a.png'
    target.parent.mkdir()
    cv2.imwrite(str(target), np.zeros((4, 4), np.uint8))
    before = target.read_bytes()
    with pytest.raises(NoSpaceLeftError, match=f'^no space left on {target.parent} while writing a.png'):
        write_image(str(target), np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert target.read_bytes() == before and os.listdir(target.parent) == ['a.png'] and full_disk
