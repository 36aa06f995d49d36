"""The FastAPI app: routes, auth, error mapping. Start it with `python server.py`."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
import uuid
from base64 import b64decode
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl

import anyio
from fastapi import APIRouter, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from . import runner as rn
from .config import Config
from .errors import ApiError
from .inputs import fetch_url, receive_multipart, safe_name
from .metrics import Metrics
from .schemas import (EXT, MEDIA_TYPE, ErrorBody, Job, JobList, JobOptions, JsonJobRequest, LogChunk,
                      QueueState, Ready, Stem, Status)
from .store import FINISHED, Store, new_job_id, valid_id
from .worker import Worker

log = logging.getLogger("spark.app")
BODY_LIMIT = 64 * 1024  # JSON / urlencoded request bodies
LOG_CHUNK = 1 << 20


# ---- auth: a pure ASGI middleware, so an unauthenticated upload is refused before its body is read

class TokenAuth:
    OPEN = {"/health"}

    def __init__(self, app, token: str | None):
        self.app = app
        self.token = token.encode() if token else None

    def _ok(self, header: bytes) -> bool:
        scheme, _, value = header.partition(b" ")
        value = value.strip()
        if scheme.lower() == b"basic":  # a browser on /docs: any user name, the token as password
            try:
                value = b64decode(value, validate=True).partition(b":")[2]
            except ValueError:
                return False
        elif scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(value, self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.token is None or scope["path"] in self.OPEN:
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization", b"")
        if self._ok(header):
            return await self.app(scope, receive, send)
        response = JSONResponse(
            {"error": "unauthorized", "message": "missing or wrong token (Authorization: Bearer <token>)"},
            status_code=401, headers={"WWW-Authenticate": 'Bearer realm="spark", Basic realm="spark"'})
        await response(scope, receive, send)


def _iso(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, timezone.utc) if ts else None


def _engine_error(e: rn.MvsepError) -> ApiError:
    return ApiError(rn.http_status(e), rn.error_code(e), str(e),
                    field=getattr(e, "field", None), missing=getattr(e, "missing", None) or None)


def _options_error(e: ValidationError) -> ApiError:
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "options"
    msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
    return ApiError(422, "invalid_option", f"{field}: {msg}", field=field)


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


MULTIPART_SCHEMA = {
    "type": "object", "required": [],
    "properties": {"file": {"type": "string", "format": "binary", "description": "the media (or use url)"},
                   "url": {"type": "string", "description": "http(s) URL of the media (instead of file)"},
                   "wait": {"type": "boolean", "description": "POST /separate: false answers 202 with the job"},
                   **JobOptions.model_json_schema()["properties"]}}
SUBMIT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": MULTIPART_SCHEMA},
    "application/json": {"schema": JsonJobRequest.model_json_schema()}}}}
ERRORS = {code: {"model": ErrorBody} for code in (401, 404, 409, 413, 415, 422, 429, 500, 503)}


def create_app(cfg: Config) -> FastAPI:
    metrics = Metrics()
    runner = rn.Runner(cfg.models_dir, cfg.device, cfg.gpu_id, cfg.large_gpu, cfg.demo_pack)
    state: dict = {"started": time.time(), "waiters": {}}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        store = Store(cfg.data_dir)
        for job_id in store.requeue_running():
            store.log(job_id, "the server restarted while this job ran; it runs again from the start")
            log.info("job %s requeued after a restart", job_id)
        for job_id in store.orphan_dirs():
            store.delete_files(job_id)

        def finished(job_id: str) -> None:  # worker thread -> wake the requests waiting on this job
            loop.call_soon_threadsafe(_wake, job_id)

        worker = Worker(store, runner, metrics, on_finished=finished)
        state.update(store=store, worker=worker)
        runner.start()
        worker.start()
        janitor = asyncio.create_task(_janitor(store))
        try:
            yield
        finally:
            janitor.cancel()
            worker.stop()
            await anyio.to_thread.run_sync(worker.join, 10)

    def _wake(job_id: str) -> None:
        event = state["waiters"].get(job_id)
        if event:
            event.set()

    async def _janitor(store: Store) -> None:
        """Delete finished jobs (files and rows) older than the TTL."""
        every = max(0.5, min(60.0, cfg.result_ttl_s / 4))
        while True:
            try:
                for job_id in await anyio.to_thread.run_sync(store.expired, cfg.result_ttl_s):
                    await anyio.to_thread.run_sync(store.delete, job_id)
                    log.info("job %s expired and was deleted", job_id)
            except Exception:
                log.exception("janitor failed")
            await asyncio.sleep(every)

    app = FastAPI(title="Spark Dubbing separation service", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None,
                  description="Splits media into vocals/dialog and instrumental (and drums, bass, other) stems "
                              "with the MDX23 ensemble. Every route but /health needs "
                              "`Authorization: Bearer <SPARK_API_TOKEN>`.")
    app.add_middleware(TokenAuth, token=cfg.api_token)
    # Documents the bearer scheme in OpenAPI; TokenAuth enforces it.
    api = APIRouter(dependencies=[Security(HTTPBearer(auto_error=False))], responses=ERRORS)

    # ---- errors: a clear JSON body, never a trace
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

    # ---- helpers
    def store() -> Store:
        return state["store"]

    def job_out(job: dict) -> Job:
        jid, now = job["id"], time.time()
        eta = position = None
        if job["state"] == "running" and job["started_at"] and job["progress"] > 0.01:
            eta = round((now - job["started_at"]) * (1 - job["progress"]) / job["progress"], 1)
        if job["state"] == "queued":
            position = store().queue_position(jid)
        done = job["state"] == "succeeded"
        return Job(
            id=jid, state=job["state"], created_at=_iso(job["created_at"]), started_at=_iso(job["started_at"]),
            finished_at=_iso(job["finished_at"]),
            expires_at=_iso(job["finished_at"] + cfg.result_ttl_s) if job["finished_at"] else None,
            progress=round(job["progress"], 4), stage=job["stage"], eta_s=eta, queue_position=position,
            timings=job["timings"] or {}, error=job["error"], input=job["input"], options=job["options"],
            pack=job["pack"], attempts=job["attempts"],
            stems={s: f"/jobs/{jid}/stems/{s}" for s in job["stems"]} if done else {},
            result_zip=f"/jobs/{jid}/result.zip" if done else None, logs=f"/jobs/{jid}/logs",
        )

    def get_job(job_id: str) -> dict:
        job = store().get(job_id) if valid_id(job_id) else None
        if job is None:
            raise ApiError(404, "not_found", "no such job")
        return job

    def retry_after() -> str:
        cur = store().get(state["worker"].current) if state["worker"].current else None
        eta = job_out(cur).eta_s if cur else None
        return str(int(min(600, max(5, eta or 30))))

    def queue_full() -> ApiError:
        return ApiError(429, "queue_full", f"the queue is full ({cfg.queue_size} jobs); retry later",
                        headers={"Retry-After": retry_after()})

    async def read_small_body(request: Request) -> bytes:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > BODY_LIMIT:
                raise ApiError(413, "too_large", f"request body over {BODY_LIMIT} bytes (upload files as multipart)")
        return body

    async def submit(request: Request) -> tuple[dict, bool | None]:
        """Receive, fetch, probe and queue one job; returns (job row, wait preference or None)."""
        if runner.state in ("missing_models", "error"):
            raise ApiError(503, "models_missing" if runner.missing else "not_ready",
                           f"the model pack is not usable ({runner.reason})", missing=runner.missing or None)
        st = store()
        if (await anyio.to_thread.run_sync(st.counts)).get("queued", 0) >= cfg.queue_size:
            raise queue_full()
        job_id = new_job_id()
        job_dir = st.job_dir(job_id)
        job_dir.mkdir(parents=True)
        upload = job_dir / "upload"
        try:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            info = None
            if ctype == "multipart/form-data":
                fields, info = await receive_multipart(request, upload, cfg.max_upload_bytes)
                if info:
                    info["source"] = "upload"
            elif ctype == "application/json":
                try:
                    fields = json.loads(await read_small_body(request))
                except ValueError:
                    raise ApiError(422, "invalid_request", "the body is not valid JSON") from None
                if not isinstance(fields, dict):
                    raise ApiError(422, "invalid_request", "the JSON body must be an object")
            elif ctype == "application/x-www-form-urlencoded":
                fields = dict(parse_qsl((await read_small_body(request)).decode("utf-8", "replace")))
            else:
                raise ApiError(415, "unsupported_content_type",
                               "send multipart/form-data (file or url) or application/json (url)")
            wait = fields.pop("wait", None)
            url = fields.pop("url", None)
            try:
                options = JobOptions.model_validate(fields).model_dump(exclude_none=True)
            except ValidationError as e:
                raise _options_error(e) from None
            try:
                engine_opts = await anyio.to_thread.run_sync(runner.make_options, options)
                await anyio.to_thread.run_sync(runner.check, engine_opts)
            except rn.MvsepError as e:
                raise _engine_error(e) from None
            if info and url:
                raise ApiError(422, "invalid_input", "send either a file or a url, not both", field="url")
            if not info and not url:
                raise ApiError(422, "invalid_input", "send a `file` part or a `url`", field="file")
            if url:
                if not isinstance(url, str):
                    raise ApiError(422, "bad_url", "url: must be a string", field="url")
                info = await fetch_url(url, upload, cfg.max_upload_bytes, cfg.url_timeout_s,
                                       cfg.allow_private_urls)
                info["source"] = "url"
            if not info.get("bytes"):
                raise ApiError(422, "bad_input", "the input is empty", field="file" if not url else "url")
            name, ext = safe_name(info.pop("filename", None))
            path = job_dir / (f"input.{ext}" if ext else "input")
            os.replace(upload, path)
            try:
                facts = await anyio.to_thread.run_sync(runner.probe, path)
            except rn.MvsepError as e:
                raise _engine_error(e) from None
            if facts["duration_s"] > cfg.max_duration_s:
                raise ApiError(413, "too_long", f"the input lasts {facts['duration_s']:.0f} s; the limit is "
                               f"{cfg.max_duration_s:g} s", limit_s=cfg.max_duration_s)
            facts.update(info, name=name)
            if not await anyio.to_thread.run_sync(
                    lambda: st.insert(job_id, options, facts, runner.pack_kind, max_queued=cfg.queue_size)):
                raise queue_full()
            st.log(job_id, f"queued: {name} ({info['source']}, {info['bytes']} bytes), "
                           f"{facts['duration_s']:.2f} s at {facts['sample_rate']} Hz, {facts['channels']} ch")
            state["worker"].wake()
        except BaseException:
            with anyio.CancelScope(shield=True):  # also when the client went away (cancellation)
                await anyio.to_thread.run_sync(st.delete_files, job_id)
            raise
        return await anyio.to_thread.run_sync(st.get, job_id), (None if wait is None else _truthy(wait))

    def accepted(job: dict) -> JSONResponse:
        return JSONResponse(job_out(job).model_dump(mode="json"), status_code=202,
                            headers={"Location": f"/jobs/{job['id']}"})

    def stem_file(job: dict, stem: str) -> Path:
        return store().out_dir(job["id"]) / f"{stem}.{EXT[job['options'].get('format', 'wav')]}"

    def download(job: dict, stem: str | None) -> FileResponse:
        """One stem (or the zip when stem is None) of a finished job, Range requests supported."""
        if job["state"] != "succeeded":
            raise ApiError(409, "not_ready", f"the job is {job['state']}, not succeeded", state=job["state"])
        name = job["input"].get("name") or "audio"
        headers = {"X-Spark-Pack": job["pack"] or "unknown", "X-Spark-Job-Id": job["id"]}
        if stem is None:
            path, filename, media = store().zip_path(job["id"]), f"{name}_stems.zip", "application/zip"
        else:
            if stem not in job["stems"]:
                raise ApiError(404, "not_found", f"this job has no {stem} stem (it made: "
                               f"{', '.join(job['stems'])})")
            path = stem_file(job, stem)
            ext = EXT[job["options"].get("format", "wav")]
            filename, media = f"{name}_{stem}.{ext}", MEDIA_TYPE[ext]
        if not path.is_file():
            raise ApiError(404, "not_found", "the result files are gone (expired or deleted)")
        # safe_name() leaves only [A-Za-z0-9._ -]: a plain quoted filename every client (curl -J too) reads
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        return FileResponse(path, media_type=media, headers=headers)

    # ---- routes
    @app.get("/health", tags=["service"], summary="Liveness (no auth)")
    def health():
        return {"ok": True}

    @api.get("/ready", tags=["service"], response_model=Ready, summary="200 once the model pack is loaded",
             responses={503: {"model": Ready}})
    def ready():
        body = Ready(ready=runner.state == "ready", reason=runner.reason, pack=runner.pack_kind,
                     missing=runner.missing, recipes=runner.recipes)
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)

    @api.get("/status", tags=["service"], response_model=Status)
    def status():
        counts = store().counts()
        return Status(version=__version__, uptime_s=round(time.time() - state["started"], 1),
                      device=runner.device_facts,
                      pack={"kind": runner.pack_kind, "state": runner.state, "reason": runner.reason,
                            "missing": runner.missing, "recipes": runner.recipes},
                      queue=QueueState(queued=counts.get("queued", 0), running=counts.get("running", 0),
                                       capacity=cfg.queue_size, current=state["worker"].current),
                      jobs=counts,
                      limits={"max_upload_mb": cfg.max_upload_mb, "max_duration_s": cfg.max_duration_s,
                              "result_ttl_s": cfg.result_ttl_s, "url_timeout_s": cfg.url_timeout_s})

    @api.get("/metrics", tags=["service"], response_class=Response, summary="Prometheus text")
    def prometheus():
        counts = store().counts()
        metrics.queue_depth.set(counts.get("queued", 0))
        metrics.ready.set(1 if runner.state == "ready" else 0)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @api.post("/separate", tags=["jobs"], openapi_extra=SUBMIT_BODY, status_code=200,
              summary="Separate and answer with the stems (one file, or a zip)",
              responses={200: {"content": {"application/zip": {}, "audio/wav": {}}},
                         202: {"model": Job, "description": "with `Prefer: respond-async` or wait=false"}})
    async def separate(request: Request, wait: bool | None = Query(None)):
        job, wait_field = await submit(request)
        prefer_async = "respond-async" in request.headers.get("prefer", "").lower()
        if wait is False or wait_field is False or (prefer_async and wait is not True and wait_field is not True):
            return accepted(job)
        job_id = job["id"]
        event = state["waiters"].setdefault(job_id, asyncio.Event())
        try:
            while job["state"] not in FINISHED:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), 2.0)
                event.clear()
                job = await anyio.to_thread.run_sync(store().get, job_id)
                if job is None:
                    raise ApiError(410, "gone", "the job was deleted")
        finally:
            state["waiters"].pop(job_id, None)
        if job["state"] == "failed":
            err = job["error"]
            raise ApiError(err["status"], err["code"], err["message"], job_id=job["id"])
        if job["state"] == "canceled":
            raise ApiError(409, "canceled", "the job was canceled", job_id=job["id"])
        return download(job, job["stems"][0] if len(job["stems"]) == 1 else None)

    @api.post("/jobs", tags=["jobs"], openapi_extra=SUBMIT_BODY, status_code=202, response_model=Job,
              summary="Queue a job; answers 202 with the job and its Location")
    async def create_job(request: Request):
        job, _ = await submit(request)
        return accepted(job)

    @api.get("/jobs", tags=["jobs"], response_model=JobList)
    def list_jobs(state_: str | None = Query(None, alias="state",
                                             pattern="^(queued|running|succeeded|failed|canceled)$"),
                  limit: int = Query(100, ge=1, le=1000)):
        return JobList(jobs=[job_out(j) for j in store().list(state_, limit)])

    @api.get("/jobs/{job_id}", tags=["jobs"], response_model=Job)
    def get_job_route(job_id: str):
        return job_out(get_job(job_id))

    @api.get("/jobs/{job_id}/stems/{stem}", tags=["jobs"], response_class=FileResponse,
             summary="Download one stem (Range supported)")
    def get_stem(job_id: str, stem: Stem):
        return download(get_job(job_id), stem.value)

    @api.get("/jobs/{job_id}/result.zip", tags=["jobs"], response_class=FileResponse,
             summary="Download every stem as a zip (Range supported)")
    def get_zip(job_id: str):
        return download(get_job(job_id), None)

    @api.get("/jobs/{job_id}/logs", tags=["jobs"], response_model=LogChunk)
    def get_logs(job_id: str, offset: int = Query(0, ge=0)):
        job = get_job(job_id)
        path = store().log_path(job_id)
        data = b""
        if path.is_file():
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(LOG_CHUNK)
        if len(data) == LOG_CHUNK and b"\n" in data:
            data = data[:data.rindex(b"\n") + 1]  # whole lines only, so UTF-8 is never cut
        size = path.stat().st_size if path.is_file() else 0
        nxt = offset + len(data)
        return LogChunk(offset=offset, next_offset=nxt, text=data.decode("utf-8", "replace"),
                        complete=job["state"] in FINISHED and nxt >= size)

    @api.delete("/jobs/{job_id}", tags=["jobs"], response_model=Job, responses={204: {}},
                summary="Cancel a queued or running job and delete its files; delete a finished job")
    def delete_job(job_id: str):
        job = get_job(job_id)
        st, worker = store(), state["worker"]
        if job["state"] in FINISHED:
            st.delete(job_id)
            return Response(status_code=204)
        worker.cancel(job_id)  # a running job stops within one engine window, then its files go
        if st.finish(job_id, "canceled", stage="canceled"):
            st.log(job_id, "canceled by the caller")
            if worker.current != job_id:
                st.delete_files(job_id)
                metrics.jobs.labels("canceled").inc()
        _wake(job_id)
        return job_out(st.get(job_id))

    @api.get("/openapi.json", include_in_schema=False)
    def openapi_json():
        return JSONResponse(app.openapi())

    @api.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    app.include_router(api)
    return app
