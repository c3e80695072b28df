"""Upscaling user images with a network, whole or in tiles so that large inputs run within bounded memory.

:class:`Upscaler` is built once (from an option file and checkpoint, or from a network) and upscales numpy
images with :meth:`Upscaler.enhance`, following the conventions of Real-ESRGAN's inference command:

* grey images run as 3-channel images and come back grey (luma of the output);
* BGRA images keep their alpha channel, upscaled by the same network (``alpha_upsampler='network'``, the default:
  the alpha plane runs as a grey image) or by bicubic interpolation (``'bicubic'``, cheaper);
* 16-bit images run in float on value / 65535 and come back 16-bit; 8-bit on value / 255.

Tiles (``tile`` > 0, ``tile_pad`` pixels of margin): the LR image is cut into ``tile`` x ``tile`` pieces; each runs
with ``tile_pad`` real neighbouring pixels on every side that has any (the image border gets the network's own
zero padding, as untiled), and the margin's share of the output is cropped off before the piece is placed. With a
margin at least the network's receptive-field radius the result is the untiled one up to float rounding; smaller
margins differ near tile seams (measured: docs/results/deploy.md). The output is assembled on the CPU, tile by tile, in the
image's own type (uint8 / uint16): device memory is bounded by one padded tile, and no float copy of the whole
output is held, on the device or on the CPU (but the one alpha plane ``'bicubic'`` resizes).

:func:`upscale_files` runs an Upscaler over a list of files and writes the outputs atomically; a file that cannot be
decoded, or whose header declares more pixels than the limit (default :data:`ghostsr_plugin.utils.images.MAX_PIXELS`,
16384 x 16384; checked before decoding), is named and skipped.
"""
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

from ghostsr_plugin.measure.complexity import forward_kwargs
from ghostsr_plugin.utils.atomic import NoSpaceLeftError, make_folder
from ghostsr_plugin.utils.images import MAX_PIXELS, list_inputs, output_extension, read_image, write_image
from ghostsr_plugin.utils.errors import UserInputError

__all__ = ['ALPHA_UPSAMPLERS', 'Upscaler', 'check_tiling', 'resolve_device', 'tile_boxes', 'upscale_files',
           'upscale_folder']

ALPHA_UPSAMPLERS = ('network', 'bicubic')


def check_tiling(tile, tile_pad):
    """Raise a UserInputError naming ``--tile`` / ``--tile-pad`` unless tile is 0 (off) or >= 2 x tile_pad >= 0."""
    if tile_pad < 0:
        raise UserInputError(f'--tile-pad {tile_pad}: must be >= 0 (LR pixels of margin around each tile)')
    if tile < 0:
        raise UserInputError(f'--tile {tile}: must be 0 (no tiles) or a tile size in LR pixels >= 2 x --tile-pad')
    if 0 < tile < 2 * tile_pad:
        raise UserInputError(f'--tile {tile} is smaller than twice --tile-pad {tile_pad}; allowed: --tile 0 (no tiles) '
                             f'or --tile >= {2 * tile_pad} (or a smaller --tile-pad)')


