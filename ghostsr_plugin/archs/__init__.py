"""Architectures registered into BasicSR's ARCH_REGISTRY (one network family per ``*_arch.py``)."""
import importlib
from os import path as osp

from basicsr.utils import scandir

_arch_folder = osp.dirname(osp.abspath(__file__))
_arch_modules = [
    importlib.import_module(f'ghostsr_plugin.archs.{osp.splitext(name)[0]}')
    for name in sorted(scandir(_arch_folder)) if name.endswith('_arch.py')
]
