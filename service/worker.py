"""The worker: one thread per GPU, jobs one at a time, oldest queued first (SQLite is the queue)."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import traceback
import uuid
import zipfile
from pathlib import Path
from typing import Callable

from . import runner as rn
from .metrics import Metrics
from .schemas import EXT
from .store import Store

log = logging.getLogger("spark.worker")
PROGRESS_EVERY_S = 0.5  # at most this often a progress row update


class Worker(threading.Thread):
    def __init__(self, store: Store, runner: rn.Runner, metrics: Metrics,
                 on_finished: Callable[[str], None] = lambda job_id: None):
        super().__init__(name="spark-worker", daemon=True)
        self.store, self.runner, self.metrics = store, runner, metrics
        self.on_finished = on_finished
        self.current: str | None = None
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._canceled: set[str] = set()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        self._canceled.add(job_id)

    def run(self) -> None:
        while not self._halt.is_set():
            if self.runner.state in ("missing_models", "error"):
                self._fail_queued()
            job = self.store.claim_next() if self.runner.state == "ready" else None
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            self.current = job["id"]
            try:
                self._run_job(job)
            except Exception:  # never let one job kill the worker
                log.exception("worker error on job %s", job["id"])
            finally:
                self.current = None
                self._canceled.discard(job["id"])
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
    def _run_job(self, job: dict) -> None:
        job_id, store = job["id"], self.store
        opts = job["options"]
        stems_asked = opts["stems"]
        ext = EXT[opts.get("format", "wav")]
        out_dir, work_dir = store.out_dir(job_id), store.job_dir(job_id) / "work"
        for d in (out_dir, work_dir):  # a previous attempt (crash, restart) leaves nothing behind
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        store.log(job_id, f"started (attempt {job['attempts']}) on {self.runner.device}, "
                          f"pack {self.runner.pack_kind}, stems {','.join(stems_asked)}")
        t0 = time.monotonic()
        stage = {"name": "starting", "t": t0, "saved": 0.0}
        timings: dict[str, float] = {}

        def progress(fraction: float, name: str) -> None:
            now = time.monotonic()
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
        self.metrics.running.set(1)
        try:
            if input_path is None:
                raise rn.InputError("the input file is gone")
            made, engine_timings = self.runner.separate(input_path, out_dir, opts, progress, cancel, work_dir)
            timings.update({k: round(float(v), 3) for k, v in engine_timings.items()})
            if cancel():
                raise rn.Cancelled("canceled")
            store.update_running(job_id, stage="packing", progress=0.99)
            t_pack = time.monotonic()
            kept = self._keep(made, stems_asked, out_dir, ext)
            self._zip(job_id, kept, job["input"].get("name") or "audio")
            timings["packing"] = round(time.monotonic() - t_pack, 3)
            wall = time.monotonic() - t0
            timings["total"] = round(wall, 3)
            if not store.finish(job_id, "succeeded", progress=1.0, stage="done", stems=list(kept),
                                timings=timings):
                raise rn.Cancelled("canceled")
            store.log(job_id, f"succeeded in {wall:.1f} s: " + ", ".join(kept))
            self.metrics.jobs.labels("succeeded").inc()
            self.metrics.audio_seconds.inc(job["input"].get("duration_s") or 0)
            self.metrics.processing_seconds.inc(wall)
            for name, secs in timings.items():
                if name not in ("total", "starting"):
                    self.metrics.stage_seconds.labels(name).observe(secs)
        except rn.Cancelled:
            if self._halt.is_set() and job_id not in self._canceled:
                store.log(job_id, "interrupted by shutdown; it runs again at the next start")
                return  # stays 'running' in SQLite: requeued at the next start
            store.finish(job_id, "canceled", stage="canceled")
            store.delete_files(job_id)  # the row stays until the TTL, without files
            self.metrics.jobs.labels("canceled").inc()
        except rn.MvsepError as e:
            self._fail(job_id, rn.error_code(e), str(e), rn.http_status(e), timings)
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            log.error("job %s failed, error id %s:\n%s", job_id, error_id, traceback.format_exc())
            self._fail(job_id, "internal", f"internal error (error id {error_id})", 500, timings)
        finally:
            self.metrics.running.set(0)
            shutil.rmtree(work_dir, ignore_errors=True)
            row = self.store.get(job_id)
            if input_path is not None and (row is None or row["state"] != "running"):
                input_path.unlink(missing_ok=True)  # finished: the input is no longer needed

    def _fail(self, job_id: str, code: str, message: str, status: int, timings: dict) -> None:
        self.store.log(job_id, f"failed: {message}")
        # Half-written stems must not look complete: a failed job keeps its log and error only.
        shutil.rmtree(self.store.out_dir(job_id), ignore_errors=True)
        if self.store.finish(job_id, "failed", stage="failed",
                             error={"code": code, "message": message, "status": status}, timings=timings):
            self.metrics.jobs.labels("failed").inc()
        else:  # canceled meanwhile
            self.store.delete_files(job_id)

    @staticmethod
    def _keep(made: dict[str, Path], asked: list[str], out_dir: Path, ext: str) -> list[str]:
        """Put the asked stems at out/<stem>.<ext>; drop the others."""
        missing = [s for s in asked if s not in made]
        if missing:
            raise RuntimeError(f"engine did not return stems {missing}")
        for stem, path in made.items():
            final = out_dir / f"{stem}.{ext}"
            if stem in asked:
                if Path(path) != final:
                    os.replace(path, final)
            else:
                Path(path).unlink(missing_ok=True)
        return [s for s in asked]

    def _zip(self, job_id: str, stems: list[str], input_name: str) -> None:
        """result.zip with `<input name>_<stem>.<ext>` entries, written to a temp name then renamed."""
        out_dir = self.store.out_dir(job_id)
        final = self.store.zip_path(job_id)
        tmp = final.with_name(final.name + ".part")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
            for stem in stems:
                (path,) = out_dir.glob(f"{stem}.*")
                z.write(path, f"{input_name}_{path.name}")
        os.replace(tmp, final)
