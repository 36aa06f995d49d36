"""Waveform peaks: min/max per bucket for drawing, from one streaming decode, cached in the job's folder.

The decode yields fine buckets of FINE frames; they are folded into BASE buckets (the most a caller may ask
for) and cached as `<job>/peaks/<stem>.npy`; any smaller count is folded from that base.
The input is deleted when its job ends, so the original's peaks are made while the job runs.
"""

from __future__ import annotations

import logging
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf

from .runner import InputError, iter_decode  # the engine's door

from .store import Store

log = logging.getLogger("spark.peaks")
BASE = 8192  # the most buckets a caller may ask for
FINE = 256  # frames per fine bucket while decoding
_lock = threading.Lock()  # one decode at a time: peaks are cheap, but the CPU is shared with the worker


def fold(mins: np.ndarray, maxs: np.ndarray, points: int) -> np.ndarray:
    """[points, 2] min/max, each bucket the union of whole fine buckets."""
    n = len(mins)
    points = max(1, min(points, n))
    starts = np.linspace(0, n, points + 1).astype(np.int64)[:-1]
    return np.stack([np.minimum.reduceat(mins, starts), np.maximum.reduceat(maxs, starts)], axis=1)


def _fold_blocks(blocks) -> np.ndarray:
    """BASE (or fewer) buckets of min/max over every channel of float32 [n, C] blocks, in one pass."""
    mins, maxs = [], []
    for block in blocks:
        pad = (-len(block)) % FINE
        if pad:
            block = np.concatenate([block, np.repeat(block[-1:], pad, axis=0)])
        fine = block.reshape(-1, FINE * block.shape[1])
        mins.append(fine.min(axis=1))
        maxs.append(fine.max(axis=1))
    return fold(np.concatenate(mins), np.concatenate(maxs), BASE)


def compute(source: Path | tuple[Path, str]) -> np.ndarray:
    """Peaks of a media file (the input, decoded as stereo), or of a stem stored in result.zip ((zip, entry):
    read in place with libsndfile, every channel of a surround stem)."""
    if isinstance(source, tuple):
        zip_path, entry = source
        with zipfile.ZipFile(zip_path) as z, z.open(entry) as f, sf.SoundFile(f) as snd:
            return _fold_blocks(snd.blocks(FINE * 1024, dtype="float32", always_2d=True))
    return _fold_blocks(iter_decode(source, block_frames=FINE * 1024))


def _exists(source: Path | tuple[Path, str] | None) -> bool:
    if isinstance(source, tuple):
        return source[0].is_file()
    return source is not None and source.is_file()


def cache_path(store: Store, job_id: str, stem: str) -> Path:
    return store.job_dir(job_id) / "peaks" / f"{stem}.npy"


def cached(store: Store, job_id: str, stem: str, source: Path | tuple[Path, str] | None) -> np.ndarray | None:
    """The cached base peaks; computed from `source` first when missing. None when neither exists."""
    path = cache_path(store, job_id, stem)
    with _lock:
        if not path.is_file():
            if not _exists(source):
                return None
            try:
                base = compute(source)
            except (InputError, OSError, KeyError, zipfile.BadZipFile):  # the job's files went meanwhile
                if _exists(source):
                    raise
                return None
            tmp = path.with_name(path.name + ".part.npy")
            try:
                path.parent.mkdir(exist_ok=True)  # no parents: a deleted job's folder is never made again
                np.save(tmp, base.astype(np.float32))
                os.replace(tmp, path)
            except FileNotFoundError:  # the job was deleted meanwhile
                return None
        try:
            return np.load(path)
        except FileNotFoundError:
            return None


def peaks_json(base: np.ndarray, points: int, stem: str, duration_s: float | None) -> dict:
    out = fold(base[:, 0], base[:, 1], points)
    return {"stem": stem, "points": len(out), "duration_s": duration_s,
            "peaks": np.round(out.astype(np.float64), 4).tolist()}


def watch_inputs(store: Store) -> None:
    """Peaks of each job's input while it still exists (it goes when the job ends), in a side thread."""
    started: set[str] = set()

    def changed(job_id: str) -> None:
        if job_id in started or cache_path(store, job_id, "original").is_file():
            return
        try:
            source = next(store.job_dir(job_id).glob("input*"), None)
        except OSError:
            return
        if source is None or not source.is_file():
            return
        job = store.get(job_id)
        if job is None or job["stage"] == "downloading":  # a URL input still arriving
            return
        started.add(job_id)
        threading.Thread(target=_original, args=(store, job_id, source, started), daemon=True,
                         name="spark-peaks").start()

    store.add_listener(changed)


def _original(store: Store, job_id: str, source: Path, started: set[str]) -> None:
    try:
        cached(store, job_id, "original", source)
    except FileNotFoundError:
        pass  # the job was deleted meanwhile
    except Exception:
        log.exception("peaks of job %s's input failed", job_id)
    finally:
        started.discard(job_id)
