"""GET /jobs/{id}/stems/{stem}/peaks: min/max pairs per bucket to draw a stem's (or the input's) waveform."""

from __future__ import annotations

from fastapi import APIRouter, Query

from .. import peaks
from ..context import Svc
from ..errors import ApiError
from ..views import get_job, known_stem, stem_name

router = APIRouter(tags=["jobs"])


@router.get("/jobs/{job_id}/stems/{stem}/peaks",
            summary="Waveform peaks of a stem (or `original`, the input): [min, max] per bucket")
def get_peaks(svc: Svc, job_id: str, stem: str,
              points: int = Query(1000, ge=16, le=peaks.BASE, description="buckets (16 to 8192)")):
    stem = "original" if stem == "original" else known_stem(svc, stem)
    job = get_job(svc, job_id)
    source = None
    if stem == "original":
        source = next(svc.store.job_dir(job_id).glob("input*"), None)
    else:
        if job["state"] != "succeeded":
            raise ApiError(409, "not_ready", f"the job is {job['state']}, not succeeded", state=job["state"])
        if stem not in job["stems"]:
            raise ApiError(404, "not_found", f"this job has no {stem} stem (it made: {', '.join(job['stems'])})")
        source = (svc.store.zip_path(job_id), stem_name(job, stem))  # stems live inside result.zip
    base = peaks.cached(svc.store, job_id, stem, source)
    if base is None:
        what = "the input was removed before its peaks were made" if stem == "original" else "the files are gone"
        raise ApiError(404, "not_found", f"no peaks for {stem}: {what}")
    return peaks.peaks_json(base, points, stem, job["input"].get("duration_s"))
