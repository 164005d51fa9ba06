#!/usr/bin/env bash
# S3 steps of the real-shaped model (Vicuna-7B at all 32 layers, random weights built on the GPU)
# in bf16: peak memory against `s2d-align plan`'s estimate, tokens/s and MFU. <= 10 min on one
# H100/H200. `--smoke` runs the same script on CPU (2 layers, short texts, one step per layout).
#   bash benchmarks/gpu_check.sh [--smoke] [--layouts 8:ckpt,4:nockpt] [--out gpu_check.json]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
# the GPU run must end within 10 min; the CPU smoke run may take longer on a busy machine
LIMIT=600; for arg in "$@"; do [ "$arg" = "--smoke" ] && LIMIT=1800; done
exec env PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" timeout "$LIMIT" "$PYTHON" benchmarks/gpu_check.py "$@"
