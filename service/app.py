"""The FastAPI app: lifespan (store, worker, janitor), auth, errors, routers. Started by `python server.py`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from .errors import ApiError
from .metrics import Metrics
from . import events, peaks
from .routes import events as events_routes
from .routes import files, jobs, page, system
from .routes import peaks as peaks_routes
from .schemas import ErrorBody
from .store import Store
from .worker import Worker

log = logging.getLogger("spark.app")
ERRORS = {code: {"model": ErrorBody} for code in (401, 404, 409, 413, 415, 422, 429, 500, 503)}


async def _janitor(svc: Services) -> None:
    """Delete finished jobs (files and rows) older than the TTL."""
    ttl = svc.cfg.result_ttl_s
    every = max(0.5, min(60.0, ttl / 4))
    while True:
        try:
            for job_id in await anyio.to_thread.run_sync(svc.store.expired, ttl):
                await anyio.to_thread.run_sync(svc.store.delete, job_id)
                log.info("job %s expired and was deleted", job_id)
        except Exception:
            log.exception("janitor failed")
        await asyncio.sleep(every)


def _lifespan(svc: Services):
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        store = Store(svc.cfg.data_dir)
        for job_id in store.requeue_running():
            store.log(job_id, "the server restarted while this job ran; it runs again from the start")
            log.info("job %s requeued after a restart", job_id)
        for job_id in store.orphan_dirs():
            store.delete_files(job_id)

        def finished(job_id: str) -> None:  # worker thread -> wake the requests waiting on this job
            loop.call_soon_threadsafe(svc.wake, job_id)

        svc.store = store
        app.state.job_events = events.attach(svc, loop)
        peaks.watch_inputs(store)
        svc.worker = Worker(store, svc.runner, svc.metrics, on_finished=finished)
        svc.runner.start()
        svc.worker.start()
        janitor = asyncio.create_task(_janitor(svc))
        try:
            yield
        finally:
            janitor.cancel()
            svc.worker.stop()
            await anyio.to_thread.run_sync(svc.worker.join, 10)
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
        log.exception("error id %s on %s %s", error_id, request.method, request.url.path)
        return JSONResponse({"error": "internal", "message": "internal error", "error_id": error_id},
                            status_code=500)


def create_app(cfg: Config) -> FastAPI:
    svc = Services(cfg=cfg, metrics=Metrics(),
                   runner=rn.Runner(cfg.models_dir, cfg.device, cfg.gpu_id, cfg.large_gpu, cfg.demo_pack))
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
    for r in (system.router, jobs.router, files.router, events_routes.router, peaks_routes.router):
        api.include_router(r)
    app.include_router(api)
    return app
