"""Print a markdown table of the parameters (M) of every plain and Ghost network at x2/x3/x4 next to the
paper's Table 1 (Nie et al., GhostSR); with ``--generic``, the tables of ``ghostify`` (``type: Ghost``) over BasicSR's
SR archs (params and FLOPs before / after) and over spandrel's architectures (which work, params before / after).

    .venv/bin/python tools/param_table.py [--generic | --basicsr | --spandrel]

Counts are of ``net.parameters()`` as built by the archs (Ghost nets at λ=0.5, d=1, learnable shift, so each
ghost layer adds its 9 logits W'; CARN's frozen mean shifters count too, as in the authors' checkpoints).
CARN and CARN_M are listed in the single-scale form (one upsampling head) and in the multi-scale form (the three
heads of the authors' released models, trained by the multi-scale scheme of §4.1).
Networks with re-parameterised blocks (ECBSR, SPAN) give their plain count as built (with the training branches) and,
in brackets, merged into the deploy form that ghostify ghosts; their plain GMACs are those of the deploy form.
"""
import ghostsr_plugin  # noqa: F401  (before basicsr: registers the archs, torchvision compat)
from basicsr.utils.registry import ARCH_REGISTRY
from ghostsr_plugin.measure.comparison import PAPER_TABLE1  # noqa: E402

SCALES = (2, 3, 4)
# (row label, paper model, plain arch, ghost arch, arguments; ``scale`` is filled in)
ROWS = [
    ('EDSR-L', 'EDSR', 'EDSR', 'GhostEDSR', dict(num_in_ch=3, num_out_ch=3, num_feat=256, num_block=32, res_scale=0.1)),
    ('RDN', 'RDN', 'RDN', 'GhostRDN', {}),
    ('CARN (single-scale)', 'CARN', 'CARN', 'GhostCARN', {}),
    ('CARN_M (single-scale)', 'CARN_M', 'CARN_M', 'GhostCARN_M', {}),
    ('CARN (multi-scale)', 'CARN', 'CARN', 'GhostCARN', dict(multi_scale=True)),
    ('CARN_M (multi-scale)', 'CARN_M', 'CARN_M', 'GhostCARN_M', dict(multi_scale=True)),
]


def count(arch, scale, kwargs):
    net = ARCH_REGISTRY.get(arch)(upscale=scale, **kwargs)
    return sum(p.numel() for p in net.parameters()) / 1e6


