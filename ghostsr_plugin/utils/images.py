"""Images: the one reader and writer of the package and its one list of image extensions.

* :func:`read_image` decodes a file as OpenCV does, unchanged (grey, BGR or BGRA; 8 or 16 bits a sample: the
  images a user upscales), or with ``bgr8=True`` as BasicSR's ``imfrombytes`` reads benchmark and training images
  (``cv2.IMREAD_COLOR``: uint8 BGR, 3 channels; grey, RGBA and 16-bit images silently become 8-bit RGB, alpha
  dropped, 16 bits cut to the high 8). Every error names the file: missing, empty, unknown extension, undecodable
  (OpenCV's own errors included), unsupported sample type or channel count; with ``max_pixels`` an image whose
  header declares more pixels is refused before any pixel is decoded (a 1 MB PNG can declare 20000 x 20000).
* :func:`image_size` reads an image's width and height from its header, without decoding the pixels (any number
  of images can be checked; a header declaring a huge image costs nothing).
* :func:`inspect_image` says which of those conversions an image undergoes, so a set can say so once
  (:func:`conversion_note`); :func:`check_pairs` refuses LR/HR pairs whose sizes do not fit the scale after
  BasicSR's modcrop (the HR is cut to LR x scale), where BasicSR would report a wrong PSNR or fail with an assertion
  naming no image.
* :func:`write_image` encodes by the output's extension and writes atomically; :func:`output_extension` picks an
  upscaled image's format.
"""
import os
from collections import OrderedDict, namedtuple

import cv2
import numpy as np

from ghostsr_plugin.utils.atomic import write_bytes
from ghostsr_plugin.utils.errors import UserInputError

__all__ = ['IMAGE_EXTENSIONS', 'OUTPUT_FORMATS', 'MAX_PIXELS', 'ImageInfo', 'PairCheck', 'is_image_name',
           'list_inputs', 'image_size', 'read_image', 'inspect_image', 'output_extension', 'write_image',
           'size_mismatch', 'check_pairs', 'conversion_note']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pbm')

# output format -> (holds an alpha channel, holds 16-bit samples), as OpenCV writes them
OUTPUT_FORMATS = {'png': (True, True), 'jpg': (False, False), 'webp': (True, False), 'bmp': (False, False),
                  'tif': (True, True)}
_FORMAT_OF_EXTENSION = {'.png': 'png', '.jpg': 'jpg', '.jpeg': 'jpg', '.webp': 'webp', '.bmp': 'bmp', '.tif': 'tif',
                        '.tiff': 'tif'}

MAX_PIXELS = 16384 * 16384  # the default limit of the images a user hands in (268,435,456 pixels)

ImageInfo = namedtuple('ImageInfo', 'height width conversion')  # conversion: None, or e.g. 'grey', '16-bit RGBA'
PairCheck = namedtuple('PairCheck', 'pairs skipped conversions')  # kept pairs, mismatch messages, {kind: [names]}


def is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_inputs(path):
    """``[path]`` for a file; the visible files of a folder, sorted (any extension: an unknown one is reported
    when read, not silently left out)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f'-i {path}: no such image file or folder')
    files = [os.path.join(path, name) for name in sorted(os.listdir(path)) if not name.startswith('.')]
    return [file for file in files if os.path.isfile(file)]


def _image_kind(path):
    """The format of an image file that exists, has a known extension and is not empty (``'PNG'``, ...); else the
    error naming the file that :func:`image_size` and :func:`read_image` both give."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMAGE_EXTENSIONS:
        raise UserInputError(f'{path}: unknown image format {ext or "(no extension)"!r} '
                             f'(allowed: {", ".join(IMAGE_EXTENSIONS)})')
    if os.path.getsize(path) == 0:
        raise UserInputError(f'{path}: not a readable {ext[1:].upper()} image (empty file)')
    return ext[1:].upper()


def image_size(path):
    """(height, width) of the image at ``path`` from its header alone (Pillow opens files lazily; no pixel is
    decoded, whatever size the header declares). Errors name the file: missing, empty, unknown extension, a header
    that is not an image's."""
    from PIL import Image, UnidentifiedImageError
    kind = _image_kind(path)
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # Pillow's own bomb check would refuse to say the size; callers decide on it
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserInputError(f'{path}: not a readable {kind} image (corrupt, truncated or not an image: '
                             f'{err})') from err
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return height, width


