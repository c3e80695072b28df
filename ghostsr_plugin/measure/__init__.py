"""What measures a model: parameter and multiply-add counts, speed benchmarks, the Table-1 report."""
