"""Taking a job in: read the request (multipart, JSON or form), fetch a URL, probe, queue."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import uuid
from urllib.parse import parse_qsl

import anyio
from fastapi import Request

from . import disk
from . import runner as rn
from .context import Services
from .errors import ApiError
from .inputs import check_literal, check_url  # form and IP literals only, no network
from .inputs import fetch_url, receive_multipart, safe_name
from .schemas import parse_bool
from .store import new_job_id
from .views import queue_full

log = logging.getLogger("spark.submit")
BODY_LIMIT = 64 * 1024  # JSON / urlencoded request bodies


def engine_error(e: rn.MvsepError) -> ApiError:
    return ApiError(rn.http_status(e), rn.error_code(e), str(e),
                    field=getattr(e, "field", None), missing=getattr(e, "missing", None) or None)


def truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


async def read_small_body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_LIMIT:
            raise ApiError(413, "too_large", f"request body over {BODY_LIMIT} bytes (upload files as multipart)")
    return body


async def read_fields(request: Request, upload, limit: int, digest: bool = False) -> tuple[dict, dict | None]:
    """The request's fields, and the upload's facts when a file part was streamed to `upload` (with `digest`,
    its sha256 too)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        fields, info = await receive_multipart(request, upload, limit, digest)
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


IDEM_RE = re.compile(r"[\x21-\x7e]{1,255}")


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not IDEM_RE.fullmatch(key):
        raise ApiError(422, "invalid_request", "Idempotency-Key: 1 to 255 visible ASCII characters",
                       field="Idempotency-Key")
    return key


async def take_input(svc: Services, job_id: str, upload, info: dict, options: dict) -> dict:
    """The received file becomes the job's input: probe it (the one probe; the engine reuses its facts), apply
    the duration cap and the disk estimate. Returns the input facts; raises ApiError."""
    name, ext = safe_name(info.pop("filename", None))
    path = svc.store.job_dir(job_id) / (f"input.{ext}" if ext else "input")
    os.replace(upload, path)
    try:
        facts = await anyio.to_thread.run_sync(svc.runner.probe, path)
    except rn.MvsepError as e:
        raise engine_error(e) from None
    cfg = svc.cfg
    if facts["duration_s"] > cfg.max_duration_s:
        # The probe stops decoding just past the cap: the length is known to exceed it, not what it is.
        raise ApiError(413, "too_long", f"the input lasts longer than the limit of {cfg.max_duration_s:g} s "
                       f"({hours(cfg.max_duration_s)}); decoding stopped there", limit_s=cfg.max_duration_s)
    need = disk.need_bytes(facts, options)["total"]
    reserve = disk.reserve_bytes(cfg.data_dir, cfg.disk_reserve_mb)
    free = await anyio.to_thread.run_sync(disk.free_bytes, cfg.data_dir) - reserve
    if need > free:
        raise ApiError(507, "insufficient_storage", f"not enough disk for this job: it needs about {disk.mb(need)} "
                       f"MB and {disk.mb(max(free, 0))} MB are free (beyond the reserve of {disk.mb(reserve)} MB)",
                       need_mb=disk.mb(need), free_mb=disk.mb(max(free, 0)), headers={"Retry-After": "60"})
    facts.update(info, name=name)
    return facts


