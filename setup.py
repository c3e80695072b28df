"""Install the GhostSR BasicSR plugin and build its compiled shift kernel (``kernels/``).

    pip install --no-build-isolation -e .

``--no-build-isolation`` lets the kernel build use the installed torch. Environment switches:
    GHOSTSR_NO_EXT=1     skip the compiled kernel (the plain-PyTorch reference runs)
    GHOSTSR_CUDA=1/0     force / skip the CUDA part (default: built when nvcc, a CUDA torch and a visible GPU exist;
                         on a GPU-less machine: CUDA_HOME=<toolkit root> TORCH_CUDA_ARCH_LIST=9.0 GHOSTSR_CUDA=1)
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
    """The compiled ghost-shift op ``ghostsr_plugin._C`` (sources in ``kernels/``) as ``(ext_modules, cmdclass)``.

    * ``GHOSTSR_NO_EXT=1``: nothing is compiled; the plain-PyTorch reference runs.
    * The C++ CPU kernels are always built (OpenMP threads). A build without torch importable stops with an error
      (use ``--no-build-isolation``), so a missing kernel never goes unnoticed.
    * The CUDA kernels are added with ``GHOSTSR_CUDA=1`` (e.g. cross-compiling on a machine without a GPU:
      ``CUDA_HOME=<toolkit root> TORCH_CUDA_ARCH_LIST=9.0 GHOSTSR_CUDA=1``), skipped with ``GHOSTSR_CUDA=0``, and by
      default built when nvcc, a CUDA build of torch and a visible GPU are all present. A GPU-less machine
      therefore builds the fast CPU-only extension by default.
    """
    if os.environ.get('GHOSTSR_NO_EXT', '0') == '1':
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as err:
        raise RuntimeError('building the GhostSR kernels needs torch importable: install with '
                           '`pip install --no-build-isolation -e .` (or set GHOSTSR_NO_EXT=1 to skip them)') from err

    root = os.path.dirname(os.path.abspath(__file__))
    kernels = os.path.join(root, 'kernels')
    switch = os.environ.get('GHOSTSR_CUDA', '')
    if switch not in ('', '0', '1'):
        raise ValueError(f'GHOSTSR_CUDA must be 1 (build the CUDA kernels), 0 (skip them) or unset (auto), got {switch!r}')
    cuda_home = cpp_extension.CUDA_HOME
    has_nvcc = bool(cuda_home) and os.path.exists(os.path.join(cuda_home, 'bin', 'nvcc'))
    if switch == '1':
        with_cuda = True
        if torch.version.cuda is None or not has_nvcc:
            raise RuntimeError(f'GHOSTSR_CUDA=1 needs a CUDA build of torch (found {torch.__version__}) and nvcc under '
                               f'CUDA_HOME (found {cuda_home!r}); set CUDA_HOME to the CUDA toolkit root')
    else:
        with_cuda = switch == '' and has_nvcc and torch.version.cuda is not None and torch.cuda.is_available()

    sources = ['kernels/ghost_shift.cpp']
    # -g0: no debug info (twice as fast to build); no memcpy/memset calls for the kernels' short copy loops
    cxx_flags = ['-O3', '-g0', '-fopenmp', '-fno-tree-loop-distribute-patterns', '-Wno-unknown-pragmas']
    options = dict(include_dirs=[kernels], extra_link_args=['-fopenmp'])
    if with_cuda:
        sources.append('kernels/ghost_shift_cuda.cu')
        extension = cpp_extension.CUDAExtension(
            'ghostsr_plugin._C',
            sources,
            define_macros=[('GHOSTSR_WITH_CUDA', None)],
            extra_compile_args={
                'cxx': cxx_flags,
                'nvcc': ['-O3', '-lineinfo']
            },
            **options)
    else:
        extension = cpp_extension.CppExtension('ghostsr_plugin._C', sources, extra_compile_args=cxx_flags, **options)
    return [extension], {'build_ext': cpp_extension.BuildExtension}


ext_modules, ext_cmdclass = extensions()

setup(
    name='ghostsr_plugin',
    version='0.1.0',
    description='GhostSR (ghost features by learnable shift) for BasicSR: Ghost EDSR/RDN/CARN/CARN_M, '
    'GhostSRModel, compiled shift kernel',
    packages=find_packages(include=['ghostsr_plugin', 'ghostsr_plugin.*']),
    py_modules=['ghostsr_autoload'],
    python_requires='>=3.9',
    entry_points={'console_scripts': ['ghostsr = ghostsr_plugin.cli:main']},
    ext_modules=ext_modules,
    cmdclass={
        'build_py': BuildPyWithAutoload,
        'editable_wheel': EditableWheelWithAutoload,
        **ext_cmdclass
    },
    zip_safe=False)
