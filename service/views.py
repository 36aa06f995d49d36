"""Job rows as the API shows them, lookups that 404, and downloads of results."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from .context import Services
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
    current = svc.worker.current
    cur = svc.store.get(current) if current else None
    eta = job_out(svc, cur).eta_s if cur else None
    return str(int(min(600, max(5, eta or 30))))


def queue_full(svc: Services) -> ApiError:
    return ApiError(429, "queue_full", f"the queue is full ({svc.cfg.queue_size} jobs); retry later",
                    headers={"Retry-After": retry_after(svc)})


def stem_file(svc: Services, job: dict, stem: str) -> Path:
    return svc.store.out_dir(job["id"]) / f"{stem}.{EXT[job['options'].get('format', 'wav')]}"


def download(svc: Services, job: dict, stem: str | None) -> RangeFileResponse:
    """One stem (or the zip when stem is None) of a finished job, Range requests supported."""
    if job["state"] != "succeeded":
        raise ApiError(409, "not_ready", f"the job is {job['state']}, not succeeded", state=job["state"])
    name = job["input"].get("name") or "audio"
    headers = {"X-Spark-Pack": job["pack"] or "unknown", "X-Spark-Job-Id": job["id"]}
    if stem is None:
        path, filename, media = svc.store.zip_path(job["id"]), f"{name}_stems.zip", "application/zip"
    else:
        if stem not in job["stems"]:
            raise ApiError(404, "not_found", f"this job has no {stem} stem (it made: {', '.join(job['stems'])})")
        path = stem_file(svc, job, stem)
        ext = EXT[job["options"].get("format", "wav")]
        filename, media = f"{name}_{stem}.{ext}", MEDIA_TYPE[ext]
    if not path.is_file():
        raise ApiError(404, "not_found", "the result files are gone (expired or deleted)")
    # safe_name() leaves only [A-Za-z0-9._ -]: a plain quoted filename every client (curl -J too) reads
    headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return RangeFileResponse(path, media_type=media, headers=headers)
