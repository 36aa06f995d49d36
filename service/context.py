"""What the routes share: settings, the runner, the store, the worker, metrics; one object per app."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from . import runner as rn
from .config import Config
from .metrics import Metrics
from .store import Store
from .worker import Worker


@dataclass
class Services:
    cfg: Config
    runner: rn.Runner
    metrics: Metrics
    started: float = field(default_factory=time.time)
    store: Store | None = None  # set in the lifespan
    worker: Worker | None = None
    # job id -> event set when the job finishes (POST /separate waiting on it)
    waiters: dict[str, asyncio.Event] = field(default_factory=dict)

    def wake(self, job_id: str) -> None:
        event = self.waiters.get(job_id)
        if event:
            event.set()


def services(request: Request) -> Services:
    """FastAPI dependency: the app's shared services."""
    return request.app.state.services


Svc = Annotated[Services, Depends(services)]
