"""Bounded HTTP connections: uvicorn's httptools protocol with read timeouts and a connection cap.

uvicorn times out idle keep-alive connections only: a client that connects and sends nothing, or trickles a
header line every few seconds, holds a descriptor for ever. Here every connection has one deadline for its
phase:
- head: the request line and headers must arrive within `header_timeout_s` of the first byte (or of the
  connection), at most MAX_HEAD_BYTES; then 408 / 431 and close.
- body: the client must send some body bytes every `body_timeout_s` while the app waits for them.
- linger: the app answered without reading the whole body (a 401 before an upload): the rest is discarded for
  at most `header_timeout_s`, then the connection closes.
- app: the request is complete and the app works on it (no deadline: POST /separate may wait long).
At most `max_connections` are open: a new connection beyond it closes the oldest connection that is not
serving a request (idle keep-alive, head not complete, lingering), so /health and real clients still get in;
if every connection is serving a request (long event streams, waiting POST /separate) the new one may still
use one of RESERVE extra slots kept for the platform's probes (RESERVED_PATHS; anything else gets 503 there,
and the slot closes after its answer); past those it gets 503 and is closed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("spark.connections")
MAX_HEAD_BYTES = 64 * 1024
EVICTABLE = ("head", "idle", "linger")
RESERVE = 16  # connections past the cap that only the probes below may use
RESERVED_PATHS = ("/health", "/ready", "/status", "/metrics")


@dataclass(frozen=True)
class Limits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 256


def _json_response(status: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": code, "message": message}).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


class GuardedHttpProtocol(HttpToolsProtocol):
    limits = Limits()

    # ---- phase and its deadline
    def _enter(self, phase: str, timeout: float | None) -> None:
        self._phase, self._since = phase, time.monotonic()
        self._head_bytes = 0
        self._set_timer(timeout)

    def _set_timer(self, timeout: float | None) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
        self._timer = self.loop.call_later(timeout, self._expired) if timeout else None

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._phase == "body" and self.flow.read_paused:  # the app is slow to read, not the client
            self._set_timer(self.limits.body_timeout_s)
            return
        if self._phase == "head" and self._head_bytes:
            self._reject("408 Request Timeout", "request_timeout",
                         f"the request head did not arrive within {self.limits.header_timeout_s:g} s")
            return
        if self._phase == "body":
            log.warning("closing %s: no request body bytes for %g s", self._peer(), self.limits.body_timeout_s)
        self.transport.close()

    def _reject(self, status: str, code: str, message: str) -> None:
        self.transport.write(_json_response(status, code, message))
        self.transport.close()

    def _peer(self) -> str:
        return "%s:%d" % self.client if self.client else "a client"

    # ---- uvicorn protocol hooks
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._enter("head", self.limits.header_timeout_s)
        self._enforce_cap()

    def connection_lost(self, exc) -> None:
        self._set_timer(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == "idle":  # first byte of the next request on a keep-alive connection
            self._enter("head", self.limits.header_timeout_s)
        if self._phase == "head":
            self._head_bytes += len(data)
        super().data_received(data)
        if self._phase == "head" and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self._reject("431 Request Header Fields Too Large", "headers_too_large",
                         f"the request line and headers exceed {MAX_HEAD_BYTES // 1024} KB")

    def on_headers_complete(self) -> None:
        if getattr(self, "_reserved", False) and self._path() not in RESERVED_PATHS:
            self._reject("503 Service Unavailable", "too_many_connections",
                         "the server is at its connection limit; retry shortly")
            return
        self._enter("body", self.limits.body_timeout_s)
        super().on_headers_complete()

    def _path(self) -> str:
        try:
            return httptools.parse_url(self.url).path.decode("ascii", "replace")
        except httptools.HttpParserInvalidURLError:
            return ""

    def on_body(self, body: bytes) -> None:
        if self._phase == "body":
            self._set_timer(self.limits.body_timeout_s)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._phase in ("body", "linger"):
            self._enter("app" if self._phase == "body" else "idle", None)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.pipeline:
            pass  # a pipelined request is next; its phase is already tracked
        elif self._phase == "body" and self.cycle.more_body:
            self._enter("linger", self.limits.header_timeout_s)  # answered before the body was read (a 401)
        elif self._phase == "app":
            self._enter("idle", None)  # uvicorn's keep-alive timeout applies
        super().on_response_complete()
        if getattr(self, "_reserved", False) and not self.pipeline:
            self.transport.close()  # a reserved slot serves one probe, then frees itself

    def send_400_response(self, msg: str) -> None:
        self._reject("400 Bad Request", "bad_request", "invalid HTTP request")

    # ---- the cap
    def _enforce_cap(self) -> None:
        others = [c for c in self.connections
                  if c is not self and isinstance(c, GuardedHttpProtocol) and not c.transport.is_closing()]
        excess = len(others) + 1 - self.limits.max_connections
        if excess <= 0:
            return
        idle = sorted((c for c in others if c._phase in EVICTABLE and not getattr(c, "_reserved", False)),
                      key=lambda c: c._since)
        for victim in idle[:excess]:
            victim.transport.close()
        reserved = sum(1 for c in others if getattr(c, "_reserved", False))
        if len(idle) < excess and reserved < RESERVE:
            self._reserved = True  # over the cap: for /health and /status only
        elif len(idle) < excess:
            log.warning("connection cap (%d) reached with every connection serving a request: refusing %s",
                        self.limits.max_connections, self._peer())
            self._reject("503 Service Unavailable", "too_many_connections",
                         "the server is at its connection limit; retry shortly")
        else:
            log.info("connection cap (%d) reached: closed %d idle connection(s)", self.limits.max_connections,
                     excess)


def protocol_class(limits: Limits) -> type[GuardedHttpProtocol]:
    """The protocol class for `uvicorn.run(http=...)`, bound to these limits."""
    return type("SparkHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})
