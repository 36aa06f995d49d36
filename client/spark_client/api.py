"""The library: one `Client` per server. Retries, events with a polling fallback, resumable downloads."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
import uuid
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Callable, Iterator

import httpx

from .errors import AuthError, DownloadError, JobCanceled, JobFailed, NotFound, Refused, SparkError, Unavailable

log = logging.getLogger("spark_client")
FINISHED = ("succeeded", "failed", "canceled")
RETRY_STATUS = (429, 502, 503, 504)
# The server answers a submit after it has the whole input and has probed it (long media: a while).
SUBMIT_TIMEOUT = httpx.Timeout(900.0, connect=10.0)
Progress = Callable[[int, int | None], None]  # (bytes done, total or None)


def _retry_after(r: httpx.Response) -> float | None:
    value = r.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error(r: httpx.Response) -> SparkError:
    try:
        body = r.json()
        message, code = body.get("message") or r.reason_phrase, body.get("error")
    except ValueError:
        message, code = r.reason_phrase or f"HTTP {r.status_code}", None
    message = _plain(message)
    kind = {401: AuthError, 403: AuthError, 404: NotFound, 410: NotFound}.get(r.status_code)
    if kind is None:
        kind = Unavailable if r.status_code in RETRY_STATUS else Refused if r.status_code < 500 else SparkError
    return kind(f"{message} (HTTP {r.status_code})", status=r.status_code, code=code)


def _plain(message: str) -> str:
    """The server's message without the validation library's wording ("Value error, ...")."""
    return re.sub(r"\b(Value|Assertion) error,\s*", "", str(message)).removeprefix("options: ")


class _ReadProgress:
    """A file object that reports how much was read (httpx streams the upload through read())."""

    def __init__(self, f, cb: Progress, total: int):
        self._f, self._cb, self._total, self.done = f, cb, total, 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.done += len(data)
        self._cb(self.done, self._total)
        return data

    def __getattr__(self, name):  # fileno, seek, tell, name, ...
        return getattr(self._f, name)


class Client:
    def __init__(self, server: str, token: str | None = None, *, timeout: float = 60.0, retries: int = 6,
                 max_wait: float = 900.0, backoff: float = 1.0,
                 on_retry: Callable[[str, float], None] | None = None):
        """`retries`: attempts after a connection error or 502/503/504; `max_wait`: the most seconds spent
        waiting on 429 (queue full) and 503 answers with Retry-After before giving up."""
        headers = {"User-Agent": "spark-client/0.1"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=server.rstrip("/"), headers=headers,
                                 timeout=httpx.Timeout(timeout, connect=10.0))
        self.retries, self.max_wait, self.backoff = retries, max_wait, backoff
        self.on_retry = on_retry or (lambda why, delay: log.info("retrying in %.1f s: %s", delay, why))

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- requests with retries
    def _pause(self, attempt: int, why: str, hint: float | None, waited: float) -> float:
        delay = hint if hint is not None else min(30.0, self.backoff * 2 ** attempt) * random.uniform(0.8, 1.2)
        delay = max(0.0, min(delay, self.max_wait - waited, 120.0))
        self.on_retry(why, delay)
        time.sleep(delay)
        return delay

    def request(self, method: str, path: str, *, body: Callable[[], dict] | None = None, stream: bool = False,
                **kw) -> httpx.Response:
        """One call, retried on connection errors, 429 and 502-504; a typed error for any other failure.

        `body()` makes the request's content anew for each attempt (an upload reopens its file)."""
        attempt, waited, started = 0, 0.0, time.monotonic()
        while True:
            try:
                req = self.http.build_request(method, path, **(body() if body else {}), **kw)
                r = self.http.send(req, stream=stream)
            except httpx.TransportError as e:
                if attempt >= self.retries:
                    raise Unavailable(f"cannot reach {self.http.base_url}: {e or type(e).__name__}") from None
                waited += self._pause(attempt, f"{type(e).__name__}: {e}", None, waited)
                attempt += 1
                continue
            if r.status_code < 400:
                return r
            if stream:
                r.read()
            hint = _retry_after(r)
            waiting_ok = r.status_code == 429 or (r.status_code == 503 and hint is not None)
            can_retry = (r.status_code in RETRY_STATUS and
                         (time.monotonic() - started < self.max_wait if waiting_ok else attempt < self.retries))
            if not can_retry:
                raise _error(r)
            waited += self._pause(attempt, str(_error(r)), hint, waited)
            attempt += 1

    def json(self, method: str, path: str, **kw):
        r = self.request(method, path, **kw)
        return None if r.status_code == 204 else r.json()

    # ---- jobs
    def submit(self, source: str | os.PathLike, options: dict | None = None, *,
               idempotency_key: str | None = None, progress: Progress | None = None) -> dict:
        """Queue one job for a file or an http(s) URL; returns the job. One Idempotency-Key covers every retry,
        so a submit retried after a lost answer never runs the job twice."""
        fields = {k: _field(v) for k, v in (options or {}).items() if v is not None}
        key = idempotency_key or uuid.uuid4().hex
        src = str(source)
        if src.startswith(("http://", "https://")):
            return self.json("POST", "/jobs", headers={"Idempotency-Key": key}, timeout=SUBMIT_TIMEOUT,
                             body=lambda: {"json": {**fields, "url": src}})
        path = Path(src)
        size = path.stat().st_size
        files: list = []

        def body():
            for f in files:
                f.close()
            f = open(path, "rb")  # noqa: SIM115 (closed below or at the next attempt)
            files[:] = [f]
            up = _ReadProgress(f, progress, size) if progress else f
            return {"data": fields, "files": {"file": (path.name, up, "application/octet-stream")}}
        try:
            return self.json("POST", "/jobs", headers={"Idempotency-Key": key}, body=body, timeout=SUBMIT_TIMEOUT)
        finally:
            for f in files:
                f.close()

    def catalogue(self) -> dict:
        """The server's recipe catalogue (GET /recipes): recipes, their stems (what the pack can make), options,
        limits."""
        return self.json("GET", "/recipes")

    def job(self, job_id: str) -> dict:
        return self.json("GET", f"/jobs/{job_id}")

    def jobs(self, state: str | None = None, limit: int = 100) -> list[dict]:
        params = {"limit": limit, **({"state": state} if state else {})}
        return self.json("GET", "/jobs", params=params)["jobs"]

    def cancel(self, job_id: str) -> dict | None:
        """Cancel a queued or running job (returns it); delete a finished one (returns None)."""
        return self.json("DELETE", f"/jobs/{job_id}")

    def events(self, job_id: str) -> Iterator[dict]:
        """The job's server-sent events until it ends; raises httpx errors when the stream breaks."""
        timeout = httpx.Timeout(60.0, connect=10.0)  # the server sends a heartbeat every 15 s
        with self.http.stream("GET", f"/jobs/{job_id}/events", timeout=timeout) as r:
            if r.status_code >= 400:
                r.read()
                raise _error(r)
            name, data = None, []
            for line in r.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    if name == "job":
                        yield json.loads("\n".join(data))
                    name, data = None, []

    def wait(self, job_id: str, on_update: Callable[[dict], None] | None = None, poll_s: float = 2.0,
             timeout: float | None = None) -> dict:
        """Follow the job to its end (events; polling when they are not available). Raises JobFailed or
        JobCanceled; returns the succeeded job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job, use_events, breaks = None, True, 0
        while job is None or job["state"] not in FINISHED:
            if deadline and time.monotonic() > deadline:
                raise SparkError(f"job {job_id} still {job['state'] if job else 'unknown'} after {timeout} s")
            if use_events:
                try:
                    for job in self.events(job_id):
                        if on_update:
                            on_update(job)
                    if job and job["state"] in FINISHED:
                        break
                    raise httpx.ReadError("the event stream ended before the job")
                except AuthError:
                    raise
                except (httpx.HTTPError, SparkError) as e:
                    breaks += 1  # NotFound: a server without events, or the job is gone (the poll tells)
                    use_events = breaks < 3 and not isinstance(e, NotFound)
                    log.info("events of %s broke (%s); %s", job_id, e, "reconnecting" if use_events else "polling")
            job = self.job(job_id)
            if on_update:
                on_update(job)
            if job["state"] not in FINISHED:
                time.sleep(poll_s)
        if job["state"] == "failed":
            err = job.get("error") or {}
            raise JobFailed(f"job {job_id} failed: {err.get('message', 'unknown error')}",
                            status=err.get("status"), code=err.get("code"), job=job)
        if job["state"] == "canceled":
            raise JobCanceled(f"job {job_id} was canceled", job=job)
        return job

    def download(self, job_id: str, dest: str | os.PathLike, stem: str | None = None,
                 progress: Progress | None = None) -> Path:
        """One stem (or the zip when stem is None) to `dest` (a file path, or a folder: the server's file name).
        A cut connection resumes with a Range request; the file is complete when its size matches."""
        path = f"/jobs/{job_id}/stems/{stem}" if stem else f"/jobs/{job_id}/result.zip"
        dest = Path(dest)
        part, etag, total, final = None, None, None, dest
        for attempt in range(self.retries + 1):
            have = part.stat().st_size if part and part.exists() else 0
            headers = {"Range": f"bytes={have}-", **({"If-Range": etag} if etag else {})} if have else {}
            try:
                r = self.request("GET", path, headers=headers, stream=True)
                try:
                    if final.is_dir():
                        name = _filename(r) or f"{job_id}_{stem or 'stems'}"
                        final = final / name
                    part = part or final.with_name(final.name + ".part")
                    etag = r.headers.get("etag")
                    if r.status_code == 206:
                        total = int(r.headers["content-range"].rpartition("/")[2])
                    else:  # a full answer: start over
                        have, total = 0, int(r.headers["content-length"])
                    with open(part, "ab" if have else "wb") as f:
                        for chunk in r.iter_raw():
                            f.write(chunk)
                            have += len(chunk)
                            if progress:
                                progress(have, total)
                finally:
                    r.close()
            except (httpx.TransportError, Unavailable) as e:
                if attempt < self.retries:
                    self._pause(attempt, f"download cut ({e}); resuming", None, 0.0)
                continue
            size = part.stat().st_size
            if size == total:
                os.replace(part, final)
                return final
            if size > total:
                part.unlink()
            if attempt < self.retries:
                self._pause(attempt, f"download incomplete ({size} of {total} bytes); resuming", None, 0.0)
        raise DownloadError(f"{path}: incomplete after {self.retries + 1} attempts")

    def separate(self, source: str | os.PathLike, out_dir: str | os.PathLike, options: dict | None = None,
                 on_update: Callable[[dict], None] | None = None, keep: bool = False) -> dict[str, Path]:
        """Submit, wait and download every stem into `out_dir`; the job is deleted afterwards unless `keep`."""
        job = self.submit(source, options)
        job = self.wait(job["id"], on_update)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {stem: self.download(job["id"], out, stem) for stem in job["stems"]}
        if not keep:
            self.cancel(job["id"])
        return files


def _field(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return ",".join(v) if isinstance(v, (list, tuple)) else str(v)


def _filename(r: httpx.Response) -> str | None:
    disp = r.headers.get("content-disposition", "")
    if 'filename="' in disp:
        name = disp.split('filename="', 1)[1].split('"', 1)[0]
        return Path(name).name or None  # never a path from the server
    return None
