"""Live job events for server-sent event streams, fed by the store's change feed (no polling per client).

The store calls `JobEvents.changed(job_id)` from the writing thread after each commit. The hub reads the row
once (only when someone watches that job, or a queued job whose queue position may have moved) and hands the
event to the loop; every subscriber keeps only the newest event, so a slow client never piles up memory.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from prometheus_client import Gauge

from .context import Services
from .store import FINISHED
from .views import job_out

HEARTBEAT_S = 15.0


class TooManyStreams(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(eq=False)
class Subscriber:
    job_id: str
    client: str = ""  # whose stream (a hash of the token; the address without auth): the per-token cap
    latest: dict | None = None  # the newest event; {"state": "deleted"} once the job is gone
    state: str | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class JobEvents:
    def __init__(self, svc: Services, loop: asyncio.AbstractEventLoop):
        self.svc, self.loop = svc, loop
        self.subs: dict[str, set[Subscriber]] = {}  # touched on the loop only
        self.per_client: dict[str, int] = {}
        self.open = 0
        self.max_total = svc.cfg.max_event_streams
        self.max_per_client = svc.cfg.max_event_streams_per_token
        self.gauge = Gauge("spark_event_streams", "open job event streams", registry=svc.metrics.registry)

    def event(self, job_id: str) -> dict:
        job = self.svc.store.get(job_id)
        if job is None:
            return {"id": job_id, "state": "deleted"}
        return job_out(self.svc, job).model_dump(mode="json")

    # ---- writing thread
    def changed(self, job_id: str) -> None:
        watched = dict(self.subs)  # a copy: the loop may change the dict meanwhile
        ids = [job_id] if job_id in watched else []
        if any(s.state == "queued" for subs in watched.values() for s in list(subs)):
            # another job left the queue or moved: queued jobs' positions may have changed
            ids += [j for j, subs in watched.items() if j != job_id and any(s.state == "queued" for s in subs)]
        for jid in ids:
            if self.loop.is_closed():  # a worker still writing while the server shuts down
                return
            self.loop.call_soon_threadsafe(self._fan_out, jid, self.event(jid))

    # ---- loop
    def _fan_out(self, job_id: str, event: dict) -> None:
        for sub in self.subs.get(job_id, ()):
            sub.latest, sub.state = event, event["state"]
            sub.ready.set()

    def subscribe(self, job_id: str, client: str = "") -> Subscriber:
        """A new stream's subscription; raises TooManyStreams past the overall or the per-token cap."""
        if self.open >= self.max_total:
            raise TooManyStreams(f"the server holds its limit of {self.max_total} event streams "
                                 "(SPARK_MAX_EVENT_STREAMS); poll GET /jobs/{id} or retry later")
        if self.per_client.get(client, 0) >= self.max_per_client:
            raise TooManyStreams(f"this token holds its limit of {self.max_per_client} event streams "
                                 "(SPARK_MAX_EVENT_STREAMS_PER_TOKEN); close one, poll GET /jobs/{id}, or retry later")
        sub = Subscriber(job_id, client)
        self.subs.setdefault(job_id, set()).add(sub)
        self.open += 1
        self.per_client[client] = self.per_client.get(client, 0) + 1
        self.gauge.inc()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self.subs.get(sub.job_id)
        if subs is not None and sub in subs:
            subs.discard(sub)
            self.open -= 1
            left = self.per_client.get(sub.client, 1) - 1
            if left > 0:
                self.per_client[sub.client] = left
            else:
                self.per_client.pop(sub.client, None)
            self.gauge.dec()
            if not subs:
                del self.subs[sub.job_id]


def sse(event: dict) -> bytes:
    return f"event: job\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


async def stream(hub: JobEvents, sub: Subscriber, first: dict, max_s: float | None = None):
    """The job's events until it ends (the last one carries its stems), the client leaves, or `max_s` pass
    (then the stream ends; an EventSource reconnects by itself after `retry`, and takes its turn again)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_s if max_s else None
    try:
        yield b"retry: 3000\n\n" + sse(first)
        if first["state"] in FINISHED:
            return
        while True:
            wait = HEARTBEAT_S if deadline is None else min(HEARTBEAT_S, deadline - loop.time())
            if wait <= 0:
                yield b": the stream's time is up (SPARK_EVENT_STREAM_S); reconnect to go on\n\n"
                return
            try:
                await asyncio.wait_for(sub.ready.wait(), wait)
            except asyncio.TimeoutError:
                if deadline is None or loop.time() < deadline:
                    yield b": keep-alive\n\n"
                continue
            sub.ready.clear()
            event = sub.latest
            yield sse(event)
            if event["state"] in FINISHED or event["state"] == "deleted":
                return
    finally:
        hub.unsubscribe(sub)


def attach(svc: Services, loop: asyncio.AbstractEventLoop) -> JobEvents:
    """Create the app's hub and feed it from the store (called once the store exists)."""
    hub = JobEvents(svc, loop)
    svc.store.add_listener(hub.changed)
    return hub
