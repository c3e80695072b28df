"""Structured channel pruning (ghostsr_plugin.compress.pruning, Torch-Pruning's DepGraph) and the ``Pruned`` arch:
halving a tiny EDSR and a tiny Compact cuts exactly their hidden channels (never the input, the output or what feeds
the PixelShuffle), the options rebuild the identical network, magnitude pruning removes exactly the channels whose
weights are zero, and a pruned network fine-tunes through BasicSR with GhostSRModel and the original as the only
target, as ``ghostsr compress`` runs it."""
import os

import cv2
import numpy as np
import pytest
import torch
import yaml

import ghostsr_plugin  # noqa: F401  (registration)
from basicsr.archs import build_network
from conftest import python, run
from ghostsr_plugin.compress.pruning import param_count, prune, ratio_for_params

EDSR = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 2, 'upscale': 2}
COMPACT = {'type': 'SpandrelNet', 'arch': 'Compact', 'hyperparameters': {'num_feat': 16, 'num_conv': 2, 'upscale': 4}}
# (in, out) channels of every conv after pruning by 0.5: hidden ones halved, the rest as they were
HALVED = {
    'EDSR': {'conv_first': (3, 8), 'body.0.conv1': (8, 8), 'body.0.conv2': (8, 8), 'body.1.conv1': (8, 8),
             'body.1.conv2': (8, 8), 'conv_after_body': (8, 8), 'upsample.0': (8, 64), 'conv_last': (16, 3)},
    'SpandrelNet': {'body.0': (3, 8), 'body.2': (8, 8), 'body.4': (8, 8), 'body.6': (8, 48)},
}
EXAMPLE = torch.rand(1, 3, 16, 16)


def _net(opts):
    torch.manual_seed(0)
    return build_network(dict(opts)).eval()


def _convs(net):
    return {name: (m.in_channels, m.out_channels) for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)}


@pytest.mark.parametrize('opts', [EDSR, COMPACT], ids=['EDSR', 'Compact'])
def test_half_the_hidden_channels_go_and_the_shapes_stay(opts):
    """Ratio 0.5 halves every hidden conv's output channels (the residual sum's convs together) and nothing else:
    the input channels, the last conv and the conv feeding the PixelShuffle keep theirs; the PReLU slopes follow;
    the output keeps its shape; the plain network (frozen, as ``compress`` holds it) is untouched and the copy
    keeps its frozen flags."""
    plain = _net(opts).requires_grad_(False)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    pruned, keep = prune(plain, 0.5, EXAMPLE)
    assert _convs(pruned) == HALVED[opts['type']]
    assert all(len(kept) == 8 for dims in keep.values() for kept in dims.values())
    assert pruned(torch.rand(1, 3, 12, 10)).shape == plain(torch.rand(1, 3, 12, 10)).shape
    assert param_count(pruned) < 0.45 * param_count(plain)
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())
    assert not any(p.requires_grad for p in pruned.parameters())
    if opts is COMPACT:
        assert pruned.body[1].weight.shape == (8, )  # the PReLU after body.0


@pytest.mark.parametrize('opts', [EDSR, COMPACT], ids=['EDSR', 'Compact'])
def test_pruned_arch_rebuilds_the_identical_network(opts):
    """``{'type': 'Pruned', 'network': ..., 'keep': ...}`` (through YAML, as train.yml holds it) builds the pruned
    network: the pruned state dict loads strictly and the outputs are bit-identical."""
    pruned, keep = prune(_net(opts), 0.5, EXAMPLE)
    options = yaml.safe_load(yaml.safe_dump({'type': 'Pruned', 'network': opts, 'keep': keep}))
    rebuilt = build_network(options).eval()
    rebuilt.load_state_dict(pruned.state_dict())
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), pruned.eval()(x))


