#!/usr/bin/env bash
# The GPU check (issue 18): one epoch of the GPU preset (ResNet34, 224 px, bf16, channels_last) on 1 GPU and DDP
# over every visible GPU (torchrun): images/s per GPU, the DDP scaling ratio, peak memory, beside published anchors
# (bench/gpu_check.py). Pick the GPUs with CUDA_VISIBLE_DEVICES.   bash bench/gpu_check.sh [--images N] [--workers N]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "gpu_check: no CUDA device here: run it on a GPU machine" >&2; exit 1; }
exec "$PY" -m bench.gpu_check "$@"
