"""GET /jobs/{id}/events: the job's state, progress, stage and ETA as server-sent events.

Streams are capped (SPARK_MAX_EVENT_STREAMS overall, SPARK_MAX_EVENT_STREAMS_PER_TOKEN per token: 429 with
Retry-After past them) and last at most SPARK_EVENT_STREAM_S, so they can never take every connection.
"""

from __future__ import annotations

import hashlib
import random
from base64 import b64decode

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ..errors import ApiError
from ..events import TooManyStreams, stream
from ..store import valid_id

router = APIRouter(tags=["jobs"])
RETRY_AFTER_S = (5, 20)  # drawn per answer: refused clients that all came at once do not all come back at once


def client_key(request: Request) -> str:
    """Whose stream this is for the per-token cap: a hash of the token presented (Bearer, or a Basic
    password), or the client's address on a server without a token."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            value = b64decode(value, validate=True).decode("latin-1").partition(":")[2]
        except ValueError:
            value = ""
    if value:
        return "token:" + hashlib.sha256(value.encode("latin-1", "replace")).hexdigest()[:16]
    return "addr:" + (request.client.host if request.client else "")


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse,
            summary="Server-sent events of the job until it ends (the last one has its stems)",
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(request: Request, job_id: str):
    if not valid_id(job_id):
        raise ApiError(404, "not_found", "no such job")
    hub = request.app.state.job_events
    try:
        sub = hub.subscribe(job_id, client_key(request))  # before the first read: no change falls between
    except TooManyStreams as e:
        raise ApiError(429, "too_many_streams", e.message,
                       headers={"Retry-After": str(random.randint(*RETRY_AFTER_S))}) from None
    try:
        first = await anyio.to_thread.run_sync(hub.event, job_id)
        if first["state"] == "deleted":
            raise ApiError(404, "not_found", "no such job")
    except BaseException:
        hub.unsubscribe(sub)
        raise
    sub.state = first["state"]
    return StreamingResponse(stream(hub, sub, first, hub.svc.cfg.event_stream_s), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
