"""fp16 against fp32 on a CUDA GPU: speed on the full-size toy configurations, and the deviation (max abs
difference of the stems, SDR on the demo pack's held-out clips).

    python bench/bench_precision.py --seconds 60        # needs CUDA; fp16 is refused on the CPU
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SR = 44100


def sdr(ref: np.ndarray, est: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-20)))


def timed(sep, mix, opts) -> tuple[dict, float]:
    import torch
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = sep.separate_array(mix, SR, opts)
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def speed(seconds: float, mode: str) -> None:
    from testkit import toypack
    from mvsep.engine import Options, Separator
    with tempfile.TemporaryDirectory() as tmp:
        pack = toypack.build_pack(Path(tmp) / "full", kind="random", stems="all", size="full")
        sep = Separator(pack, device="cuda", large_gpu=True)
        mix = (np.random.default_rng(0).standard_normal((int(seconds * SR), 2)) * 0.1).astype(np.float32)
        runs = {}
        for precision in ("fp32", "fp16", "fp32", "fp16"):  # the second round is warm (sessions, cuDNN)
            opts = Options(only_vocals=mode == "vocals", shifts=0, precision=precision)
            sep.warm(opts)
            runs[precision] = timed(sep, mix, opts)
        (a, ta), (b, tb) = runs["fp32"], runs["fp16"]
        worst = max(float(np.abs(a[s] - b[s]).max()) for s in a)
        print(f"precision speed mode={mode} input={seconds}s fp32={ta:.2f}s (rtf {ta / seconds:.4f}) "
              f"fp16={tb:.2f}s (rtf {tb / seconds:.4f}) speed-up={ta / tb:.2f}x max_abs_diff={worst:.2e} "
              f"sdr_fp16_vs_fp32={min(sdr(a[s], b[s]) for s in a):.1f}dB", flush=True)


def demo_pack_sdr() -> None:
    """SDR against the truth of the held-out clips, each precision (the demo pack: real trained models)."""
    from testkit.demo_clips import PACK, clips

    from mvsep.engine import Options, Separator
    sep = Separator(PACK, device="cuda")
    for precision in ("fp32", "fp16"):
        scores = []
        for vocals, background in clips():
            out = sep.separate_array(vocals + background, SR, Options(only_vocals=True, precision=precision))
            scores.append((sdr(vocals, out["vocals"]), sdr(background, out["instrumental"])))
        v, b = np.mean(scores, axis=0)
        print(f"precision demo pack {precision}: vocals {v:.2f} dB, instrumental {b:.2f} dB "
              f"(per clip {[round(s[0], 2) for s in scores]})", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--mode", choices=("vocals", "all"), default="all")
    args = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        print("bench_precision: fp16 needs CUDA; torch sees no GPU", file=sys.stderr)
        return 2
    speed(args.seconds, args.mode)
    demo_pack_sdr()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
