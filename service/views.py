"""Job rows as the API shows them, lookups that 404, and downloads of results."""

from __future__ import annotations

import os
import time
import zipfile
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path

from .context import Services
from .disk import member_range
from .errors import ApiError
from .ranges import RangeFileResponse
from .schemas import EXT, MEDIA_TYPE, Job
from .store import valid_id


def iso(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, timezone.utc) if ts else None


def job_out(svc: Services, job: dict) -> Job:
    jid, now = job["id"], time.time()
    eta = position = None
    if job["state"] == "running" and job["started_at"] and job["progress"] > 0.01:
        eta = round((now - job["started_at"]) * (1 - job["progress"]) / job["progress"], 1)
    if job["state"] == "queued":
        position = svc.store.queue_position(jid)
    done = job["state"] == "succeeded"
    ttl = svc.cfg.result_ttl_s
    return Job(
        id=jid, state=job["state"], created_at=iso(job["created_at"]), started_at=iso(job["started_at"]),
        finished_at=iso(job["finished_at"]),
        expires_at=iso(job["finished_at"] + ttl) if job["finished_at"] else None,
        progress=round(job["progress"], 4), stage=job["stage"], eta_s=eta, queue_position=position,
        timings=job["timings"] or {}, error=job["error"], input=job["input"], options=job["options"],
        pack=job["pack"], attempts=job["attempts"],
        stems={s: f"/jobs/{jid}/stems/{s}" for s in job["stems"]} if done else {},
        result_zip=f"/jobs/{jid}/result.zip" if done else None, logs=f"/jobs/{jid}/logs",
    )


def get_job(svc: Services, job_id: str) -> dict:
    job = svc.store.get(job_id) if valid_id(job_id) else None
    if job is None:
        raise ApiError(404, "not_found", "no such job")
    return job


def retry_after(svc: Services) -> str:
    etas = []
    for w in svc.workers:
        cur = svc.store.get(w.current) if w.current else None
        if cur:
            etas.append(job_out(svc, cur).eta_s or 30)
    return str(int(min(600, max(5, min(etas) if etas else 30))))


def queue_full(svc: Services) -> ApiError:
    return ApiError(429, "queue_full", f"the queue is full ({svc.cfg.queue_size} jobs); retry later",
                    headers={"Retry-After": retry_after(svc)})


class ZipMemberResponse(RangeFileResponse):
    """A stored zip member served as a file of its own: a RangeFileResponse (Range, HEAD, ETag) over the
    byte range [offset, offset + size) of the zip."""

    def __init__(self, path: Path, offset: int, size: int, **kw):
        super().__init__(path, **kw)
        self.offset, self.size = offset, size
        st = os.stat(path)
        self.headers["etag"] = f'"{st.st_mtime_ns:x}-{offset:x}-{size:x}"'
        self.stat_result = os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid,
                                           size, st.st_atime, st.st_mtime, st.st_ctime))
        self.set_stat_headers(self.stat_result)

    async def __call__(self, scope, receive, send):
        ext = {k: v for k, v in scope.get("extensions", {}).items() if k != "http.response.pathsend"}
        await super().__call__({**scope, "extensions": ext}, receive, send)

    @asynccontextmanager
    async def _open_file(self):  # starlette's hook (pinned version): reads stay inside the member
        async with super()._open_file() as f:
            part = _Slice(f, self.offset, self.size)
            await part.seek(0)
            yield part


class _Slice:
    def __init__(self, f, offset: int, size: int):
        self.f, self.offset, self.size, self.pos = f, offset, size, 0

    async def seek(self, pos: int) -> None:
        self.pos = pos
        await self.f.seek(self.offset + pos)

    async def read(self, n: int) -> bytes:
        data = await self.f.read(max(0, min(n, self.size - self.pos)))
        self.pos += len(data)
        return data


def known_stem(svc: Services, stem: str) -> str:
    """A stem name some registered recipe makes; anything else is a 422 (before any job lookup)."""
    if stem not in svc.runner.stem_names():
        raise ApiError(422, "invalid_request", f"stem: {stem[:40]!r} is not a stem any recipe makes", field="stem")
    return stem


def stem_name(job: dict, stem: str) -> str:
    """A stem's download name, which is also its entry name inside result.zip."""
    return f"{job['input'].get('name') or 'audio'}_{stem}.{EXT[job['options'].get('format', 'wav')]}"


def download(svc: Services, job: dict, stem: str | None) -> RangeFileResponse:
    """One stem (or the zip when stem is None) of a finished job, Range requests supported."""
    if job["state"] != "succeeded":
        raise ApiError(409, "not_ready", f"the job is {job['state']}, not succeeded", state=job["state"])
    name = job["input"].get("name") or "audio"
    headers = {"X-Spark-Pack": job["pack"] or "unknown", "X-Spark-Job-Id": job["id"]}
    path = svc.store.zip_path(job["id"])
    if not path.is_file():
        raise ApiError(404, "not_found", "the result files are gone (expired or deleted)")
    if stem is None:
        filename, media = f"{name}_stems.zip", "application/zip"
    elif stem not in job["stems"]:
        raise ApiError(404, "not_found", f"this job has no {stem} stem (it made: {', '.join(job['stems'])})")
    else:
        filename = stem_name(job, stem)
        media = MEDIA_TYPE[EXT[job["options"].get("format", "wav")]]
    # safe_name() leaves only [A-Za-z0-9._ -]: a plain quoted filename every client (curl -J too) reads
    headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    if stem is None:
        return RangeFileResponse(path, media_type=media, headers=headers)
    try:
        offset, size = member_range(path, filename)  # the zip's entries are named like the downloads
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        raise ApiError(404, "not_found", "the result files are gone (expired or deleted)") from None
    return ZipMemberResponse(path, offset, size, media_type=media, headers=headers)
