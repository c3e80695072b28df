"""``ghostsr test -opt FILE [--debug]``: PSNR/SSIM per set with BasicSR's own test pipeline, the options, images and
checkpoint checked first, results under the current folder (:func:`ghostsr_plugin.pipeline.training.test`)."""
from ghostsr_plugin.pipeline.training import test


def main(argv=None):
    """BasicSR parses the command line itself (``-opt``, ``--launcher``, ``--debug``)."""
    test([] if argv is None else list(argv))
