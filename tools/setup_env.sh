#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) and build the plugin with its compiled kernel.
# Idempotent and quick when nothing changed: a stamp records what was installed.
# Usage: source tools/setup_env.sh   (or run it; it leaves .venv ready)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

stamp_of() { cat "$ROOT/requirements.txt" "$ROOT/requirements-lock.txt" | sha256sum | cut -c1-16; }
src_stamp_of() { (cd "$ROOT" && cat setup.py $(ls kernels/* 2>/dev/null) | sha256sum | cut -c1-16); }

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if [ "$(cat "$VENV/.deps_stamp" 2>/dev/null)" != "$(stamp_of)" ]; then
  echo "[setup] installing torch, torchvision (pinned) ..."
  "${PIP[@]}" install -c "$ROOT/requirements-lock.txt" torch torchvision
  echo "[setup] installing basicsr 1.4.2 and the other pinned packages ..."
  "${PIP[@]}" install --no-build-isolation -c "$ROOT/requirements-lock.txt" \
    $(grep -v -E '^\s*(#|$)|^torch==|^torchvision==' "$ROOT/requirements.txt")
  stamp_of > "$VENV/.deps_stamp"
fi
if [ "$(cat "$VENV/.plugin_stamp" 2>/dev/null)" != "$(src_stamp_of)" ] || \
   ! "$VENV/bin/python" -c "import ghostsr_autoload" >/dev/null 2>&1; then
  echo "[setup] installing the plugin (editable) and building its kernels ..."
  (cd "$ROOT" && "${PIP[@]}" install --no-build-isolation --no-deps -e .)
  src_stamp_of > "$VENV/.plugin_stamp"
fi
echo "[setup] ready: $VENV ($("$VENV/bin/python" -c 'import torch, basicsr; print("torch", torch.__version__, "basicsr", basicsr.__version__)' 2>/dev/null))"
