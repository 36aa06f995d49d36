"""fp16 and bf16 against fp32 on a CUDA GPU: speed on the full-size toy configurations, and the deviation (max
abs difference of the stems; SDR against fp32 and against the truth on the demo pack's held-out clips).

    python bench/bench_precision.py --seconds 60                 # needs CUDA; reduced precisions are CPU-refused
    python bench/bench_precision.py --record mvsep/precision_sdr.json   # also write the table the engine reads

The engine offers a reduced precision only where its SDR against fp32 on the demo clips is >= 40 dB
(`mvsep/precision.py`); --record measures with the guard lifted and writes that table.
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
    """Global SDR in dB; NaN when `est` holds a NaN or inf (it did for fp16 on the demo pack: the MDX graphs
    squared the raw spectrogram in float16 until onnx_io.fp16_model kept that arithmetic in float32)."""
    ref, est = ref.astype(np.float64), est.astype(np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-20)))


def reduced() -> list[str]:
    import torch
    return ["fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])


class _Unguarded:
    """The precision guard lifted while it is being measured."""

    def __enter__(self):
        from mvsep import precision
        self.saved, precision.check = precision.check, lambda p, device: None

    def __exit__(self, *exc):
        from mvsep import precision
        precision.check = self.saved


def timed(sep, mix, opts) -> tuple[dict, float]:
    import torch
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = sep.separate_array(mix, SR, opts)
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def speed(seconds: float, mode: str, pack_dir: str | None = None) -> None:
    from testkit import toypack
    from mvsep.engine import Options, Separator
    with tempfile.TemporaryDirectory() as tmp:
        pack = Path(pack_dir) if pack_dir else toypack.build_pack(Path(tmp) / "full", kind="random", stems="all",
                                                                   size="full")
        sep = Separator(pack, device="cuda", large_gpu=True)
        mix = (np.random.default_rng(0).standard_normal((int(seconds * SR), 2)) * 0.1).astype(np.float32)
        runs = {}
        for precision in ["fp32", *reduced()] * 2:  # the second round is warm (sessions, cuDNN)
            opts = Options(only_vocals=mode == "vocals", shifts=0, precision=precision)
            with _Unguarded():
                sep.warm(opts)
                runs[precision] = timed(sep, mix, opts)
        a, ta = runs["fp32"]
        for p in reduced():
            b, tb = runs[p]
            worst = max(float(np.abs(a[s] - b[s]).max()) for s in a)
            print(f"precision speed mode={mode} input={seconds}s fp32={ta:.2f}s (rtf {ta / seconds:.4f}) "
                  f"{p}={tb:.2f}s (rtf {tb / seconds:.4f}) speed-up={ta / tb:.2f}x max_abs_diff={worst:.2e} "
                  f"sdr_{p}_vs_fp32={min(sdr(a[s], b[s]) for s in a):.1f}dB", flush=True)


def demo_pack_sdr() -> dict:
    """SDR against the truth of the held-out clips, each precision (the demo pack: real trained models), and
    each reduced precision's SDR against fp32's stems (the guard's figure: the worst clip and stem)."""
    from testkit.demo_clips import PACK, clips

    from mvsep.engine import Options, Separator
    sep = Separator(PACK, device="cuda")
    ref: list[dict] = []
    table = {}
    for precision in ("fp32", *reduced()):
        scores, vs_fp32 = [], []
        for k, (vocals, background) in enumerate(clips()):
            with _Unguarded():
                out = sep.separate_array(vocals + background, SR, Options(only_vocals=True, precision=precision))
            bad = sum(int((~np.isfinite(a)).sum()) for a in out.values())
            scores.append((sdr(vocals, out["vocals"]), sdr(background, out["instrumental"])))
            if precision == "fp32":
                ref.append(out)
            else:
                vs_fp32 += [sdr(ref[k][s], out[s]) for s in out]
            if bad:
                print(f"precision demo pack {precision}: clip {k} has {bad} non-finite samples", flush=True)
        v, b = np.mean(scores, axis=0)
        line = f"precision demo pack {precision}: vocals {v:.2f} dB, instrumental {b:.2f} dB"
        if vs_fp32:
            worst = min(vs_fp32)
            table[precision] = {"sdr_db": round(worst, 2) if np.isfinite(worst) else None,
                                "source": f"bench_precision.py on {torch_device_name()}, demo pack, "
                                          f"{len(ref)} held-out clips, worst clip and stem vs fp32"}
            line += f"; vs fp32 worst {worst:.2f} dB"
        print(line, flush=True)
    return table


def torch_device_name() -> str:
    import torch
    return torch.cuda.get_device_name()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--mode", choices=("vocals", "all"), default="all")
    ap.add_argument("--record", type=Path, help="write the guard's table (SDR vs fp32 per precision) here")
    ap.add_argument("--skip-speed", action="store_true", help="the demo-pack SDR only")
    ap.add_argument("--pack", help="the full-size toy pack, already built (default: built here)")
    args = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        print("bench_precision: fp16 needs CUDA; torch sees no GPU", file=sys.stderr)
        return 2
    if not args.skip_speed:
        speed(args.seconds, args.mode, args.pack)
    table = demo_pack_sdr()
    if args.record:
        import json
        args.record.write_text(json.dumps(table, indent=2) + "\n")
        print(f"precision table written to {args.record}: {table}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
