"""ghostify (GhostSR for any network): on EDSR / RDN / CARN / CARN_M it gives exactly the registered Ghost archs'
layers, state-dict names and parameter counts, and the same outputs from the same clustered checkpoint; the fused
epilogues give the unfused values; include / exclude, the schedule hook, copies; every bad input is one clear error.
"""
import copy

import pytest
import torch
from torch import nn

import ghostsr_plugin
from basicsr.archs.edsr_arch import EDSR
from basicsr.archs.rrdbnet_arch import RRDBNet
from ghostsr_plugin.archs.carn_arch import CARN, CARN_M, GhostCARN, GhostCARN_M
from ghostsr_plugin.archs.edsr_arch import GhostEDSR
from ghostsr_plugin.archs.rdn_arch import RDN, GhostRDN
from ghostsr_plugin.compress.clustering import cluster_init
from ghostsr_plugin.compress.ghostifier import format_report, ghostify
from ghostsr_plugin.ops import GhostConv2d, ghost_layers
from ghostsr_plugin.ops.ghost_conv import FusedPReLU

EDSR_ARGS = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=4)
RDN_ARGS = dict(num_feat=8, num_block=2, num_layer=2, num_grow_ch=8, upscale=2)
TWINS = [
    (EDSR, GhostEDSR, EDSR_ARGS),
    (RDN, GhostRDN, RDN_ARGS),
    (CARN, GhostCARN, dict(num_feat=8, upscale=2)),
    (CARN_M, GhostCARN_M, dict(num_feat=8, upscale=3)),
]


def ghost_names(net):
    return [n for n, m in net.named_modules() if isinstance(m, GhostConv2d)]


@pytest.mark.parametrize('plain_cls, ghost_cls, args', TWINS, ids=lambda v: getattr(v, '__name__', ''))
def test_reproduces_the_hand_written_ghost_arch(plain_cls, ghost_cls, args):
    net, twin = ghostify(plain_cls(**args)), ghost_cls(**args)
    assert ghost_names(net) == ghost_names(twin)
    assert [(k, v.shape) for k, v in net.state_dict().items()] == [(k, v.shape) for k, v in twin.state_dict().items()]
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in twin.parameters())
    if plain_cls is not EDSR:  # the fused ReLUs (conv + Identity) are those of the registered arch
        assert [m.fused_relu for m in ghost_layers(net)] == [m.fused_relu for m in ghost_layers(twin)]


@pytest.mark.parametrize('plain_cls, ghost_cls, args', TWINS, ids=lambda v: getattr(v, '__name__', ''))
def test_same_outputs_from_the_same_clustered_checkpoint(plain_cls, ghost_cls, args):
    torch.manual_seed(0)
    plain = plain_cls(**args).state_dict()
    net, twin = ghostify(plain_cls(**args)), ghost_cls(**args)
    cluster_init(net, plain, n_init=2, init_offset=(1, 0), progress=False)
    cluster_init(twin, plain, n_init=2, init_offset=(1, 0), progress=False)
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), twin.eval()(x), atol=1e-6)


def test_edsr_epilogues_are_fused_and_give_the_unfused_values():
    net = ghostify(EDSR(**EDSR_ARGS))
    report = net.ghostify_report
    assert [report[f'body.{i}.conv{j}']['fused'] for i in (0, 1) for j in (1, 2)] == ['relu', 'residual'] * 2
    assert isinstance(net.body[0].relu, nn.Identity)
    reference = ghostify(EDSR(**EDSR_ARGS), fuse=False)
    reference.load_state_dict(net.state_dict())
    x = torch.rand(2, 3, 10, 10)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), reference.eval()(x), atol=1e-6)
    # gradients too (the fused op's backward)
    net.train(), reference.train()
    net.ghost_schedule.set_iteration(1), reference.ghost_schedule.set_iteration(1)
    net(x).square().mean().backward()
    reference(x).square().mean().backward()
    for (name, a), b in zip(net.named_parameters(), reference.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def assert_same_as_unfused(net, reference):
    """``net`` (fused) and ``reference`` (the same weights, ``fuse=False``) give equal eval outputs and, after one
    training forward, equal gradients of every parameter."""
    x = torch.rand(2, 3, 10, 10)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), reference.eval()(x))
    net.train(), reference.train()
    net.ghost_schedule.set_iteration(1), reference.ghost_schedule.set_iteration(1)
    net(x).square().mean().backward()
    reference(x).square().mean().backward()
    for (name, a), b in zip(net.named_parameters(), reference.parameters()):
        assert torch.equal(a.grad, b.grad), name