def resolve_device(name):
    """``torch.device`` of ``auto`` (CUDA when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserInputError(f'--device {name!r}: allowed auto, cpu, cuda, cuda:N') from None
    if device.type not in ('cpu', 'cuda'):
        raise UserInputError(f'--device {name!r}: allowed auto, cpu, cuda, cuda:N')
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserInputError(f'--device {name}: no CUDA device is available here (allowed: auto, cpu)')
    return device


def tile_boxes(height, width, tile):
    """(y0, y1, x0, x1) of the tiles covering a ``height`` x ``width`` image, row by row; the last row and column
    of tiles take what is left."""
    return [(y, min(y + tile, height), x, min(x + tile, width))
            for y in range(0, height, tile) for x in range(0, width, tile)]


class Upscaler:
    """A network ready to upscale numpy images (see the module docstring for the conventions).

    Args:
        net (nn.Module): the SR network (RGB in [0, 1] in, RGB out, ``scale`` times larger).
        scale (int): its upscaling factor (multi-scale networks run the head of this scale).
        device (str | torch.device): 'auto', 'cpu', 'cuda', ... Default 'auto'.
        tile (int): tile size in LR pixels, 0 for the whole image at once. Default 0.
        tile_pad (int): LR pixels of real neighbouring context around each tile, cropped off the output. Default 10.
        half (bool): run the network in float16 (CUDA only). Default False.
        alpha_upsampler (str): 'network' or 'bicubic', how an alpha channel is upscaled. Default 'network'.
        progress (bool): a progress bar over the tiles of an image. Default False.
    """

    def __init__(self, net, scale, device='auto', tile=0, tile_pad=10, half=False, alpha_upsampler='network',
                 progress=False):
        check_tiling(tile, tile_pad)
        if alpha_upsampler not in ALPHA_UPSAMPLERS:
            raise UserInputError(f'--alpha-upsampler {alpha_upsampler!r}: allowed {", ".join(ALPHA_UPSAMPLERS)}')
        self.device = resolve_device(device) if isinstance(device, str) else device
        if half and self.device.type != 'cuda':
            raise UserInputError(f'--half needs a CUDA device (the device here is {self.device}); leave --half out')
        self.dtype = torch.float16 if half else torch.float32
        self.net = net.eval().to(self.device, self.dtype)
        self.scale, self.tile, self.tile_pad = scale, tile, tile_pad
        self.alpha_upsampler, self.progress = alpha_upsampler, progress
        self.kwargs = forward_kwargs(net, scale)

    @classmethod
    def from_options(cls, opt_path, ckpt=None, param_key=None, network_key='network_g', **kwargs):
        """Build the network of a BasicSR option file and load ``ckpt`` (default: the file's
        ``path.pretrain_network_g``, with its ``param_key_g``); the scale is the file's ``scale``."""
        from ghostsr_plugin.archs.build import load_network
        from ghostsr_plugin.utils.option_file import load_options
        opt = load_options(opt_path)
        path_opt = opt.get('path') or {}
        if ckpt is None:
            ckpt = path_opt.get('pretrain_network_g')
            if not ckpt:
                raise UserInputError(f'no checkpoint: give --ckpt, or path.pretrain_network_g in {opt_path}')
            if not os.path.isfile(ckpt):
                raise FileNotFoundError(f'checkpoint not found: {ckpt} (path.pretrain_network_g of {opt_path}; '
                                        'give --ckpt)')
        param_key = param_key or path_opt.get('param_key_g') or 'params'
        net = load_network(opt_path, ckpt, param_key, network_key, 'cpu')
        scale = opt.get('scale') or opt[network_key].get('upscale')
        if not isinstance(scale, int) or scale < 1:
            raise UserInputError(f'{opt_path}: no integer "scale" (or {network_key}.upscale) to upscale by')
        return cls(net, scale, **kwargs)

    def _forward(self, lq):
        with torch.inference_mode():
            out = self.net(lq.to(self.device, self.dtype), **self.kwargs).cpu().float()
        expected = (lq.shape[2] * self.scale, lq.shape[3] * self.scale)
        if tuple(out.shape[2:]) != expected:
            raise UserInputError(f'the network made {tuple(out.shape[2:])} from {tuple(lq.shape[2:])}, not '
                                 f'x{self.scale} {expected}: is "scale" of the option file the network\'s scale?')
        return out

    def tiles(self, lq):
        """For each tile of an RGB float tensor ``[1, 3, h, w]`` (CPU): its box ``(y0, y1, x0, x1)`` in output pixels
        and the network's output there (CPU float ``[1, 3, y1 - y0, x1 - x0]``, the margin cropped off). One tile
        (the whole image) when tiles are off or the image fits one; the device holds one padded tile at a time."""
        h, w = lq.shape[2:]
        s, pad = self.scale, self.tile_pad
        if not self.tile or (h <= self.tile and w <= self.tile):
            yield (0, h * s, 0, w * s), self._forward(lq)
            return
        boxes = tile_boxes(h, w, self.tile)
        for y0, y1, x0, x1 in tqdm(boxes, desc='tiles', unit='tile', leave=False, disable=not self.progress):
            py0, px0 = max(y0 - pad, 0), max(x0 - pad, 0)
            sr = self._forward(lq[:, :, py0:min(y1 + pad, h), px0:min(x1 + pad, w)])
            top, left = (y0 - py0) * s, (x0 - px0) * s
            yield (y0 * s, y1 * s, x0 * s, x1 * s), sr[:, :, top:top + (y1 - y0) * s, left:left + (x1 - x0) * s]

    def run(self, lq):
        """SR of an RGB float tensor ``[1, 3, h, w]`` (CPU) -> ``[1, 3, h·s, w·s]`` (CPU float), tiled when asked.
        :meth:`enhance` does not hold this float output: it rounds each tile into the output image as it comes."""
        h, w = lq.shape[2:]
        out = lq.new_zeros(lq.shape[0], lq.shape[1], h * self.scale, w * self.scale)
        for (y0, y1, x0, x1), sr in self.tiles(lq):
            out[:, :, y0:y1, x0:x1] = sr
        return out

    def _upscale_into(self, bgr, out, grey=False):
        """Upscale ``bgr`` (float32 BGR in [0, 1], H x W x 3) into ``out`` (uint8 / uint16, H·s x W·s x 3, or
        H·s x W·s with ``grey``: the luma of the output), tile by tile: each tile is clamped to [0, 1], turned back
        to BGR (and grey), scaled to ``out``'s range and rounded as it arrives, so no float image of the output's
        size is ever held, on the device or here."""
        import cv2
        max_value = float(np.iinfo(out.dtype).max)
        lq = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))).unsqueeze(0)  # RGB
        for (y0, y1, x0, x1), sr in self.tiles(lq):
            tile = np.ascontiguousarray(np.clip(sr[0].numpy().transpose(1, 2, 0)[:, :, ::-1], 0, 1))  # BGR
            if grey:
                tile = np.clip(cv2.cvtColor(tile, cv2.COLOR_BGR2GRAY), 0, 1)
            out[y0:y1, x0:x1] = np.round(tile * max_value)

    def enhance(self, img):
        """Upscale a numpy image (grey ``H x W``, BGR or BGRA; uint8 or uint16): the same kind, ``scale`` times
        larger. The output is assembled tile by tile in its own integer type (see :meth:`_upscale_into`)."""
        import cv2
        if img.dtype not in (np.uint8, np.uint16):
            raise UserInputError(f'{img.dtype} images are not supported (allowed: uint8, uint16)')
        max_value = float(np.iinfo(img.dtype).max)
        x = img.astype(np.float32) / max_value
        s = self.scale
        out = np.empty((img.shape[0] * s, img.shape[1] * s, *img.shape[2:]), img.dtype)
        if x.ndim == 2:
            self._upscale_into(cv2.cvtColor(x, cv2.COLOR_GRAY2BGR), out, grey=True)
            return out
        self._upscale_into(x[:, :, :3], out[:, :, :3])
        if x.shape[2] == 4:
            alpha = x[:, :, 3]
            if self.alpha_upsampler == 'network':
                self._upscale_into(cv2.cvtColor(alpha, cv2.COLOR_GRAY2BGR), out[:, :, 3], grey=True)
            else:  # one float plane of the output's size, on the CPU
                alpha = cv2.resize(alpha, out.shape[1::-1], interpolation=cv2.INTER_CUBIC)
                out[:, :, 3] = np.round(np.clip(alpha, 0, 1) * max_value)
        return out


