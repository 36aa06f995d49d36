"""A job's files: stems, the zip, the log."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from ..context import Svc
from ..schemas import LogChunk
from ..store import FINISHED
from ..views import download, get_job, known_stem

router = APIRouter(tags=["jobs"])
LOG_CHUNK = 1 << 20


@router.api_route("/jobs/{job_id}/stems/{stem}", methods=["GET", "HEAD"], response_class=FileResponse,
                  summary="Download one stem (Range supported)")
def get_stem(svc: Svc, job_id: str, stem: str):
    stem = known_stem(svc, stem)
    return download(svc, get_job(svc, job_id), stem)


@router.api_route("/jobs/{job_id}/result.zip", methods=["GET", "HEAD"], response_class=FileResponse,
                  summary="Download every stem as a zip (Range supported)")
def get_zip(svc: Svc, job_id: str):
    return download(svc, get_job(svc, job_id), None)


@router.get("/jobs/{job_id}/logs", response_model=LogChunk)
def get_logs(svc: Svc, job_id: str, offset: int = Query(0, ge=0, le=2**53)):
    job = get_job(svc, job_id)
    path = svc.store.log_path(job_id)
    data = b""
    size = path.stat().st_size if path.is_file() else 0
    if offset < size:  # past the end there is nothing to read (and no seek to overflow)
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(LOG_CHUNK)
    if len(data) == LOG_CHUNK and b"\n" in data:
        data = data[:data.rindex(b"\n") + 1]  # whole lines only, so UTF-8 is never cut
    nxt = offset + len(data)
    return LogChunk(offset=offset, next_offset=nxt, text=data.decode("utf-8", "replace"),
                    complete=job["state"] in FINISHED and nxt >= size)
