"""What compresses a model with GhostSR: the generic ghost transform (:mod:`.ghostify`; the function is
``ghostsr_plugin.ghostify``), the clustering init from a pre-trained plain model (:mod:`.cluster`, §3.2), the
conversion of the authors' CARN checkpoints (:mod:`.convert`) and the optional spandrel loader (:mod:`.spandrel_io`,
imported only when used). The commands ``python -m ghostsr_plugin.{ghostify,cluster,convert}`` are thin fronts."""
