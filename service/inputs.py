"""Getting the input onto disk: streamed multipart uploads and URL downloads, both size and time capped."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from pathlib import Path
from urllib.parse import unquote, urlsplit

import anyio
import httpx
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from . import urlguard
from .errors import ApiError, disk_full, insufficient_storage

log = logging.getLogger("spark.inputs")
FIELD_LIMIT = 64 * 1024  # bytes of all non-file form fields together
MAX_PARTS = 64
FLUSH_BYTES = 1 << 20  # write the upload to disk in pieces of about this size
MAX_REDIRECTS = 5


def safe_name(filename: str | None) -> tuple[str, str]:
    """(base name, extension) from a client file name, usable in a download name; never a path."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    base, dot, ext = name.rpartition(".")
    if not dot:
        base, ext = name, ""
    base = re.sub(r"[^A-Za-z0-9._ -]+", "_", base).strip(" ._")[:100] or "audio"
    ext = ext.lower() if re.fullmatch(r"[A-Za-z0-9]{1,8}", ext) else ""
    return base, ext


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the input is larger than the limit of {limit // 2**20} MB",
                    limit_bytes=limit)


class _FileSink:
    """Collects file bytes from the parser callbacks; the caller flushes them to disk off the loop."""

    def __init__(self, path: Path, limit: int):
        self.path, self.limit = path, limit
        self.size = 0
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.fh = open(path, "wb")

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise too_large(self.limit)
        self.pending.append(data)
        self.pending_size += len(data)

    async def flush(self, force: bool = False) -> None:
        if self.pending and (force or self.pending_size >= FLUSH_BYTES):
            data, self.pending, self.pending_size = b"".join(self.pending), [], 0
            await anyio.to_thread.run_sync(self.fh.write, data)
        if force:
            await anyio.to_thread.run_sync(self.fh.flush)  # so close() has nothing left to fail on

    def close(self) -> None:
        self.fh.close()


