"""The service itself: liveness, readiness, status, metrics, API docs."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..context import Svc
from ..schemas import QueueState, Ready, Status, WorkerState

open_router = APIRouter()  # no auth (TokenAuth.OPEN)
router = APIRouter(tags=["service"])


@open_router.get("/health", tags=["service"], summary="Liveness (no auth)")
async def health():  # async: answers even when the thread pool is busy
    return {"ok": True}


@router.get("/ready", response_model=Ready, summary="200 once the model pack is loaded",
            responses={503: {"model": Ready}})
def ready(svc: Svc):
    runner = svc.runner
    body = Ready(ready=runner.state == "ready", reason=runner.reason, pack=runner.pack_kind,
                 missing=runner.missing, recipes=runner.recipes)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/status", response_model=Status)
def status(svc: Svc):
    cfg, runner = svc.cfg, svc.runner
    counts = svc.store.counts()
    workers = [WorkerState(id=w.worker_id, device=w.device, facts=runner.facts(w.slot), job=w.current,
                           busy_s=round(w.busy_seconds(), 1)) for w in svc.workers]
    return Status(version=__version__, uptime_s=round(time.time() - svc.started, 1), degraded=runner.degraded,
                  device=runner.device_facts, workers=workers,
                  pack={"kind": runner.pack_kind, "state": runner.state, "reason": runner.reason,
                        "missing": runner.missing, "recipes": runner.recipes},
                  queue=QueueState(queued=counts.get("queued", 0), running=counts.get("running", 0),
                                   capacity=cfg.queue_size,
                                   current=next((w.current for w in svc.workers if w.current), None)),
                  jobs=counts,
                  limits={"max_upload_mb": cfg.max_upload_mb, "max_duration_s": cfg.max_duration_s,
                          "result_ttl_s": cfg.result_ttl_s, "url_timeout_s": cfg.url_timeout_s})


@router.get("/recipes", summary="The recipe catalogue: recipes, their stems (available in the installed pack or "
            "why not), their options, the engine-wide options and the upload limits (docs/recipes.md)")
def recipes(svc: Svc):
    cfg = svc.cfg
    return svc.runner.catalogue({"max_upload_bytes": cfg.max_upload_bytes, "max_duration_s": cfg.max_duration_s})


@router.get("/metrics", response_class=Response, summary="Prometheus text")
def prometheus(svc: Svc):
    counts = svc.store.counts()
    svc.metrics.queue_depth.set(counts.get("queued", 0))
    svc.metrics.ready.set(1 if svc.runner.state == "ready" else 0)
    svc.metrics.update_workers(svc.workers)
    return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/openapi.json", include_in_schema=False)
def openapi_json(request: Request):
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False)
def docs(request: Request):
    return get_swagger_ui_html(openapi_url="/openapi.json", title=request.app.title)
