"""Export (ghostsr_plugin.deploy.exporters, ghostsr export): both ONNX forms of the move equal the
reference shift; onnxruntime runs the ONNX models of tiny Ghost networks (learned offsets, clustered-style channel
maps, group convs, shared layers, multi-scale CARN, ``type: Ghost``) with PyTorch's output within 1e-4 at
dynamic batch/height/width, with only standard ONNX ops and no shift logits, schedule or noise in the graph; the
torch.export program keeps the compiled ghost op, reloads and equals the eager network exactly; the command writes
checked files and refuses bad input with one line, exit code 2 and nothing written."""
import os
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch

import ghostsr_plugin  # noqa: F401
from basicsr.archs import build_network
from ghostsr_plugin.cli import export as command
from ghostsr_plugin.deploy import exporters as deploy
from ghostsr_plugin.ops.ghost_conv import GhostConv2d, ghost_layers, ghost_offsets
from ghostsr_plugin.ops.shift import shift2d, shift_to_offset
from ghostsr_plugin.utils.errors import run_command
from tiny_options_helpers import smooth_image, tiny_option_file

TOL = 1e-4  # fp32, the bound
SHAPES = [(1, 17, 23), (2, 8, 8), (1, 1, 5)]  # none is the export's sample shape (2 x 32 x 32)


def _learned(net, seed=0):
    """Give every learnable ghost layer a distinct non-centre argmax W' and a permuted channel map, as a trained,
    clustered network has."""
    gen = torch.Generator().manual_seed(seed)
    for k, layer in enumerate(ghost_layers(net)):
        if layer.shift_logits is not None:
            with torch.no_grad():
                layer.shift_logits.normal_(generator=gen)
                layer.shift_logits[[1, 3, 5, 7, 0, 2, 6, 8][k % 8]] += 10
        n, c_out = layer.num_intrinsic, layer.full_out_channels
        index = torch.cat([torch.arange(n), n + torch.randint(0, n, (c_out - n, ), generator=gen)])
        layer.set_index(index[torch.randperm(c_out, generator=gen)])
    return net.eval()


def _nets():
    torch.manual_seed(0)
    return {
        'GhostEDSR': (_learned(build_network(dict(type='GhostEDSR', num_in_ch=3, num_out_ch=3, num_feat=8,
                                                  num_block=2, upscale=2))), None),
        'GhostCARN_M multi-scale x3': (_learned(build_network(dict(type='GhostCARN_M', num_feat=16, upscale=2,
                                                                   multi_scale=True, ghost_d=2))), 3),
        'Ghost over EDSR, res_scale 0.1': (_learned(build_network(dict(
            type='Ghost', network=dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=3,
                                       res_scale=0.1)))), None),
        'Ghost over Compact, fused PReLUs': (_learned(_with_slopes(build_network(dict(
            type='Ghost', network=dict(type='SRVGGNetCompact', num_feat=8, num_conv=3, upscale=2))))), None),
    }