def hours(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h} h {rest // 60:02d} min" if h else f"{rest // 60} min {rest % 60:02d} s"


def fingerprint(options: dict, url: str | None, info: dict | None) -> str:
    """What an Idempotency-Key stands for: the job's options and its input (the URL, or the file's sha256).
    `wait` is left out: it is how to answer, not what to do."""
    what = {"options": options, "url": url, "file": (info or {}).get("sha256")}
    return hashlib.sha256(json.dumps(what, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def key_reused(job: dict, digest: str) -> dict:
    """The job a retry with a known key stands for; 422 when the key was used for another request (the IETF
    idempotency-key draft's answer to a payload mismatch)."""
    if job.get("idem_hash") not in (None, digest):
        raise ApiError(422, "idempotency_key_mismatch", "Idempotency-Key: this key was used for a different "
                       "request (other options or input); use a new key for a new job", field="Idempotency-Key",
                       job_id=job["id"])
    return job


def queued_line(facts: dict) -> str:
    return (f"queued: {facts['name']} ({facts['source']}, {facts['bytes']} bytes), {facts['duration_s']:.2f} s at "
            f"{facts['sample_rate']} Hz, {facts['channels']} ch")


async def submit(svc: Services, request: Request) -> tuple[dict, bool | None]:
    """Receive and queue one job; returns (job row, wait preference or None). An upload is probed here; a URL
    job is answered at once in state `downloading` (the fetch, probe and caps run in `download`). A retry
    with a known Idempotency-Key returns the existing job when its body asks for the same job (same options
    and input), else 422."""
    cfg, runner, st = svc.cfg, svc.runner, svc.store
    key = idempotency_key(request)
    existing = await anyio.to_thread.run_sync(st.by_idem_key, key) if key is not None else None
    if existing is None:
        if runner.state in ("missing_models", "error"):
            raise ApiError(503, "models_missing" if runner.missing else "not_ready",
                           f"the model pack is not usable ({runner.reason})", missing=runner.missing or None)
        counts = await anyio.to_thread.run_sync(st.counts)
        if counts.get("queued", 0) + counts.get("downloading", 0) >= cfg.queue_size:
            raise queue_full(svc)
    job_id = new_job_id()
    job_dir = st.job_dir(job_id)
    job_dir.mkdir(parents=True)
    upload = job_dir / "upload"
    try:
        fields, info = await read_fields(request, upload, cfg.max_upload_bytes, digest=key is not None)
        wait = fields.pop("wait", None)
        wait = None if wait is None else parse_bool("wait", wait)  # junk is a 422, not "async"
        url = fields.pop("url", None)
        try:
            options, engine_opts, stems = await anyio.to_thread.run_sync(runner.normalize, fields)
        except rn.MvsepError as e:
            raise engine_error(e) from None
        digest = fingerprint(options, url, info) if key is not None else None
        if existing is not None:  # a retry: the first request's job, if this is the same request
            await anyio.to_thread.run_sync(st.delete_files, job_id)
            return key_reused(existing, digest), None
        try:
            await anyio.to_thread.run_sync(runner.check, engine_opts, stems)
        except rn.MvsepError as e:
            raise engine_error(e) from None
        if info and url:
            raise ApiError(422, "invalid_input", "send either a file or a url, not both", field="url")
        if not info and not url:
            raise ApiError(422, "invalid_input", "send a `file` part or a `url`", field="file")
        if url:
            if not isinstance(url, str):
                raise ApiError(422, "bad_url", "url: must be a string", field="url")
            _, host, _, _ = check_url(url)  # a malformed URL is refused now
            check_literal(host, cfg.allow_private_urls)  # so is an IP literal in a refused range; names: download
            facts = {"source": "url"}
            state, owner = "downloading", svc.downloader_id
        else:
            if not info.get("bytes"):
                raise ApiError(422, "bad_input", "the input is empty", field="file")
            info.pop("sha256", None)
            facts = await take_input(svc, job_id, upload, info, options)
            state, owner = "queued", None
        new_id = await anyio.to_thread.run_sync(lambda: st.insert(
            job_id, options, facts, runner.pack_kind, max_queued=cfg.queue_size, idem_key=key,
            source_url=url, state=state, owner=owner, lease_s=cfg.lease_s, idem_hash=digest))
        if new_id is None:
            raise queue_full(svc)
        if new_id != job_id:  # a concurrent request with the same Idempotency-Key won
            await anyio.to_thread.run_sync(st.delete_files, job_id)
            return key_reused(await anyio.to_thread.run_sync(st.get, new_id), digest), None
        if url:
            st.log(job_id, "downloading the url")
            start_download(svc, job_id, url, options)
        else:
            st.log(job_id, queued_line(facts))
            svc.wake_workers()
    except BaseException:
        with anyio.CancelScope(shield=True):  # also when the client went away (cancellation)
            await anyio.to_thread.run_sync(st.delete_files, job_id)
        raise
    return await anyio.to_thread.run_sync(st.get, job_id), (None if wait is None else truthy(wait))


def start_download(svc: Services, job_id: str, url: str, options: dict) -> None:
    svc.downloads[job_id] = asyncio.get_running_loop().create_task(download(svc, job_id, url, options))


async def resume_downloads(svc: Services) -> None:
    """URL jobs whose process stopped during the download (their lease ran out) are fetched again here."""
    for job in await anyio.to_thread.run_sync(svc.store.take_downloads, svc.downloader_id, svc.cfg.lease_s,
                                              svc.cfg.max_attempts):
        svc.store.log(job["id"], f"the process downloading this job stopped; downloading again (attempt "
                                 f"{job['attempts']})")
        start_download(svc, job["id"], job["source_url"], job["options"])


async def download(svc: Services, job_id: str, url: str, options: dict) -> None:
    """A URL job's input: fetch, probe, caps; then the job joins the queue, or fails with the error code the
    request would have had (bad_url, url_refused, too_large, too_long, url_unreachable, url_timeout, ...)."""
    cfg, st = svc.cfg, svc.store
    error = None
    try:
        upload = st.job_dir(job_id) / "upload"
        info = await fetch_url(url, upload, cfg.max_upload_bytes, cfg.url_timeout_s, cfg.allow_private_urls)
        info["source"] = "url"
        facts = await take_input(svc, job_id, upload, info, options)
        if await anyio.to_thread.run_sync(st.downloaded, job_id, facts):
            st.log(job_id, queued_line(facts))
            svc.wake_workers()
        else:  # canceled meanwhile
            await anyio.to_thread.run_sync(st.delete_files, job_id)
    except asyncio.CancelledError:  # DELETE (the row is canceled already) or shutdown (fetched again later)
        with anyio.CancelScope(shield=True):
            for name in ("upload", *(p.name for p in st.job_dir(job_id).glob("input*"))):
                (st.job_dir(job_id) / name).unlink(missing_ok=True)
        raise
    except ApiError as e:
        error = {"code": e.code, "message": e.message, "status": e.status,
                 **{k: v for k, v in e.extra.items() if k in ("field", "need_mb", "free_mb")}}
    except Exception:
        error_id = uuid.uuid4().hex[:12]
        log.exception("download of job %s failed, error id %s", job_id, error_id)
        error = {"code": "internal", "message": f"internal error (error id {error_id})", "status": 500}
    finally:
        if error is not None:
            with anyio.CancelScope(shield=True):
                # Files first: a partial download that filled the disk must go before the row can be written.
                await anyio.to_thread.run_sync(st.strip, job_id)
                if await anyio.to_thread.run_sync(lambda: st.finish(job_id, "failed", stage="failed",
                                                                    error=error)):
                    st.log(job_id, f"failed: {error['message']}")
                    svc.metrics.jobs.labels("failed").inc()
        svc.downloads.pop(job_id, None)
        svc.wake(job_id)
