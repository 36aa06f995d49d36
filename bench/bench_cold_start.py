"""Cold start of the command line: process start to the first stem on disk, and to the process's exit.

    python bench/bench_cold_start.py                       # CPU, toy size="full" vocals pack built here
    python bench/bench_cold_start.py --device cuda --pack /models-cache --runs 3

Each run is a fresh `python mvsep/inference_demucs.py` on a short input. The first run starts with an empty
SPARK_ORT_CACHE (ONNX Runtime optimizes every graph and keeps it there), the later ones find it filled. To
compare with an older commit, run that commit's copy of this script with PYTHONPATH set to its tree.
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

ROOT = Path(__file__).resolve().parent.parent


def run_cli(pack: Path, src: Path, out: Path, device: str, env: dict) -> dict:
    cmd = [sys.executable, str(ROOT / "mvsep" / "inference_demucs.py"), "-i", str(src), "-r", str(out),
           "--model_dir", str(pack), "--only_vocals"] + (["--cpu"] if device == "cpu" else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    while proc.poll() is None:
        if first is None and out.is_dir() and any(p.suffix == ".wav" for p in out.iterdir()):
            first = time.perf_counter() - t0
        time.sleep(0.02)
    end = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"the CLI failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    return {"first_stem_s": round(first if first is not None else end, 2), "exit_s": round(end, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", help="a pack dir (default: the toy size='full' vocals pack, built here)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    import numpy as np
    import soundfile as sf
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pack = Path(args.pack) if args.pack else None
        if pack is None:
            from testkit import toypack
            pack = toypack.build_pack(work / "pack", kind="random", stems="vocals", size="full")
        src = work / "in.wav"
        x = (np.random.default_rng(0).standard_normal((int(args.seconds * 44100), 2)) * 0.1).astype(np.float32)
        sf.write(src, x, 44100, subtype="PCM_16")
        env = {**os.environ, "SPARK_ORT_CACHE": str(work / "ort-cache")}
        for i in range(args.runs):
            got = run_cli(pack, src, work / f"out{i}", args.device, env)
            cache = "cold" if i == 0 else "warm"
            print(f"cold start device={args.device} input={args.seconds}s run={i + 1} ort_cache={cache} "
                  f"{json.dumps(got)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
