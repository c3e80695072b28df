"""Which implementation of the ghost op runs: the compiled kernels of ``kernels/`` or the plain-PyTorch reference.

The compiled extension (``ghostsr_plugin._C``) is optional. Without it the reference runs and one warning says so.
``GHOSTSR_BACKEND=reference`` forces the reference (for comparisons).
"""
import os
import warnings

from ghostsr_plugin.ops.shift import ghost_shift_reference

_compiled = None  # the loaded extension module, False when unavailable, None before the first look
_warned = False


def _load_compiled():
    global _compiled, _warned
    if _compiled is None:
        try:
            from ghostsr_plugin import _C  # noqa: F401  (registers torch.ops.ghostsr.*)
            _compiled = _C
        except ImportError as err:
            _compiled = False
            if not _warned:
                _warned = True
                warnings.warn(f'GhostSR: compiled shift kernel not available ({err}); using the plain-PyTorch '
                              'reference. Build it with `pip install --no-build-isolation -e .`.')
    return _compiled


def backend_name(device='cpu'):
    """'cpp', 'cuda' or 'reference': the implementation :func:`ghost_shift` uses for tensors on ``device``."""
    if os.environ.get('GHOSTSR_BACKEND') == 'reference' or not _load_compiled():
        return 'reference'
    return 'reference'  # replaced by the kernels issue


def ghost_shift(x, index, offset, d, probs=None):
    return ghost_shift_reference(x, index, offset, d, probs)
