"""The networks: architectures registered into BasicSR's ARCH_REGISTRY (one network family per ``*_arch.py``; the
Ghost archs are ``ghostify`` registrations over their plain twins), the plain-twin rule and the distill teacher's
options (:mod:`.twins`), and building a network from an option file with its checkpoint (:mod:`.build`)."""
import importlib
from os import path as osp

from basicsr.utils import scandir

_arch_folder = osp.dirname(osp.abspath(__file__))
_arch_modules = [
    importlib.import_module(f'ghostsr_plugin.archs.{osp.splitext(name)[0]}')
    for name in sorted(scandir(_arch_folder)) if name.endswith('_arch.py')
]
