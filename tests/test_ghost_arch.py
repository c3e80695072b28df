"""``type: Ghost`` over BasicSR 1.4.2's SR archs and the plugin's own (tiny configs): each builds, clusters from a
randomly initialised plain twin (ghost_init:) and runs a GhostSRModel training step with the plain twin as teacher
(distill:); ECBSR's re-parameterised blocks are merged first (its branch checkpoint too), and refused by name with
reparameterize: false. spandrel checkpoints (random init, saved to files), SPAN included (merged first), go through
``ghostsr ghostify``: detect -> ghostify -> cluster -> a checkpoint that the printed options load,
with the right output size; unidentifiable files, malformed .safetensors files and SPAN with --no_reparameterize
are one clear error."""
import copy
import json
import os

import pytest
import torch
import yaml

import ghostsr_plugin  # noqa: F401
from basicsr.archs import build_network
from ghostsr_plugin.archs.twins import plain_twin_options
from ghostsr_plugin.ops import ghost_layers

# (plain options at scale 2, number of ghosted layers)
BASICSR_ARCHS = {
    'EDSR': ({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}, 3),
    'MSRResNet': ({'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 2}, 3),
    'RRDBNet': ({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 2, 'num_feat': 8, 'num_block': 1,
                 'num_grow_ch': 4}, 18),
    'RCAN': ({'type': 'RCAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_group': 1, 'num_block': 1,
              'squeeze_factor': 2, 'upscale': 2}, 4),
    'SRVGGNetCompact': ({'type': 'SRVGGNetCompact', 'num_feat': 8, 'num_conv': 2, 'upscale': 2}, 2),
    'SwinIR': ({'type': 'SwinIR', 'upscale': 2, 'img_size': 16, 'embed_dim': 12, 'depths': [1], 'num_heads': [2],
                'window_size': 4, 'mlp_ratio': 2, 'upsampler': 'pixelshuffle'}, 3),
    'RDN': ({'type': 'RDN', 'num_feat': 8, 'num_block': 1, 'num_layer': 2, 'num_grow_ch': 8, 'upscale': 2}, 4),
    'CARN': ({'type': 'CARN', 'num_feat': 8, 'upscale': 2}, 18),
    'CARN_M': ({'type': 'CARN_M', 'num_feat': 8, 'upscale': 2}, 6),
    'ECBSR': ({'type': 'ECBSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_block': 2, 'num_channel': 8, 'with_idt': False,
               'act_type': 'prelu', 'scale': 2}, 2),  # re-parameterised: merged first, its checkpoint too
}


@pytest.mark.parametrize('arch', BASICSR_ARCHS)
def test_basicsr_arch_clusters_and_trains_under_ghostsr_model(arch, tiny_data, tmp_path):
    from basicsr.models import build_model
    from conftest import train_options
    plain_opt, num_ghost = BASICSR_ARCHS[arch]
    ghost_opt = {'type': 'Ghost', 'network': plain_opt, 'shift_mode': 'learnable'}
    assert plain_twin_options(ghost_opt) == plain_opt
    torch.manual_seed(0)
    plain_path = str(tmp_path / 'plain.pth')
    torch.save({'params': build_network(plain_opt).state_dict()}, plain_path)
    opt = train_options(f'ghost_{arch}', ghost_opt, tiny_data)
    opt['ghost_init'] = {'pretrain_path': plain_path, 'n_init': 1, 'init_offset': 'centre'}
    opt['distill'] = {'loss_weight': 1.0}
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    opt['path'].update(models=str(tmp_path), training_states=str(tmp_path), experiments_root=str(tmp_path))
    model = build_model(opt)
    assert len(ghost_layers(model.net_g)) == num_ghost
    assert type(model.teacher).__name__ == type(model.net_g).__name__  # the plain network itself
    model.feed_data({'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 16, 16)})
    before = [p.detach().clone() for p in model.net_g.parameters()]
    model.optimize_parameters(1)
    assert torch.isfinite(torch.tensor(model.log_dict['l_pix'])) and 'l_distill' in model.log_dict
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net_g.parameters()))
    model.net_g.eval()
    with torch.no_grad():
        assert model.net_g(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)


def test_ecbsr_without_reparameterize_is_refused_with_the_reason():
    opt = BASICSR_ARCHS['ECBSR'][0]
    with pytest.raises(ValueError, match='no convolution to ghost.*outside its own forward.*reparameterize=True'):
        build_network({'type': 'Ghost', 'network': opt, 'reparameterize': False})


def test_ghost_options_are_checked():
    with pytest.raises(ValueError, match='needs network:'):
        build_network({'type': 'Ghost', 'network': 'EDSR'})
    with pytest.raises(ValueError, match='cannot wrap another Ghost'):
        build_network({'type': 'Ghost', 'network': {'type': 'Ghost'}})
    with pytest.raises(ValueError, match="type Ghost has no option 'ghost_rate'; allowed: network, ghost_ratio"):
        build_network({'type': 'Ghost', 'network': {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3},
                       'ghost_rate': 0.5})
    with pytest.raises(ValueError, match='reparameterize, layer_ratios$'):
        build_network({'type': 'Ghost', 'network': {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3}, 'ratios': {}})


def test_layer_ratios_round_trip_through_the_options():
    """``type: Ghost`` takes ``layer_ratios`` (per-layer λ, as a calibrated start writes them): the options, through
    YAML, rebuild the same layers, and one build's state dict loads into another with the same outputs."""
    options = {'type': 'Ghost', 'network': BASICSR_ARCHS['EDSR'][0], 'layer_ratios': {'body.0.conv1': 0.25}}
    torch.manual_seed(0)
    net = build_network(copy.deepcopy(options))
    assert {n: m.num_intrinsic for n, m in net.named_modules() if m in ghost_layers(net)} == {
        'body.0.conv1': 6, 'body.0.conv2': 4, 'conv_after_body': 4}
    again = build_network(yaml.safe_load(yaml.safe_dump(options)))
    again.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), again.eval()(x))


