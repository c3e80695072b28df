"""The plugin's mmengine registries, where OpenMMLab looks for a scope's: ``<scope>.registry`` (the scope is the
package name, ``ghostsr_plugin``; mmengine imports this module when a Runner or ``init_default_scope`` switches
to it). Importing it needs mmengine (see :mod:`ghostsr_plugin.integrations.mmengine`)."""
from ghostsr_plugin.integrations.mmengine import DATASETS, HOOKS, MODELS, REGISTRIES  # noqa: F401
