"""Import ``ghostsr_plugin`` as soon as BasicSR is imported, so BasicSR's own train.py/test.py know the Ghost archs.

Installed with the plugin and run at interpreter start by ``ghostsr_plugin_autoload.pth``. It costs one entry in
``sys.meta_path`` and imports neither torch nor BasicSR. When ``basicsr`` is imported, its loader is wrapped so
that, once ``basicsr/__init__.py`` has run, ``ghostsr_plugin`` is imported and registers its archs and models, and
replaces ``basicsr.utils.options.ordered_yaml`` with a safe loader (``ghostsr_plugin.utils.option_file``), so that
BasicSR's own ``train.py`` / ``test.py`` refuse an option file whose tags would construct Python objects.

It also holds the torchvision compatibility finder (:func:`install_compat`), which ``ghostsr_plugin`` installs too:
BasicSR 1.4.2 (``basicsr/data/degradations.py``) imports ``torchvision.transforms.functional_tensor``, a module
torchvision removed in 0.17. The finder goes last in ``sys.meta_path``, so it answers only when no real module of
that name exists (old torchvision wins), with a module exposing ``rgb_to_grayscale`` (the one name BasicSR uses)
from ``torchvision.transforms.functional``. BasicSR's files are never touched.

Switch it off with the environment variable ``GHOSTSR_NO_AUTOLOAD=1`` (then BasicSR's own scripts neither know the
Ghost archs nor read option files safely, unless ``ghostsr_plugin`` is imported before they parse their options).
"""
import importlib.abc
import importlib.util
import os
import sys

_LEGACY = 'torchvision.transforms.functional_tensor'


class _LegacyTorchvisionFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _LEGACY:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        from torchvision.transforms import functional
        module.rgb_to_grayscale = functional.rgb_to_grayscale


class _BasicSRHook(importlib.abc.MetaPathFinder):

    def find_spec(self, fullname, path=None, target=None):
        if fullname != 'basicsr':
            return None
        sys.meta_path.remove(self)  # one shot; find the real spec with the other finders
        spec = importlib.util.find_spec('basicsr')
        if spec is None or spec.loader is None:
            return spec
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            if 'ghostsr_plugin' not in sys.modules:
                import ghostsr_plugin  # noqa: F401

        spec.loader.exec_module = exec_module
        return spec


def install_compat():
    """Idempotent: make ``torchvision.transforms.functional_tensor`` importable for BasicSR 1.4.2."""
    if not any(isinstance(f, _LegacyTorchvisionFinder) for f in sys.meta_path):
        sys.meta_path.append(_LegacyTorchvisionFinder())


def install():
    """Run by the ``.pth`` at interpreter start."""
    if os.environ.get('GHOSTSR_NO_AUTOLOAD', '') not in ('', '0') or 'basicsr' in sys.modules:
        return
    install_compat()
    if not any(isinstance(f, _BasicSRHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _BasicSRHook())
