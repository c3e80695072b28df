"""ghostsr_plugin/utils/malloc.py: the glibc malloc settings apply, can be switched off, and do what they are for:
steps that allocate and free the same large CPU tensors stop faulting their pages in again."""
import ctypes
import os
import subprocess
import sys

import pytest

from ghostsr_plugin.utils import malloc

# 20 "steps", each holding eight 16 MiB tensors at once (like a step's activations), then freeing them; prints the
# minor page faults of the steps after the first. 'static' pins glibc's initial mmap threshold (128 KiB) instead of
# tuning, so that the untuned case does not depend on glibc's dynamic threshold (which moves with what was freed).
FAULTS = '''
import ctypes, resource, sys, torch
from ghostsr_plugin.utils.malloc import M_MMAP_THRESHOLD, tune_malloc
if sys.argv[1] == 'static':
    ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 << 10)
else:
    assert tune_malloc()
def step():
    tensors = [torch.empty(4 << 20).fill_(1) for _ in range(8)]
    del tensors
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''
PAGES_PER_STEP = 8 * (16 << 20) // 4096


def faults(mode):
    proc = subprocess.run([sys.executable, '-c', FAULTS, mode], capture_output=True, text=True, check=True,
                          env={**os.environ, 'GHOSTSR_MALLOC_TUNING': '1'})
    return int(proc.stdout.strip())


glibc = pytest.mark.skipif(not hasattr(ctypes.CDLL(None), 'mallopt'), reason='needs glibc mallopt')


@glibc
def test_tuned_steps_do_not_fault_their_tensors_in_again():
    assert faults('static') >= 20 * PAGES_PER_STEP  # every step maps its 128 MiB afresh
    assert faults('tuned') < 2 * PAGES_PER_STEP  # at most a couple of steps' worth, not one per step


@glibc
def test_applies_and_switches_off(monkeypatch):
    monkeypatch.setenv('GHOSTSR_MALLOC_TUNING', '1')
    assert malloc.tune_malloc() is True
    monkeypatch.setenv('GHOSTSR_MALLOC_TUNING', '0')
    assert malloc.tune_malloc() is False
