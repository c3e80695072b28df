"""ghostsr_plugin.utils.images, the one image reader of the package: read_image decodes unchanged or as BasicSR does
(bgr8) and names the file in every error; image_size reads the size from the header alone, so a header declaring
100000x100000 pixels costs nothing and a file that is no image is one error naming it."""
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
