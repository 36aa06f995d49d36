"""Disk a job needs per hour of input: the engine's work files (float32 [T, C] signals) and the stems it writes,
measured on a short clip with a toy pack and extrapolated linearly (both grow with the input's length).

    python bench/disk_per_hour.py [--seconds 20] [--rate 48000] [--format wav]

A thread samples the work dir and the output dir every 20 ms; the peak of their sum is what the engine needs at
once. The service then writes result.zip (stored, the size of the stems) next to the stems, and keeps the upload
until the job ends: its peak is the larger of the engine's and 2 x stems, plus the upload.
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from bench_engine import write_input  # noqa: E402 (the script's own dir is on sys.path)


def used(*dirs: Path) -> int:
    """Bytes allocated on disk under the dirs (st_blocks: what a full disk would refuse)."""
    total = 0
    for d in dirs:
        for p in d.rglob("*"):
            try:
                total += p.lstat().st_blocks * 512
            except FileNotFoundError:  # renamed or removed while walking
                pass
    return total


def measure(sep, src: Path, tmp: Path, only_vocals: bool, fmt: str) -> dict:
    from mvsep import Options
    work, out = tmp / f"work-{only_vocals}", tmp / f"out-{only_vocals}"
    work.mkdir()
    peak = {"engine": 0, "work": 0}
    done = threading.Event()

    def poll():
        while not done.is_set():
            w = used(work)
            peak["work"] = max(peak["work"], w)
            peak["engine"] = max(peak["engine"], w + used(out))
            time.sleep(0.02)

    t = threading.Thread(target=poll)
    t.start()
    try:
        res = sep.separate_file(src, out, Options(only_vocals=only_vocals, output_format=fmt), work_dir=work)
    finally:
        done.set()
        t.join()
    stems = sum(p.stat().st_size for p in res.stems.values())
    return {"seconds": res.info.duration, "work": peak["work"], "engine": peak["engine"], "stems": stems,
            "names": sorted(res.stems)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--format", default="wav")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from mvsep import Separator
    from testkit import toypack
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src = tmp / "input.wav"
        write_input(src, a.seconds, a.rate)
        sep = Separator(model_dir=toypack.build_pack(tmp / "pack"), device="cpu")
        print(f"input: {a.seconds:g} s stereo at {a.rate} Hz, output format {a.format}; "
              f"per hour = x {3600 / a.seconds:g}")
        for only_vocals in (True, False):
            m = measure(sep, src, tmp, only_vocals, a.format)
            per_s = {k: m[k] / m["seconds"] for k in ("work", "engine", "stems")}
            service = max(per_s["engine"], 2 * per_s["stems"])
            mode = "vocals-only" if only_vocals else "all stems"
            print(f"{mode:11} ({', '.join(m['names'])}):")
            for label, v in (("work files peak", per_s["work"]), ("engine peak (work + stems)", per_s["engine"]),
                             ("stems written", per_s["stems"]), ("service peak (+ result.zip)", service)):
                print(f"  {label:28} {v / 1e3:9.1f} kB/s  = {v * 3600 / 1e9:6.2f} GB per hour of input")


if __name__ == "__main__":
    main()