def read_image(path, bgr8=False, max_pixels=None):
    """The image at ``path`` as OpenCV decodes it unchanged (grey, BGR or BGRA; uint8 or uint16), or with
    ``bgr8=True`` as BasicSR reads it (uint8 BGR, ``cv2.IMREAD_COLOR``). Errors (:class:`UserInputError`) name the
    file: missing, empty, an unknown extension, an undecodable file (corrupt, truncated, or refused by OpenCV), a
    sample type other than 8 or 16 bits, a channel count other than 1, 3 or 4. ``max_pixels`` (None or 0: no limit
    but OpenCV's own) refuses an image whose header (:func:`image_size`) declares more pixels, before decoding."""
    kind = _image_kind(path)
    if max_pixels:
        height, width = image_size(path)
        if height * width > max_pixels:
            raise UserInputError(f'{path}: {width}x{height} = {height * width:,} pixels, more than the limit of '
                                 f'{max_pixels:,}; not decoded (raise the limit to read it)')
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # the error below says it, not OpenCV's warning
    try:
        img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR if bgr8 else cv2.IMREAD_UNCHANGED)
    except cv2.error as err:  # e.g. a header above OpenCV's own pixel limit, or no memory for the pixels
        reason = getattr(err, 'err', None) or ' '.join(str(err).split()) or 'cv2.error'
        raise UserInputError(f'{path}: not a readable {kind} image (OpenCV refused it: {reason})') from None
    finally:
        cv2.utils.logging.setLogLevel(level)
    if img is None:
        raise UserInputError(f'{path}: not a readable {kind} image (corrupt, truncated or not an image)')
    if img.dtype not in (np.uint8, np.uint16):
        raise UserInputError(f'{path}: {img.dtype} samples are not supported (allowed: 8-bit or 16-bit images)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] not in (3, 4):
        raise UserInputError(f'{path}: {img.shape[2]} channels are not supported (allowed: grey, BGR, BGRA)')
    return img


def _conversion(img):
    """What IMREAD_COLOR changes in an image decoded unchanged (grey, BGR or BGRA; 8 or 16 bits), or None."""
    kind = {1: 'grey', 3: None, 4: 'RGBA'}[1 if img.ndim == 2 else img.shape[2]]
    if img.dtype.itemsize > 1:
        kind = f'16-bit {kind}' if kind else '16-bit'
    return kind


def inspect_image(path):
    """:class:`ImageInfo` of an image file (decoded once by :func:`read_image`, whose errors name the file)."""
    img = read_image(path)
    return ImageInfo(img.shape[0], img.shape[1], _conversion(img))


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


def write_image(path, img, params=None):
    """Encode ``img`` in the format of ``path``'s extension (with OpenCV's ``params``, as ``cv2.imwrite`` takes
    them) and write it atomically: a full disk raises :class:`ghostsr_plugin.utils.atomic.NoSpaceLeftError` and
    leaves no partial or zero-byte file. 16-bit samples go to formats without 16 bits as 8 bits (value / 257,
    rounded). Returns a note about that conversion, or None."""
    ext = os.path.splitext(path)[1].lower()
    fmt = _FORMAT_OF_EXTENSION.get(ext)
    if fmt is None:
        raise UserInputError(f'{path}: cannot write {ext!r} images (allowed: {", ".join(OUTPUT_FORMATS)})')
    note = None
    if img.dtype == np.uint16 and not OUTPUT_FORMATS[fmt][1]:
        img = np.round(img / 257.).astype(np.uint8)
        note = f'{os.path.basename(path)}: {fmt.upper()} holds 8 bits a sample, written as 8-bit'
    ok, data = cv2.imencode(ext, img, [] if params is None else list(params))
    if not ok:
        raise ValueError(f'{path}: OpenCV could not encode a {img.shape} {img.dtype} image as {fmt.upper()}')
    write_bytes(path, data.tobytes())
    return note


def size_mismatch(name, hr, lr, scale):
    """None when LR (h, w) is the HR (h, w) cut to a multiple of ``scale`` and divided by it; else a message
    naming the image, both sizes and the scale."""
    expected = (hr[0] // scale, hr[1] // scale)
    if tuple(lr) == expected:
        return None
    return (f'{name}: LR {lr[1]}x{lr[0]} does not fit HR {hr[1]}x{hr[0]} at scale {scale} (expected '
            f'{expected[1]}x{expected[0]})')


def check_pairs(pairs, scale, label, skip_mismatched=False):
    """Inspect every (name, HR path, LR path) of a set: unreadable images and, unless ``skip_mismatched``, LR/HR
    sizes that do not fit ``scale`` raise an error naming them (``label`` names the set); returns
    :class:`PairCheck` with the pairs to use, the skipped ones' messages and the grey/RGBA/16-bit images."""
    kept, skipped, conversions = [], [], OrderedDict()
    for pair in pairs:
        name, hr_path, lr_path = pair[:3]
        hr, lr = inspect_image(hr_path), inspect_image(lr_path)
        for path, info in ((hr_path, hr), (lr_path, lr)):
            if info.conversion:
                conversions.setdefault(info.conversion, []).append(os.path.basename(path))
        problem = size_mismatch(name, hr[:2], lr[:2], scale)
        if problem is None:
            kept.append(pair)
        else:
            skipped.append(problem)
    if skipped and not skip_mismatched:
        more = f' (and {len(skipped) - 1} more)' if len(skipped) > 1 else ''
        raise UserInputError(f'{label}: {skipped[0]}{more}; every LR must be its HR cut to a multiple of the scale '
                             'and divided by it')
    return PairCheck(kept, skipped, conversions)


def conversion_note(label, conversions, total):
    """One line saying which images of a set were read as 8-bit RGB although they are not, or None."""
    if not conversions:
        return None
    count = sum(len(names) for names in conversions.values())
    kinds = '; '.join(f'{kind}: {", ".join(sorted(names))}' for kind, names in sorted(conversions.items()))
    return f'{label}: {count} of {total} image files converted to 8-bit RGB as BasicSR reads them ({kinds})'
