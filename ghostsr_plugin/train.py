"""Train with BasicSR's own pipeline, the plugin registered, writing experiments/ and tb_logger/ in the current folder.

    python -m ghostsr_plugin.train -opt options/train_GhostEDSR_x2.yml [--auto_resume] [--debug]

Differences from ``python basicsr/train.py``: options are checked up front (clear errors naming the bad option),
outputs go under the current folder rather than BasicSR's install folder, and resuming works on CPU
(BasicSR 1.4.2 maps resume states to ``torch.cuda.current_device()``), and glibc's malloc keeps tensors in the
heap (:mod:`ghostsr_plugin.utils.malloc`; ~27 % faster CPU training steps here).
"""
import os
import sys

import ghostsr_plugin  # noqa: F401  (registers archs and models; makes basicsr importable)
from basicsr import train as basicsr_train
from ghostsr_plugin.utils.malloc import tune_malloc
from ghostsr_plugin.utils.options import check_options_cli
from ghostsr_plugin.utils.resume import load_resume_state


def main(root_path=None):
    try:
        check_options_cli()
    except (ValueError, FileNotFoundError, KeyError) as err:
        sys.exit(f'ghostsr_plugin.train: {err}')
    basicsr_train.load_resume_state = load_resume_state
    tune_malloc()  # far fewer page faults per CPU training step (see ghostsr_plugin/utils/malloc.py)
    basicsr_train.train_pipeline(root_path or os.getcwd())


if __name__ == '__main__':
    main()