def upscale_files(upscaler, files, out_dir, ext='auto', suffix='', progress=True, max_pixels=MAX_PIXELS):
    """Upscale every file of ``files`` into ``out_dir`` as ``<stem>[_<suffix>].<ext>``, written atomically.

    A file that cannot be read (missing, empty, truncated, not an image, refused by OpenCV) or whose header declares
    more than ``max_pixels`` pixels (checked before decoding; None or 0: no limit) is reported and skipped; the rest
    are still done. An output folder that cannot be made or written is an error naming it; a full disk is
    :class:`ghostsr_plugin.utils.atomic.NoSpaceLeftError`. Returns (written paths, notes, skipped ``(path,
    reason)`` pairs).
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f'-o {out_dir}: exists and is not a folder (give a folder for the outputs)')
    make_folder(out_dir)
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise PermissionError(f'-o {out_dir}: the output folder is not writable')
    written, notes, skipped = [], [], []
    for path in tqdm(files, desc='upscale', unit='image', disable=not progress or len(files) < 2):
        try:
            img = read_image(path, max_pixels=max_pixels)
        except (UserInputError, OSError) as err:
            if isinstance(err, NoSpaceLeftError):
                raise
            skipped.append((path, str(err)))
            continue
        out_ext, note = output_extension(ext, path, img.ndim == 3 and img.shape[2] == 4)
        stem = os.path.splitext(os.path.basename(path))[0]
        out_path = os.path.join(out_dir, f'{stem}_{suffix}.{out_ext}' if suffix else f'{stem}.{out_ext}')
        if os.path.abspath(out_path) == os.path.abspath(path):
            skipped.append((path, 'the output would overwrite this input (give another -o or a --suffix)'))
            continue
        notes += [n for n in (note, write_image(out_path, upscaler.enhance(img))) if n]
        written.append(out_path)
    return written, notes, skipped


def upscale_folder(input_path, output, opt, ckpt=None, param_key=None, network_key='network_g', device='auto', tile=0,
                   tile_pad=10, half=False, alpha_upsampler='network', ext='auto', suffix=None, log=print,
                   warn=None, max_pixels=MAX_PIXELS):
    """The ``upscale`` command: every image of ``input_path`` (a file or a folder) upscaled by the network of option
    file ``opt`` into the folder ``output``; an image that fails to be read, or declares more than ``max_pixels``
    pixels (0 or None: no limit), is skipped and named, the others are done. Progress and the summary go to ``log``,
    notes and skipped files to ``warn`` (default: stderr). Returns (written paths, skipped (path, reason) pairs)."""
    warn = warn or (lambda line: print(line, file=sys.stderr))
    check_tiling(tile, tile_pad)  # before the network is built
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 0):
        raise UserInputError(f'--max-pixels {max_pixels!r}: allowed a number of pixels >= 1, or 0 for no limit')
    files = list_inputs(input_path)
    upscaler = Upscaler.from_options(opt, ckpt, param_key, network_key, device=device,
                                     tile=tile, tile_pad=tile_pad, half=half,
                                     alpha_upsampler=alpha_upsampler, progress=True)
    suffix = f'x{upscaler.scale}' if suffix is None else suffix
    log(f'upscale: {len(files)} file(s), x{upscaler.scale} on {upscaler.device}'
        f'{", float16" if half else ""}{f", tiles {tile} + pad {tile_pad}" if tile else ""}')
    written, notes, skipped = upscale_files(upscaler, files, output, ext, suffix, max_pixels=max_pixels)
    for note in notes:
        warn(f'upscale: note: {note}')
    for path, reason in skipped:
        warn(f'upscale: skipped: {reason}' if path in reason else f'upscale: skipped {path}: {reason}')
    log(f'upscale: {len(written)} written to {output}, {len(skipped)} skipped')
    return written, skipped
