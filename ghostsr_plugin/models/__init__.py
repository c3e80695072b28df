"""Models registered into BasicSR's MODEL_REGISTRY (every ``*_model.py`` here), and BasicSR's saves made atomic
for every model (:mod:`ghostsr_plugin.models.atomic_saves`, installed first: the plugin's models inherit it)."""
import importlib
from os import path as osp

from basicsr.utils import scandir
from ghostsr_plugin.models import atomic_saves

atomic_saves.install()

_model_folder = osp.dirname(osp.abspath(__file__))
_model_modules = [
    importlib.import_module(f'ghostsr_plugin.models.{osp.splitext(name)[0]}')
    for name in sorted(scandir(_model_folder)) if name.endswith('_model.py')
]
