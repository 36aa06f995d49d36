"""Taking a job in: read the request (multipart, JSON or form), fetch a URL, probe, queue."""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qsl

import anyio
from fastapi import Request
from pydantic import ValidationError

from . import runner as rn
from .context import Services
from .errors import ApiError
from .inputs import fetch_url, receive_multipart, safe_name
from .schemas import JobOptions, parse_bool
from .store import new_job_id
from .views import queue_full

BODY_LIMIT = 64 * 1024  # JSON / urlencoded request bodies


def engine_error(e: rn.MvsepError) -> ApiError:
    return ApiError(rn.http_status(e), rn.error_code(e), str(e),
                    field=getattr(e, "field", None), missing=getattr(e, "missing", None) or None)


def options_error(e: ValidationError) -> ApiError:
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "options"
    msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
    return ApiError(422, "invalid_option", f"{field}: {msg}", field=field)


def truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


async def read_small_body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_LIMIT:
            raise ApiError(413, "too_large", f"request body over {BODY_LIMIT} bytes (upload files as multipart)")
    return body


async def read_fields(request: Request, upload, limit: int) -> tuple[dict, dict | None]:
    """The request's fields, and the upload's facts when a file part was streamed to `upload`."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        fields, info = await receive_multipart(request, upload, limit)
        if info:
            info["source"] = "upload"
        return fields, info
    if ctype == "application/json":
        try:
            fields = json.loads(await read_small_body(request))
        except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
            raise ApiError(422, "invalid_request", "the body is not valid JSON (or nested too deep)") from None
        if not isinstance(fields, dict):
            raise ApiError(422, "invalid_request", "the JSON body must be an object")
        return fields, None
    if ctype == "application/x-www-form-urlencoded":
        return dict(parse_qsl((await read_small_body(request)).decode("utf-8", "replace"))), None
    raise ApiError(415, "unsupported_content_type",
                   "send multipart/form-data (file or url) or application/json (url)")


async def submit(svc: Services, request: Request) -> tuple[dict, bool | None]:
    """Receive, fetch, probe and queue one job; returns (job row, wait preference or None)."""
    cfg, runner, st = svc.cfg, svc.runner, svc.store
    if runner.state in ("missing_models", "error"):
        raise ApiError(503, "models_missing" if runner.missing else "not_ready",
                       f"the model pack is not usable ({runner.reason})", missing=runner.missing or None)
    if (await anyio.to_thread.run_sync(st.counts)).get("queued", 0) >= cfg.queue_size:
        raise queue_full(svc)
    job_id = new_job_id()
    job_dir = st.job_dir(job_id)
    job_dir.mkdir(parents=True)
    upload = job_dir / "upload"
    try:
        fields, info = await read_fields(request, upload, cfg.max_upload_bytes)
        wait = fields.pop("wait", None)
        wait = None if wait is None else parse_bool("wait", wait)  # junk is a 422, not "async"
        url = fields.pop("url", None)
        try:
            options = JobOptions.model_validate(fields).model_dump(exclude_none=True)
        except ValidationError as e:
            raise options_error(e) from None
        try:
            engine_opts = await anyio.to_thread.run_sync(runner.make_options, options)
            await anyio.to_thread.run_sync(runner.check, engine_opts)
        except rn.MvsepError as e:
            raise engine_error(e) from None
        if info and url:
            raise ApiError(422, "invalid_input", "send either a file or a url, not both", field="url")
        if not info and not url:
            raise ApiError(422, "invalid_input", "send a `file` part or a `url`", field="file")
        if url:
            if not isinstance(url, str):
                raise ApiError(422, "bad_url", "url: must be a string", field="url")
            info = await fetch_url(url, upload, cfg.max_upload_bytes, cfg.url_timeout_s, cfg.allow_private_urls)
            info["source"] = "url"
        if not info.get("bytes"):
            raise ApiError(422, "bad_input", "the input is empty", field="file" if not url else "url")
        name, ext = safe_name(info.pop("filename", None))
        path = job_dir / (f"input.{ext}" if ext else "input")
        os.replace(upload, path)
        try:
            facts = await anyio.to_thread.run_sync(runner.probe, path)
        except rn.MvsepError as e:
            raise engine_error(e) from None
        if facts["duration_s"] > cfg.max_duration_s:
            raise ApiError(413, "too_long", f"the input lasts {facts['duration_s']:.0f} s; the limit is "
                           f"{cfg.max_duration_s:g} s", limit_s=cfg.max_duration_s)
        facts.update(info, name=name)
        if not await anyio.to_thread.run_sync(
                lambda: st.insert(job_id, options, facts, runner.pack_kind, max_queued=cfg.queue_size)):
            raise queue_full(svc)
        st.log(job_id, f"queued: {name} ({info['source']}, {info['bytes']} bytes), "
                       f"{facts['duration_s']:.2f} s at {facts['sample_rate']} Hz, {facts['channels']} ch")
        svc.worker.wake()
    except BaseException:
        with anyio.CancelScope(shield=True):  # also when the client went away (cancellation)
            await anyio.to_thread.run_sync(st.delete_files, job_id)
        raise
    return await anyio.to_thread.run_sync(st.get, job_id), (None if wait is None else truthy(wait))
