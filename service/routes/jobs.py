"""Jobs: submit (and wait), list, look at, cancel or delete."""

from __future__ import annotations

import asyncio

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from ..context import Services, Svc
from ..errors import ApiError
from ..schemas import Job, JobList, job_options_model, json_request_model
from ..store import FINISHED, STATES
from ..submit import submit
from ..views import download, get_job, job_out

router = APIRouter(tags=["jobs"])
DELETE_WAIT_S = 10.0  # a DELETE waits this long for a canceled job's worker to let go

SUBMIT_BODY: dict = {}   # the OpenAPI request body of POST /separate and /jobs: see document_submit_body


def document_submit_body() -> None:
    """Fill SUBMIT_BODY from the catalogue as it is now. create_app calls it after loading the SPARK_RECIPES
    plug-ins, so a plug-in's recipe and options are in /docs too (the routes keep a reference to this dict;
    FastAPI reads it when it first builds the document)."""
    options = job_options_model()
    multipart = {"type": "object", "required": [], "properties": {
        "file": {"type": "string", "format": "binary", "description": "the media (or use url)"},
        "url": {"type": "string", "description": "http(s) URL of the media (instead of file)"},
        "wait": {"type": "boolean", "description": "POST /separate: false answers 202 with the job"},
        **options.model_json_schema()["properties"]}}
    SUBMIT_BODY["requestBody"] = {"required": True, "content": {
        "multipart/form-data": {"schema": multipart},
        "application/json": {"schema": json_request_model(options).model_json_schema()}}}


def accepted(svc: Services, job: dict) -> JSONResponse:
    return JSONResponse(job_out(svc, job).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/jobs/{job['id']}"})


async def wait_finished(svc: Services, job: dict) -> dict:
    """Wait until the job finishes (the worker wakes us; the row is re-read every 2 s regardless), at most
    SPARK_SEPARATE_WAIT_S; a job still active then is answered as by POST /jobs (202 + Location)."""
    job_id = job["id"]
    event = svc.waiters.setdefault(job_id, asyncio.Event())
    deadline = asyncio.get_running_loop().time() + svc.cfg.separate_wait_s
    stopping = asyncio.ensure_future(svc.stopping.wait())
    try:
        while job["state"] not in FINISHED:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return job
            woken = asyncio.ensure_future(event.wait())
            await asyncio.wait({woken, stopping}, timeout=min(2.0, left), return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            event.clear()
            job = await anyio.to_thread.run_sync(svc.store.get, job_id)
            if job is None:
                raise ApiError(410, "gone", "the job was deleted")
            if svc.stopping.is_set() and job["state"] not in FINISHED:
                raise ApiError(503, "shutting_down", "the server is restarting; the job runs again after the "
                               "restart: poll it with GET /jobs/{id}", job_id=job_id, headers={
                                   "Retry-After": "30", "Location": f"/jobs/{job_id}"})
    finally:
        stopping.cancel()
        svc.waiters.pop(job_id, None)
    return job


@router.post("/separate", openapi_extra=SUBMIT_BODY, status_code=200,
             summary="Separate and answer with the stems (one file, or a zip)",
             responses={200: {"content": {"application/zip": {}, "audio/wav": {}}},
                        202: {"model": Job, "description": "with `Prefer: respond-async` or wait=false"}})
async def separate(svc: Svc, request: Request, wait: bool | None = Query(None)):
    job, wait_field = await submit(svc, request)
    prefer_async = "respond-async" in request.headers.get("prefer", "").lower()
    if wait is False or wait_field is False or (prefer_async and wait is not True and wait_field is not True):
        return accepted(svc, job)
    job = await wait_finished(svc, job)
    if job["state"] not in FINISHED:  # the wait's bound passed: poll the job
        return accepted(svc, job)
    if job["state"] == "failed":
        err = job["error"]
        raise ApiError(err["status"], err["code"], err["message"], job_id=job["id"],
                       **{k: v for k, v in err.items() if k not in ("status", "code", "message")})
    if job["state"] == "canceled":
        raise ApiError(409, "canceled", "the job was canceled", job_id=job["id"])
    return download(svc, job, job["stems"][0] if len(job["stems"]) == 1 else None)


@router.post("/jobs", openapi_extra=SUBMIT_BODY, status_code=202, response_model=Job,
             summary="Queue a job; answers 202 with the job and its Location")
async def create_job(svc: Svc, request: Request):
    job, _ = await submit(svc, request)
    return accepted(svc, job)


@router.get("/jobs", response_model=JobList)
def list_jobs(svc: Svc, state_: str | None = Query(None, alias="state", pattern=f"^({'|'.join(STATES)})$"),
              limit: int = Query(100, ge=1, le=1000)):
    return JobList(jobs=[job_out(svc, j) for j in svc.store.list(state_, limit)])


@router.get("/jobs/{job_id}", response_model=Job)
def get_job_route(svc: Svc, job_id: str):
    return job_out(svc, get_job(svc, job_id))


@router.delete("/jobs/{job_id}", response_model=Job, responses={204: {}},
               summary="Cancel a queued or running job and delete its files; delete a finished job")
async def delete_job(svc: Svc, job_id: str):
    job = await anyio.to_thread.run_sync(get_job, svc, job_id)
    st = svc.store
    if job["state"] in FINISHED:
        await delete_finished(svc, job_id)
        return Response(status_code=204)
    svc.cancel(job_id)  # a running job stops within one engine window, then its worker removes its files
    before = await anyio.to_thread.run_sync(st.cancel, job_id)
    if before is not None:
        st.log(job_id, "canceled by the caller")
        if before != "running":  # no worker holds it: its files go now
            await anyio.to_thread.run_sync(st.delete_files, job_id)
            svc.metrics.jobs.labels("canceled").inc()
    svc.wake(job_id)
    job = await anyio.to_thread.run_sync(st.get, job_id)
    if job is None:
        raise ApiError(410, "gone", "the job was deleted")
    return job_out(svc, job)


async def delete_finished(svc: Services, job_id: str) -> None:
    """Delete a finished job. One canceled mid-run is still held by its worker until the engine stops (within
    one window): wait for that (bounded) rather than remove the folder from under the worker."""
    deadline = asyncio.get_running_loop().time() + DELETE_WAIT_S
    while not await anyio.to_thread.run_sync(svc.store.delete, job_id):
        if asyncio.get_running_loop().time() > deadline:
            raise ApiError(409, "still_stopping", "the job was canceled and its worker is still stopping; retry "
                           "the DELETE in a few seconds", headers={"Retry-After": "2"})
        await asyncio.sleep(0.1)
