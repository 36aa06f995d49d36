"""The FastAPI app: lifespan (store, worker, janitor), auth, errors, routers. Started by `python server.py`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sqlite3
import sys
import uuid

import anyio
from fastapi import APIRouter, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from . import runner as rn
from .auth import TokenAuth
from .config import Config
from .context import Services
from .errors import ApiError, disk_full, insufficient_storage
from .metrics import Metrics
from .owners import Owners
from . import events, peaks
from .routes import events as events_routes
from .routes import files, jobs, media, page, system
from .routes import peaks as peaks_routes
from .schemas import ErrorBody
from .store import Store
from .submit import resume_downloads
from .supervisor import Supervisor
from .worker import Worker

log = logging.getLogger("spark.app")
GIL_SWITCH_S = 0.001
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 415, 422, 429, 500, 503, 507)}


async def _downloads(svc: Services) -> None:
    """Take over URL jobs whose process stopped mid-download (every third of a lease)."""
    while True:
        try:
            await resume_downloads(svc)
        except Exception:
            log.exception("resuming downloads failed")
        await asyncio.sleep(max(0.1, svc.cfg.lease_s / 3))


async def _janitor(svc: Services) -> None:
    """Delete finished jobs (files and rows) older than the TTL."""
    ttl = svc.cfg.result_ttl_s
    every = max(0.5, min(60.0, ttl / 4))
    while True:
        try:
            for job_id in await anyio.to_thread.run_sync(svc.store.expired, ttl):
                await anyio.to_thread.run_sync(svc.store.delete, job_id)
                log.info("job %s expired and was deleted", job_id)
            for job_id in await anyio.to_thread.run_sync(svc.store.orphan_dirs):
                await anyio.to_thread.run_sync(svc.store.delete_files, job_id)
        except Exception:
            log.exception("janitor failed")
        await asyncio.sleep(every)


def _lifespan(svc: Services):
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        svc.loop, svc.stopping = loop, asyncio.Event()
        # The HTTP loop shares the GIL with workers, peaks and probes: hand it over sooner than the 5 ms default,
        # so a request's few GIL waits do not add up to a slow /health.
        sys.setswitchinterval(GIL_SWITCH_S)
        store = Store(svc.cfg.data_dir)

        def finished(job_id: str) -> None:  # worker thread -> wake the requests waiting on this job
            loop.call_soon_threadsafe(svc.wake, job_id)

        svc.store = store
        svc.process_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        owners = Owners(svc.cfg.data_dir, svc.process_id)
        svc.workers = [Worker(i, f"{svc.process_id}/w{i}", store, svc.runner, svc.metrics, svc.cfg,
                              on_finished=finished, on_fatal=svc.request_exit)
                       for i in range(len(svc.runner.devices))]
        supervisor = Supervisor(store, svc.workers, svc.cfg, svc.metrics, finished, svc.request_exit,
                                held=lambda: [(j, svc.downloader_id) for j in list(svc.downloads)],
                                dead_owners=owners.dead)
        app.state.job_events = events.attach(svc, loop)
        app.state.peaks = peaks.PeaksMaker(store, svc.cfg.max_duration_s)
        peaks.watch_inputs(store, app.state.peaks)
        supervisor.beat()  # jobs of a process that died are requeued (or failed) before anything runs
        svc.runner.start()
        for w in svc.workers:
            w.start()
        supervisor.start()
        janitor = asyncio.create_task(_janitor(svc))
        downloads = asyncio.create_task(_downloads(svc))
        try:
            yield
        finally:
            janitor.cancel()
            downloads.cancel()
            fetching = dict(svc.downloads)
            for task in fetching.values():
                task.cancel()
            await asyncio.gather(*fetching.values(), return_exceptions=True)
            # their leases end now: the next start fetches them again at once (else when the leases run out)
            try:
                await anyio.to_thread.run_sync(store.renew, [(j, svc.downloader_id) for j in fetching], -1.0)
            except sqlite3.Error as e:  # a full disk must not stop the workers from stopping
                log.warning("could not release the download leases at shutdown: %s", e)
            for w in svc.workers:
                w.stop()
            for w in svc.workers:
                await anyio.to_thread.run_sync(w.join, 10)
            supervisor.stop()
            app.state.peaks.close()
            owners.close()
    return lifespan


def _error_handlers(app: FastAPI) -> None:
    """Every error is a clear JSON body, never a trace."""
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        err = e.errors()[0] if e.errors() else {"loc": ("request",), "msg": "invalid"}
        field = str(err["loc"][-1])
        return JSONResponse({"error": "invalid_request", "message": f"{field}: {err['msg']}", "field": field},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return JSONResponse({"error": code, "message": str(e.detail)}, status_code=e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):
        error_id = uuid.uuid4().hex[:12]
        log.error("error id %s on %s %s", error_id, request.method, request.url.path, exc_info=e)
        return JSONResponse({"error": "internal", "message": "internal error", "error_id": error_id},
                            status_code=500)

    @app.exception_handler(OSError)
    @app.exception_handler(sqlite3.OperationalError)
    async def _storage(request: Request, e: Exception):
        if not disk_full(e):
            return await _bug(request, e)
        log.warning("disk full on %s %s: %s", request.method, request.url.path, e)
        err = insufficient_storage(f"on {request.method} {request.url.path}")
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _visible_gpus(cfg: Config) -> int:
    if cfg.device == "cpu" or cfg.gpus == "cpu" or cfg.gpus.startswith("cpu,"):
        return 0
    import torch
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def create_app(cfg: Config) -> FastAPI:
    rn.Runner.load_recipes(cfg.recipes)   # SPARK_RECIPES plug-ins, before anything reads the catalogue
    jobs.document_submit_body()
    devices = cfg.worker_devices(_visible_gpus(cfg))
    n_cpu = sum(1 for d, _ in devices if d == "cpu")
    threads = cfg.worker_threads or (max(1, (os.cpu_count() or 1) // n_cpu) if n_cpu > 1 else None)
    svc = Services(cfg=cfg, metrics=Metrics(),
                   runner=rn.Runner(cfg.models_dir, devices, cfg.large_gpu, cfg.demo_pack, threads, cfg.device))
    svc.runner.limit_probes(cfg.max_probes, cfg.max_duration_s)
    app = FastAPI(title="Spark Dubbing separation service", version=__version__, lifespan=_lifespan(svc),
                  docs_url=None, redoc_url=None, openapi_url=None,
                  description="Splits media into vocals/dialog and instrumental (and drums, bass, other) stems "
                              "with the MDX23 ensemble. Every route but /health needs "
                              "`Authorization: Bearer <SPARK_API_TOKEN>`.")
    app.state.services = svc
    app.add_middleware(TokenAuth, token=cfg.api_token)
    _error_handlers(app)
    app.include_router(system.open_router)
    app.include_router(page.router)
    # Documents the bearer scheme in OpenAPI; TokenAuth enforces it.
    api = APIRouter(dependencies=[Security(HTTPBearer(auto_error=False))], responses=ERRORS)
    for r in (system.router, media.router, jobs.router, files.router, events_routes.router, peaks_routes.router):
        api.include_router(r)
    app.include_router(api)
    return app
