"""Workers: one thread per device (GPU, or CPU slot), each running one job at a time from the SQLite queue.

A worker claims the oldest queued job under a lease (its worker id, renewed by the `Supervisor` while the
process lives), checks that the job's disk need fits, runs it, and ends it: every path out of `_run_job`
(success, engine error, OSError, full disk, cancel, shutdown) leaves the row finished, or back in the queue.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Callable

from . import disk
from . import runner as rn
from .config import Config
from .metrics import Metrics
from .schemas import EXT
from .store import Store

log = logging.getLogger("spark.worker")
PROGRESS_EVERY_S = 0.5  # at most this often a progress row update
FATAL_CUDA = ("illegal memory access", "device-side assert", "unspecified launch failure", "illegal instruction",
              "misaligned address", "cuda error: launch failure", "uncorrectable ecc error",
              "cudaerrorlaunchfailure", "cublas_status_execution_failed", "cudnn_status_execution_failed")


WORKER_NICE = 10  # job threads yield the CPU to the HTTP loop: /health and /status stay fast while jobs run


def lower_priority(step: int) -> None:
    """Raise the calling thread's nice value by `step` (Linux: per thread, inherited by the threads it starts).
    Where that is not allowed, it runs on unchanged."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
    except (OSError, AttributeError):
        pass


def is_fatal_device_error(exc: BaseException) -> bool:
    """A CUDA error after which the device (and the process's context on it) cannot be trusted."""
    try:
        import torch
        accel = getattr(torch, "AcceleratorError", None)
    except ImportError:
        accel = None
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc).lower()
        if "out of memory" not in text and "alloc" not in text:
            if accel is not None and isinstance(exc, accel) or any(p in text for p in FATAL_CUDA):
                return True
        exc = exc.__cause__ or exc.__context__
    return False


