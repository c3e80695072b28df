"""Clustering init from a pre-trained plain model (§3.2, Eq. 7-9, Alg. 1 lines 1-3): ghostsr_plugin.cluster."""
import json

import numpy as np
import pytest
import torch
import yaml

import ghostsr_plugin  # noqa: F401  (registration)
from basicsr.archs.edsr_arch import EDSR
from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.cli import cluster as cluster_command
from ghostsr_plugin.compress import clustering as cluster
from ghostsr_plugin.archs.edsr_arch import GhostEDSR
from ghostsr_plugin.ops.shift import centre_offset, shift_to_offset

N_INIT = 3  # k-means restarts in the tests (speed)

# Tiny plain / Ghost twins of the four families: (plain arch, Ghost arch, shared arguments).
FAMILIES = {
    'EDSR': ('EDSR', 'GhostEDSR', dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=2)),
    'RDN': ('RDN', 'GhostRDN', dict(num_feat=8, num_block=2, num_layer=3, num_grow_ch=8, upscale=2)),
    'CARN': ('CARN', 'GhostCARN', dict(num_feat=8, upscale=2)),
    'CARN_M': ('CARN_M', 'GhostCARN_M', dict(num_feat=16, upscale=3, multi_scale=True)),
}


def twins(family, seed=0, **ghost_args):
    plain_type, ghost_type, args = FAMILIES[family]
    torch.manual_seed(seed)
    plain = ARCH_REGISTRY.get(plain_type)(**args).double().eval()
    ghost = ARCH_REGISTRY.get(ghost_type)(**args, **ghost_args).double().eval()
    return plain, ghost


def groups_of(layer):
    """(groups, filters per group, intrinsic per group) of a ghost layer."""
    groups = layer.groups
    return groups, layer.full_out_channels // groups, layer.num_intrinsic // groups


def duplicate_filters(plain, ghost, generator, one_hot):
    """Make the plain net's ghosted layers λ-duplicated: in every group, filter j (j >= k) is an exact copy
    (weights and bias) of filter j mod k, so the k first filters of each group are the intrinsic ones.

    ``one_hot``: every distinct filter has a single tap of ±1, on an input channel that survives Eq. 9 (a channel not
    made by a ghosted layer, or an intrinsic one of its producer). A conv output is then one product plus the bias,
    so it is bit-identical whatever the order of the backend's sums: the comparison can be exact. Otherwise the
    random dense filters are kept (then the conv backend's summation order differs by a few ulps).
    """
    order, inputs = cluster.trace_ghost_inputs(ghost)
    layers = cluster._ghost_modules(ghost)
    state = plain.state_dict()
    intrinsic = {}
    for name in order:
        layer = layers[name]
        groups, per_group, k = groups_of(layer)
        weight, bias = state[f'{name}.weight'], state[f'{name}.bias']
        if one_hot:
            safe, _ = cluster.screen_mask(inputs[name], intrinsic, layer.in_channels)
            in_per_group = layer.in_channels // groups
            weight.zero_()
            for g in range(groups):
                channels = torch.nonzero(safe[g * in_per_group:(g + 1) * in_per_group]).flatten()
                taps = torch.randperm(len(channels) * 9 * 2, generator=generator)[:k]
                for j, tap in enumerate(taps.tolist()):
                    channel, position, sign = channels[tap // 18], (tap % 18) // 2, 1 - 2 * (tap % 2)
                    weight[g * per_group + j, channel, position // 3, position % 3] = sign
        for g in range(groups):
            for j in range(k, per_group):
                weight[g * per_group + j] = weight[g * per_group + j % k]
                bias[g * per_group + j] = bias[g * per_group + j % k]
        intrinsic[name] = [g * per_group + j for g in range(groups) for j in range(k)]
    plain.load_state_dict(state)
    return state, intrinsic


# ----------------------------------------------------------------------------------------------- Eq. 7 / 8


def test_cluster_filters_finds_known_groups_and_nearest_members():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 12)) * 10
    offsets = [rng.normal(size=(size, 12)) * 0.1 for size in (3, 1, 4, 2)]  # a singleton among them
    vectors = np.concatenate([centre + off for centre, off in zip(centres, offsets)])
    truth = np.repeat(np.arange(4), [3, 1, 4, 2])
    perm = rng.permutation(len(vectors))  # shuffle so that groups are not contiguous
    vectors, truth = vectors[perm], truth[perm]

    found = cluster.cluster_filters(vectors, 4, seed=0, n_init=N_INIT)
    # the partition is the known one (up to the numbering of the clusters)
    pairs = {(int(t), int(l)) for t, l in zip(truth, found['labels'])}
    assert len(pairs) == 4 and len({t for t, _ in pairs}) == 4 and len({l for _, l in pairs}) == 4
    # Eq. 8: the intrinsic filter of each group is its member nearest the group's mean
    for group in range(4):
        members = np.flatnonzero(truth == group)
        mean = vectors[members].mean(0)
        nearest = members[np.argmin(np.linalg.norm(vectors[members] - mean, axis=1))]
        assert nearest in found['intrinsic']
        assert found['intrinsic'][found['labels'][nearest]] == nearest
    assert list(found['intrinsic']) == sorted(found['intrinsic'])  # clusters numbered by intrinsic index


