#!/usr/bin/env bash
# Create .venv and install fly64-train with both backends, the launchers, the training loggers
# (TensorBoard, MLflow), the Optuna sweeper, pty-chi (job=iterative) and the test tools.
# torch is pinned in the same pip command: on CPU machines torch==2.13.0 is the CPU build, and an
# unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[tensorflow,pytorch,launchers,tracking,tuning,iterative,dev]" "torch==2.13.0"
# pty-chi (job=iterative) imports torchvision for one Gaussian-blur transform. PyPI's torchvision for
# torch 2.13 (0.28.0) is a CUDA build: beside the CPU torch its compiled ops cannot load and its import
# fails ("operator torchvision::nms does not exist"). 0.16.2 is the newest release whose import goes on
# without its compiled ops (later ones register them unconditionally) and its Python transforms run on
# torch 2.13; it pins torch==2.1.2, hence --no-deps. Only when the paired build does not import.
if ! .venv/bin/python -c "import torchvision" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet --no-deps "torchvision==0.16.2"
  .venv/bin/python -c "import ptychi" >/dev/null
fi
echo "fly64-train installed in $(pwd)/.venv"
