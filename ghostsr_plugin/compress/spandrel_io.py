"""spandrel (the model loader of ComfyUI and chaiNNer) as an optional source of plain networks: detect the
architecture of a checkpoint, and rebuild the same network from BasicSR options (``type: SpandrelNet``).

spandrel is imported only here, lazily; without it the functions raise an ImportError saying how to install it.
Checkpoints are read with ``weights_only=True`` (:func:`ghostsr_plugin.utils.checkpoint.load_checkpoint`) and handed
to spandrel's registry as a state dict; a malformed ``.safetensors`` file is one error naming it.
"""
import importlib
import inspect

from torch import nn

from ghostsr_plugin.utils.checkpoint import load_checkpoint
from ghostsr_plugin.utils.errors import UserInputError

__all__ = ['require_spandrel', 'load_model', 'network_options', 'build_spandrel_net', 'size_for_trace']

SPANDREL_PIN = 'spandrel==0.4.2'


def require_spandrel():
    try:
        import spandrel
    except ImportError as err:
        raise ImportError(f'this needs spandrel, an optional dependency: pip install {SPANDREL_PIN}') from err
    return spandrel


def load_model(path):
    """spandrel's model descriptor of checkpoint ``path`` (architecture detected from the state dict)."""
    spandrel = require_spandrel()
    if str(path).lower().endswith('.safetensors'):  # a format that holds tensors only
        state = _load_safetensors(path)
    else:
        state = load_checkpoint(path, 'params_ema')  # weights_only; BasicSR wrappers unwrapped, bare dicts as is
    try:
        return spandrel.MAIN_REGISTRY.load(state)
    except spandrel.UnsupportedModelError as err:
        known = ', '.join(sorted(a.architecture.id for a in spandrel.MAIN_REGISTRY.architectures()))
        raise ValueError(f'{path}: spandrel {spandrel.__version__} cannot identify the architecture of this checkpoint '
                         f'(it identifies: {known})') from err


def _load_safetensors(path):
    """The tensors of a ``.safetensors`` file; a malformed one (bad header, truncated data, not safetensors at all) is
    a UserInputError naming the file."""
    import os
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        return load_file(path, device='cpu')
    except (SafetensorError, ValueError, OSError, RuntimeError) as err:  # the Rust reader's errors, torch's
        raise UserInputError(f'{path}: not a readable .safetensors file ({err})') from None


def _arch_classes(arch):
    module = importlib.import_module(f'spandrel.architectures.{arch}')
    return {name: getattr(module, name) for name in getattr(module, '__all__', ())
            if inspect.isclass(getattr(module, name)) and issubclass(getattr(module, name), nn.Module)}


def _plain(value, where):
    """``value`` as YAML-safe data (tuples as lists), or a ValueError naming the hyperparameter."""
    if isinstance(value, (tuple, list)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, f'{where}.{k}') for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f'spandrel hyperparameter {where} = {value!r} cannot be written to a BasicSR option file')


def network_options(descriptor):
    """BasicSR network options (``type: SpandrelNet``) that rebuild ``descriptor.model``'s architecture."""
    model = descriptor.model
    arch = descriptor.architecture.id
    names = [name for name, cls in _arch_classes(arch).items() if cls is type(model)]
    if not names or not hasattr(model, 'hyperparameters'):
        raise ValueError(f'spandrel architecture {arch}: its network class {type(model).__name__} cannot be rebuilt '
                         'from options (not exported, or no stored hyperparameters)')
    defaults = {k: p.default for k, p in inspect.signature(type(model)).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {'type': 'SpandrelNet', 'arch': arch, 'model': names[0],
            'hyperparameters': {k: _plain(v, k) for k, v in model.hyperparameters.items() if k not in defaults
                                or defaults[k] is not v and defaults[k] != v}}


def build_spandrel_net(arch, model=None, hyperparameters=None):
    """The spandrel network class ``model`` of architecture ``arch``, built with ``hyperparameters``."""
    require_spandrel()
    try:
        classes = _arch_classes(arch)
    except ModuleNotFoundError as err:
        raise ValueError(f'network_g: SpandrelNet arch {arch!r} is not a spandrel architecture') from err
    if model is None and len(classes) == 1:
        model = next(iter(classes))
    if model not in classes:
        raise ValueError(f'network_g: SpandrelNet model {model!r} is not a network of spandrel architecture {arch}; '
                         f'allowed: {", ".join(classes)}')
    return classes[model](**(hyperparameters or {}))


def size_for_trace(descriptor, size=16):
    """A trace input side that meets the model's size requirements (at least ``size``)."""
    req = descriptor.size_requirements
    side = max(size, req.minimum)
    return -(-side // req.multiple_of) * req.multiple_of