def _with_slopes(net):
    """PReLU slopes of both signs, so the fused PReLU (one slope per output channel, applied after the move) shows."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.PReLU):
                module.weight.uniform_(-0.5, 0.5)
    return net


NETS = _nets()


@pytest.mark.parametrize('form', deploy.SHIFT_FORMS)
@pytest.mark.parametrize('d', [1, 2])
def test_both_move_forms_equal_the_reference_shift(form, d):
    layer = GhostConv2d(4, 8, ratio=0.5, d=d, shift_mode='fixed', offset=(0, -1))
    x = torch.randn(2, 4, 5, 7)
    for dy in range(-d, d + 1):
        for dx in range(-d, d + 1):
            layer.fixed_offset = shift_to_offset(dy, dx, d)
            onnx_layer = deploy.OnnxGhostConv2d(layer, (dy, dx), form)
            assert torch.equal(onnx_layer.move(x), shift2d(x, dy, dx)), (dy, dx)
            with torch.no_grad():
                assert torch.equal(onnx_layer(x), layer(x))


@pytest.mark.parametrize('name', list(NETS))
def test_onnxruntime_equals_pytorch_with_standard_ops_only(name):
    net, scale = NETS[name]
    form = 'slice' if 'CARN' in name else 'conv'
    model = deploy.export_onnx(net, scale=scale, shift_form=form)
    # Only standard ONNX ops; no shift logits, schedule state, Gumbel noise or plugin op in the graph.
    nodes = list(model.graph.node)
    assert {n.domain for n in nodes} <= {'', 'ai.onnx'}
    assert not {n.op_type for n in nodes} & {'RandomUniform', 'RandomUniformLike', 'RandomNormal', 'RandomNormalLike',
                                             'Multinomial', 'Softmax', 'ArgMax'}
    names = [i.name for i in model.graph.initializer]
    assert not [n for n in names if 'shift_logits' in n or 'ghost_schedule' in n or 'iteration' in n]
    assert any(n.endswith('ghost_index') or 'conv' in n or 'body' in n for n in names)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [bool(dims[i].dim_param) for i in range(4)] == [True, False, True, True]  # dynamic N, H, W
    assert {'Conv', 'Concat'} <= {n.op_type for n in nodes} and ('Pad' in {n.op_type for n in nodes}) == (form == 'slice')
    session = deploy.onnx_session(model, threads=1)
    reference = deploy.frozen_copy(net, scale)
    for batch, height, width in SHAPES:
        x = torch.rand(batch, 3, height, width)
        with torch.no_grad():
            expected = net(x, scale=scale) if scale else net(x)
            assert torch.equal(reference(x), expected)
        out = deploy.run_onnx(session, x)
        assert out.shape == expected.shape
        assert (out - expected).abs().max() <= TOL
    assert model.metadata_props[0].key == 'ghostsr.offsets'


def test_opset_17_and_refusals():
    net, _ = NETS['GhostEDSR']
    model = deploy.export_onnx(net, opset=17)
    assert [e.version for e in model.opset_import if e.domain in ('', 'ai.onnx')] == [17]
    with pytest.raises(ValueError, match='opset >= 17'):
        deploy.export_onnx(net, opset=16)
    with pytest.raises(ValueError, match='allowed: --opset 18 or higher'):
        deploy.export_onnx(net, opset=17, shift_form='slice')  # no ONNX adapter takes Pad back to 17


def test_program_keeps_the_compiled_op_reloads_and_equals_eager(tmp_path):
    net, scale = NETS['GhostCARN_M multi-scale x3']
    path = tmp_path / 'net.pt2'
    program = deploy.export_program(net, path, scale=scale)
    assert deploy.program_ghost_ops(program) == 2 * 3 * 3  # 6 ghost layers, each applied 3 times (shared)
    assert not [k for k in program.state_dict if 'shift_logits' in k or 'iteration' in k]
    loaded = deploy.load_program(path).module()
    for batch, height, width in SHAPES:
        x = torch.rand(batch, 3, height, width)
        with torch.no_grad():
            # Exact: the same kernels (the compiled ghost op, the same aten convs) run in the same order.
            assert torch.equal(loaded(x), net(x, scale=scale))


def test_frozen_copy_fixes_the_eval_offsets_and_leaves_the_network_alone():
    net, _ = NETS['GhostEDSR']
    before = {k: v.clone() for k, v in net.state_dict().items()}
    frozen = deploy.frozen_copy(net)
    assert ghost_offsets(frozen) == ghost_offsets(net)
    assert not [n for n, _ in frozen.named_parameters() if 'shift_logits' in n]
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match='allowed: 2'):
        deploy.frozen_copy(net, scale=4)
    with pytest.raises(ValueError, match='allowed: one of those'):
        deploy.frozen_copy(NETS['GhostCARN_M multi-scale x3'][0], scale=5)


# ------------------------------------------------------------------------------------------------- the command


@pytest.fixture()
def tiny(tmp_path):
    opt, ckpt = tiny_option_file(tmp_path)
    images = tmp_path / 'lr'
    images.mkdir()
    for i, size in enumerate([(9, 13), (12, 12)]):
        cv2.imwrite(str(images / f'img{i}.png'), smooth_image(size, seed=i))
    return {'opt': opt, 'ckpt': ckpt, 'images': str(images), 'root': tmp_path}


def test_command_writes_checked_onnx_and_program(tiny, capsys):
    out = tiny['root'] / 'deploy'
    out.mkdir()
    code = run_command('ghostsr export', command.main,
                       ['-opt', tiny['opt'], '--ckpt', tiny['ckpt'], '--out', str(out), '--check', tiny['images']])
    text = capsys.readouterr().out
    assert code == 0, text
    assert sorted(os.listdir(out)) == ['GhostEDSR_x2.onnx', 'GhostEDSR_x2.pt2']
    assert 'over 3 inputs' in text  # the random probe and the two images
    onnx.checker.check_model(str(out / 'GhostEDSR_x2.onnx'))
    x = torch.from_numpy(np.random.default_rng(0).random((1, 3, 10, 6), dtype=np.float32))
    from ghostsr_plugin.archs.build import load_network
    net = load_network(tiny['opt'], tiny['ckpt'])
    with torch.no_grad():
        assert torch.equal(deploy.load_program(str(out / 'GhostEDSR_x2.pt2')).module()(x), net(x))
        session = deploy.onnx_session(str(out / 'GhostEDSR_x2.onnx'), threads=1)
        assert (deploy.run_onnx(session, x) - net(x)).abs().max() <= TOL


def _bad_inputs(tiny):
    root = tiny['root']
    (root / 'no_net.yml').write_text('name: x\nscale: 2\n')
    (root / 'not_a_ckpt.pth').write_bytes(b'not a checkpoint')
    (root / 'other').mkdir()
    _, other_ckpt = tiny_option_file(root / 'other', num_block=2)  # a checkpoint of a deeper network
    gifs = root / 'gifs'
    gifs.mkdir()
    (gifs / 'a.gif').write_bytes(b'GIF89a')
    broken = root / 'broken'
    broken.mkdir()
    (broken / 'a.png').write_bytes(b'not a png')
    (root / 'a_file').write_text('')
    base = ['-opt', tiny['opt'], '--ckpt', tiny['ckpt'], '--out', str(root / 'out' / 'net')]
    return {
        'missing checkpoint': (['--ckpt', str(root / 'nope.pth')], 'checkpoint not found'),
        'unreadable checkpoint': (['--ckpt', str(root / 'not_a_ckpt.pth')], 'not_a_ckpt.pth'),
        'mismatched checkpoint': (['--ckpt', other_ckpt], 'does not fit GhostEDSR'),
        'option file without the network': (['-opt', str(root / 'no_net.yml')], "no 'network_g' section"),
        'missing option file': (['-opt', str(root / 'nope.yml')], 'option file not found'),
        'no images of an allowed format': (['--check', str(gifs)], 'no images (allowed: .png'),
        'unreadable image': (['--check', str(broken)], 'a.png: not a readable PNG image'),
        'unwritable output folder': (['--out', str(root / 'a_file' / 'net')], 'cannot write to the folder'),
        'scale the network does not have': (['--scale', '3'], 'allowed: 2'),
        'opset below 17': (['--opset', '16'], 'opset >= 17'),
        'nothing to export': (None, '--ckpt, --out required'),
    }, base


def test_command_refuses_bad_input_with_one_line_and_writes_nothing(tiny, capsys):
    cases, base = _bad_inputs(tiny)
    for name, (override, message) in cases.items():
        argv = list(base)
        if override is None:
            argv = ['-opt', tiny['opt']]
        else:
            for flag, value in zip(override[::2], override[1::2]):
                if flag in argv:
                    argv[argv.index(flag) + 1] = value
                else:
                    argv += [flag, value]
        code = run_command('ghostsr export', command.main, argv)
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert err.count('\n') == 0 and err.startswith('ghostsr export: error: '), (name, err)
        assert message in err, (name, err)
        assert not (tiny['root'] / 'out').exists() or not os.listdir(tiny['root'] / 'out'), name


def test_module_entry_point_exits_2_with_one_line(tmp_path):
    from conftest import run
    opt, _ = tiny_option_file(tmp_path, ckpt=False)
    proc = run([sys.executable, '-m', 'ghostsr_plugin', 'export', '-opt', opt, '--ckpt', str(tmp_path / 'none.pth'),
                '--out', str(tmp_path / 'out')], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f'ghostsr export: error: checkpoint not found: '
                                                f'{tmp_path / "none.pth"}']
    assert not (tmp_path / 'out').exists()


def test_bench_reports_onnxruntime_next_to_eager(capsys):
    code = run_command('ghostsr export', command.main,
                       ['--bench', '--size', '12', '--reps', '1', '--num_feat', '8', '--num_block', '1', '--threads', '1'])
    text = capsys.readouterr().out
    assert code == 0
    for label in ('PyTorch eager', 'onnxruntime, move as conv', 'onnxruntime, move as slice', 'target (ratios of medians):'):
        assert label in text
