"""``ghostsr report`` on tiny EDSR / GhostEDSR option files and a tiny generated benchmark set:
the Ghost network is paired with its plain twin (type, scale and arguments), its FLOPs at 3x512x512 are the count
by hand, latency is timed interleaved for both and printed with the device, threads and dtype, PSNR/SSIM are the
evaluator's for networks with a checkpoint; markdown, JSON and a valid PNG are written (with PSNR: scatter plots;
without: ratio bars); bad input (missing or unfitting checkpoint, option file without a network, bad sizes) gives
one error line and exit code 2 and writes nothing."""
import json

import cv2
import numpy as np
import pytest

from ghostsr_plugin.cli import report as command
from ghostsr_plugin.measure.quality import evaluate
from ghostsr_plugin.data.benchmark import set_pairs
from ghostsr_plugin.measure import comparison as report
from ghostsr_plugin.utils.errors import run_command
from ghostsr_plugin.archs.build import load_network
from tiny_options_helpers import conv_macs, tiny_benchmark, tiny_option_file

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def run(argv, capsys):
    code = run_command('ghostsr report', command.main, [str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def tiny_edsr_macs_512(ghost):
    """Tiny EDSR x2 (num_feat 8, 1 block) at 3x512x512: conv_first, 2 block convs and conv_after_body (ghosted:
    4 of 8 outputs), the upsampler's conv to 32 channels, conv_last at 1024x1024."""
    body_out = 4 if ghost else 8
    return (conv_macs(512, 512, 3, 8) + 3 * conv_macs(512, 512, 8, body_out) + conv_macs(512, 512, 8, 32)
            + conv_macs(1024, 1024, 8, 3))


@pytest.fixture(scope='module')
def nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp('nets')
    return {t: tiny_option_file(folder, t, 2) for t in ('EDSR', 'GhostEDSR')}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return tiny_benchmark(tmp_path_factory.mktemp('bench'), 'Tiny', 2, count=2, size=16)


def test_report_with_checkpoints(nets, data, tmp_path, capsys):
    (plain_opt, plain_ckpt), (ghost_opt, ghost_ckpt) = nets['EDSR'], nets['GhostEDSR']
    out = tmp_path / 'r'
    code, text, _ = run([f'{plain_opt}:{plain_ckpt}', f'{ghost_opt}:{ghost_ckpt}', '--set', 'Tiny', '--data', data,
                         '--latency-size', '1x3x12x12', '--repeats', '3', '--warmup', '1', '--threads', '1',
                         '--out', out], capsys)
    assert code == 0
    result = json.loads((tmp_path / 'r.json').read_text())
    plain, ghost = result['networks']
    assert ghost['twin'] == plain['label'] == 'EDSR x2 (EDSR_x2)' and plain['twin'] is None
    assert (plain['macs'], ghost['macs']) == (tiny_edsr_macs_512(False), tiny_edsr_macs_512(True))
    assert ghost['params'] < plain['params']
    for row in (plain, ghost):
        assert len(row['latency']['times_ms']) == 3 and row['latency']['median_ms'] > 0
    assert ghost['latency']['ratio'] == ghost['latency']['median_ms'] / plain['latency']['median_ms']
    assert ghost['latency']['best_ratio'] == ghost['latency']['best_ms'] / plain['latency']['best_ms']
    settings = result['settings']
    assert settings['threads'] == 1 and settings['dtype'] == 'float32' and settings['latency_input'] == [1, 3, 12, 12]
    expected = evaluate(load_network(ghost_opt, ghost_ckpt), set_pairs(str(data), 'Tiny', 2), 2, 'cpu', False)
    assert ghost['quality']['Tiny']['psnr'] == pytest.approx(expected['psnr'])
    md = (tmp_path / 'r.md').read_text()
    assert md in text and '1 threads' in md and 'float32 NCHW' in md and 'median / best of 3 runs' in md
    assert '| GhostEDSR x2 (GhostEDSR_x2) |' in md and '×) |' in md
    assert (tmp_path / 'r.png').read_bytes().startswith(PNG_MAGIC)
    assert cv2.imread(str(tmp_path / 'r.png')).shape[1] > 1000  # two panels: PSNR vs latency and vs FLOPs


def test_report_without_checkpoints_or_latency(nets, tmp_path, capsys):
    code, text, _ = run([nets['GhostEDSR'][0], nets['EDSR'][0], '--no-latency', '--out', tmp_path / 'r'], capsys)
    assert code == 0
    rows = json.loads((tmp_path / 'r.json').read_text())['networks']
    assert [r['latency'] for r in rows] == [None, None] and [r['quality'] for r in rows] == [{}, {}]
    lines = [line for line in text.splitlines() if line.startswith('| ')]
    assert lines[0] == '| network | params (M) | FLOPs (G) |'
    assert lines[1].startswith('| EDSR x2 |') and lines[2].startswith('| GhostEDSR x2 |')  # plain first
    png = cv2.imread(str(tmp_path / 'r.png'))
    assert png is not None and png.std() > 0


def test_twins_need_the_same_type_scale_and_arguments(tmp_path):
    plain, _ = tiny_option_file(tmp_path, 'EDSR', 2, ckpt=False)
    ghost, _ = tiny_option_file(tmp_path, 'GhostEDSR', 2, ckpt=False)
    (tmp_path / 'narrow').mkdir()
    narrow, _ = tiny_option_file(tmp_path / 'narrow', 'GhostEDSR', 2, ckpt=False, num_feat=4)
    entries = report.pair_twins(report.load_entries([plain, ghost, narrow], ['plain', 'ghost', 'narrow']))
    assert [e.twin for e in entries] == [None, 'plain', None]  # num_feat 4 is not the twin of num_feat 8


@pytest.mark.parametrize('spec, expected', [
    ('a.yml', ('a.yml', None)), ('dir/a.yml:b.pth', ('dir/a.yml', 'b.pth')), ('a.yaml:c:d.pth', ('a.yaml', 'c:d.pth')),
])
def test_network_specs(spec, expected):
    assert report.parse_network_spec(spec) == expected


def test_bad_input_is_one_line_and_writes_nothing(nets, data, tmp_path, capsys):
    plain_opt, plain_ckpt = nets['EDSR']
    ghost_opt, _ = nets['GhostEDSR']
    bare = tmp_path / 'bare.yml'
    bare.write_text('name: x\nscale: 2\n')
    cases = [
        ([f'{ghost_opt}:missing.pth'], 'checkpoint not found: missing.pth'),
        ([f'{ghost_opt}:{plain_ckpt}', '--set', 'Tiny', '--data', str(data)], 'does not fit GhostEDSR'),
        ([str(bare)], "no 'network_g' section"),
        ([plain_opt, '--latency-size', '3x12x12'], '--latency-size'),
        ([plain_opt, ghost_opt, '--labels', 'one'], '--labels: 1 labels for 2 networks'),
        ([f'{plain_opt}:{plain_ckpt}', '--set', 'Nowhere'], 'Nowhere'),
    ]
    for argv, message in cases:
        code, _, err = run(argv + ['--out', tmp_path / 'out' / 'r', '--no-latency'], capsys)
        last = err.rstrip('\n').split('\n')[-1]  # after any progress bar, one line
        assert code == 2 and last.startswith('ghostsr report: error: ') and message in last, (argv, err)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('paired', [False, True])
def test_plots_without_psnr(tmp_path, paired):
    """Ghost / plain ratio bars with latency, and a scatter when nothing is paired."""
    latency = {'median_ms': 2.0, 'best_ms': 1.0, 'ratio': 0.5}
    entries = [report.Entry('plain x2', 'p.yml', type='EDSR', scale=2, params=10, macs=10**9, latency=latency),
               report.Entry('ghost x2', 'g.yml', type='GhostEDSR', scale=2, params=6, macs=6 * 10**8, latency=latency,
                            twin='plain x2' if paired else None)]
    settings = {'sets': [], 'latency_input': [1, 3, 8, 8], 'dtype': 'float32', 'device': 'cpu'}
    report.plot(entries, settings, tmp_path / 'p.png')
    img = cv2.imread(str(tmp_path / 'p.png'))
    assert img is not None and np.unique(img).size > 2


def test_reparameterised_networks_are_measured_in_their_deploy_form(tmp_path):
    """ECBSR is counted as deployed (each ECB merged into one 3x3 conv), not with its training branches, and the
    report says so; its Ghost twin (type: Ghost over the same options) pairs with it."""
    import yaml
    from basicsr.archs import build_network
    from ghostsr_plugin.compress.reparam import merge_reparameterized
    from ghostsr_plugin.measure.complexity import count_params
    net_opt = {'type': 'ECBSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_block': 2, 'num_channel': 8,
               'with_idt': False, 'act_type': 'prelu', 'scale': 2}
    plain = tmp_path / 'ecbsr.yml'
    plain.write_text(yaml.safe_dump({'name': 'ecbsr', 'scale': 2, 'network_g': net_opt}))
    ghost = tmp_path / 'ghost_ecbsr.yml'
    ghost.write_text(yaml.safe_dump({'name': 'g', 'scale': 2, 'network_g': {'type': 'Ghost', 'network': net_opt}}))
    entries = report.load_entries([str(plain), str(ghost)], ['ECBSR', 'Ghost ECBSR'])
    settings = report.measure(entries, latency=False, flops_size=(1, 3, 16, 16), progress=False)
    deployed, _ = merge_reparameterized(build_network(dict(net_opt)).eval())
    assert entries[0].params == count_params(deployed) < count_params(build_network(dict(net_opt)))
    assert entries[0].merged == ['ECB'] and entries[1].twin == 'ECBSR'
    assert 'ECBSR: its re-parameterised blocks (ECB) merged' in report.markdown(entries, settings)
