"""What measures a model: parameter and multiply-add counts (:mod:`.complexity`), speed benchmarks (:mod:`.speed`,
:mod:`.ghostify_speed`), benchmark-set PSNR/SSIM (:mod:`.quality`) and the Table-1 report (:mod:`.comparison`)."""
