"""glibc ``malloc`` settings for training and testing on the CPU (Linux).

With glibc's defaults, CPU tensors larger than the (dynamic) mmap threshold are mapped at every allocation and
unmapped at every free, and freed memory at the top of the heap is given back to the system, so every training
step faults its activations into memory again. Measured on this project's 2-core machine (BasicSR pipeline,
GhostCARN_M x2, batch 16 of 48x48 LR, 40 steps): 15.3 million minor page faults, 49 s of system time, 2.2 s per
step with the defaults; 1.3 million, 13 s and 1.6 s per step with allocations up to 32 MiB kept in the heap and the
heap never trimmed. The price: the process keeps its peak memory.

``ghostsr train`` / ``test`` and the minutes-budget step timer (``pipeline.budget``) call :func:`tune_malloc`;
``GHOSTSR_MALLOC_TUNING=0`` keeps glibc's defaults. Elsewhere (not glibc) it does nothing.
"""
import ctypes
import os

# mallopt() parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20),  # glibc's largest allowed value
            (M_TRIM_THRESHOLD, 2**31 - 1),  # never trim the heap top (an int parameter)
            (M_TOP_PAD, 256 << 20))  # grow the heap in 256 MiB steps


def tune_malloc():
    """Apply :data:`SETTINGS` with ``mallopt``; returns whether they were applied (False: switched off by
    ``GHOSTSR_MALLOC_TUNING=0``, or no glibc ``mallopt``)."""
    if os.environ.get('GHOSTSR_MALLOC_TUNING', '1') == '0':
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
