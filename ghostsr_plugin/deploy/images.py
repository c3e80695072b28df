"""Reading and writing the images a user upscales: grey, BGR or BGRA, 8 or 16 bits a sample, in the formats
OpenCV reads and writes (PNG, JPEG, WebP, BMP, TIFF).

Images are numpy arrays as OpenCV gives them (``H x W`` grey, ``H x W x 3`` BGR, ``H x W x 4`` BGRA; uint8 or
uint16). Reading errors name the file; writing goes through :func:`atomic_write` (a temporary name in the output
folder, renamed when complete).
"""
import os

import cv2
import numpy as np

from ghostsr_plugin.utils.checkpoint import atomic_write
from ghostsr_plugin.utils.cli import UserInputError
from ghostsr_plugin.utils.options import IMAGE_EXTENSIONS

__all__ = ['IMAGE_EXTENSIONS', 'OUTPUT_FORMATS', 'list_inputs', 'read_image', 'output_extension', 'write_image',
           'write_bytes']

# output format -> (holds an alpha channel, holds 16-bit samples), as OpenCV writes them
OUTPUT_FORMATS = {'png': (True, True), 'jpg': (False, False), 'webp': (True, False), 'bmp': (False, False),
                  'tif': (True, True)}
_FORMAT_OF_EXTENSION = {'.png': 'png', '.jpg': 'jpg', '.jpeg': 'jpg', '.webp': 'webp', '.bmp': 'bmp', '.tif': 'tif',
                        '.tiff': 'tif'}


def write_bytes(path, data):
    """Write ``data`` to ``path`` through :func:`atomic_write` (temporary name, then rename; the mode a plain
    ``open`` would give under the umask)."""
    atomic_write(path, lambda file: file.write(data))


def list_inputs(path):
    """``[path]`` for a file; the visible files of a folder, sorted (any extension: an unknown one is reported
    when read, not silently left out)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f'-i {path}: no such image file or folder')
    files = [os.path.join(path, name) for name in sorted(os.listdir(path)) if not name.startswith('.')]
    return [file for file in files if os.path.isfile(file)]


def read_image(path):
    """The image at ``path`` as OpenCV decodes it unchanged (grey, BGR or BGRA; uint8 or uint16), or an error
    naming the file: an unknown extension, an undecodable file, a sample type other than 8 or 16 bits."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise UserInputError(f'{path}: unknown image format {ext or "(no extension)"!r} '
                             f'(allowed: {", ".join(IMAGE_EXTENSIONS)})')
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise UserInputError(f'{path}: not a readable {ext[1:].upper()} image (corrupt, truncated or not an image)')
    if img.dtype not in (np.uint8, np.uint16):
        raise UserInputError(f'{path}: {img.dtype} samples are not supported (allowed: 8-bit or 16-bit images)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] not in (3, 4):
        raise UserInputError(f'{path}: {img.shape[2]} channels are not supported (allowed: grey, BGR, BGRA)')
    return img


def output_extension(ext, input_path, has_alpha):
    """(file extension without the dot, note or None) of an output: ``ext`` ``'auto'`` keeps the input's format;
    an image with alpha goes to PNG when the format cannot hold the alpha channel."""
    if ext == 'auto':
        ext = _FORMAT_OF_EXTENSION.get(os.path.splitext(input_path)[1].lower(), 'png')
    if ext not in OUTPUT_FORMATS:
        raise UserInputError(f'--ext {ext!r}: allowed auto, {", ".join(OUTPUT_FORMATS)}')
    if has_alpha and not OUTPUT_FORMATS[ext][0]:
        return 'png', f'{os.path.basename(input_path)}: {ext.upper()} has no alpha channel, written as PNG'
    return ext, None


def write_image(path, img):
    """Encode ``img`` in the format of ``path``'s extension and write it atomically. 16-bit samples go to formats
    without 16 bits as 8 bits (value / 257, rounded). Returns a note about that conversion, or None."""
    ext = os.path.splitext(path)[1].lower()
    fmt = _FORMAT_OF_EXTENSION.get(ext)
    if fmt is None:
        raise UserInputError(f'{path}: cannot write {ext!r} images (allowed: {", ".join(OUTPUT_FORMATS)})')
    note = None
    if img.dtype == np.uint16 and not OUTPUT_FORMATS[fmt][1]:
        img = np.round(img / 257.).astype(np.uint8)
        note = f'{os.path.basename(path)}: {fmt.upper()} holds 8 bits a sample, written as 8-bit'
    ok, data = cv2.imencode(ext, img)
    if not ok:
        raise ValueError(f'{path}: OpenCV could not encode a {img.shape} {img.dtype} image as {fmt.upper()}')
    write_bytes(path, data.tobytes())
    return note