def test_magnitude_pruning_removes_exactly_the_zero_channels():
    """Channels whose filters, biases and consumer weights are zero carry nothing; magnitude pruning by the share
    they make up removes exactly them (per group), and the output stays the same."""
    plain = _net(COMPACT)
    zeroed = {'body.0': [1, 4, 5, 6, 9, 10, 12, 15], 'body.2': [0, 2, 3, 7, 8, 11, 13, 14], 'body.4': list(range(8))}
    with torch.no_grad():
        for name, consumer in (('body.0', 'body.2'), ('body.2', 'body.4'), ('body.4', 'body.6')):
            conv, following = plain.get_submodule(name), plain.get_submodule(consumer)
            conv.weight[zeroed[name]] = 0
            conv.bias[zeroed[name]] = 0
            following.weight[:, zeroed[name]] = 0
        expected = plain(EXAMPLE)
    pruned, keep = prune(plain, 0.5, EXAMPLE)
    for name, channels in zeroed.items():
        assert keep[name]['out'] == sorted(set(range(16)) - set(channels))
    with torch.no_grad():  # the zero terms are gone from each sum; the others may be added in another order
        torch.testing.assert_close(pruned(EXAMPLE), expected, rtol=0, atol=1e-6)


def test_ratio_for_params_matches_a_share_of_the_params():
    """The ratio found leaves at most the asked share of the parameters, and a slightly smaller one more; a share
    pruning cannot reach and a ratio outside [0, 1) are refused by name."""
    plain = _net(COMPACT)
    ratio = ratio_for_params(plain, 0.6, EXAMPLE)
    assert param_count(prune(plain, ratio, EXAMPLE)[0]) <= 0.6 * param_count(plain)
    assert param_count(prune(plain, ratio - 0.01, EXAMPLE)[0]) > 0.6 * param_count(plain)
    with pytest.raises(ValueError, match='params ratio 0.01: below what pruning reaches'):
        ratio_for_params(plain, 0.01, EXAMPLE)
    with pytest.raises(ValueError, match=r'pruning ratio 1: allowed a fraction in \[0, 1\)'):
        prune(plain, 1, EXAMPLE)


def test_pruned_network_fine_tunes_with_the_teacher_only(tmp_path):
    """``ghostsr compress``'s fine-tune (its train.yml: GhostSRModel, LRFolderDataset patches, the original as
    ``distill:`` teacher, no pixel loss) trains a Pruned network, which has no ghost layers, for 2 iterations
    through BasicSR's loop; the checkpoint it writes loads into the Pruned options and has moved from the start."""
    from ghostsr_plugin.pipeline.compression import _dataset_options, _train_options
    plain_opts = {'type': 'SpandrelNet', 'arch': 'Compact',
                  'hyperparameters': {'num_feat': 8, 'num_conv': 2, 'upscale': 2}}
    plain = _net(plain_opts)
    pruned, keep = prune(plain, 0.5, EXAMPLE)
    pruned_opts = {'type': 'Pruned', 'network': plain_opts, 'keep': keep}
    torch.save({'params': plain.state_dict()}, tmp_path / 'original.pth')
    torch.save({'params': pruned.state_dict()}, tmp_path / 'start.pth')
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f'im{i}.png'), cv2.GaussianBlur(rng.integers(0, 256, (24, 28, 3), np.uint8),
                                                                    (5, 5), 2))
    for name, images in (('train_images.txt', ['im0.png', 'im1.png']), ('val_images.txt', ['im2.png'])):
        (tmp_path / name).write_text(''.join(f'{tmp_path / image}\n' for image in images))
    train_set = _dataset_options(str(tmp_path / 'train_images.txt'), 'train', 2, 'as-is', 12, 2)
    val_set = _dataset_options(str(tmp_path / 'val_images.txt'), 'val', 2, 'as-is', 12, 2, val_crop=16)
    options = _train_options(str(tmp_path), 2, pruned_opts, plain_opts, train_set, val_set, 2, 1e-3, 'cpu', 1, 0)
    (tmp_path / 'train.yml').write_text(yaml.safe_dump(options, sort_keys=False))
    proc = run([python(), '-m', 'ghostsr_plugin', 'train', '-opt', 'train.yml'], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = next((tmp_path / 'experiments' / 'finetune').glob('train_*.log')).read_text()
    assert 'has no ghost layers' in log and 'l_distill' in log
    trained = build_network(pruned_opts)
    trained.load_state_dict(torch.load(tmp_path / 'experiments' / 'finetune' / 'models' / 'net_g_latest.pth',
                                       weights_only=True)['params'])
    assert not all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), pruned.state_dict().values()))
    assert os.path.isfile(tmp_path / 'experiments' / 'finetune' / 'models' / 'net_g_best.pth')
