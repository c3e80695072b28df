"""Integrations with other training frameworks, imported on demand (``import ghostsr_plugin`` imports none of them):
:mod:`ghostsr_plugin.integrations.mmengine`."""
