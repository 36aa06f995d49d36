#!/usr/bin/env bash
# One prepared script for a lent GPU machine: every figure issue 22's targets name, each written to $OUT (one
# file per step, and one line per figure in $OUT/figures.txt). A failing step does not stop the next. Sized to
# finish in under 8 minutes on one H200; STEPS="a b" runs a subset.
#   facts       GPU name, memory, driver; torch and onnxruntime versions
#   tests       the gpu-marked tests: CUDA == CPU within 1e-4, two GPU runs byte-identical, IO binding, OOM backoff
#   pack        builds the full-size toy pack once (random weights in the released models' sizes) for the rest
#   allstems    60 s, all stems, fp32: wall, RTF, kernel share, GPU peak (target: share >= 0.90, wall <= 5.5 s);
#               once as shipped (the demucs vocals pass beside the MDX passes) and once with --overlap-models off
#   long        10 min, vocals, fp32: wall, kernel share, host RSS (target: share >= 0.90, wall <= 8 s); the same
#               two runs
#   precision   fp16 and bf16 vs fp32 on the 60 s run (target bf16 >= 1.5x at >= 40 dB), the demo-pack SDR per
#               precision, and the guard's table ($OUT/precision_sdr.json: copy it to mvsep/ to offer them)
#   workers     jobs per hour, 8 clips of 15 s: one worker vs the default two streams on GPU 0 (>= 4800 jobs/h)
#   cold        CLI process start to first stem, cold and warm SPARK_ORT_CACHE
#   original    whole-process CLI vs the original program, 300 s vocals (target <= 0.40); needs ORIGINAL_DIR, a
#               checkout of MVSEP-MDX23 with its models (no network on the device machine): skipped otherwise
# Usage: bash bench/gpu_check.sh   (PYTHON=python3 works: any interpreter with requirements-gpu.txt installed)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python3
    [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
OUT=${OUT:-bench/out}
STEPS=${STEPS:-facts tests pack allstems long precision workers cold original roformer}
WORK=${WORK:-$(mktemp -d)}
PACK="$WORK/pack-full"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # mvsep, testkit from this tree, installed or not
mkdir -p "$OUT"

figure() {  # figure NAME VALUE...: one line of $OUT/figures.txt
    echo "$*" | tee -a "$OUT/figures.txt"
}

step_facts() {
    nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    "$PYTHON" -c 'import torch, onnxruntime as o; print("torch", torch.__version__, "cuda", torch.version.cuda,
"bf16", torch.cuda.is_bf16_supported(), "onnxruntime", o.__version__, o.get_available_providers())' \
        | tee -a "$OUT/gpu.txt"
}

step_tests() {
    timeout 150 "$PYTHON" -m pytest -m gpu -q -s -rs tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt"
    figure "gpu_tests $(tail -1 "$OUT/gpu_tests.txt")"
}

step_pack() {
    [[ -d "$PACK" ]] || "$PYTHON" -c "import sys; from testkit import toypack
toypack.build_pack(sys.argv[1], kind='random', stems='all', size='full')" "$PACK"
}

bench_line() {  # bench_engine's result line, named -> one figure
    grep -E "^pack=" "$2" | sed "s/^/$1 /"
}

step_allstems() {
    local overlap
    for overlap in auto off; do
        timeout 120 "$PYTHON" bench/bench_engine.py --pack "$PACK" --device cuda --seconds 60 --mode all --shifts 0 \
            --overlap-models "$overlap" 2>&1 | tee "$OUT/gpu_allstems_$overlap.txt"
        figure "$(bench_line "allstems_60s overlap=$overlap" "$OUT/gpu_allstems_$overlap.txt")"
    done
}

step_long() {
    local overlap
    for overlap in auto off; do
        timeout 150 "$PYTHON" bench/bench_engine.py --pack "$PACK" --device cuda --minutes 10 --mode vocals \
            --shifts 0 --overlap-models "$overlap" 2>&1 | tee "$OUT/gpu_long_$overlap.txt"
        figure "$(bench_line "vocals_10min overlap=$overlap" "$OUT/gpu_long_$overlap.txt")"
    done
}

step_precision() {
    timeout 150 "$PYTHON" bench/bench_precision.py --seconds 60 --mode all --pack "$PACK" \
        --record "$OUT/precision_sdr.json" 2>&1 | tee "$OUT/gpu_precision.txt"
    grep -E "^precision" "$OUT/gpu_precision.txt" >> "$OUT/figures.txt"
}

step_workers() {
    timeout 150 "$PYTHON" bench/bench_workers.py --gpus 0,0 --pack full 2>&1 | tee "$OUT/gpu_workers.txt"
    figure "workers $(tail -1 "$OUT/gpu_workers.txt")"
}

step_cold() {
    timeout 90 "$PYTHON" bench/bench_cold_start.py --device cuda --runs 2 2>&1 | tee "$OUT/gpu_cold.txt"
    grep -E "^cold start" "$OUT/gpu_cold.txt" >> "$OUT/figures.txt"
}

step_original() {
    if [[ -z "${ORIGINAL_DIR:-}" ]]; then
        figure "original skipped: set ORIGINAL_DIR to a checkout of the original program with its models"
        return 0
    fi
    local src="$WORK/in300.wav" t0 t1 t2
    "$PYTHON" -c "import sys, numpy as np, soundfile as sf
sf.write(sys.argv[1], (np.random.default_rng(0).standard_normal((300 * 44100, 2)) * 0.1).astype(np.float32), 44100)" "$src"
    t0=$(date +%s.%N)
    (cd "$ORIGINAL_DIR" && timeout 200 "$PYTHON" inference.py --large_gpu --only_vocals --input_audio "$src" \
        --output_folder "$WORK/orig") > "$OUT/gpu_original.txt" 2>&1
    t1=$(date +%s.%N)
    timeout 200 "$PYTHON" mvsep/inference_demucs.py --large_gpu --only_vocals --input_audio "$src" \
        --output_folder "$WORK/ours" --model_dir "$ORIGINAL_DIR/models" >> "$OUT/gpu_original.txt" 2>&1
    t2=$(date +%s.%N)
    figure "$(awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {printf "original_300s_vocals original=%.1fs cli=%.1fs ratio=%.2f", b-a, c-b, (c-b)/(b-a)}')"
}

step_roformer() {
    timeout 120 "$PYTHON" -m pytest -m gpu -q -rs tests/test_roformer_demix.py 2>&1 | tee "$OUT/gpu_roformer.txt"
    local recipe precision
    for recipe in mel-roformer bs-roformer; do
        for precision in fp32 fp16; do
            timeout 60 "$PYTHON" bench/bench_engine.py --recipe "$recipe" --pack full --device cuda --seconds 180 \
                --precision "$precision" 2>&1 | tee -a "$OUT/gpu_roformer.txt"
        done
    done
}

status=0
for step in $STEPS; do
    echo "=== $step ($(date -u +%H:%M:%S))"
    "step_$step" || status=1
done
echo "figures in $OUT/figures.txt"
exit "$status"