def test_cluster_filters_duplicates_and_degenerate_cases():
    # fewer distinct filters than clusters: still one intrinsic filter per cluster, all filters covered
    vectors = np.zeros((6, 4))
    vectors[3:] = 1
    found = cluster.cluster_filters(vectors, 4, seed=0, n_init=N_INIT)
    assert sorted(np.bincount(found['labels'], minlength=4) > 0) == [True] * 4
    assert len(set(found['intrinsic'].tolist())) == 4
    # as many clusters as filters: every filter intrinsic; one cluster: the member nearest the mean
    assert list(cluster.cluster_filters(np.eye(3), 3)['intrinsic']) == [0, 1, 2]
    line = np.array([[0.], [1.], [2.2], [10.]])
    assert list(cluster.cluster_filters(line, 1)['intrinsic']) == [2]


def test_layer_with_known_groups_keeps_channel_positions():
    """conv_after_body of a GhostEDSR (input not screened): 8 filters in 4 known groups, sizes 3, 3, 1, 1."""
    plain, ghost = twins('EDSR')
    state = plain.state_dict()
    weight = state['conv_after_body.weight']
    rng = torch.Generator().manual_seed(1)
    groups = [[0, 2, 5], [1, 4, 7], [3], [6]]
    nearest = []
    for members in groups:
        centre = torch.randn(8, 3, 3, generator=rng, dtype=torch.float64) * 5
        for member in members:
            weight[member] = centre + 0.1 * torch.randn(8, 3, 3, generator=rng, dtype=torch.float64)
        vectors = weight[members].reshape(len(members), -1)
        nearest.append(members[int((vectors - vectors.mean(0)).norm(dim=1).argmin())])  # Eq. 8
    report = cluster.cluster_init(ghost, state, seed=0, n_init=N_INIT, progress=False)['layers']['conv_after_body']
    assert report['intrinsic'] == sorted(nearest)
    assert report['cluster_sizes'] == [len(members) for _, members in sorted(zip(nearest, groups))]
    assert report['inputs_from'] == [] and report['input_channels_used'] == 'all'
    layer = ghost.conv_after_body
    slots = {position: slot for slot, position in enumerate(sorted(nearest))}
    for intrinsic, members in zip(nearest, groups):
        slot = slots[intrinsic]
        assert layer.ghost_index[intrinsic] == slot  # the intrinsic filter's position reads its slot unshifted
        for member in set(members) - {intrinsic}:
            assert layer.ghost_index[member] == layer.num_intrinsic + slot  # the other members are its ghosts
        assert torch.equal(layer.weight[slot], weight[intrinsic])
        assert torch.equal(layer.bias[slot], state['conv_after_body.bias'][intrinsic])
    # everything else is the plain checkpoint as is
    for key in ('conv_first.weight', 'upsample.0.bias', 'conv_last.weight'):
        assert torch.equal(ghost.state_dict()[key], state[key])