# ghostify over BasicSR 1.4.2's SR archs and the plugin's, standard x4 configurations (plain options)
BASICSR_X4 = [
    ('EDSR-baseline', {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 16, 'upscale': 4}),
    ('EDSR-L', {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 256, 'num_block': 32, 'upscale': 4,
                'res_scale': 0.1}),
    ('MSRResNet', {'type': 'MSRResNet', 'num_feat': 64, 'num_block': 16, 'upscale': 4}),
    ('RRDBNet (ESRGAN)', {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 23,
                          'num_grow_ch': 32, 'scale': 4}),
    ('RCAN', {'type': 'RCAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_group': 10, 'num_block': 20,
              'squeeze_factor': 16, 'upscale': 4}),
    ('SRVGGNetCompact', {'type': 'SRVGGNetCompact', 'num_feat': 64, 'num_conv': 16, 'upscale': 4, 'act_type': 'prelu'}),
    ('SwinIR-M (classical)', {'type': 'SwinIR', 'upscale': 4, 'img_size': 48, 'window_size': 8, 'img_range': 1.,
                              'depths': [6] * 6, 'embed_dim': 180, 'num_heads': [6] * 6, 'mlp_ratio': 2,
                              'upsampler': 'pixelshuffle', 'resi_connection': '1conv'}),
    ('ECBSR-M16C64', {'type': 'ECBSR', 'num_in_ch': 1, 'num_out_ch': 1, 'num_block': 16, 'num_channel': 64,
                      'with_idt': False, 'act_type': 'prelu', 'scale': 4}),
    ('RDN', {'type': 'RDN', 'upscale': 4}),
    ('CARN', {'type': 'CARN', 'upscale': 4}),
    ('CARN_M', {'type': 'CARN_M', 'upscale': 4}),
]
# spandrel architectures: (module, class, hyperparameters; the class defaults otherwise)
SPANDREL = [('ESRGAN', 'ESRGAN', {}), ('Compact', 'Compact', {}), ('SPAN', 'SPAN', {'num_in_ch': 3, 'num_out_ch': 3}),
            ('RCAN', 'RCAN', {}),
            ('SwinIR', 'SwinIR', {'upscale': 4, 'img_size': 48, 'window_size': 8, 'embed_dim': 180, 'depths': [6] * 6,
                                  'num_heads': [6] * 6, 'mlp_ratio': 2, 'upsampler': 'pixelshuffle'}),
            ('OmniSR', 'OmniSR', {}), ('PLKSR', 'PLKSR', {}), ('PLKSR', 'RealPLKSR', {}), ('SAFMN', 'SAFMN', {}),
            ('DITN', 'DITN', {}), ('Swin2SR', 'Swin2SR', {'upscale': 4, 'upsampler': 'pixelshuffle'}),
            ('HAT', 'HAT', {'upscale': 4, 'upsampler': 'pixelshuffle', 'window_size': 16}), ('DAT', 'DAT', {}),
            ('SwiftSRGAN', 'SwiftSRGAN', {}), ('RealCUGAN', 'UpCunet2x', {}), ('MoSR', 'MoSR', {}), ('ATD', 'ATD', {}),
            ('DRCT', 'DRCT', {'upscale': 4, 'upsampler': 'pixelshuffle'})]

def _short_error(err):
    """The reasons of a "no convolution to ghost" error, else the first line of the message."""
    text = str(err)
    text = text.split('; here: ', 1)[1] if '; here: ' in text else text.splitlines()[0]
    return text if len(text) < 200 else text[:197] + '...'


def _plain_params(plain, merged, blocks):
    """The plain parameter count (M), and the merged one in brackets when re-parameterised blocks were merged."""
    from ghostsr_plugin.measure.complexity import count_params
    text = f'{count_params(plain) / 1e6:.3f}'
    return text + (f' ({count_params(merged) / 1e6:.3f} merged)' if blocks else '')


def basicsr_table(size=512):
    import warnings
    import torch
    from basicsr.archs import build_network
    from ghostsr_plugin.compress.ghostifier import ghostify
    from ghostsr_plugin.compress.reparam import merge_reparameterized
    from ghostsr_plugin.measure.complexity import count_macs, count_params
    warnings.simplefilter('ignore')
    print('| arch (x4) | ghosted / convs | params plain (M) | params Ghost (M) | GMACs plain | GMACs Ghost |')
    print('|---|---|---|---|---|---|')
    for label, opt in BASICSR_X4:
        torch.manual_seed(0)
        plain = build_network(dict(opt))
        channels = 1 if opt['type'] == 'ECBSR' else 3
        try:
            ghost = ghostify(plain, trace_size=16)
        except ValueError as err:
            print(f'| {label} | 0 (not supported: {_short_error(err)}) | {count_params(plain) / 1e6:.3f} | - | - | - |')
            continue
        report = ghost.ghostify_report
        merged, blocks = merge_reparameterized(plain)
        macs = [count_macs(n, (1, channels, size, size)) / 1e9 for n in (merged, ghost)]
        print(f'| {label} | {sum(e["ghosted"] for e in report.values())} / {len(report)} | '
              f'{_plain_params(plain, merged, blocks)} | {count_params(ghost) / 1e6:.3f} | {macs[0]:.1f} | '
              f'{macs[1]:.1f} |')
    print(f'\n(GMACs: multiply-adds of one forward on a 1x3x{size}x{size} LR input (ECBSR: 1 channel), '
          'FlopCounterMode)\n')


