#!/usr/bin/env bash
# One prepared script for a lent GPU machine (the device tool). Each step prints its figures and tees them to
# $OUT; a failing step does not stop the next. Sized for a ~10 minute device slot; STEPS="a b" runs a subset.
#   facts       GPU name, memory, driver
#   tests       the gpu-marked tests: CUDA == CPU, ONNX Runtime on torch's GPU (device id, bounded arena,
#               heuristic cuDNN search), IO binding == numpy path, the forced OOM of each framework (torch under
#               a memory cap, ONNX Runtime in a small arena: the batch each backs off to is printed), fp16 shape
#   batches     full-size configurations, 60 s, 4 stems: unbatched vs the batch sizes chosen per model
#               (printed per model shape), with the share of wall time inside the model kernels
#   precision   fp16 vs fp32: speed, max abs difference, SDR on the demo pack
#   workers     multi-worker throughput (jobs per hour, 1 vs 2 workers, bench/bench_workers.py)
#   long        a 10-minute input, vocals only: RTF and peak memory
#   roformer    full-size random-weight mel-roformer and bs-roformer on a 3-minute input, fp32 and fp16: whole
#               separation time, kernel share, batch chosen, GPU peak; the RoFormer tests on CUDA (== the CPU)
# Usage: bash bench/gpu_check.sh   (expects .venv with a CUDA torch and onnxruntime-gpu: requirements-gpu.txt)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-bench/out}
STEPS=${STEPS:-facts tests batches precision workers long roformer}
mkdir -p "$OUT"

step_facts() {
    nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
}

step_tests() {
    "$PY" -m pytest -m gpu -q -s -rs tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
}

step_batches() {
    local batch
    for batch in 1 0; do  # 1: unbatched; 0: chosen per model from free device memory (and learned)
        "$PY" bench/bench_engine.py --pack full --device cuda --seconds 60 --mode all --shifts 0 \
            --batch-size "$batch" 2>&1 | tee -a "$OUT/gpu_bench.txt"
    done
}

step_precision() {
    "$PY" bench/bench_precision.py --seconds 60 --mode all 2>&1 | tee "$OUT/gpu_precision.txt"
}

# Multi-worker throughput: one worker per GPU from the service (SPARK_GPUS), jobs per hour for 1 and 2 workers on
# the same batch of clips (bench/bench_workers.py). One GPU: two workers share it ("0,0"), which shows whether a
# second job stream fills what one leaves idle.
step_workers() {
    local gpus="0,0"
    [[ $(nvidia-smi -L 2>/dev/null | wc -l) -ge 2 ]] && gpus="0,1"
    "$PY" bench/bench_workers.py --gpus "$gpus" --pack full 2>&1 | tee "$OUT/gpu_workers.txt"
}

step_long() {
    "$PY" bench/bench_engine.py --pack full --device cuda --minutes 10 --mode vocals 2>&1 | tee -a "$OUT/gpu_bench.txt"
}

step_roformer() {
    "$PY" -m pytest -m gpu -q -rs tests/test_roformer_demix.py 2>&1 | tee "$OUT/gpu_roformer.txt"
    local recipe precision
    for recipe in mel-roformer bs-roformer; do
        for precision in fp32 fp16; do
            "$PY" bench/bench_engine.py --recipe "$recipe" --pack full --device cuda --seconds 180 \
                --precision "$precision" 2>&1 | tee -a "$OUT/gpu_roformer.txt"
        done
    done
}

status=0
for step in $STEPS; do
    echo "=== $step ($(date -u +%H:%M:%S))"
    "step_$step" || status=1
done
exit "$status"
