"""GET /jobs/{id}/events: the job's state, progress, stage and ETA as server-sent events."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ..errors import ApiError
from ..events import stream
from ..store import valid_id

router = APIRouter(tags=["jobs"])


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse,
            summary="Server-sent events of the job until it ends (the last one has its stems)",
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(request: Request, job_id: str):
    if not valid_id(job_id):
        raise ApiError(404, "not_found", "no such job")
    hub = request.app.state.job_events
    sub = hub.subscribe(job_id)  # before the first read, so no change falls between the two
    try:
        first = await anyio.to_thread.run_sync(hub.event, job_id)
        if first["state"] == "deleted":
            raise ApiError(404, "not_found", "no such job")
    except BaseException:
        hub.unsubscribe(sub)
        raise
    sub.state = first["state"]
    return StreamingResponse(stream(hub, sub, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
