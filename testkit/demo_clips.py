"""The demo pack and its held-out clips (tests/data/demo_pack): the quality tests and bench/bench_precision.py
measure against them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "mvsep" / "demo_pack"
CLIPS = ROOT / "tests" / "data" / "demo_pack"
SR = 44100


def clips() -> list[tuple[np.ndarray, np.ndarray]]:
    """(vocals, background) float32 [T, 2] of each held-out clip."""
    out = []
    for k in range(3):
        v, sr1 = sf.read(CLIPS / f"clip{k}_vocals.ogg", dtype="float32", always_2d=True)
        b, sr2 = sf.read(CLIPS / f"clip{k}_background.ogg", dtype="float32", always_2d=True)
        assert sr1 == sr2 == SR
        n = min(len(v), len(b))
        out.append((v[:n], b[:n]))
    return out
