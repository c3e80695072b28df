"""Data: MATLAB-bicubic down-scaling (:mod:`.bicubic`), BasicSR training sets made from HR folders (sub-images, LR
images, LMDBs: :mod:`.prepare`), the benchmark sets' layout (:mod:`.benchmark`) and the dataset types registered
into BasicSR's DATASET_REGISTRY (``*_dataset.py``: :mod:`.lr_folder_dataset`, LR patches without ground truth)."""
import importlib
import os

_dataset_modules = [
    importlib.import_module(f'ghostsr_plugin.data.{os.path.splitext(name)[0]}')
    for name in sorted(os.listdir(os.path.dirname(os.path.abspath(__file__)))) if name.endswith('_dataset.py')
]