def test_compact_prelus_are_fused_and_give_the_unfused_values():
    """Real-ESRGAN's Compact (SRVGGNetCompact) follows every conv with its own ``nn.PReLU``: each ghosted conv fuses
    its PReLU, whose place a ``FusedPReLU`` takes with the same weight under the same state-dict name (a checkpoint
    of the unfused network loads). Same outputs and gradients (all parameters, the slopes included) as unfused."""
    from basicsr.archs.srvgg_arch import SRVGGNetCompact
    torch.manual_seed(0)
    args = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=4, upscale=2, act_type='prelu')
    plain = SRVGGNetCompact(**args)
    with torch.no_grad():
        for m in plain.modules():
            if isinstance(m, nn.PReLU):
                m.weight.uniform_(-0.5, 0.5)  # slopes of both signs, one per channel
    net, reference = ghostify(copy.deepcopy(plain)), ghostify(copy.deepcopy(plain), fuse=False)
    fused = {name: entry['fused'] for name, entry in net.ghostify_report.items() if entry['ghosted']}
    assert fused and set(fused.values()) == {'prelu'}, fused
    assert all(isinstance(net.body[int(name.split('.')[1]) + 1], FusedPReLU) for name in fused)
    assert list(net.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(net.state_dict())
    assert_same_as_unfused(net, reference)


def test_esrgan_shared_leaky_relu_is_fused_and_gives_the_unfused_values():
    """RRDBNet's dense blocks share one in-place ``nn.LeakyReLU(0.2)`` after conv1..conv4: all four fuse it (and the
    module becomes ``nn.Identity``); the top-level ``lrelu`` also sees a plain conv's output (conv_up1 feeds an
    upsampler), so it stays and conv_up2 / conv_hr keep it unfused. Same outputs and gradients as unfused."""
    torch.manual_seed(0)
    args = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, num_grow_ch=4, scale=4)
    net = ghostify(RRDBNet(**args))
    report = net.ghostify_report
    block = net.body[0].rdb1
    assert [report[f'body.0.rdb{i}.conv{j}']['fused'] for i in (1, 2, 3) for j in range(1, 6)] == (
        ['leaky_relu'] * 4 + ['residual']) * 3
    assert isinstance(block.lrelu, nn.Identity) and block.conv1.fused_negative_slope == 0.2
    assert not report['conv_up1']['ghosted'] and report['conv_hr']['ghosted'] and report['conv_hr']['fused'] is None
    assert type(net.lrelu) is nn.LeakyReLU and not net.conv_hr.fused_relu
    assert 'fused leaky_relu' in format_report(report)
    reference = ghostify(RRDBNet(**args), fuse=False)
    reference.load_state_dict(net.state_dict())
    assert_same_as_unfused(net, reference)


def test_report_says_why_layers_stay_plain():
    report = ghostify(EDSR(**EDSR_ARGS)).ghostify_report
    assert 'first convolution' in report['conv_first']['reason']
    assert 'last convolution' in report['conv_last']['reason']
    assert 'upsampler' in report['upsample.0']['reason'] and 'upsampler' in report['upsample.2']['reason']
    assert '5 of 9 convolutions ghosted' in format_report(report)


def test_include_and_exclude_override_the_rules():
    net = ghostify(EDSR(**EDSR_ARGS), include=['upsample.*'], exclude=['body.1.*'])
    assert ghost_names(net) == ['body.0.conv1', 'body.0.conv2', 'conv_after_body', 'upsample.0', 'upsample.2']
    assert net.ghostify_report['body.1.conv1']['reason'] == 'excluded by pattern'


