#!/usr/bin/env bash
# The GPU check in one command (see benchmarks/gpu_check.py):
#   bash benchmarks/gpu_check.sh OUT_DIR [--data PATH] [--budget-s 480]
#   bash benchmarks/gpu_check.sh --dry-run OUT_DIR        (CPU, smoke size; CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec "$PY" benchmarks/gpu_check.py "$@"
