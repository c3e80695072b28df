"""Compressing a network with GhostSR: the generic ghost transform (:mod:`ghostsr_plugin.compress.ghostify`; the
function is ``ghostsr_plugin.ghostify``) and the optional spandrel loader (:mod:`ghostsr_plugin.compress.spandrel_io`,
imported only when used)."""
