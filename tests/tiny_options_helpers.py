"""Helpers shared by the complexity, report and upscale tests: multiply-adds of a conv by hand, option files and
checkpoints of tiny EDSR / GhostEDSR networks, and a tiny benchmark set in the EDSR layout."""
import cv2
import numpy as np
import torch
import yaml

import ghostsr_plugin  # noqa: F401  (registers the archs; BasicSR compat)
from basicsr.archs import build_network

TINY = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1)


def conv_macs(h, w, c_in, c_out, k=3, groups=1):
    """Multiply-adds of a k x k conv with an h x w output (bias adds not counted, as FlopCounterMode does)."""
    return h * w * c_out * (c_in // groups) * k * k


def tiny_option_file(folder, net_type='GhostEDSR', scale=2, ckpt=True, seed=0, **extra):
    """Write ``<folder>/<type>_x<scale>.yml`` (a tiny ``network_g``) and, with ``ckpt``, a checkpoint of random
    weights ``<folder>/<type>_x<scale>.pth``. Returns (option path, checkpoint path or None)."""
    net_opt = {'type': net_type, **TINY, 'upscale': scale, **extra}
    opt_path = folder / f'{net_type}_x{scale}.yml'
    opt_path.write_text(yaml.safe_dump({'name': f'tiny_{net_type}', 'scale': scale, 'network_g': net_opt}))
    if not ckpt:
        return str(opt_path), None
    torch.manual_seed(seed)
    net = build_network(dict(net_opt))
    ckpt_path = folder / f'{net_type}_x{scale}.pth'
    torch.save({'params': net.state_dict()}, ckpt_path)
    return str(opt_path), str(ckpt_path)


def smooth_image(size, seed=0, channels=3):
    """A smooth random uint8 image (H x W x channels, or H x W for 1 channel)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[0], 0:size[1]] / max(size)
    planes = [np.sin(2 * np.pi * (rng.uniform(1, 3) * x + rng.uniform(1, 3) * y) + rng.uniform(0, 6))
              for _ in range(channels)]
    img = np.round((np.stack(planes, -1) * 0.4 + 0.5) * 255).astype(np.uint8)
    return img[:, :, 0] if channels == 1 else img


def tiny_benchmark(root, name='Tiny', scale=2, count=2, size=16):
    """``root/<name>/HR/img<i>.png`` and ``LR_bicubic/X<scale>/img<i>x<scale>.png``; returns ``root``."""
    hr_dir, lr_dir = root / name / 'HR', root / name / 'LR_bicubic' / f'X{scale}'
    hr_dir.mkdir(parents=True)
    lr_dir.mkdir(parents=True)
    for i in range(count):
        hr = smooth_image((size, size), seed=i)
        cv2.imwrite(str(hr_dir / f'img{i}.png'), hr)
        cv2.imwrite(str(lr_dir / f'img{i}x{scale}.png'),
                    cv2.resize(hr, (size // scale, size // scale), interpolation=cv2.INTER_AREA))
    return root