def test_group_conv_is_clustered_within_groups():
    plain, ghost = twins('CARN_M')
    report = cluster.cluster_init(ghost, plain.state_dict(), n_init=N_INIT, progress=False)['layers']
    for name, layer in cluster._ghost_modules(ghost).items():
        groups, per_group, k = groups_of(layer)
        assert groups == 4
        for position, value in enumerate(layer.ghost_index.tolist()):
            slot = value % layer.num_intrinsic
            assert slot // k == position // per_group  # the source slot is in the position's own group
        intrinsic = report[name]['intrinsic']
        assert [i // per_group for i in intrinsic] == [g for g in range(groups) for _ in range(k)]


# --------------------------------------------------------------------------------- links and Eq. 9


@pytest.mark.parametrize('family, expected', [
    ('EDSR', {'body.0.conv2': [('body.0.conv1', 8)], 'body.0.conv1': [(None, 8)], 'conv_after_body': [(None, 8)]}),
    ('CARN', {'b1.b1.body.2': [('b1.b1.body.0', 8)], 'b2.b3.body.0': [(None, 8)]}),
    ('CARN_M', {'b3.b1.body.2': [('b3.b1.body.0', 16)], 'b3.b1.body.0': [(None, 16)]}),
    ('RDN', {'SFENet2': [(None, 8)], 'RDBs.0.convs.2.conv.0': [('SFENet2', 8), ('RDBs.0.convs.0.conv.0', 8),
                                                               ('RDBs.0.convs.1.conv.0', 8)],
             'RDBs.1.convs.1.conv.0': [(None, 8), ('RDBs.1.convs.0.conv.0', 8)], 'GFF.1': [(None, 8)]}),
])
def test_trace_finds_producer_links(family, expected):
    _, ghost = twins(family)
    order, inputs = cluster.trace_ghost_inputs(ghost)
    assert sorted(order) == sorted(cluster._ghost_modules(ghost))
    for name, segments in expected.items():
        assert inputs[name] == segments, name


def test_eq9_screening_uses_exactly_the_previous_intrinsic_channels():
    """conv1 has known intrinsic channels {0..3}; conv2's filters group one way on those input channels and,
    much more strongly, another way on the ghost channels {4..7}: Eq. 9 must see only the first grouping."""
    plain, ghost = twins('EDSR')
    state = plain.state_dict()
    gen = torch.Generator().manual_seed(2)
    conv1 = state['body.0.conv1.weight']
    conv1[4:] = conv1[:4]
    state['body.0.conv1.bias'][4:] = state['body.0.conv1.bias'][:4]
    screened = [[0, 1], [2, 3], [4, 5], [6, 7]]  # groups on the intrinsic input channels 0..3
    unscreened = [[0, 2], [1, 3], [4, 6], [5, 7]]  # stronger groups on the ghost input channels 4..7
    conv2 = torch.zeros(8, 8, 3, 3, dtype=torch.float64)
    for members in screened:
        conv2[members, :4] = torch.randn(4, 3, 3, generator=gen, dtype=torch.float64) + \
            0.01 * torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64)
    for members in unscreened:
        conv2[members, 4:] = 100 * torch.randn(4, 3, 3, generator=gen, dtype=torch.float64)
    state['body.0.conv2.weight'] = conv2

    report = cluster.cluster_init(ghost, state, n_init=N_INIT, progress=False)['layers']
    assert report['body.0.conv1']['intrinsic'] == [0, 1, 2, 3]
    assert report['body.0.conv2']['inputs_from'] == ['body.0.conv1']
    assert report['body.0.conv2']['input_channels_used'] == report['body.0.conv1']['intrinsic']
    index = ghost.body[0].conv2.ghost_index % 4
    assert [sorted(torch.nonzero(index == s).flatten().tolist()) for s in range(4)] == screened
    # the weights inherited keep all input channels (downstream positions are unchanged)
    assert torch.equal(ghost.body[0].conv2.weight[0], conv2[report['body.0.conv2']['intrinsic'][0]])


def test_eq9_screening_of_dense_concatenations():
    plain, ghost = twins('RDN')
    report = cluster.cluster_init(ghost, plain.state_dict(), n_init=N_INIT, progress=False)['layers']
    used = report['RDBs.0.convs.2.conv.0']['input_channels_used']
    expected = (report['SFENet2']['intrinsic'] + [8 + i for i in report['RDBs.0.convs.0.conv.0']['intrinsic']] +
                [16 + i for i in report['RDBs.0.convs.1.conv.0']['intrinsic']])
    assert used == expected
    assert report['RDBs.0.convs.2.conv.0']['inputs_from'] == ['SFENet2', 'RDBs.0.convs.0.conv.0',
                                                              'RDBs.0.convs.1.conv.0']
    first = report['RDBs.1.convs.1.conv.0']['input_channels_used']  # the block input (a residual sum) is kept
    assert first == list(range(8)) + [8 + i for i in report['RDBs.1.convs.0.conv.0']['intrinsic']]


# ------------------------------------------------------------------------ a duplicated plain net is exact


@pytest.mark.parametrize('family', list(FAMILIES))
def test_lambda_duplicated_plain_net_is_reproduced_exactly(family):
    plain, ghost = twins(family, seed=3)
    state, intrinsic = duplicate_filters(plain, ghost, torch.Generator().manual_seed(4), one_hot=True)
    report = cluster.cluster_init(ghost, state, n_init=N_INIT, init_offset='centre', progress=False)
    for name, layer in report['layers'].items():
        assert layer['intrinsic'] == intrinsic[name], name
    x = torch.rand(1, 3, 9, 11, dtype=torch.float64)
    with torch.no_grad():
        expected, got = plain(x), ghost(x)
    assert torch.equal(got, expected)


