"""Re-parameterised blocks (ghostsr_plugin.compress.reparam): SPAN's Conv3XC and ECBSR's ECB merged into one 3×3 conv
give the original eval output, under sensible state-dict names; their checkpoints (branch weights) are merged before
clustering; SPAN goes from a saved file through ``ghostsr ghostify`` to a loadable Ghost checkpoint."""
import pytest
import torch
import yaml
from torch import nn

import ghostsr_plugin  # noqa: F401  (registration)
from basicsr.archs.ecbsr_arch import ECBSR
from ghostsr_plugin.compress.clustering import cluster_init, plain_state_for
from ghostsr_plugin.compress.ghostifier import format_report, ghostify
from ghostsr_plugin.compress.reparam import DeployConv3XC, DeployECB, merge_reparameterized, merged_state_dict
from ghostsr_plugin.ops import GhostConv2d, ghost_layers

SPAN_ARGS = dict(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2)


def span_cls():
    pytest.importorskip('spandrel')
    from spandrel.architectures.SPAN import SPAN
    return SPAN


def relative_error(got, expected):
    return ((got - expected).abs().max() / expected.abs().max()).item()


def eval_outputs(original, merged, x):
    with torch.no_grad():
        return merged.eval()(x), original.eval()(x)


def test_span_merged_gives_the_original_eval_output():
    """Every Conv3XC of SPAN becomes one eval_conv (the name spandrel checkpoints use) with the output of SPAN's own
    eval forward; the original network is left untouched."""
    torch.manual_seed(0)
    span = span_cls()(**SPAN_ARGS)
    before = {k: v.clone() for k, v in span.state_dict().items()}
    merged, report = merge_reparameterized(span)
    assert list(report) == ['conv_1'] + [f'block_{i}.c{j}_r' for i in range(1, 7) for j in (1, 2, 3)] + ['conv_2']
    assert set(report.values()) == {'Conv3XC'}
    assert isinstance(merged.conv_1, DeployConv3XC) and type(merged.conv_1.eval_conv) is nn.Conv2d
    assert set(merged.state_dict()) < set(span.state_dict())  # the merged keys are the checkpoint's eval_conv ones
    assert not any('.sk.' in k or '.conv.' in k for k in merged.state_dict())
    assert all(torch.equal(v, before[k]) for k, v in span.state_dict().items())
    got, expected = eval_outputs(span, merged, torch.rand(1, 3, 12, 12))
    assert relative_error(got, expected) < 1e-5


def test_conv3xc_with_relu_and_as_the_root_module():
    """Conv3XC's own epilogue (leaky_relu 0.05 with relu=True) is kept; a block given alone is replaced itself."""
    span_cls()
    from spandrel.architectures.SPAN.__arch.span import Conv3XC
    torch.manual_seed(0)
    block = Conv3XC(4, 6, gain1=2, relu=True)
    for net in (block, nn.Sequential(block, nn.Conv2d(6, 3, 3, 1, 1))):
        merged, report = merge_reparameterized(net)
        assert list(report.values()) == ['Conv3XC']
        got, expected = eval_outputs(net, merged, torch.randn(2, 4, 9, 9))
        assert relative_error(got, expected) < 1e-5
    assert type(merge_reparameterized(block)[0]) is DeployConv3XC


@pytest.mark.parametrize('with_idt, act_type', [(False, 'prelu'), (True, 'relu'), (True, 'linear')])
def test_ecbsr_merged_gives_the_original_eval_output(with_idt, act_type):
    """Every ECB of ECBSR becomes rep_conv (ECB.rep_params' kernel, identity included) plus the block's own
    activation (its PReLU weights keep their name); the output is ECBSR's eval output."""
    torch.manual_seed(0)
    net = ECBSR(num_in_ch=3, num_out_ch=3, num_block=2, num_channel=8, with_idt=with_idt, act_type=act_type, scale=2)
    merged, report = merge_reparameterized(net)
    assert list(report.items()) == [(f'backbone.{i}', 'ECB') for i in range(4)]
    assert all(isinstance(m, DeployECB) for m in merged.backbone)
    keys = set(merged.state_dict())
    assert 'backbone.1.rep_conv.weight' in keys and not any('conv1x1' in k or 'conv3x3' in k for k in keys)
    assert ('backbone.1.act.weight' in keys) == (act_type == 'prelu')
    got, expected = eval_outputs(net, merged, torch.rand(1, 3, 10, 10))
    assert relative_error(got, expected) < 1e-5


def test_ghostify_merges_first_and_reports_it():
    """ghostify ghosts SPAN's merged convs (all but the first, which sees the input); reparameterize=False keeps the
    refusal, now with the hint; the report names the merged blocks."""
    SPAN = span_cls()
    torch.manual_seed(0)
    ghost = ghostify(SPAN(**SPAN_ARGS))
    report = ghost.ghostify_report
    assert len(ghost_layers(ghost)) == 19
    assert report['conv_1.eval_conv'] == {'ghosted': False, 'reason': 'first convolution on the input (§4.1)',
                                          'fused': None, 'merged': 'Conv3XC', 'ratio': None}
    assert report['block_1.c1_r.eval_conv']['ghosted'] and report['conv_cat']['merged'] is None
    assert '19 of 22 convolutions ghosted (20 of them merged from re-parameterised blocks)' in format_report(report)
    with pytest.raises(ValueError, match='outside its own forward.*reparameterize=True merges'):
        ghostify(SPAN(**SPAN_ARGS), reparameterize=False)


