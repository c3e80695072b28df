"""Test with BasicSR's own pipeline (PSNR/SSIM per set), the plugin registered, writing results/ in the current folder.

    python -m ghostsr_plugin.test -opt options/test_GhostEDSR_x2.yml
"""
import os
import sys

import ghostsr_plugin  # noqa: F401  (registers archs and models; makes basicsr importable)
from basicsr.test import test_pipeline
from ghostsr_plugin.utils.malloc import tune_malloc
from ghostsr_plugin.utils.options import check_options_cli


def main(root_path=None):
    try:
        check_options_cli()
    except (ValueError, FileNotFoundError, KeyError) as err:
        sys.exit(f'ghostsr_plugin.test: {err}')
    tune_malloc()  # see ghostsr_plugin/utils/malloc.py
    test_pipeline(root_path or os.getcwd())


if __name__ == '__main__':
    main()
