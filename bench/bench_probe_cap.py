"""What a long, highly compressible upload costs the service before its 413 (issue 11: "a 2.8 MB FLAC claiming
5 hours kept a core busy for 13 s"). Prints the file size, a full probe's time and a probe capped at the
duration limit (SPARK_MAX_DURATION_S), which stops decoding once the cap is passed.

    .venv/bin/python bench/bench_probe_cap.py [--minutes 20] [--cap-s 60]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from mvsep.audio import probe


def silent_flac(path: Path, minutes: float, sr: int = 44100) -> None:
    block = np.zeros((sr * 10, 2), np.float32)
    with sf.SoundFile(str(path), "w", sr, 2, subtype="PCM_16", format="FLAC") as f:
        for _ in range(int(minutes * 6)):
            f.write(block)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--cap-s", type=float, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "long.flac"
        silent_flac(path, args.minutes)
        t = time.perf_counter()
        full = probe(path)
        t_full = time.perf_counter() - t
        t = time.perf_counter()
        capped = probe(path, max_seconds=args.cap_s)
        t_cap = time.perf_counter() - t
        size_mb = path.stat().st_size / 2**20
    print(f"file: {size_mb:.2f} MB FLAC of {full.duration / 60:.1f} min silence")
    print(f"full probe:   {t_full:.2f} s ({full.duration / t_full:.0f}x real time)")
    print(f"capped probe: {t_cap:.2f} s, stopped at {capped.duration:.1f} s (cap {args.cap_s:g} s)")


if __name__ == "__main__":
    main()
