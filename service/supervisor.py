"""The process's supervisor thread: lease heartbeat, reclaiming jobs of dead processes, the job watchdog."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .config import Config
from .metrics import Metrics
from .store import Store
from .worker import Worker

log = logging.getLogger("spark.supervisor")


class Supervisor(threading.Thread):
    """Every tick: renew the leases this process holds; end at once the leases of processes known dead (`Owners`);
    requeue (or fail, after `max_attempts` runs) jobs whose
    lease ran out; fail a job without progress for `job_stall_s`, and ask for a restart when its worker stays
    stuck in it (a hung kernel cannot be stopped from Python)."""

    def __init__(self, store: Store, workers: list[Worker], cfg: Config, metrics: Metrics,
                 on_finished: Callable[[str], None], request_exit: Callable[[str], None],
                 held: Callable[[], list[tuple[str, str]]] = lambda: [],
                 dead_owners: Callable[[], list[str]] = lambda: []):
        super().__init__(name="spark-supervisor", daemon=True)
        self.store, self.workers, self.cfg, self.metrics = store, workers, cfg, metrics
        self.on_finished, self.request_exit, self.held = on_finished, request_exit, held
        self.dead_owners = dead_owners
        self.tick = max(0.1, min(1.0, cfg.lease_s / 3))
        self.grace = min(30.0, cfg.job_stall_s)
        self._halt = threading.Event()
        self._stalled_at: dict[str, float] = {}

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.wait(self.tick):
            try:
                self.beat()
            except Exception:  # e.g. the database is locked or the disk is full: next tick
                log.exception("supervisor tick failed")

    def beat(self) -> None:
        held = [(w.current, w.worker_id) for w in self.workers if w.current and w.stalled != w.current]
        self.store.renew(held + self.held(), self.cfg.lease_s)
        for owner in self.dead_owners():  # a process on this data dir died (kill -9): no need to wait its leases out
            n = self.store.expire_owner(owner)
            log.info("process %s is gone: its %d lease(s) end now", owner, n)
        requeued, failed = self.store.reclaim_expired(self.cfg.max_attempts)
        for job in requeued:
            self.store.log(job["id"], f"the process running this job (attempt {job['attempts']}) stopped; "
                                      "it runs again from the start")
            log.info("job %s requeued: its lease ran out", job["id"])
        for job in failed:
            self.store.strip(job["id"])
            self.store.log(job["id"], f"failed: {job['error']['message']}")
            log.warning("job %s failed: %s", job["id"], job["error"]["message"])
            self.metrics.jobs.labels("failed").inc()
            self.on_finished(job["id"])
        if requeued:
            for w in self.workers:
                w.wake()
        self.watchdog()

    def watchdog(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            job_id = w.current
            if not job_id:
                continue
            if w.stalled == job_id:
                if now - self._stalled_at.get(job_id, now) > self.grace:
                    self._stalled_at.pop(job_id, None)
                    self.request_exit(f"worker {w.worker_id} is stuck in job {job_id}")
                continue
            if now - w.last_progress > self.cfg.job_stall_s:
                w.stalled = job_id
                w.cancel(job_id)
                self._stalled_at[job_id] = now
                message = (f"the job made no progress for {self.cfg.job_stall_s:g} s (SPARK_JOB_STALL_S) and was "
                           "stopped")
                if self.store.finish(job_id, "failed", stage="failed",
                                     error={"code": "stalled", "message": message, "status": 500}):
                    self.metrics.jobs.labels("failed").inc()
                    self.store.log(job_id, f"failed: {message}")
                    log.error("job %s on %s: %s", job_id, w.worker_id, message)
                self.store.strip(job_id)
                self.on_finished(job_id)
