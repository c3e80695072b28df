"""Models registered into BasicSR's MODEL_REGISTRY."""
import importlib
from os import path as osp

from basicsr.utils import scandir

_model_folder = osp.dirname(osp.abspath(__file__))
_model_modules = [
    importlib.import_module(f'ghostsr_plugin.models.{osp.splitext(name)[0]}')
    for name in sorted(scandir(_model_folder)) if name.endswith('_model.py')
]
