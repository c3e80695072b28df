"""Data: MATLAB-bicubic down-scaling (:mod:`.bicubic`), BasicSR training sets made from HR folders (sub-images, LR
images, LMDBs: :mod:`.prepare`) and the benchmark sets' layout (:mod:`.benchmark`)."""
