"""Print a markdown table of the parameters (M) of every plain and Ghost network at x2/x3/x4 next to the
paper's Table 1 (Nie et al., GhostSR).

    .venv/bin/python tools/param_table.py

Counts are of ``net.parameters()`` as built by the archs (Ghost nets at λ=0.5, d=1, learnable shift, so each
ghost layer adds its 9 logits W'; CARN's frozen mean shifters count too, as in the authors' checkpoints).
CARN and CARN_M are listed in the single-scale form (one upsampling head) and in the multi-scale form (the three
heads of the authors' released models, trained by the multi-scale scheme of §4.1).
"""
import ghostsr_plugin  # noqa: F401  (before basicsr: registers the archs, torchvision compat)
from basicsr.utils.registry import ARCH_REGISTRY

SCALES = (2, 3, 4)
# Table 1, Params (M): {model: ((conv x2, ghost x2), (conv x3, ghost x3), (conv x4, ghost x4))}
PAPER = {
    'EDSR': ((40.72, 21.63), (43.71, 24.53), (43.14, 23.93)),
    'RDN': ((22.11, 11.54), (22.33, 11.73), (22.21, 11.64)),
    'CARN': ((1.59, 1.19), ) * 3,
    'CARN_M': ((0.41, 0.33), ) * 3,
}
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


def main():
    header = '| Model | Type | ' + ' | '.join(f'x{s} ours | x{s} paper' for s in SCALES) + ' |'
    print(header)
    print('|' + '---|' * (2 + 2 * len(SCALES)))
    for label, paper_name, plain, ghost, kwargs in ROWS:
        for kind, arch in ((0, plain), (1, ghost)):
            cells = []
            for i, scale in enumerate(SCALES):
                cells += [f'{count(arch, scale, kwargs):.2f}', f'{PAPER[paper_name][i][kind]:.2f}']
            print(f'| {label} | {("Conv", "GhostSR")[kind]} ({arch}) | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