# ------------------------------------------------------------------------------------------------------------------
# spandrel checkpoints through the command
# ------------------------------------------------------------------------------------------------------------------


def spandrel_nets():
    pytest.importorskip('spandrel')
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.RCAN import RCAN
    from spandrel.architectures.SPAN import SPAN
    from spandrel.architectures.SwinIR import SwinIR
    return {
        'ESRGAN': lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2),
        'Compact': lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2),
        'RCAN': lambda: RCAN(n_resgroups=1, n_resblocks=1, n_feats=8, reduction=2, scale=2),
        'SwinIR': lambda: SwinIR(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=2,
                                 upsampler='pixelshuffle'),
        'SPAN': lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2),  # Conv3XC merged first
    }


@pytest.mark.parametrize('arch', ['ESRGAN', 'Compact', 'RCAN', 'SwinIR', 'SPAN'])
def test_spandrel_checkpoint_to_ghost_checkpoint(arch, tmp_path, capsys):
    from ghostsr_plugin.cli.ghostify import main as command_main
    from ghostsr_plugin.archs.build import load_network
    torch.manual_seed(0)
    plain = spandrel_nets()[arch]().eval()
    torch.save(plain.state_dict(), tmp_path / 'plain.pth')
    out, opt_out = str(tmp_path / 'ghost.pth'), str(tmp_path / 'ghost.yml')
    assert command_main(['--model', str(tmp_path / 'plain.pth'), '--out', out, '--opt_out', opt_out, '--n_init', '1',
                         '--init_offset', 'centre', '--no_progress']) == 0
    printed = capsys.readouterr().out
    assert 'type: Ghost' in printed and 'type: SpandrelNet' in printed
    net = load_network(opt_out, out)  # the written options build the network, the checkpoint loads strictly
    assert ghost_layers(net)
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in plain.parameters())
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        y = net(x)
    assert y.shape == plain(x).shape == (1, 3, 32, 32)
    assert yaml.safe_load(open(opt_out))['network_g']['network']['arch'] == arch


def test_spandrel_bad_inputs_are_one_error(tmp_path, capsys):
    pytest.importorskip('spandrel')
    from spandrel.architectures.SPAN import SPAN
    from ghostsr_plugin.cli.ghostify import main
    from ghostsr_plugin.utils.errors import run_command
    torch.save(SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2).state_dict(), tmp_path / 'span.pth')
    torch.save({'foo.weight': torch.zeros(2, 2)}, tmp_path / 'unknown.pth')
    out = str(tmp_path / 'ghost.pth')
    assert run_command('ghostsr ghostify', main, ['--model', str(tmp_path / 'span.pth'), '--out', out,
                                                         '--no_reparameterize']) == 2
    assert 'SPAN has no convolution to ghost' in capsys.readouterr().err
    assert run_command('ghostsr ghostify', main, ['--model', str(tmp_path / 'unknown.pth'), '--out', out]) == 2
    err = capsys.readouterr().err
    assert 'unknown.pth: spandrel 0.4.2 cannot identify the architecture' in err and 'ESRGAN' in err
    assert not (tmp_path / 'ghost.pth').exists()


