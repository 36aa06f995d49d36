"""Real-time factor and peak resident memory of the engine, file in -> stems out.

    python bench/bench_engine.py --minutes 10 60 --mode vocals            # small toy pack (built on the fly)
    python bench/bench_engine.py --pack full --seconds 30 --mode all      # full-size model configurations
    python bench/bench_engine.py --pack /models-cache --minutes 3 --device cuda
    python bench/bench_engine.py --recipe mel-roformer --pack full --seconds 180 --device cuda
    python bench/bench_engine.py --recipe bs-roformer --minutes 5 40      # RoFormer: real STFT/chunk, small dims

Each run is a fresh subprocess, so its peak RSS (VmHWM) is its own. Prints one line per run and, with two or
more lengths, the ratio of the longest run's peak RSS to the shortest's (bounded memory: close to 1).
`kernel_share` is the share of the separation's wall time spent inside the model calls (STFT + ONNX Runtime +
iSTFT for MDX, the forward for demucs, each with its device copies); the rest is decoding, resampling, the
overlap-add and encoding; `process_share` is the same over the child's whole life (imports and model loading
too, as a command line run would pay). `batch` is the batch size chosen (and learned) per model shape.
On CUDA the model time is read from CUDA events (the window loop does not wait for the device). With
`overlap_models` (on CUDA by default; `--overlap-models on|off`) the demucs vocals pass runs beside the MDX
passes and `kernel_share` sums both, so it can pass 1.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()  # the child's start: its `process_share` counts imports and model loading too
ROOT = Path(__file__).resolve().parent.parent


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_input(path: Path, seconds: float, rate: int) -> None:
    """Noise with a slow tone, written block by block (a 60-minute input never sits in memory)."""
    import numpy as np
    import soundfile as sf
    rng = np.random.default_rng(0)
    frames, block = int(seconds * rate), rate * 30
    with sf.SoundFile(path, "w", rate, 2, "PCM_16") as f:
        for start in range(0, frames, block):
            n = min(block, frames - start)
            t = (start + np.arange(n)) / rate
            tone = 0.2 * np.sin(2 * np.pi * 220 * t)[:, None]
            f.write((rng.standard_normal((n, 2)) * 0.05 + tone).astype(np.float32))


ROFORMER_KINDS = {"mel-roformer": ("mel",), "bs-roformer": ("bs",), "ensemble": ("mel", "bs")}


def build_pack(kind: str, work: Path, recipe: str = "mdx23") -> Path:
    """A random-weight pack for `recipe`: "small" or "full" configurations. RoFormer packs hold the real file
    names; their "small" is the real STFT, bands and 8-s chunk with small dimensions (testkit size "bench")."""
    from testkit import toypack
    if kind not in ("small", "full"):
        return Path(kind)
    if recipe in ROFORMER_KINDS:
        from testkit import roformer
        d = work / f"pack-{kind}-{recipe}"
        for k in ROFORMER_KINDS[recipe]:
            roformer.write(d, k, "full" if kind == "full" else "bench")
        return d
    return toypack.build_pack(work / f"pack-{kind}", kind="random", stems="all", size=kind)


def run_one(args) -> dict:
    """Child process: one separation, measured."""
    import torch

    from mvsep.engine import Options, Separator
    if args.threads:
        torch.set_num_threads(args.threads)
    sep = Separator(args.pack, device=args.device, batch_size=args.batch_size or None, large_gpu=True)
    if args.overlap_models != "auto":
        sep.overlap_models = args.overlap_models == "on"
    opts = Options(recipe=args.recipe, only_vocals=args.mode == "vocals", overlap_large=args.overlap_large,
                   overlap_small=args.overlap_small, shifts=args.shifts, single_onnx=args.single_onnx,
                   precision=args.precision)
    sep.warm(opts)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.work) as out:
        res = sep.separate_file(args.input, out, opts, work_dir=args.work)
    end = time.perf_counter()
    wall = end - t0
    model_s = sep.demucs.model_seconds + sep.mdx.model_seconds + sep.roformer.model_seconds
    seconds = res.info.frames / res.info.sample_rate
    gpu = torch.cuda.max_memory_allocated() / 2**20 if sep.device == "cuda" else None
    return {"seconds": round(seconds, 1), "wall_s": round(wall, 2), "rtf": round(wall / seconds, 4),
            "peak_rss_mb": round(vm_hwm_mb(), 1), "gpu_peak_mb": gpu and round(gpu, 1),
            "model_s": round(model_s, 2), "kernel_share": round(model_s / wall, 4),
            "process_share": round(model_s / (end - T_START), 4),
            "overlap_models": sep.overlap_models,
            "batch": {**sep.demucs.book.sizes(), **sep.mdx.book.sizes(), **sep.roformer.book.sizes()},
            "timings": {k: round(v, 2) for k, v in res.timings.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", default="small", help="small | full (toy packs, built here) | a pack dir")
    lengths = ap.add_mutually_exclusive_group()
    lengths.add_argument("--minutes", type=float, nargs="+")
    lengths.add_argument("--seconds", type=float, nargs="+")
    ap.add_argument("--recipe", default="mdx23", help="mdx23 | mel-roformer | bs-roformer | ensemble")
    ap.add_argument("--mode", choices=("vocals", "all"), default="vocals")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=0, help="0: chosen from device memory")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--rate", type=int, default=44100, help="input sample rate")
    ap.add_argument("--overlap-large", type=float, default=0.6)
    ap.add_argument("--overlap-small", type=float, default=0.5)
    ap.add_argument("--shifts", type=int, default=1)
    ap.add_argument("--single-onnx", action="store_true")
    ap.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    ap.add_argument("--overlap-models", choices=("auto", "on", "off"), default="auto",
                    help="mdx23: the demucs vocals pass beside the MDX passes (auto: on CUDA only)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args)))
        return 0

    seconds = [m * 60 for m in args.minutes] if args.minutes else (args.seconds or [60.0])
    with tempfile.TemporaryDirectory(prefix="mvsep-bench-") as tmp:
        work = Path(tmp)
        pack = build_pack(args.pack, work, args.recipe)
        results = []
        for s in seconds:
            src = work / f"in-{int(s)}s.wav"
            write_input(src, s, args.rate)
            child = [sys.executable, __file__, "--child", "--input", str(src), "--work", str(work),
                     "--pack", str(pack), "--recipe", args.recipe, "--mode", args.mode, "--device", args.device,
                     "--batch-size", str(args.batch_size), "--threads", str(args.threads),
                     "--overlap-large", str(args.overlap_large), "--overlap-small", str(args.overlap_small),
                     "--shifts", str(args.shifts), "--precision", args.precision,
                     "--overlap-models", args.overlap_models] + (
                         ["--single-onnx"] if args.single_onnx else [])
            out = subprocess.run(child, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if out.returncode:
                sys.stderr.write(out.stderr)
                return out.returncode
            r = json.loads(out.stdout.strip().splitlines()[-1])
            src.unlink()
            results.append(r)
            print(f"pack={args.pack} recipe={args.recipe} mode={args.mode} device={args.device} input={r['seconds']}s "
                  f"wall={r['wall_s']}s rtf={r['rtf']} kernel_share={r['kernel_share']} "
                  f"process_share={r['process_share']} overlap_models={r['overlap_models']} "
                  f"precision={args.precision} peak_rss={r['peak_rss_mb']}MB gpu_peak={r['gpu_peak_mb']}MB "
                  f"batch={r['batch']} stages={r['timings']}", flush=True)
        if len(results) > 1:
            ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
            print(f"peak RSS ratio {results[-1]['seconds']}s / {results[0]['seconds']}s = {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
