"""Test with BasicSR's own pipeline (PSNR/SSIM per set), the plugin registered, writing results/ in the current folder.

    python -m ghostsr_plugin.test -opt options/test_GhostEDSR_x2.yml [--debug]

The options are checked before BasicSR makes or renames ``results/<name>`` (:mod:`ghostsr_plugin.utils.options`):
the networks, the data, every test image (readable; each LR fits its HR at the scale after BasicSR's modcrop, else
an error naming the image, both sizes and the scale; grey / RGBA / 16-bit images, read as 8-bit RGB, named once
per set) and the checkpoint (``weights_only=True``, fitted to the network). An error is one line
``ghostsr_plugin.test: error: ...``, exit code 2, without BasicSR's option dump (``GHOSTSR_DEBUG=1``, or BasicSR's
``--debug``, shows the traceback).
"""
import os
import sys

import ghostsr_plugin  # noqa: F401  (registers archs and models; makes basicsr importable)
from basicsr import test as basicsr_test
from ghostsr_plugin.utils.cli import run_command
from ghostsr_plugin.utils.malloc import tune_malloc
from ghostsr_plugin.utils.options import check_checkpoints, check_options_cli, parse_and_check

COMMAND = 'ghostsr_plugin.test'


def main(argv=None, root_path=None):
    """``argv``: the command line after the program name (BasicSR reads ``sys.argv``; it is set from it)."""
    if argv is not None:
        sys.argv[1:] = list(argv)
    check_options_cli(COMMAND, is_train=False)
    parse_options = basicsr_test.parse_options

    def checked_parse_options(root_path, is_train=False):  # BasicSR's, then every check, before results/ is made
        opt, args, nets, printed = parse_and_check(parse_options, root_path, is_train)
        check_checkpoints(opt, nets)
        print(printed, end='', flush=True)
        return opt, args

    tune_malloc()  # see ghostsr_plugin/utils/malloc.py
    basicsr_test.parse_options = checked_parse_options
    try:
        basicsr_test.test_pipeline(root_path or os.getcwd())
    finally:
        basicsr_test.parse_options = parse_options


if __name__ == '__main__':
    sys.exit(run_command(COMMAND, main))
