#!/usr/bin/env bash
# One prepared script for a lent GPU machine (the device tool): the GPU-marked tests, then batched vs unbatched
# speed on full-size model configurations, and an out-of-memory back-off under a memory cap (in the tests).
# Usage: bash bench/gpu_check.sh   (expects .venv with a CUDA torch and onnxruntime-gpu: requirements-gpu.txt)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -m pytest -m gpu -q tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
for batch in 1 0; do  # 1: unbatched; 0: chosen from free device memory
    "$PY" bench/bench_engine.py --pack full --device cuda --seconds 120 --mode all --batch-size "$batch" \
        2>&1 | tee -a "$OUT/gpu_bench.txt"
done
"$PY" bench/bench_engine.py --pack full --device cuda --minutes 10 --mode vocals 2>&1 | tee -a "$OUT/gpu_bench.txt"
