"""Parameters and multiply-adds of a network: :mod:`ghostsr_plugin.utils.complexity` (the compression's own start
counts multiply-adds too, so the counter sits at the package's floor), named here with the other measurements."""
from ghostsr_plugin.utils.complexity import count_macs, count_params, forward_kwargs

__all__ = ['count_params', 'count_macs', 'forward_kwargs']