@pytest.mark.parametrize('family', list(FAMILIES))
def test_lambda_duplicated_dense_filters_match_to_rounding(family):
    plain, ghost = twins(family, seed=5)
    state, intrinsic = duplicate_filters(plain, ghost, torch.Generator().manual_seed(6), one_hot=False)
    report = cluster.cluster_init(ghost, state, n_init=N_INIT, init_offset='centre', progress=False)
    assert {name: layer['intrinsic'] for name, layer in report['layers'].items()} == intrinsic
    x = torch.rand(1, 3, 9, 11, dtype=torch.float64)
    with torch.no_grad():
        expected, got = plain(x), ghost(x)
    # only the conv backend's summation order differs (a few ulps); a wrong channel would be O(1)
    assert (got - expected).abs().max() <= 1e-12 * expected.abs().max()


# --------------------------------------------------------------------------------------------- offsets


def test_offsets_unbiased_by_default_and_set_on_request():
    plain, ghost = twins('EDSR')
    before = {name: layer.shift_logits.detach().clone() for name, layer in cluster._ghost_modules(ghost).items()}
    cluster.cluster_init(ghost, plain.state_dict(), n_init=N_INIT, progress=False)
    for name, layer in cluster._ghost_modules(ghost).items():
        assert torch.equal(layer.shift_logits, before[name])  # left as the network initialised them
    cluster.cluster_init(ghost, plain.state_dict(), n_init=N_INIT, init_offset='centre', progress=False)
    for layer in cluster._ghost_modules(ghost).values():
        assert int(layer.shift_logits.argmax()) == centre_offset(1)
        logits = layer.shift_logits.detach()
        assert float(logits.max() - logits.min()) < 0.05  # small against the Gumbel noise: sampling nearly unbiased
    cluster.cluster_init(ghost, plain.state_dict(), n_init=N_INIT, init_offset=(1, -1), progress=False)
    for layer in cluster._ghost_modules(ghost).values():
        assert int(layer.shift_logits.argmax()) == shift_to_offset(1, -1, 1)
    with pytest.raises(ValueError, match='outside the window'):
        cluster.cluster_init(ghost, plain.state_dict(), init_offset='2,0', progress=False)
    with pytest.raises(ValueError, match='init_offset'):
        cluster.cluster_init(ghost, plain.state_dict(), init_offset='left', progress=False)


def test_seed_makes_it_reproducible():
    plain, ghost_a = twins('CARN')
    _, ghost_b = twins('CARN')
    rng_state = torch.get_rng_state()
    report_a = cluster.cluster_init(ghost_a, plain.state_dict(), seed=7, n_init=N_INIT, progress=False)
    assert torch.equal(torch.get_rng_state(), rng_state)  # a training run's RNG stream is left alone
    report_b = cluster.cluster_init(ghost_b, plain.state_dict(), seed=7, n_init=N_INIT, progress=False)
    assert report_a == report_b
    for (key, a), b in zip(ghost_a.state_dict().items(), ghost_b.state_dict().values()):
        if not key.endswith('shift_logits'):
            assert torch.equal(a, b), key


# ---------------------------------------------------------------------------------------------- errors


def test_checkpoint_of_another_width_scale_or_arch_is_refused():
    _, ghost = twins('EDSR')
    wide = EDSR(3, 3, num_feat=16, num_block=2, upscale=2).state_dict()
    with pytest.raises(ValueError, match=r"'conv_first.weight' has shape \(16, 3, 3, 3\).*\(8, 3, 3, 3\)"):
        cluster.cluster_init(ghost, wide, progress=False)
    x4 = EDSR(3, 3, num_feat=8, num_block=2, upscale=4).state_dict()
    with pytest.raises(ValueError, match=r"'upsample.2.weight'.*does not have"):
        cluster.cluster_init(ghost, x4, progress=False)
    shallow = EDSR(3, 3, num_feat=8, num_block=1, upscale=2).state_dict()
    with pytest.raises(ValueError, match=r"'body.1.conv1.weight' \(8, 8, 3, 3\) is missing"):
        cluster.cluster_init(ghost, shallow, progress=False)
    carn = ARCH_REGISTRY.get('CARN_M')(num_feat=8, group=4).state_dict()
    with pytest.raises(ValueError, match="does not fit GhostEDSR: key 'conv_first.weight'"):
        cluster.cluster_init(ghost, carn, progress=False)
    with pytest.raises(ValueError, match='no ghost layer'):
        cluster.cluster_init(EDSR(3, 3, num_feat=8, num_block=1, upscale=2), shallow, progress=False)