def spandrel_table():
    import importlib
    import inspect
    import warnings
    import torch
    from spandrel import MAIN_REGISTRY
    from ghostsr_plugin.compress.ghostifier import ghostify
    from ghostsr_plugin.compress.reparam import merge_reparameterized
    from ghostsr_plugin.measure.complexity import count_params
    warnings.simplefilter('ignore')
    print('| spandrel arch | works | ghosted / convs | params plain (M) | params Ghost (M) | note |')
    print('|---|---|---|---|---|---|')
    for module_name, class_name, kwargs in SPANDREL:
        arch = class_name
        try:
            cls = getattr(importlib.import_module(f'spandrel.architectures.{module_name}'), class_name)
        except (ImportError, AttributeError) as err:
            print(f'| {arch} | - | - | - | - | not in this spandrel: {err} |')
            continue
        required = {k: 3 for k, p in inspect.signature(cls).parameters.items()
                    if p.default is inspect.Parameter.empty and k in ('num_in_ch', 'num_out_ch', 'in_nc', 'out_nc')}
        required.update(kwargs)
        torch.manual_seed(0)
        try:
            descriptor = MAIN_REGISTRY.load(cls(**required).state_dict())
        except Exception as err:  # noqa: BLE001 - the table says why
            print(f'| {arch} | - | - | - | - | not identified by spandrel from its own state dict: '
                  f'{type(err).__name__} |')
            continue
        plain = descriptor.model.eval()
        req = descriptor.size_requirements
        side = -(-max(16, req.minimum) // req.multiple_of) * req.multiple_of
        try:
            try:
                ghost = ghostify(plain, trace_size=side)
            except ValueError as err:  # e.g. HAT's overlapping windows: a larger tracing input
                if 'does not run on' not in str(err):
                    raise
                side = 4 * side
                ghost = ghostify(plain, trace_size=side)
            with torch.no_grad():
                out = ghost.eval()(torch.rand(1, descriptor.input_channels, side, side))
            assert out.shape[-1] == side * descriptor.scale
            report = ghost.ghostify_report
            merged, blocks = merge_reparameterized(plain)
            note = f'; {len(blocks)} {", ".join(sorted(set(blocks.values())))} merged first' if blocks else ''
            print(f'| {arch} | yes | {sum(e["ghosted"] for e in report.values())} / {len(report)} | '
                  f'{_plain_params(plain, merged, blocks)} | {count_params(ghost) / 1e6:.3f} | '
                  f'x{descriptor.scale}{note} |')
        except Exception as err:  # noqa: BLE001 - the table says why
            print(f'| {arch} | no | - | {count_params(plain) / 1e6:.3f} | - | {type(err).__name__}: '
                  f'{_short_error(err)} |')


def main():
    import sys
    if '--generic' in sys.argv[1:] or '--basicsr' in sys.argv[1:]:
        basicsr_table()
    if '--generic' in sys.argv[1:] or '--spandrel' in sys.argv[1:]:
        spandrel_table()
    if {'--generic', '--basicsr', '--spandrel'} & set(sys.argv[1:]):
        return
    header = '| Model | Type | ' + ' | '.join(f'x{s} ours | x{s} paper' for s in SCALES) + ' |'
    print(header)
    print('|' + '---|' * (2 + 2 * len(SCALES)))
    for label, paper_name, plain, ghost, kwargs in ROWS:
        for kind, arch in ((0, plain), (1, ghost)):
            cells = []
            for scale in SCALES:
                cells += [f'{count(arch, scale, kwargs):.2f}', f'{PAPER_TABLE1[(paper_name, scale)][kind][0]:.2f}']
            print(f'| {label} | {("Conv", "GhostSR")[kind]} ({arch}) | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
