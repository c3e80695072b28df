"""GhostSR for BasicSR: Ghost versions of EDSR, RDN, CARN and CARN_M (Nie et al., "GhostSR: Learning Ghost Features
for Efficient Image Super-Resolution"), plain RDN/CARN/CARN_M baselines, and GhostSRModel.

Importing this package registers its archs, models and dataset types into BasicSR's registries and makes BasicSR
read option files with a safe YAML loader (``ghostsr_plugin.utils.option_file.install_safe_ordered_yaml``).
"""
import ghostsr_autoload

ghostsr_autoload.install_compat()  # BasicSR 1.4.2 needs it before its first import

from ghostsr_plugin.utils.option_file import install_safe_ordered_yaml  # noqa: E402

install_safe_ordered_yaml()  # option files, BasicSR's own train.py/test.py included: plain YAML only, no Python tags

from ghostsr_plugin import archs, data, models  # noqa: E402,F401  (registration)
from ghostsr_plugin.ops.backend import backend_name  # noqa: E402,F401
from ghostsr_plugin.compress.ghostifier import ghostify  # noqa: E402,F401  (GhostSR for any network)

__version__ = '0.1.0'
