#!/usr/bin/env bash
# The GPU checks, run ON a machine with an NVIDIA H100/H200 (its own Python, torch and nvcc; no internet), from a
# copy of the project that includes the git-ignored .gpu/ folder:
#
#   before, on a machine with the data:  python tools/gpu_pack.py       (fills .gpu/: wheels + data subset)
#   on the GPU machine:  bash tools/gpu_check.sh kernels                (about 7 minutes)
#                        bash tools/gpu_check.sh experiment [N]         (about 9 minutes; N iterations per run)
#                        bash tools/gpu_check.sh finetune [N] [RUN...]  (about 9 minutes)
#   after, with $OUT copied back:  python tools/ghost_init_experiment.py --checkpoints <OUT> --results ghost_init_x2_gpu
#                 (finetune: the records are in <OUT>/finetune_x2_gpu.*; Set14 of each checkpoint:
#                 ghostsr evaluate -opt <OUT>/gpu_<run>.yml --ckpt <OUT>/gpu_<run>.pth --set Set14)
#
# kernels:    builds the CPU + CUDA extension for the device's torch (sm_90), runs the kernel tests (the CUDA ones
#             included: they must not be skipped there) and `ghostsr bench speed --device cuda`,
#             eager modes first, then the torch.compile ones (each with its own time limit).
# experiment: the §3.2 fine-tunes of tools/ghost_init_experiment.py with N iterations per run (default 2000) and
#             8 data loader processes, training only; the three checkpoints and their times come back in $OUT.
# finetune:   the Table 3 runs of tools/finetune_experiment.py (default: learnable_s0 copy_s0 learnable_s1
#             copy_s1) from the same option file, unchanged but for --iters N (default 2000) and 8 loader processes,
#             as experiments gpu_<run>, evaluated on Set5 (the packed set); records, option files and checkpoints
#             come back in $OUT.
# Everything printed is also written to $OUT (copy it back). Each step has its own time limit
# so that one slow step cannot use the whole call. A dry run on a machine without a GPU (the training then runs on its
# CPU): PYTHON=.venv/bin/python GHOSTSR_CUDA=0 OUT=/tmp/out bash tools/gpu_check.sh experiment 2
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PHASE="${1:-}"
OUT="${OUT:-/tmp/gpu_check_out}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check_$PHASE.log") 2>&1

case "$PHASE" in
  kernels | experiment | finetune) ;;
  *) echo "usage: bash tools/gpu_check.sh kernels | experiment [ITERS] | finetune [ITERS] [RUN...]  (got '$PHASE')"
     exit 2 ;;
esac
[ -d .gpu ] || { echo ".gpu/ is missing: run python tools/gpu_pack.py where the data is and copy .gpu/ with the project"; exit 2; }

step() {  # step NAME SECONDS COMMAND...: run with a time limit, report its time and status
  local name="$1" limit="$2" start=$SECONDS rc
  shift 2
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@"
  rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start)) s"
  return $rc
}

# Packages the device image lacks (basicsr, lmdb), as carried wheels; the project itself runs from the tree.
if ! "$PYTHON" -c 'import basicsr, lmdb' 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The option files read ../shared/data: point it at the packed subset.
if [ ! -e ../shared/data ]; then
  mkdir -p ../shared && ln -s "$PWD/.gpu/data" ../shared/data
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.is_available())'

NVCC="$(command -v nvcc || true)"
export CUDA_HOME="${CUDA_HOME:-${NVCC:+$(dirname "$(dirname "$NVCC")")}}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
step "build (CPU + CUDA kernels)" 300 env GHOSTSR_CUDA="${GHOSTSR_CUDA:-1}" "$PYTHON" setup.py -q build_ext --inplace || exit 1
"$PYTHON" -c '
import sys, torch
from ghostsr_plugin.ops import backend
print("backend: cpu", backend.backend_name("cpu"), "/ cuda", backend.backend_name("cuda"))
if torch.cuda.is_available() and backend.backend_name("cuda") != "cuda":
    sys.exit("a GPU is there but the CUDA kernels are not in the build: the checks would test the reference")' || exit 1

if [ "$PHASE" = kernels ]; then
  step "kernel tests" 240 "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_backend.py tests/test_shift.py \
    tests/test_ghost_conv.py
  step "bench speed (cuda), eager" 180 "$PYTHON" -m ghostsr_plugin bench speed --device cuda --compile skip \
    --json "$OUT/bench_cuda_eager.json"
  step "bench speed (cuda), torch.compile" 300 "$PYTHON" -m ghostsr_plugin bench speed --device cuda --compile only \
    --json "$OUT/bench_cuda_compiled.json"
  exit 0
fi

if [ "$PHASE" = finetune ]; then
  ITERS="${2:-2000}"
  shift $(( $# < 2 ? $# : 2 ))
  RUNS=("${@:-learnable_s0 copy_s0 learnable_s1 copy_s1}")
  status=0
  for run in ${RUNS[*]}; do
    step "issue 12 $run, $ITERS iterations" 480 "$PYTHON" tools/finetune_experiment.py "$run" --iters "$ITERS" \
      --workers 8 --prefix gpu_ --results finetune_x2_gpu --sets Set5 || status=1
    cp "experiments/finetune_options/gpu_$run.yml" "$OUT/gpu_$run.yml" 2>/dev/null
    cp "experiments/gpu_$run/models/net_g_latest.pth" "$OUT/gpu_$run.pth" 2>/dev/null
    cp "experiments/gpu_$run/models/net_g_best.pth" "$OUT/gpu_${run}_best.pth" 2>/dev/null
    cp docs/results/finetune_x2_gpu.* "$OUT/" 2>/dev/null
  done
  exit $status
fi

ITERS="${2:-2000}"
step "issue 3 fine-tunes, $ITERS iterations per run" 500 \
  "$PYTHON" tools/ghost_init_experiment.py --train-only --iters "$ITERS" --workers 8
status=$?
# What exists comes back even after a failure or the time limit: the logs say how far each run got (a run cut
# short has no net_g_latest.pth and no entry in ghost_init_train.json).
cp experiments/ghost_init_train.json "$OUT/" 2>/dev/null
for run in finetune scratch copy; do
  name="ghostinit_GhostCARN_M_x2_$run"
  cp "experiments/$name/models/net_g_latest.pth" "$OUT/$name.pth" 2>/dev/null
  tail -n 40 experiments/"$name"/train_"$name"_*.log >> "$OUT/train_logs.txt" 2>/dev/null
done
exit $status