def test_ratio_without_intrinsic_filter_or_too_many_clusters_names_the_layer():
    with pytest.raises(ValueError, match=r'body\.0\.conv1: ghost_ratio=0\.95 leaves 0 intrinsic'):
        GhostEDSR(3, 3, num_feat=8, num_block=1, upscale=2, ghost_ratio=0.95)
    with pytest.raises(ValueError, match=r'b1\.b1\.body\.0 \(group 0\): cannot cluster 4 filters into 5'):
        cluster.cluster_filters(np.zeros((4, 3)), 5, name='b1.b1.body.0 (group 0)')
    plain, ghost = twins('EDSR')
    layer = ghost.body[0].conv2
    layer.out_channels = layer.full_out_channels + 1  # a layer asking for more intrinsic filters than it has
    layer.weight = torch.nn.Parameter(torch.zeros(9, 8, 3, 3, dtype=torch.float64))
    layer.bias = torch.nn.Parameter(torch.zeros(9, dtype=torch.float64))
    with pytest.raises(ValueError, match=r'body\.0\.conv2: cannot cluster 8 filters into 9 clusters'):
        cluster.cluster_init(ghost, plain.state_dict(), trace_calls=[], progress=False)


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_writes_checkpoint_and_report(tmp_path):
    plain, ghost = twins('EDSR')
    torch.save({'params': plain.float().state_dict()}, tmp_path / 'plain.pth')
    network = {'type': 'GhostEDSR', **FAMILIES['EDSR'][2]}
    with open(tmp_path / 'opt.yml', 'w') as file:
        yaml.safe_dump({'name': 'x', 'network_g': network}, file)
    out = tmp_path / 'sub' / 'ghost.pth'
    args = ['-opt', str(tmp_path / 'opt.yml'), '--pretrained', str(tmp_path / 'plain.pth'), '--out', str(out),
            '--seed', '1', '--n_init', str(N_INIT), '--init_offset', 'centre', '--no_progress']
    assert cluster_command.main(args) == 0
    saved = torch.load(out, weights_only=True)
    fresh = GhostEDSR(**FAMILIES['EDSR'][2])
    fresh.load_state_dict(saved['params'], strict=True)
    report = json.loads((tmp_path / 'sub' / 'ghost.pth.json').read_text())
    assert list(report['layers']) == ['body.0.conv1', 'body.0.conv2', 'body.1.conv1', 'body.1.conv2',
                                      'conv_after_body']
    for name, layer in report['layers'].items():
        assert {'cluster_sizes', 'mean_distance', 'intrinsic'} <= set(layer)
        assert sum(layer['cluster_sizes']) == 8 and len(layer['intrinsic']) == 4
    assert report['seed'] == 1 and report['network'] == 'GhostEDSR'
    assert sorted(p.name for p in (tmp_path / 'sub').iterdir()) == ['ghost.pth', 'ghost.pth.json']  # no temp files
    # the same as clustering in process
    ghost = GhostEDSR(**FAMILIES['EDSR'][2])
    cluster.cluster_init(ghost, plain.state_dict(), seed=1, n_init=N_INIT, init_offset='centre', progress=False)
    for key, value in ghost.state_dict().items():
        if not key.endswith('shift_logits'):
            assert torch.equal(value, saved['params'][key]), key


def test_cli_bad_checkpoint_exits_with_the_key(tmp_path, capsys):
    torch.save({'params': EDSR(3, 3, num_feat=16, num_block=2, upscale=2).state_dict()}, tmp_path / 'wide.pth')
    with open(tmp_path / 'opt.yml', 'w') as file:
        yaml.safe_dump({'network_g': {'type': 'GhostEDSR', **FAMILIES['EDSR'][2]}}, file)
    from ghostsr_plugin.utils.errors import run_command
    code = run_command('ghostsr cluster', cluster_command.main,
                       ['-opt', str(tmp_path / 'opt.yml'), '--pretrained', str(tmp_path / 'wide.pth'), '--out',
                        str(tmp_path / 'g.pth'), '--no_progress'])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith('ghostsr cluster: error: ')
    assert 'conv_first.weight' in err[0]
    assert not (tmp_path / 'g.pth').exists()