def test_layer_ratios_give_layers_their_own_ratio_and_cluster():
    """``layer_ratios`` gives the named ghost layers their own λ (in the report and its text, the others keep
    ``ghost_ratio``); §3.2's clustering fills a network of mixed ratios (Eq. 9 screens by each producer's own
    intrinsic count); a name that is no ghosted convolution or a λ outside (0, 1) is one clear error."""
    torch.manual_seed(0)
    plain = EDSR(**EDSR_ARGS)
    net = ghostify(plain, layer_ratios={'body.0.conv1': 0.25, 'body.1.conv2': 0.75})
    intrinsic = {n: m.num_intrinsic for n, m in net.named_modules() if isinstance(m, GhostConv2d)}
    assert intrinsic == {'body.0.conv1': 6, 'body.0.conv2': 4, 'body.1.conv1': 4, 'body.1.conv2': 2,
                         'conv_after_body': 4}
    report = net.ghostify_report
    assert [report[n]['ratio'] for n in ('body.0.conv1', 'body.0.conv2', 'conv_first')] == [0.25, 0.5, None]
    clustered = cluster_init(net, plain.state_dict(), n_init=2, init_offset='centre', progress=False)['layers']
    assert {n: layer['intrinsic_channels'] for n, layer in clustered.items()} == intrinsic
    assert len(clustered['body.0.conv2']['input_channels_used']) == 6  # screened by body.0.conv1's 6 intrinsic
    assert net.eval()(torch.rand(1, 3, 6, 6)).shape == (1, 3, 24, 24)
    for ratios, message in (({'body.9.conv1': 0.5}, "'body.9.conv1', which is no convolution"),
                            ({'conv_first': 0.5}, r'conv_first, which stays plain \(first convolution'),
                            ({'body.0.conv1': 1.0}, r"layer_ratios\['body.0.conv1'\] .* must be in \(0, 1\), got 1.0"),
                            ({'body.0.conv1': 0.95}, 'body.0.conv1: ghost_ratio=0.95 leaves 0 intrinsic of 8')):
        with pytest.raises(ValueError, match=message):
            ghostify(EDSR(**EDSR_ARGS), layer_ratios=ratios)


def test_schedule_is_driven_and_the_plain_net_is_untouched():
    plain = EDSR(**EDSR_ARGS)
    before = copy.deepcopy(plain.state_dict())
    net = ghostify(plain)
    assert not ghost_layers(plain) and all(torch.equal(v, before[k]) for k, v in plain.state_dict().items())
    assert net.ghost_schedule.iteration == 0
    with pytest.warns(UserWarning, match='without GhostSRModel'):
        net.train()(torch.rand(1, 3, 8, 8))
    assert net.ghost_schedule.iteration == 1  # the pre-hook planned this forward
    net.eval()(torch.rand(1, 3, 8, 8))  # (a training forward's plan holds non-leaf probabilities)
    clone = copy.deepcopy(net)  # a copied network: the hook follows the copy
    clone.train()(torch.rand(1, 3, 8, 8))
    assert clone.ghost_schedule.iteration == 2 and net.ghost_schedule.iteration == 1
    # the intrinsic filters start as the plain layer's first filters
    assert torch.equal(net.body[0].conv1.weight, plain.body[0].conv1.weight[:4])


def test_ghostsr_plugin_ghostify_is_the_transform():
    """``ghostsr_plugin.ghostify`` is the transform itself (no command module shadows the name)."""
    from ghostsr_plugin.compress.ghostifier import ghostify
    assert ghostsr_plugin.ghostify is ghostify
    assert ghost_names(ghostsr_plugin.ghostify(EDSR(**EDSR_ARGS)))


class SharedWeights(nn.Module):
    """conv_b's weight is also used functionally: it must stay plain."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.conv_b, self.conv_c, self.conv_d = (nn.Conv2d(4 if i else 3, 4, 3, 1, 1) for i in range(4))

    def forward(self, x):
        x = self.conv_b(self.conv_a(x))
        x = self.conv_c(x) + nn.functional.conv2d(x, self.conv_b.weight, padding=1)
        return self.conv_d(x)


def test_weights_used_outside_their_conv_stay_plain():
    report = ghostify(SharedWeights()).ghostify_report
    assert 'outside its own forward' in report['conv_b']['reason']
    assert report['conv_c']['ghosted']


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match=r"include pattern 'nothing\*' matches no convolution; the convolutions are: "
                       'conv_first'):
        ghostify(EDSR(**EDSR_ARGS), include=['nothing*'])
    with pytest.raises(ValueError, match='exclude pattern'):
        ghostify(EDSR(**EDSR_ARGS), exclude=['x'])
    with pytest.raises(ValueError, match='include matches 1, which cannot be a ghost layer: kernel 1x1'):
        ghostify(nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.Conv2d(4, 4, 1)), include=['1'])
    with pytest.raises(ValueError, match='no convolution to ghost.*first convolution on the input.*: 0; kernel 1x1.*: 1, 2'):
        ghostify(nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 3, 1)))
    with pytest.raises(ValueError, match='no nn.Conv2d'):
        ghostify(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match=r'body.0.conv1: ghost_ratio=0.95 leaves 0 intrinsic of 8'):
        ghostify(EDSR(**EDSR_ARGS), ghost_ratio=0.95)
    with pytest.raises(ValueError, match='ghost_ratio'):
        ghostify(EDSR(**EDSR_ARGS), ghost_ratio=1)
    with pytest.raises(ValueError, match='already has ghost layers'):
        ghostify(GhostEDSR(**EDSR_ARGS))
