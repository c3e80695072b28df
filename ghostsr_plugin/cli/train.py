"""``ghostsr train -opt FILE [--auto_resume] [--launcher pytorch] [--debug]``: train with BasicSR's own pipeline,
the options checked first, outputs under the current folder (:func:`ghostsr_plugin.pipeline.training.train`).

Under BasicSR's distributed launcher: ``torchrun --nproc_per_node N -m ghostsr_plugin train -opt FILE --launcher
pytorch``.
"""
from ghostsr_plugin.pipeline.training import train


def main(argv=None):
    """BasicSR parses the command line itself (``-opt``, ``--auto_resume``, ``--launcher``, ``--debug``, ...)."""
    train([] if argv is None else list(argv))