@pytest.mark.parametrize('content', ['not safetensors', 'empty', 'truncated'])
def test_a_malformed_safetensors_file_is_one_line(content, tmp_path, capsys):
    """A .safetensors file that is not one, is empty, or whose data stops before its header says: exit code 2, one
    line naming the file, no output. Before: a SafetensorError traceback from the Rust reader."""
    pytest.importorskip('spandrel')
    import struct
    from ghostsr_plugin.cli.ghostify import main
    from ghostsr_plugin.utils.errors import run_command
    header = json.dumps({'w': {'dtype': 'F32', 'shape': [1000], 'data_offsets': [0, 4000]}}).encode()
    data = {'not safetensors': b'garbage bytes', 'empty': b'',
            'truncated': struct.pack('<Q', len(header)) + header + bytes(100)}[content]
    path = tmp_path / 'model.safetensors'
    path.write_bytes(data)
    code = run_command('ghostsr ghostify', main, ['--model', str(path), '--out', str(tmp_path / 'ghost.pth')])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f'ghostsr ghostify: error: {path}: not a readable .safetensors file ('), err[0]
    assert os.listdir(tmp_path) == ['model.safetensors']


def test_hand_written_ghost_archs_are_thin_registrations_over_ghostify():
    import inspect
    from basicsr.utils.registry import ARCH_REGISTRY
    from ghostsr_plugin.compress.ghostifier import GHOST_ARGS
    for name, plain in (('GhostEDSR', 'EDSR'), ('GhostRDN', 'RDN'), ('GhostCARN', 'CARN'), ('GhostCARN_M', 'CARN_M')):
        cls = ARCH_REGISTRY.get(name)
        params = list(inspect.signature(cls).parameters)
        assert params == list(inspect.signature(ARCH_REGISTRY.get(plain)).parameters) + list(GHOST_ARGS)
        assert 'gumbel_seed (int): seed of the Gumbel noise' in cls.__doc__
    net = ARCH_REGISTRY.get('GhostCARN_M')(3, 3, 16, 2, ghost_ratio=0.5, shift_mode='copy')  # positional as before
    assert [m.num_intrinsic for m in ghost_layers(net)] == [8] * 6 and net.upscale == 2
    assert all(m.shift_mode == 'copy' for m in ghost_layers(net))
    with pytest.raises(TypeError, match='GhostRDN: got an unexpected keyword argument'):
        ARCH_REGISTRY.get('GhostRDN')(ghost_rate=0.5)


def test_arch_and_opt_sources_of_the_command(tmp_path, capsys):
    from basicsr.archs.edsr_arch import EDSR
    from ghostsr_plugin.cli.ghostify import main
    from ghostsr_plugin.archs.build import load_network
    args = {'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}
    torch.save({'params': EDSR(**args).state_dict()}, tmp_path / 'edsr.pth')
    (tmp_path / 'plain.yml').write_text(yaml.safe_dump({'network_g': {'type': 'EDSR', **args}}))
    for source in (['--arch', 'EDSR', '--arch_args', json.dumps(args)],
                   ['-opt', str(tmp_path / 'plain.yml')]):
        out = str(tmp_path / 'ghost.pth')
        assert main(source + ['--pretrained', str(tmp_path / 'edsr.pth'), '--out', out, '--opt_out',
                              str(tmp_path / 'ghost.yml'), '--n_init', '1', '--ghost_ratio', '0.25',
                              '--no_progress']) == 0
        net = load_network(str(tmp_path / 'ghost.yml'), out)
        assert [m.num_intrinsic for m in ghost_layers(net)] == [6, 6, 6]
        assert 'ghost  body.0.conv1: eligible, λ=0.25, fused relu' in capsys.readouterr().out


def test_import_does_not_load_spandrel():
    import subprocess
    import sys
    code = 'import sys, ghostsr_plugin; print("spandrel" in sys.modules, callable(ghostsr_plugin.ghostify))'
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          check=True).stdout.split() == ['False', 'True']


def test_spandrel_safetensors_file(tmp_path, capsys):
    pytest.importorskip('spandrel')
    from safetensors.torch import save_file
    from ghostsr_plugin.cli.ghostify import main
    torch.manual_seed(0)
    save_file(spandrel_nets()['Compact']().state_dict(), str(tmp_path / 'compact.safetensors'))
    out = str(tmp_path / 'ghost.pth')
    assert main(['--model', str(tmp_path / 'compact.safetensors'), '--out', out, '--n_init', '1', '--no_progress']) == 0
    assert 'ghost  body.2: eligible' in capsys.readouterr().out
    assert set(torch.load(out, weights_only=True)['params']) >= {'body.2.ghost_index', 'ghost_schedule.iteration'}
