"""GET /jobs/{id}/stems/{stem}/peaks: min/max pairs per bucket to draw a stem's (or the input's) waveform.

A cached result is read on the event loop (one small file, no lock, no thread); a missing one is computed by
the app's `PeaksMaker` (its own small pool) while this request waits without holding a thread, at most
WAIT_S: past that the caller is told to come back (503 + Retry-After), and the computation goes on.
"""

from __future__ import annotations

import asyncio

import anyio
from fastapi import APIRouter, Query, Request

from .. import peaks
from ..context import Svc
from ..errors import ApiError
from ..views import get_job, known_stem, stem_name

router = APIRouter(tags=["jobs"])
WAIT_S = 10.0


@router.get("/jobs/{job_id}/stems/{stem}/peaks",
            summary="Waveform peaks of a stem (or `original`, the input): [min, max] per bucket")
async def get_peaks(svc: Svc, request: Request, job_id: str, stem: str,
                    points: int = Query(1000, ge=16, le=peaks.BASE, description="buckets (16 to 8192)")):
    stem = "original" if stem == "original" else known_stem(svc, stem)
    job = await anyio.to_thread.run_sync(get_job, svc, job_id)
    duration = job["input"].get("duration_s")
    if stem != "original":
        if job["state"] != "succeeded":
            raise ApiError(409, "not_ready", f"the job is {job['state']}, not succeeded", state=job["state"])
        if stem not in job["stems"]:
            raise ApiError(404, "not_found", f"this job has no {stem} stem (it made: {', '.join(job['stems'])})")
    base = peaks.load_cached(svc.store, job_id, stem)
    if base is not None:
        return peaks.peaks_json(base, points, stem, duration)
    if stem == "original":
        if job["state"] == "downloading":  # not checked yet (its length may be anything): nothing is decoded
            raise ApiError(409, "not_ready", "the input is still downloading; its waveform comes once it is checked",
                           state=job["state"], headers={"Retry-After": "5"})
        source = peaks.input_path(svc.store, job_id) if job["state"] in ("queued", "running") else None
    else:
        source = (svc.store.zip_path(job_id), stem_name(job, stem))  # stems live inside result.zip
    maker: peaks.PeaksMaker = request.app.state.peaks
    try:
        fut = maker.request(job_id, stem, source, job["input"].get("sample_rate"))
    except peaks.Busy:
        raise ApiError(429, "busy", "too many waveforms are being computed; retry shortly",
                       headers={"Retry-After": "5"}) from None
    try:
        base = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), WAIT_S)
    except asyncio.TimeoutError:
        raise ApiError(503, "peaks_pending", f"the waveform of {stem} is being computed; retry shortly",
                       headers={"Retry-After": "5"}) from None
    if base is None:
        what = "the input was removed before its peaks were made" if stem == "original" else "the files are gone"
        raise ApiError(404, "not_found", f"no peaks for {stem}: {what}")
    return peaks.peaks_json(base, points, stem, duration)
