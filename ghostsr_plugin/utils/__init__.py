"""The floor every other package stands on; it imports nothing else of ``ghostsr_plugin``: one-line errors and exit
codes (:mod:`.errors`), atomic writes (:mod:`.atomic`), weights-only checkpoint reading (:mod:`.checkpoint`), the one
image reader and writer (:mod:`.images`), option-file reading (:mod:`.option_file`), glibc malloc tuning
(:mod:`.malloc`)."""
