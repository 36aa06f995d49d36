"""What the routes share: settings, the runner, the store, the workers, metrics; one object per app."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Annotated, Callable

from fastapi import Depends, Request

from . import runner as rn
from .config import Config
from .metrics import Metrics
from .store import Store
from .worker import Worker

log = logging.getLogger("spark.app")


@dataclass
class Services:
    cfg: Config
    runner: rn.Runner
    metrics: Metrics
    started: float = field(default_factory=time.time)
    store: Store | None = None  # set in the lifespan
    workers: list[Worker] = field(default_factory=list)
    process_id: str = ""  # prefix of this process's worker ids (leases)
    # job id -> event set when the job finishes (POST /separate waiting on it)
    waiters: dict[str, asyncio.Event] = field(default_factory=dict)
    downloads: dict[str, asyncio.Task] = field(default_factory=dict)  # URL jobs fetching their input
    stopping: asyncio.Event | None = None  # set when SIGTERM arrives: waiting requests answer 503
    loop: asyncio.AbstractEventLoop | None = None
    exit_code: int = 0
    stop_server: Callable[[], None] | None = None  # set by server.py: a graceful stop of uvicorn

    def wake(self, job_id: str) -> None:
        event = self.waiters.get(job_id)
        if event:
            event.set()

    def wake_workers(self) -> None:
        for w in self.workers:
            w.wake()

    def cancel(self, job_id: str) -> None:
        for w in self.workers:
            w.cancel(job_id)
        task = self.downloads.get(job_id)
        if task and self.loop:
            self.loop.call_soon_threadsafe(task.cancel)

    def running_on(self, job_id: str) -> Worker | None:
        return next((w for w in self.workers if w.current == job_id), None)

    @property
    def downloader_id(self) -> str:
        return f"{self.process_id}/download"

    def begin_stop(self) -> None:
        """The process is stopping (any thread, a signal handler too): waiting requests answer 503 now."""
        if self.loop is not None and self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)

    def request_exit(self, reason: str, code: int = 3) -> None:
        """Stop the process with a non-zero status (the platform restarts it): a fatal device error or a
        stuck worker. Other jobs are given back to the queue by the normal shutdown."""
        log.critical("exiting with status %d: %s", code, reason)
        self.exit_code = code
        for w in self.workers:
            w.paused = True
        self.begin_stop()
        if self.stop_server is not None:
            self.stop_server()
        else:
            os.kill(os.getpid(), signal.SIGTERM)


async def services(request: Request) -> Services:
    """FastAPI dependency: the app's shared services (async: a sync dependency would take a pool thread)."""
    return request.app.state.services


Svc = Annotated[Services, Depends(services)]
