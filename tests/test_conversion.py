"""Conversion of the authors' CARN-pytorch checkpoints (ghostsr_plugin.convert): exact, strict, atomic; a checkpoint
of another family (RDN, EDSR) or a single-scale one given --scale is refused saying what it is, in one line, exit 2."""
import os
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

import ghostsr_plugin  # noqa: F401  (registration)
from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.cli import convert
from ghostsr_plugin.compress.conversion import convert_carn, infer_carn_args, single_scale
from ghostsr_plugin.utils.errors import run_command

CARN_M_WEIGHTS = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'weights', 'carn_m.pth')
MEAN = (0.4488, 0.4371, 0.4040)


def authors_state_dict(mobile, num_feat, group=4, seed=0, prefix='module.'):
    """A random state dict in the layout of the authors' multi-scale CARN / CARN-M (keys as in their release)."""
    gen = torch.Generator().manual_seed(seed)
    state = OrderedDict()

    def conv(name, out_ch, in_ch, k, scale=0.1):
        state[f'{prefix}{name}.weight'] = torch.randn(out_ch, in_ch, k, k, generator=gen) * scale
        state[f'{prefix}{name}.bias'] = torch.randn(out_ch, generator=gen) * 0.01

    for name, sign in (('sub_mean', -1), ('add_mean', 1)):
        state[f'{prefix}{name}.shifter.weight'] = torch.eye(3).view(3, 3, 1, 1)
        state[f'{prefix}{name}.shifter.bias'] = sign * torch.tensor(MEAN)
    conv('entry', num_feat, 3, 3)
    groups = group if mobile else 1
    for block in ('b1', 'b2', 'b3'):
        for unit in (('b1', ) if mobile else ('b1', 'b2', 'b3')):
            conv(f'{block}.{unit}.body.0', num_feat, num_feat // groups, 3)
            conv(f'{block}.{unit}.body.2', num_feat, num_feat // groups, 3)
            if mobile:
                conv(f'{block}.{unit}.body.4', num_feat, num_feat, 1)
        for i in (1, 2, 3):
            conv(f'{block}.c{i}.body.0', num_feat, num_feat * (i + 1), 1)
    for i in (1, 2, 3):
        conv(f'c{i}.body.0', num_feat, num_feat * (i + 1), 1)
    conv('upsample.up2.body.0', 4 * num_feat, num_feat // groups, 3)
    conv('upsample.up3.body.0', 9 * num_feat, num_feat // groups, 3)
    conv('upsample.up4.body.0', 4 * num_feat, num_feat // groups, 3)
    conv('upsample.up4.body.3', 4 * num_feat, num_feat // groups, 3)
    conv('exit', 3, num_feat, 3)
    return state


def functional_carn(state, x, scale, mobile, group=4):
    """CARN / CARN-M written out from the description of the authors' network (shared/data/README.md)."""
    state = {k.replace('module.', ''): v for k, v in state.items()}
    groups = group if mobile else 1

    def conv(name, h, g=1):
        weight = state[f'{name}.weight']
        return F.conv2d(h, weight, state[f'{name}.bias'], padding=weight.shape[-1] // 2, groups=g)

    def residual(name, h):
        if mobile:
            r = F.relu(conv(f'{name}.body.0', h, groups))
            r = F.relu(conv(f'{name}.body.2', r, groups))
            r = conv(f'{name}.body.4', r)
        else:
            r = conv(f'{name}.body.2', F.relu(conv(f'{name}.body.0', h)))
        return F.relu(r + h)

    def cascade(h, blocks, fusion_prefix):
        c = o = h
        for i, block in enumerate(blocks, 1):
            c = torch.cat([c, block(o)], 1)
            o = F.relu(conv(f'{fusion_prefix}c{i}.body.0', c))
        return o

    def block(k):
        def run(h):
            units = [f'b{k}.b1'] * 3 if mobile else [f'b{k}.b{i}' for i in (1, 2, 3)]
            return cascade(h, [lambda t, u=u: residual(u, t) for u in units], f'b{k}.')
        return run

    h = conv('entry', conv('sub_mean.shifter', x))
    h = cascade(h, [block(1), block(2), block(3)], '')
    steps = [('upsample.up4.body.0', 2), ('upsample.up4.body.3', 2)] if scale == 4 else \
        [(f'upsample.up{scale}.body.0', scale)]
    for name, factor in steps:
        h = F.pixel_shuffle(F.relu(conv(name, h, groups)), factor)
    return conv('add_mean.shifter', conv('exit', h))


@pytest.mark.parametrize('arch, mobile, num_feat', [('CARN_M', True, 16), ('CARN', False, 8)])
def test_conversion_is_exact(tmp_path, arch, mobile, num_feat):
    state = authors_state_dict(mobile, num_feat)
    torch.save(state, tmp_path / 'authors.pth')
    out = tmp_path / 'converted.pth'
    assert convert.main(['--arch', arch, '--in', str(tmp_path / 'authors.pth'), '--out', str(out)]) == 0
    params = torch.load(out, weights_only=True)['params']
    args = dict(num_feat=num_feat, multi_scale=True, **({'group': 4} if mobile else {}))
    net = ARCH_REGISTRY.get(arch)(**args).eval()
    net.load_state_dict(params, strict=True)
    x = torch.rand(1, 3, 7, 9)
    for scale in (2, 3, 4):
        with torch.no_grad():
            got = net(x, scale=scale)
        assert got.shape == (1, 3, 7 * scale, 9 * scale)
        assert torch.equal(got, functional_carn(state, x, scale, mobile))
    assert sorted(os.listdir(tmp_path)) == ['authors.pth', 'converted.pth']  # no temporary file left behind


def test_single_scale_cut(tmp_path):
    state = authors_state_dict(True, 16, prefix='')
    converted, network = convert_carn(state, 'CARN_M', scale=3)
    assert network == {'type': 'CARN_M', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'group': 4,
                       'multi_scale': False, 'upscale': 3}
    assert not any(k.startswith(('upsample.up2', 'upsample.up3', 'upsample.up4')) for k in converted)
    net = ARCH_REGISTRY.get('CARN_M')(**{k: v for k, v in network.items() if k != 'type'}).eval()
    net.load_state_dict(converted, strict=True)
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        assert torch.equal(net(x), functional_carn(state, x, 3, True))
    # a single-scale checkpoint is recognised with its scale
    assert infer_carn_args(single_scale(state, 4), 'CARN_M')['upscale'] == 4
    assert infer_carn_args(single_scale(state, 2), 'CARN_M')['upscale'] == 2


@pytest.mark.skipif(not os.path.isfile(CARN_M_WEIGHTS), reason='the real carn_m.pth is not available')
def test_real_carn_m(tmp_path):
    out = tmp_path / 'CARN_M_multiscale.pth'
    assert convert.main(['--arch', 'CARN_M', '--in', CARN_M_WEIGHTS, '--out', str(out)]) == 0
    params = torch.load(out, weights_only=True)['params']
    assert sum(v.numel() for v in params.values()) == 414_811  # as the data README says
    net = ARCH_REGISTRY.get('CARN_M')(multi_scale=True).eval()
    net.load_state_dict(params, strict=True)
    state = torch.load(CARN_M_WEIGHTS, map_location='cpu', weights_only=True)
    x = torch.rand(1, 3, 10, 10)
    for scale in (2, 3, 4):
        with torch.no_grad():
            assert torch.equal(net(x, scale=scale), functional_carn(state, x, scale, True))


def _convert(argv):
    """The command as a user runs it: (exit code, stderr lines) through run_command."""
    return run_command('ghostsr convert', convert.main, [str(a) for a in argv])


def test_errors_name_the_key(tmp_path, capsys):
    carn_m = authors_state_dict(True, 16, prefix='')
    torch.save(carn_m, tmp_path / 'carn_m.pth')
    with pytest.raises(ValueError, match=r'"b1\.b1\.body\.0\.weight" has shape \(16, 4, 3, 3\).*\(16, 16, 3, 3\)'):
        convert.main(['--arch', 'CARN', '--in', str(tmp_path / 'carn_m.pth'), '--out', str(tmp_path / 'x.pth')])
    truncated = OrderedDict((k, v) for k, v in carn_m.items() if not k.startswith('b2.c2'))
    torch.save(truncated, tmp_path / 'truncated.pth')
    with pytest.raises(ValueError, match=r'"b2\.c2\.body\.0\.weight" is missing'):
        convert.main(['--arch', 'CARN_M', '--in', str(tmp_path / 'truncated.pth'), '--out', str(tmp_path / 'x.pth')])
    extra = OrderedDict(carn_m, **{'b1.extra.weight': torch.zeros(1)})
    torch.save(extra, tmp_path / 'extra.pth')
    with pytest.raises(ValueError, match=r'unexpected key "b1\.extra\.weight"'):
        convert.main(['--arch', 'CARN_M', '--in', str(tmp_path / 'extra.pth'), '--out', str(tmp_path / 'x.pth')])
    with pytest.raises(ValueError, match='scale must be 2, 3 or 4'):
        convert.main(['--arch', 'CARN_M', '--in', str(tmp_path / 'carn_m.pth'), '--out', str(tmp_path / 'x.pth'),
                      '--scale', '8'])
    with pytest.raises(ValueError, match='EDSR checkpoints need no conversion'):
        convert.main(['--arch', 'EDSR', '--in', str(tmp_path / 'carn_m.pth'), '--out', str(tmp_path / 'x.pth')])
    assert not (tmp_path / 'x.pth').exists()


@pytest.mark.parametrize('family,state,message', [
    ('RDN', {'SFENet1.weight': torch.zeros(8, 3, 3, 3), 'SFENet1.bias': torch.zeros(8)}, 'it looks like an RDN checkpoint'),
    ('EDSR', {'conv_first.weight': torch.zeros(8, 3, 3, 3)}, 'it looks like an EDSR (BasicSR) checkpoint'),
])
@pytest.mark.parametrize('scale', [None, 2])
def test_other_families_are_named(family, state, message, scale, tmp_path, capsys):
    """Before: `convert --arch CARN_M --in rdn.pth --scale 2` said "not a multi-scale CARN checkpoint"."""
    torch.save({'params': state}, tmp_path / 'other.pth')
    argv = ['--arch', 'CARN_M', '--in', tmp_path / 'other.pth', '--out', tmp_path / 'x.pth']
    assert _convert(argv + (['--scale', scale] if scale else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'ghostsr convert: error: {tmp_path / "other.pth"}: not a '
                                               'CARN-pytorch checkpoint') and message in err[0], err
    assert not (tmp_path / 'x.pth').exists()


def test_single_scale_checkpoint_with_scale(tmp_path, capsys):
    single = single_scale(authors_state_dict(True, 16, prefix=''), 2)
    torch.save(single, tmp_path / 'single.pth')
    assert _convert(['--arch', 'CARN_M', '--in', tmp_path / 'single.pth', '--out', tmp_path / 'x.pth', '--scale', 2]) == 2
    assert 'it is a single-scale CARN checkpoint; convert it without --scale' in capsys.readouterr().err
