"""What compresses a model with GhostSR: the generic ghost transform (:mod:`.ghostifier`; the function is
``ghostsr_plugin.ghostify``), re-parameterised blocks merged into their deploy conv first (:mod:`.reparam`), the
clustering init from a pre-trained plain model (:mod:`.clustering`, §3.2), a checkpoint or option file's network
ghostified, clustered and written (:mod:`.from_checkpoint`), the conversion of the authors' CARN checkpoints
(:mod:`.conversion`) and the optional spandrel loader (:mod:`.spandrel_io`, imported only when used). The commands
``ghostsr ghostify / cluster / convert`` are thin fronts over them."""
