#!/usr/bin/env bash
# Set up .venv if needed (tools/setup_env.sh), then the main job: a real GhostSR run on ../shared/data.
# Extra arguments go to `ghostsr demo` (see --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec .venv/bin/ghostsr demo "$@"