def test_clustering_a_lambda_duplicated_merged_span_keeps_its_output():
    """A merged SPAN whose ghosted layers are λ-duplicated (filter j a copy of filter j mod k) clusters into its Ghost
    network with the same output (float64, to rounding): clustering works on the merged kernels."""
    torch.manual_seed(0)
    plain, _ = merge_reparameterized(span_cls()(**SPAN_ARGS).double().eval())
    ghost = ghostify(plain, ghost_ratio=0.5)
    state = plain.state_dict()
    for name, layer in ((n, m) for n, m in ghost.named_modules() if isinstance(m, GhostConv2d)):
        k = layer.num_intrinsic
        for key in (f'{name}.weight', f'{name}.bias'):
            state[key][k:] = state[key][torch.arange(k, len(state[key])) % k]
    plain.load_state_dict(state)
    cluster_init(ghost, state, n_init=2, init_offset='centre', progress=False)
    got, expected = eval_outputs(plain, ghost, torch.rand(1, 3, 9, 11, dtype=torch.float64))
    assert relative_error(got, expected) < 1e-10


def test_a_branch_checkpoint_is_merged_before_clustering():
    """plain_state_for: a SPAN checkpoint with its branch weights becomes the merged state dict (load -> merge ->
    state dict) for a type: Ghost network; a deploy-form one and a registered Ghost arch's pass as they are; a
    branch checkpoint of another width is one error naming the file and the key."""
    SPAN = span_cls()
    torch.manual_seed(0)
    span = SPAN(**SPAN_ARGS)
    network = {'type': 'Ghost', 'network': {'type': 'SpandrelNet', 'arch': 'SPAN', 'hyperparameters': SPAN_ARGS}}
    merged = plain_state_for(network, span.state_dict())
    expected = merge_reparameterized(span)[0].state_dict()
    assert list(merged) == list(expected) and all(torch.equal(merged[k], expected[k]) for k in expected)
    assert all(torch.equal(a, b) for a, b in zip(merged.values(), merged_state_dict(span).values()))
    assert plain_state_for(network, expected) is expected
    state = span.state_dict()
    assert plain_state_for({'type': 'GhostEDSR', 'num_in_ch': 3, 'num_out_ch': 3}, state) is state
    assert plain_state_for({**network, 'reparameterize': False}, state) is state
    wide = SPAN(**{**SPAN_ARGS, 'feature_channels': 12}).state_dict()
    with pytest.raises(ValueError, match='wide.pth does not fit SPAN: "conv_1.sk.weight" has shape'):
        plain_state_for(network, wide, 'wide.pth')


def test_span_file_through_the_ghostify_command(tmp_path, capsys):
    """A randomly initialised SPAN saved to a file goes through ghostsr ghostify (merge -> ghostify
    -> cluster): the written options and checkpoint load through utils.network, with the right output size and fewer
    parameters than the merged plain network; the clustered checkpoint keeps the merged plain's non-ghosted layers."""
    from ghostsr_plugin.cli.ghostify import main
    from ghostsr_plugin.archs.build import load_network
    SPAN = span_cls()
    torch.manual_seed(0)
    span = SPAN(**SPAN_ARGS).eval()
    torch.save(span.state_dict(), tmp_path / 'span.pth')
    out, opt_out = str(tmp_path / 'ghost.pth'), str(tmp_path / 'ghost.yml')
    assert main(['--model', str(tmp_path / 'span.pth'), '--out', out, '--opt_out', opt_out, '--n_init', '1',
                 '--init_offset', 'centre', '--no_progress']) == 0
    printed = capsys.readouterr().out
    assert 'ghost  block_1.c1_r.eval_conv: eligible, λ=0.5, merged Conv3XC' in printed
    network_g = yaml.safe_load(open(opt_out))['network_g']
    assert network_g['type'] == 'Ghost' and network_g['network']['arch'] == 'SPAN'
    assert 'reparameterize' not in network_g  # the default
    net = load_network(opt_out, out)
    assert len(ghost_layers(net)) == 19
    merged, _ = merge_reparameterized(span)
    assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in merged.parameters())
    assert torch.equal(net.state_dict()['conv_1.eval_conv.weight'], merged.state_dict()['conv_1.eval_conv.weight'])
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert net(x).shape == span(x).shape == (1, 3, 32, 32)


def test_train_up_front_check_merges_an_ecbsr_branch_checkpoint(tiny_data, tmp_path):
    """The train command's up-front check (check_checkpoints) fits an ECBSR checkpoint with its branch weights to
    type: Ghost's merged network, as GhostSRModel's ghost_init: will, and the teacher to the original ECBSR; a
    checkpoint of another width is one error naming the file."""
    from basicsr.archs import build_network
    from conftest import train_options
    from ghostsr_plugin.utils.errors import UserInputError
    from ghostsr_plugin.pipeline.options import check_checkpoints
    plain = {'type': 'ECBSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_block': 2, 'num_channel': 8, 'with_idt': False,
             'act_type': 'prelu', 'scale': 2}
    torch.save({'params': build_network(plain).state_dict()}, tmp_path / 'ecbsr.pth')
    torch.save({'params': build_network({**plain, 'num_channel': 12}).state_dict()}, tmp_path / 'wide.pth')
    opt = train_options('ghost_ecbsr', {'type': 'Ghost', 'network': plain}, tiny_data)
    opt['ghost_init'], opt['distill'] = {'pretrain_path': str(tmp_path / 'ecbsr.pth')}, {'loss_weight': 1.0}
    check_checkpoints(opt)
    opt['ghost_init']['pretrain_path'] = str(tmp_path / 'wide.pth')
    with pytest.raises(UserInputError, match=r'wide.pth does not fit ECBSR: "backbone.0.conv3x3.weight" has shape'):
        check_checkpoints(opt)
