"""A finished job placed in a running server's store, with one float WAV stem of any length written straight into
its result.zip (no 45-minute separation on a 2-core CI machine), and where screenshots go."""
from __future__ import annotations

import struct
import time
import zipfile
from pathlib import Path

import numpy as np

from service.store import Store, new_job_id
from testkit.service import ROOT

SHOTS = ROOT / "tests" / "out" / "screenshots"


def float_wav_header(frames: int, rate: int = 44100, channels: int = 2) -> bytes:
    """A RIFF/WAVE header for 32-bit float PCM (format 3), as the service's `wav` stems are."""
    data = frames * channels * 4
    fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * channels * 4, channels * 4, 32)
    return (b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 12 + 8 + data) + b"WAVE" + b"fmt " +
            struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4, frames) + b"data" +
            struct.pack("<I", data))


def finished_long_job(data_dir: Path, seconds: float, name: str = "feature film") -> str:
    """A succeeded job with one float WAV `vocals` stem of `seconds` (a quiet tone), written straight into the
    job's result.zip as the worker stores it; the real server serves it like any other."""
    store = Store(data_dir)
    try:
        job_id = new_job_id()
        frames, rate = int(seconds * 44100), 44100
        facts = {"name": name, "source": "upload", "duration_s": seconds, "sample_rate": rate, "channels": 2,
                 "frames": frames, "codec": "pcm_f32le", "container": "wav"}
        store.insert(job_id, {"recipe": "mdx23", "stems": ["vocals"], "format": "wav"}, facts, "demo",
                     state="downloading", owner="page-test", lease_s=3600)
        zpath = store.zip_path(job_id)
        zpath.parent.mkdir(parents=True, exist_ok=True)
        block = 44100 * 10
        t = np.arange(block) / rate
        tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        chunk = np.repeat(tone[:, None], 2, axis=1).tobytes()
        with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_STORED) as z, \
                z.open(f"{name}_vocals.wav", "w", force_zip64=True) as f:
            f.write(float_wav_header(frames))
            left = frames
            while left > 0:
                n = min(left, block)
                f.write(chunk[:n * 8])
                left -= n
        store.finish(job_id, "succeeded", progress=1.0, stage="done", stems=["vocals"], started_at=time.time() - 60)
        return job_id
    finally:
        store.close()