class Worker(threading.Thread):
    def __init__(self, slot: int, worker_id: str, store: Store, runner: rn.Runner, metrics: Metrics, cfg: Config,
                 on_finished: Callable[[str], None] = lambda job_id: None,
                 on_fatal: Callable[[str], None] = lambda reason: None):
        super().__init__(name=f"spark-worker-{slot}", daemon=True)
        self.slot, self.worker_id = slot, worker_id
        self.store, self.runner, self.metrics, self.cfg = store, runner, metrics, cfg
        self.device = runner.devices[slot][0] + (f":{runner.devices[slot][1]}" if runner.devices[slot][0] == "cuda"
                                                 else "")
        self.on_finished, self.on_fatal = on_finished, on_fatal
        self.current: str | None = None
        self.busy_s = 0.0  # seconds spent on jobs, finished ones
        self.job_t0 = 0.0  # monotonic start of the current job
        self.last_progress = 0.0  # monotonic time of the current job's last progress call
        self.stalled: str | None = None  # job the watchdog failed while this worker was stuck in it
        self.paused = False  # no new jobs (the process is about to exit)
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._canceled: set[str] = set()
        self._disk_wait_logged: str | None = None

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        self._canceled.add(job_id)

    def busy_seconds(self) -> float:
        return self.busy_s + (time.monotonic() - self.job_t0 if self.current else 0.0)

    def run(self) -> None:
        lower_priority(WORKER_NICE)
        try:
            self.runner.bind_thread(self.slot)
        except Exception:
            log.exception("worker %s: cannot select its GPU", self.worker_id)
        while not self._halt.is_set():
            job = None
            try:
                if self.runner.state in ("missing_models", "error") and self.slot == 0:
                    self._fail_queued()
                if self.runner.state == "ready" and not self.paused:
                    job = self.store.claim_next(self.worker_id, self.cfg.lease_s)
            except Exception:  # e.g. the database is locked or the disk is full: try again shortly
                log.exception("worker %s could not claim a job", self.worker_id)
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self.current, self.job_t0 = job["id"], time.monotonic()
            self.last_progress = self.job_t0
            self.metrics.running.inc()
            try:
                self._run_job(job)
            except Exception:  # never let one job kill the worker
                log.exception("worker error on job %s", job["id"])
            finally:
                self.busy_s += time.monotonic() - self.job_t0
                self.metrics.running.dec()
                self.current = self.stalled = None
                self._canceled.discard(job["id"])
                _quiet(self.store.let_go, job["id"], self.worker_id)  # a DELETE may now remove its folder
                self.on_finished(job["id"])

    def _fail_queued(self) -> None:
        """The pack turned out unusable: queued jobs (and the requests waiting on them) get the reason now."""
        for job in self.store.list("queued", limit=1000):
            message = f"the model pack is not usable ({self.runner.reason})"
            if self.store.finish(job["id"], "failed", stage="failed", error={
                    "code": "models_missing" if self.runner.missing else "not_ready", "message": message,
                    "status": 503}):
                self.store.log(job["id"], f"failed: {message}")
                for p in self.store.job_dir(job["id"]).glob("input*"):
                    p.unlink(missing_ok=True)
                self.metrics.jobs.labels("failed").inc()
                self.on_finished(job["id"])

    # ---- one job
    def _disk_fits(self, job: dict) -> bool:
        """True: run it. False: it went back to the queue to wait for running jobs to free space.
        Raises rn.MvsepError-like _DiskError when it cannot fit even on a disk without other jobs."""
        need = disk.need_bytes(job["input"], job["options"])["total"]
        free = disk.free_bytes(self.store.data_dir) - disk.reserve_bytes(self.store.data_dir,
                                                                         self.cfg.disk_reserve_mb)
        if need > free + self._freeable(job["id"]):
            raise _DiskError(need, free)
        others = sum(disk.need_bytes(j["input"], j["options"])["total"] for j in self.store.list("running")
                     if j["id"] != job["id"])
        if need <= free - others:
            return True
        if self._disk_wait_logged != job["id"]:
            self.store.log(job["id"], f"waiting for disk space: needs {disk.mb(need)} MB, {disk.mb(free)} MB free, "
                                      f"running jobs may still use {disk.mb(others)} MB")
            self._disk_wait_logged = job["id"]
        self.store.release(job["id"], self.worker_id)
        self._halt.wait(2.0)
        return False

    def _freeable(self, job_id: str) -> int:
        """Bytes the running jobs' work files hold now (freed when they end)."""
        total = 0
        for j in self.store.list("running"):
            if j["id"] != job_id:
                for p in (self.store.job_dir(j["id"]) / "work").rglob("*"):
                    try:
                        total += p.stat().st_size
                    except OSError:
                        pass
        return total

    def _run_job(self, job: dict) -> None:
        job_id, store = job["id"], self.store
        opts = job["options"]
        stems_asked = opts["stems"]
        ext = EXT[opts.get("format", "wav")]
        out_dir, work_dir = store.out_dir(job_id), store.job_dir(job_id) / "work"
        t0 = time.monotonic()
        stage = {"name": "starting", "t": t0, "saved": 0.0}
        timings: dict[str, float] = {}

        def progress(fraction: float, name: str) -> None:
            now = time.monotonic()
            self.last_progress = now
            if name != stage["name"]:
                if stage["name"] != "starting":
                    timings[stage["name"]] = round(timings.get(stage["name"], 0) + now - stage["t"], 3)
                store.log(job_id, f"stage {name}")
                stage.update(name=name, t=now)
            elif now - stage["saved"] < PROGRESS_EVERY_S:
                return
            stage["saved"] = now
            store.update_running(job_id, progress=max(0.0, min(1.0, float(fraction))), stage=name,
                                 stage_started_at=time.time(), timings=timings)

        def cancel() -> bool:
            return job_id in self._canceled or self._halt.is_set()

        input_path = next(store.job_dir(job_id).glob("input*"), None)
        try:
            if input_path is None:
                raise rn.InputError("the input file is gone")
            if not self._disk_fits(job):
                return
            self._disk_wait_logged = None
            store.log(job_id, f"started (attempt {job['attempts']}) on {self.worker_id} ({self.device}), "
                              f"pack {self.runner.pack_kind}, stems {','.join(stems_asked)}")
            self._clean(job_id)  # a previous attempt (crash, restart) leaves nothing behind
            for d in (out_dir, work_dir):
                d.mkdir(parents=True)
            made, engine_timings = self.runner.separate(input_path, out_dir, opts, progress, cancel, work_dir,
                                                        slot=self.slot, facts=job["input"])
            timings.update({k: round(float(v), 3) for k, v in engine_timings.items()})
            if cancel():
                raise rn.Cancelled("canceled")
            store.update_running(job_id, stage="packing", progress=0.99)
            t_pack = time.monotonic()
            kept = self._pack(job_id, made, stems_asked, ext, job["input"].get("name") or "audio")
            timings["packing"] = round(time.monotonic() - t_pack, 3)
            wall = time.monotonic() - t0
            timings["total"] = round(wall, 3)
            if not store.finish(job_id, "succeeded", progress=1.0, stage="done", stems=kept, timings=timings):
                raise rn.Cancelled("canceled")
            store.log(job_id, f"succeeded in {wall:.1f} s: " + ", ".join(kept))
            self.metrics.jobs.labels("succeeded").inc()
            self.metrics.audio_seconds.inc(job["input"].get("duration_s") or 0)
            self.metrics.processing_seconds.inc(wall)
            for name, secs in timings.items():
                if name not in ("total", "starting"):
                    self.metrics.stage_seconds.labels(name).observe(secs)
        except rn.Cancelled:
            if self.stalled == job_id:
                return  # the watchdog failed it already
            if self._halt.is_set() and job_id not in self._canceled:
                self._clean(job_id)
                if store.release(job_id, self.worker_id):
                    store.log(job_id, "interrupted by shutdown; it runs again at the next start")
                return
            self._clean(job_id)
            if store.finish(job_id, "canceled", stage="canceled"):
                self.metrics.jobs.labels("canceled").inc()
            store.delete_files(job_id)  # the row stays until the TTL, without files
        except _DiskError as e:
            self._fail(job_id, "insufficient_storage", str(e), 507, timings, need_mb=disk.mb(e.need),
                       free_mb=disk.mb(e.free))
        except rn.MvsepError as e:
            self._fail(job_id, rn.error_code(e), str(e), rn.http_status(e), timings)
        except Exception as e:
            if disk.is_disk_full(e, store.data_dir):
                log.error("job %s: the disk filled up: %s", job_id, e)
                self._fail(job_id, "insufficient_storage", "the disk filled up while the job ran; it was stopped "
                           "and its files removed", 507, timings)
            elif is_fatal_device_error(e):
                log.error("job %s: fatal device error on %s:\n%s", job_id, self.device, traceback.format_exc())
                self._fail(job_id, "device_error", f"the GPU failed ({self.device}); the service restarts", 500,
                           timings)
                self.paused = True
                self.on_fatal(f"fatal device error on {self.device} in job {job_id}")
            else:
                error_id = uuid.uuid4().hex[:12]
                log.error("job %s failed, error id %s:\n%s", job_id, error_id, traceback.format_exc())
                self._fail(job_id, "internal", f"internal error (error id {error_id})", 500, timings)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
            row = _quiet(store.get, job_id)
            if input_path is not None and (row is None or row["state"] != "running" and row["state"] != "queued"):
                input_path.unlink(missing_ok=True)  # finished: the input is no longer needed

    def _clean(self, job_id: str) -> None:
        """No partial results: out/, work/, the zip and its temp name go."""
        d = self.store.job_dir(job_id)
        for sub in ("out", "work"):
            shutil.rmtree(d / sub, ignore_errors=True)
        for name in ("result.zip", "result.zip.part"):
            (d / name).unlink(missing_ok=True)

    def _fail(self, job_id: str, code: str, message: str, status: int, timings: dict, **figures) -> None:
        """Files first (that frees the space a full disk needs for the row update), then the row, then the log."""
        self._clean(job_id)
        if self.stalled == job_id:
            return  # the watchdog failed it already
        error = {"code": code, "message": message, "status": status, **figures}
        for attempt in range(30):
            try:
                ok = self.store.finish(job_id, "failed", stage="failed", error=error, timings=timings)
                break
            except Exception:
                log.exception("job %s: marking it failed did not work (attempt %d)", job_id, attempt + 1)
                time.sleep(min(5.0, 0.2 * 2 ** attempt))
        else:
            return  # its lease is no longer renewed: another worker (or the next start) reclaims it
        if ok:
            self.metrics.jobs.labels("failed").inc()
            self.store.log(job_id, f"failed: {message}")
        else:  # canceled (or failed by the watchdog) meanwhile
            if (_quiet(self.store.get, job_id) or {}).get("state") == "canceled":  # None: deleted already
                self.store.delete_files(job_id)

    def _pack(self, job_id: str, made: dict[str, Path], asked: list[str], ext: str, input_name: str) -> list[str]:
        """result.zip with `<input name>_<stem>.<ext>` entries, each stem stored once; other stems dropped."""
        missing = [s for s in asked if s not in made]
        if missing:
            raise RuntimeError(f"engine did not return stems {missing}")
        for stem, path in made.items():
            if stem not in asked:
                Path(path).unlink(missing_ok=True)
        members = [(Path(made[s]), f"{input_name}_{s}.{ext}") for s in asked]
        disk.build_zip(self.store.zip_path(job_id), members, progress=lambda: setattr(
            self, "last_progress", time.monotonic()))
        shutil.rmtree(self.store.out_dir(job_id), ignore_errors=True)
        return list(asked)


class _DiskError(Exception):
    def __init__(self, need: int, free: int):
        super().__init__(f"the job needs about {disk.mb(need)} MB of disk and {disk.mb(max(free, 0))} MB are free "
                         "(beyond the reserve)")
        self.need, self.free = need, free


def _quiet(fn, *args, default=None):
    try:
        return fn(*args)
    except Exception:
        log.exception("store call failed")
        return default
