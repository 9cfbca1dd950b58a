#!/usr/bin/env bash
# Create .venv and install fly64-train with both backends, the launchers, the training loggers
# (TensorBoard, MLflow), the Optuna sweeper and the test tools.
# torch is pinned in the same pip command: on CPU machines torch==2.13.0 is the CPU build, and an
# unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[tensorflow,pytorch,launchers,tracking,tuning,dev]" "torch==2.13.0"
echo "fly64-train installed in $(pwd)/.venv"
