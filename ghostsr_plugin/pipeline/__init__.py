"""Runs through BasicSR's own pipelines: the up-front option checks (:mod:`.options`), one run per folder
(:mod:`.lock`), resuming (:mod:`.resume`), training and testing (:mod:`.training`) and the main job
(:mod:`.main_job`)."""
