"""Install the GhostSR BasicSR plugin and build its compiled shift kernel (``kernels/``).

    pip install --no-build-isolation -e .

``--no-build-isolation`` lets the kernel build use the installed torch. Environment switches:
    GHOSTSR_NO_EXT=1     skip the compiled kernel (the plain-PyTorch reference runs)
    GHOSTSR_CUDA=1/0     force / skip the CUDA part (default: built when nvcc and a CUDA torch exist)
"""
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

AUTOLOAD_PTH = 'ghostsr_plugin_autoload.pth'


class BuildPyWithAutoload(build_py):
    """Put the autoload ``.pth`` at the top of site-packages, beside the package."""

    def run(self):
        super().run()
        shutil.copy(AUTOLOAD_PTH, os.path.join(self.build_lib, AUTOLOAD_PTH))


class EditableWheelWithAutoload(editable_wheel):
    """Editable installs get the same ``.pth`` (setuptools drops non-package files from editable wheels)."""

    def _create_wheel_file(self, bdist_wheel):
        wheel_path = super()._create_wheel_file(bdist_wheel)
        import zipfile
        with zipfile.ZipFile(wheel_path, 'a') as wheel:
            wheel.write(AUTOLOAD_PTH, AUTOLOAD_PTH)
        return wheel_path


def extensions():
    """The compiled shift kernel; filled in by the kernels issue."""
    return [], {}


ext_modules, ext_cmdclass = extensions()

setup(
    name='ghostsr_plugin',
    version='0.1.0',
    description='GhostSR (ghost features by learnable shift) for BasicSR: Ghost EDSR/RDN/CARN/CARN_M, '
    'GhostSRModel, compiled shift kernel',
    packages=find_packages(include=['ghostsr_plugin', 'ghostsr_plugin.*']),
    py_modules=['ghostsr_autoload'],
    python_requires='>=3.9',
    ext_modules=ext_modules,
    cmdclass={
        'build_py': BuildPyWithAutoload,
        'editable_wheel': EditableWheelWithAutoload,
        **ext_cmdclass
    },
    zip_safe=False)