async def receive_multipart(request, upload_path: Path, limit: int) -> tuple[dict[str, str], dict | None]:
    """Stream a multipart body: form fields -> dict, the `file` part -> upload_path.

    Returns (fields, {"filename", "bytes"} or None). Nothing is parsed before the caller is authenticated
    (the auth middleware answers first), and memory holds at most ~1 MB of the file.
    """
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise ApiError(415, "unsupported_content_type", "expected multipart/form-data with a boundary")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + FIELD_LIMIT + 65536:
        raise too_large(limit)

    fields: dict[str, str] = {}
    state = {"headers": {}, "hname": b"", "hvalue": b"", "field": None, "value": [], "fieldsize": 0}
    sink: _FileSink | None = None
    file_info: dict | None = None

    def on_part_begin():
        state.update(headers={}, hname=b"", hvalue=b"", field=None, value=[], parts=state.get("parts", 0) + 1)
        if state["parts"] > MAX_PARTS:
            raise ApiError(413, "too_large", f"more than {MAX_PARTS} form parts")

    def on_header_field(data, start, end):  # python-multipart caps a part's header size itself
        state["hname"] += data[start:end]

    def on_header_value(data, start, end):
        state["hvalue"] += data[start:end]

    def on_header_end():
        state["headers"][state["hname"].decode("latin-1").lower()] = state["hvalue"]
        state["hname"], state["hvalue"] = b"", b""

    def on_headers_finished():
        nonlocal sink, file_info
        _, disp = parse_options_header(state["headers"].get("content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        if name != "file" and b"filename" in disp:
            raise ApiError(422, "invalid_input", f"a file was sent in the form field {name[:40]!r}; send it in "
                           "the field `file` (curl -F file=@...)", field="file")
        if name == "file":
            if sink is not None:
                raise ApiError(422, "invalid_input", "only one `file` part is allowed", field="file")
            sink = _FileSink(upload_path, limit)
            file_info = {"filename": disp.get(b"filename", b"").decode("utf-8", "replace")}
            state["field"] = None
        else:
            state["field"] = name

    def on_part_data(data, start, end):
        if state["field"] is None:
            if sink is not None and not sink.fh.closed:
                sink.add(data[start:end])
            return
        state["fieldsize"] += end - start
        if state["fieldsize"] > FIELD_LIMIT:
            raise ApiError(413, "too_large", f"form field {state['field'][:40]!r} is too large: all fields "
                           f"together may hold {FIELD_LIMIT // 1024} KB (the media goes in the field `file`)",
                           field=state["field"][:40])
        state["value"].append(data[start:end])

    def on_part_end():
        if state["field"] is not None:
            fields[state["field"]] = b"".join(state["value"]).decode("utf-8", "replace")
        elif sink is not None:
            file_info["bytes"] = sink.size

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if sink is not None:
                await sink.flush()
        parser.finalize()
        if parser.state != MultipartState.END:
            raise ApiError(400, "truncated_body", "truncated multipart body: it ended before the closing "
                           "boundary (the upload was cut short)")
        if sink is not None:
            await sink.flush(force=True)
    except ApiError:
        raise
    except OSError as e:
        if not disk_full(e):
            raise
        log.warning("disk full while receiving an upload (%s): %s", upload_path.parent.name, e)
        raise insufficient_storage("while receiving the upload") from None
    except MultipartParseError as e:  # its messages name the fault, never data or paths
        raise ApiError(400, "bad_request", f"the multipart body could not be read: {e}") from e
    except Exception as e:  # the client went away
        raise ApiError(400, "bad_request", "the multipart body could not be read") from e
    finally:
        if sink is not None:
            with contextlib.suppress(OSError):  # flushed above when it matters
                sink.close()
    return fields, file_info


# ---- URL inputs

async def resolve_checked(host: str, port: int, allow_private: bool) -> str:
    """One address of `host` that may be contacted, after urlguard judged them all (no private mixes)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise ApiError(422, "bad_url", f"url: cannot resolve host {host!r}", field="url") from None
    addrs = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not addrs:
        raise ApiError(422, "bad_url", f"url: cannot resolve host {host!r}", field="url")
    for addr in addrs:
        why = urlguard.problem(addr)
        if why and urlguard.always_refused(why):
            raise ApiError(422, "url_refused", f"url: the target is not a unicast address: {why}", field="url")
        if why and not allow_private:
            raise ApiError(422, "url_refused", f"url: the target is not a public address: {why}; the operator "
                           "can allow private targets with SPARK_ALLOW_PRIVATE_URLS=1", field="url")
    return str(addrs[0])


def check_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, target) of an http(s) URL; its form only, no network (the address: resolve_checked)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ApiError(422, "bad_url", "url: not a valid URL", field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(422, "bad_url", "url: only http and https URLs are accepted", field="url")
    port = port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, target


async def fetch_url(url: str, dest: Path, limit: int, timeout_s: float, allow_private: bool) -> dict:
    """Download `url` to `dest`; returns {"filename", "bytes"}. Redirects are followed and re-checked."""
    try:
        with anyio.fail_after(timeout_s):
            return await _fetch(url, dest, limit, allow_private)
    except TimeoutError:
        raise ApiError(504, "url_timeout", f"url: the download took longer than {timeout_s:g} s",
                       field="url") from None


async def _fetch(url: str, dest: Path, limit: int, allow_private: bool) -> dict:
    async with httpx.AsyncClient(follow_redirects=False, timeout=httpx.Timeout(30.0), trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            scheme, host, port, target = check_url(url)
            ip = await resolve_checked(host, port, allow_private)
            # Connect to the address that was checked (no second DNS answer), keeping Host and TLS name.
            ip_host = f"[{ip}]" if ":" in ip else ip
            host_header = host if port in (80, 443) else f"{host}:{port}"
            request = client.build_request("GET", f"{scheme}://{ip_host}:{port}{target}",
                                           headers={"Host": host_header}, extensions={"sni_hostname": host})
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as e:
                raise ApiError(502, "url_unreachable", f"url: the download failed ({type(e).__name__})",
                               field="url") from None
            try:
                if response.is_redirect:
                    url = str(httpx.URL(url).join(response.headers.get("location", "")))
                    continue
                if response.status_code != 200:
                    raise ApiError(422, "url_failed", f"url: the server answered HTTP {response.status_code}",
                                   field="url")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise too_large(limit)
                size = await _write_body(response, dest, limit)
                if size == 0:
                    raise ApiError(422, "bad_input", "url: the server sent an empty body", field="url")
                name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
                return {"filename": name, "bytes": size}
            except httpx.HTTPError as e:
                raise ApiError(502, "url_unreachable", f"url: the download failed ({type(e).__name__})",
                               field="url") from None
            finally:
                await response.aclose()
        raise ApiError(422, "url_failed", "url: too many redirects", field="url")


async def _write_body(response: httpx.Response, dest: Path, limit: int) -> int:
    size = 0
    try:
        with open(dest, "wb") as fh:
            async for chunk in response.aiter_bytes(FLUSH_BYTES):
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                await anyio.to_thread.run_sync(fh.write, chunk)
            await anyio.to_thread.run_sync(fh.flush)
    except OSError as e:
        if not disk_full(e):
            raise
        log.warning("disk full while downloading a URL input to %s: %s", dest, e)
        raise insufficient_storage("while downloading the url") from None
    return size
