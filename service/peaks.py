"""Waveform peaks: min/max per bucket for drawing, from one streaming decode, cached in the job's folder.

The decode yields fine buckets of FINE frames; they are folded into BASE buckets (the most a caller may ask
for) and cached as `<job>/peaks/<stem>.npy`; any smaller count is folded from that base.
The input is deleted when its job ends, so the original's peaks are made while the job runs.
Decodes run in `PeaksMaker`'s own small pool, never on a request thread and never under a lock a cached read
needs: a cached result is one file read.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from .runner import InputError, iter_decode  # the engine's door

from .store import Store
from .worker import WORKER_NICE, lower_priority

log = logging.getLogger("spark.peaks")
BASE = 8192  # the most buckets a caller may ask for
FINE = 256  # frames per fine bucket while decoding


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


def compute(source: Path | tuple[Path, str], max_frames: int | None = None) -> np.ndarray:
    """Peaks of a media file (the input, decoded as stereo), or of a stem stored in result.zip ((zip, entry):
    read in place with libsndfile, every channel of a surround stem). The decode stops after `max_frames`."""
    if isinstance(source, tuple):
        zip_path, entry = source
        with zipfile.ZipFile(zip_path) as z, z.open(entry) as f, sf.SoundFile(f) as snd:
            return _fold_blocks(_capped(snd.blocks(FINE * 1024, dtype="float32", always_2d=True), max_frames))
    return _fold_blocks(_capped(iter_decode(source, block_frames=FINE * 1024), max_frames))


def _capped(blocks, max_frames: int | None):
    seen = 0
    for block in blocks:
        if max_frames is not None and seen + len(block) > max_frames:
            if max_frames > seen:
                yield block[: max_frames - seen]
            return
        seen += len(block)
        yield block


def _exists(source: Path | tuple[Path, str] | None) -> bool:
    if isinstance(source, tuple):
        return source[0].is_file()
    return source is not None and source.is_file()


def cache_path(store: Store, job_id: str, stem: str) -> Path:
    return store.job_dir(job_id) / "peaks" / f"{stem}.npy"


def load_cached(store: Store, job_id: str, stem: str) -> np.ndarray | None:
    """The cached base peaks, or None. No lock: the cache file appears whole (written, then renamed)."""
    try:
        return np.load(cache_path(store, job_id, stem))
    except (FileNotFoundError, NotADirectoryError):
        return None


class Busy(Exception):
    """Too many peaks computations wait already."""


class PeaksMaker:
    """Computes peaks off the request threads: `threads` decodes at a time (the CPU is shared with the
    workers), at most `max_pending` waiting or running, one computation per (job, stem) however many ask.
    Inputs decode at most `max_seconds` (SPARK_MAX_DURATION_S) of audio."""

    def __init__(self, store: Store, max_seconds: float, threads: int = 1, max_pending: int = 16):
        self.store, self.max_seconds, self.max_pending = store, max_seconds, max_pending
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="spark-peaks",
                                       initializer=lower_priority, initargs=(WORKER_NICE,))
        self.pending: dict[tuple[str, str], Future] = {}
        self._lock = threading.Lock()  # guards `pending` only, never held during a decode

    def request(self, job_id: str, stem: str, source: Path | tuple[Path, str] | None,
                sample_rate: int | None = None) -> Future:
        """A future of the base peaks (None when the files went); raises Busy when too many wait."""
        key = (job_id, stem)
        with self._lock:
            fut = self.pending.get(key)
            if fut is not None:
                return fut
            if len(self.pending) >= self.max_pending:
                raise Busy()
            max_frames = int(self.max_seconds * sample_rate) + FINE if sample_rate else None
            fut = self.pool.submit(self._make, job_id, stem, source, max_frames)
            self.pending[key] = fut
        fut.add_done_callback(lambda f: self._done(key, f))
        return fut

    def _done(self, key: tuple[str, str], fut: Future) -> None:
        with self._lock:
            if self.pending.get(key) is fut:
                del self.pending[key]
        if not fut.cancelled() and fut.exception() is not None:
            log.error("peaks of job %s's %s failed", *key, exc_info=fut.exception())

    def _make(self, job_id: str, stem: str, source, max_frames: int | None) -> np.ndarray | None:
        store = self.store
        base = load_cached(store, job_id, stem)
        if base is not None or not _exists(source):
            return base
        try:
            base = compute(source, max_frames)
        except (InputError, OSError, KeyError, zipfile.BadZipFile):  # the job's files went meanwhile
            if _exists(source):
                raise
            return None
        path = cache_path(store, job_id, stem)
        tmp = path.with_name(path.name + ".part.npy")
        try:
            path.parent.mkdir(exist_ok=True)  # no parents: a deleted job's folder is never made again
            np.save(tmp, base.astype(np.float32))
            os.replace(tmp, path)
        except FileNotFoundError:  # the job was deleted meanwhile
            return None
        job = store.get(job_id)
        if job is None or job["state"] in ("failed", "canceled"):  # it ended meanwhile: leave nothing behind
            shutil.rmtree(path.parent, ignore_errors=True)
        return base

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def peaks_json(base: np.ndarray, points: int, stem: str, duration_s: float | None) -> dict:
    out = fold(base[:, 0], base[:, 1], points)
    return {"stem": stem, "points": len(out), "duration_s": duration_s,
            "peaks": np.round(out.astype(np.float64), 4).tolist()}


def input_path(store: Store, job_id: str) -> Path | None:
    """The job's input once it is in place (named input*; a URL input arrives as `upload` first)."""
    try:
        return next(store.job_dir(job_id).glob("input*"), None)
    except OSError:
        return None


def watch_inputs(store: Store, maker: PeaksMaker) -> None:
    """Peaks of each job's input while it still exists (it goes when the job ends): queued once the job is
    queued (its input passed the probe and the duration cap), never while it downloads."""
    started: set[str] = set()

    def changed(job_id: str) -> None:
        if job_id in started or cache_path(store, job_id, "original").is_file():
            return
        job = store.get(job_id)
        if job is None or job["state"] not in ("queued", "running"):
            return
        source = input_path(store, job_id)
        if source is None:
            return
        started.add(job_id)
        try:
            fut = maker.request(job_id, "original", source, job["input"].get("sample_rate"))
        except Busy:
            started.discard(job_id)  # a later change (or a request) tries again
            return
        fut.add_done_callback(lambda f: started.discard(job_id))

    store.add_listener(changed)
