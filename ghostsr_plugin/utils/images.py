"""Reading benchmark images the way BasicSR does, with errors and notes that name the image.

BasicSR decodes with ``cv2.IMREAD_COLOR``: grey, RGBA and 16-bit images silently become 8-bit
3-channel (alpha dropped, 16 bits cut to the high 8). :func:`inspect_image` says which of these an image is, so a
set can say so once (:func:`conversion_note`); :func:`check_pairs` refuses LR/HR pairs whose sizes do not fit the
scale after BasicSR's modcrop (the HR is cut to LR x scale), where BasicSR would report a wrong PSNR or fail with
an assertion naming no image.
"""
import os
from collections import OrderedDict, namedtuple

import cv2

from ghostsr_plugin.utils.cli import UserInputError

__all__ = ['IMAGE_EXTENSIONS', 'ImageInfo', 'PairCheck', 'is_image_name', 'inspect_image', 'read_image',
           'size_mismatch', 'check_pairs', 'conversion_note']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')

ImageInfo = namedtuple('ImageInfo', 'height width conversion')  # conversion: None, or e.g. 'grey', '16-bit RGBA'
PairCheck = namedtuple('PairCheck', 'pairs skipped conversions')  # kept pairs, mismatch messages, {kind: [names]}


def is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _unreadable(path):
    reason = 'empty file' if os.path.getsize(path) == 0 else 'corrupt, or not an image OpenCV can decode'
    return UserInputError(f'{path}: cannot read the image ({reason})')


def _conversion(img):
    """What IMREAD_COLOR changes in an image decoded unchanged (grey, BGR or BGRA; 8 or 16 bits), or None."""
    kind = {1: 'grey', 3: None, 4: 'RGBA'}[1 if img.ndim == 2 else img.shape[2]]
    if img.dtype.itemsize > 1:
        kind = f'16-bit {kind}' if kind else '16-bit'
    return kind


def inspect_image(path):
    """:class:`ImageInfo` of an image file (decoded once, by the plugin's reader of user images, whose errors name
    the file: unknown extension, undecodable, unsupported sample type or channel count)."""
    from ghostsr_plugin.deploy.images import read_image as read_unchanged
    if not os.path.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    if os.path.getsize(path) == 0:
        raise _unreadable(path)
    img = read_unchanged(path)
    return ImageInfo(img.shape[0], img.shape[1], _conversion(img))


def read_image(path):
    """The image as BasicSR's ``imfrombytes`` reads it: uint8 BGR, 3 channels (``cv2.IMREAD_COLOR``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise _unreadable(path)
    return img


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
