"""``ghostsr upscale`` end to end on tiny generated images with a tiny GhostEDSR: grey, RGBA,
16-bit PNG and JPEG come back as grey, RGBA (alpha kept), 16-bit and JPEG at twice the size; a corrupt, empty or
truncated file, an unknown format and an image whose header declares more pixels than --max-pixels (refused before
decoding) are named and skipped while the rest is done (exit code 1); the tiled command writes what the
untiled one writes; bad input (tiles, checkpoint missing or not fitting, option file without a network, output
folder that is a file, --half on the CPU) gives one line naming it, exit code 2, and no output written; outputs
never leave temporary files, and a full disk is one line, exit code 1, with no zero-byte image left."""
import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from ghostsr_plugin.cli import upscale
from ghostsr_plugin.utils.errors import run_command
from tiny_options_helpers import smooth_image, tiny_option_file


def run(argv, capsys):
    code = run_command('ghostsr upscale', upscale.main, [str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture(scope='module')
def net_files(tmp_path_factory):
    return tiny_option_file(tmp_path_factory.mktemp('net'), 'GhostEDSR', 2)


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    cv2.imwrite(str(folder / 'grey.png'), smooth_image((10, 12), 1, channels=1))
    cv2.imwrite(str(folder / 'rgba.png'), smooth_image((10, 12), 2, channels=4))
    cv2.imwrite(str(folder / 'deep.png'), smooth_image((10, 12), 3).astype(np.uint16) * 257)
    cv2.imwrite(str(folder / 'photo.jpg'), smooth_image((10, 12), 4))
    (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
    (folder / 'notes.txt').write_text('not an image')
    return folder


def read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_a_folder_keeps_each_kind_and_skips_what_cannot_be_read(net_files, images, tmp_path, capsys):
    opt, ckpt = net_files
    out = tmp_path / 'out'
    code, err = run(['-i', images, '-o', out, '-opt', opt, '--ckpt', ckpt], capsys)
    assert code == 1
    assert 'broken.png: not a readable PNG image' in err and "notes.txt: unknown image format '.txt'" in err
    assert sorted(os.listdir(out)) == ['deep_x2.png', 'grey_x2.png', 'photo_x2.jpg', 'rgba_x2.png']
    assert read(out / 'grey_x2.png').shape == (20, 24)
    rgba = read(out / 'rgba_x2.png')
    assert rgba.shape == (20, 24, 4) and rgba[:, :, 3].std() > 0  # a real alpha plane, upscaled
    deep = read(out / 'deep_x2.png')
    assert deep.dtype == np.uint16 and deep.shape == (20, 24, 3) and (deep % 257 != 0).any()  # 16 bits used
    assert read(out / 'photo_x2.jpg').shape == (20, 24, 3)
    assert oct(os.stat(out / 'grey_x2.png').st_mode & 0o644) == oct(0o644)  # readable as any image file


def png_header_only(path, width, height):
    """A PNG whose header declares width x height but that holds one row of pixel data (a decompression-bomb
    probe: 100 bytes that claim any size)."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)) +
                     chunk(b'IDAT', zlib.compress(bytes(3 * width + 1))) + chunk(b'IEND', b''))


def test_images_that_cannot_be_decoded_are_skipped_and_named(net_files, tmp_path, capfd, monkeypatch):
    """A zero-byte PNG, a truncated PNG and PNG headers declaring 100000x100000 and 20000x20000 pixels are each named
    and skipped, the good image is still written, exit code 1. The bombs are refused from their header by the
    default limit (16384x16384), before anything is decoded. Before: the 100000x100000 header raised a cv2.error
    traceback and the rest of the folder was not done; 20000x20000 was decoded (1.2 GB) with no limit."""
    import ghostsr_plugin.utils.images as images
    opt, ckpt = net_files
    folder = tmp_path / 'in'
    folder.mkdir()
    cv2.imwrite(str(folder / 'good.png'), smooth_image((10, 12), 1))
    (folder / 'empty.png').write_bytes(b'')
    (folder / 'truncated.png').write_bytes((folder / 'good.png').read_bytes()[:60])
    png_header_only(folder / 'bomb.png', 100000, 100000)
    png_header_only(folder / 'big.png', 20000, 20000)
    decoded, imdecode = [], cv2.imdecode
    monkeypatch.setattr(images.cv2, 'imdecode', lambda buf, flags: decoded.append(buf.size) or imdecode(buf, flags))
    code, err = run(['-i', folder, '-o', tmp_path / 'out', '-opt', opt, '--ckpt', ckpt], capfd)  # OpenCV's stderr too
    assert code == 1 and 'Traceback' not in err
    assert os.listdir(tmp_path / 'out') == ['good_x2.png']
    skipped = sorted(line for line in err.splitlines() if line.startswith('upscale: skipped'))
    assert skipped == [
        f'upscale: skipped: {folder / "big.png"}: 20000x20000 = 400,000,000 pixels, more than the limit of '
        '268,435,456; not decoded (raise the limit to read it)',
        f'upscale: skipped: {folder / "bomb.png"}: 100000x100000 = 10,000,000,000 pixels, more than the limit of '
        '268,435,456; not decoded (raise the limit to read it)',
        f'upscale: skipped: {folder / "empty.png"}: not a readable PNG image (empty file)',
        f'upscale: skipped: {folder / "truncated.png"}: not a readable PNG image (corrupt, truncated or not an '
        'image)'], skipped
    assert len(decoded) == 2  # the good and the truncated image: the others were refused before decoding
    assert '[ WARN' not in err  # OpenCV's own warning about the truncated file does not come on top


def test_max_pixels_sets_the_limit(net_files, tmp_path, capsys):
    """--max-pixels N refuses an image of more than N pixels before decoding; --max-pixels 0 lifts the plugin's
    limit (OpenCV's own, 2^30 pixels, still refuses a 100000x100000 header: named and skipped, no cv2.error
    traceback); a negative limit is one line, exit code 2."""
    opt, ckpt = net_files
    cv2.imwrite(str(tmp_path / 'photo.png'), smooth_image((10, 12), 1))
    args = ['-i', tmp_path / 'photo.png', '-opt', opt, '--ckpt', ckpt]
    code, err = run([*args, '-o', tmp_path / 'a', '--max-pixels', '119'], capsys)
    assert code == 1 and '12x10 = 120 pixels, more than the limit of 119; not decoded' in err
    assert run([*args, '-o', tmp_path / 'b', '--max-pixels', '120'], capsys)[0] == 0
    png_header_only(tmp_path / 'bomb.png', 100000, 100000)
    code, err = run(['-i', tmp_path / 'bomb.png', '-o', tmp_path / 'c', '-opt', opt, '--ckpt', ckpt, '--max-pixels',
                     '0'], capsys)
    assert code == 1 and f'skipped: {tmp_path / "bomb.png"}: not a readable PNG image (OpenCV refused it: ' in err
    assert 'Traceback' not in err
    code, err = run([*args, '-o', tmp_path / 'd', '--max-pixels', '-1'], capsys)
    assert code == 2 and err.count('\n') == 1 and '--max-pixels -1: allowed a number of pixels >= 1, or 0' in err


def test_tiles_write_what_no_tiles_write(net_files, tmp_path, capsys):
    """A margin of 9 LR pixels covers the tiny GhostEDSR's receptive field (5.5 px, plus 1 px per shift)."""
    opt, ckpt = net_files
    cv2.imwrite(str(tmp_path / 'rgba.png'), smooth_image((30, 26), 5, channels=4))
    args = ['-i', tmp_path / 'rgba.png', '-opt', opt, '--ckpt', ckpt, '--suffix', '']
    assert run([*args, '-o', tmp_path / 'whole'], capsys)[0] == 0
    assert run([*args, '-o', tmp_path / 'tiles', '--tile', '18', '--tile-pad', '9'], capsys)[0] == 0
    whole, tiles = read(tmp_path / 'whole' / 'rgba.png'), read(tmp_path / 'tiles' / 'rgba.png')
    assert whole.shape == (60, 52, 4) and np.abs(whole.astype(int) - tiles).max() <= 1
    assert run([*args, '-o', tmp_path / 'nopad', '--tile', '18', '--tile-pad', '0'], capsys)[0] == 0
    assert np.abs(whole.astype(int) - read(tmp_path / 'nopad' / 'rgba.png')).max() > 1  # the margin matters


def test_output_formats_and_what_they_cannot_hold(net_files, images, tmp_path, capsys):
    opt, ckpt = net_files
    out = tmp_path / 'out'
    for name in ('rgba.png', 'deep.png'):
        assert run(['-i', images / name, '-o', out, '-opt', opt, '--ckpt', ckpt, '--ext', 'jpg'], capsys)[0] == 0
    assert sorted(os.listdir(out)) == ['deep_x2.jpg', 'rgba_x2.png']
    assert read(out / 'deep_x2.jpg').dtype == np.uint8
    assert run(['-i', images / 'photo.jpg', '-o', out, '-opt', opt, '--ckpt', ckpt, '--ext', 'webp'], capsys)[0] == 0
    assert read(out / 'photo_x2.webp').shape == (20, 24, 3)


@pytest.mark.parametrize('extra, message', [
    (['--tile', '6', '--tile-pad', '4'], '--tile 6 is smaller than twice --tile-pad 4'),
    (['--tile', '-3'], '--tile -3: must be 0'),
    (['--ckpt', 'missing.pth'], 'checkpoint not found: missing.pth'),
    (['--half', '--device', 'cpu'], '--half needs a CUDA device'),
])
def test_bad_options_give_one_line_and_write_nothing(net_files, images, tmp_path, capsys, extra, message):
    opt, ckpt = net_files
    argv = ['-i', images, '-o', tmp_path / 'out', '-opt', opt, '--ckpt', ckpt] + extra
    code, err = run(argv, capsys)
    assert code == 2 and err.count('\n') == 1 and message in err
    assert not (tmp_path / 'out').exists()


def test_a_checkpoint_that_does_not_fit_is_named(net_files, images, tmp_path, capsys):
    opt, _ = net_files
    _, plain_ckpt = tiny_option_file(tmp_path, 'EDSR', 2)
    code, err = run(['-i', images, '-o', tmp_path / 'out', '-opt', opt, '--ckpt', plain_ckpt], capsys)
    assert code == 2 and 'does not fit GhostEDSR' in err and err.count('\n') == 1


def test_an_option_file_without_network_or_checkpoint(images, tmp_path, capsys):
    bare = tmp_path / 'bare.yml'
    bare.write_text('name: nothing\nscale: 2\n')
    code, err = run(['-i', images, '-o', tmp_path / 'out', '-opt', bare, '--ckpt', 'x.pth'], capsys)
    assert code == 2 and "no 'network_g' section" in err
    opt, _ = tiny_option_file(tmp_path, 'GhostEDSR', 2, ckpt=False)
    code, err = run(['-i', images, '-o', tmp_path / 'out', '-opt', opt], capsys)
    assert code == 2 and 'no checkpoint: give --ckpt, or path.pretrain_network_g' in err


def test_an_output_folder_that_is_a_file_is_refused(net_files, images, tmp_path, capsys):
    opt, ckpt = net_files
    (tmp_path / 'taken').write_text('')
    code, err = run(['-i', images, '-o', tmp_path / 'taken', '-opt', opt, '--ckpt', ckpt], capsys)
    assert code == 2 and 'exists and is not a folder' in err
    code, err = run(['-i', tmp_path / 'nothing', '-o', tmp_path / 'out', '-opt', opt, '--ckpt', ckpt], capsys)
    assert code == 2 and 'no such image file or folder' in err


def test_a_full_disk_is_one_line_and_leaves_no_empty_image(net_files, images, tmp_path, capsys, full_disk):
    """The outputs go through the atomic writer: on a full disk (simulated: 100 bytes, then ENOSPC) upscale stops
    with one line naming the folder, exit code 1, and leaves no zero-byte or temporary file."""
    opt, ckpt = net_files
    out = tmp_path / 'out'
    code, err = run(['-i', images / 'photo.jpg', '-o', out, '-opt', opt, '--ckpt', ckpt], capsys)
    assert code == 1 and err.splitlines() == [
        f'ghostsr upscale: error: no space left on {out} while writing photo_x2.jpg; it was not written, the files '
        'already there are intact']
    assert os.listdir(out) == [] and full_disk
