"""File downloads with Range requests as RFC 9110 §14 has them, errors as JSON.

Starlette's FileResponse serves byte ranges but answers a malformed Range with `400 text/plain` and an
unsatisfiable one with an empty 416. Here a Range header that is not valid `bytes=` syntax is ignored (200 with
the whole file, as §14.2 allows), ranges past the end are dropped, and a range set with nothing satisfiable is a
JSON 416 with `Content-Range: bytes */<size>`.
"""

from __future__ import annotations

import os
import re

from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import Headers

_SPEC = re.compile(r"(\d+)-(\d*)|-(\d+)")


def satisfiable_ranges(header: str, size: int) -> list[str] | None:
    """The satisfiable range specs of a Range header; None when the header is not valid byte-range syntax."""
    unit, eq, specs = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    keep = []
    for spec in specs.split(","):
        spec = spec.strip()
        if not spec:
            continue  # empty list elements are allowed (RFC 9110 §5.6.1)
        m = _SPEC.fullmatch(spec)
        if not m:
            return None
        first, last, suffix = m.groups()
        if suffix is not None:
            if int(suffix) > 0 and size > 0:
                keep.append(spec)
        elif last and int(last) < int(first):
            return None  # invalid, so the whole header is ignored
        elif int(first) < size:
            keep.append(spec)
    return keep if specs.strip(" ,") else None


class RangeFileResponse(FileResponse):
    async def __call__(self, scope, receive, send):
        header = Headers(scope=scope).get("range")
        if header is not None and scope["method"] in ("GET", "HEAD"):
            # a zip member (views.ZipMemberResponse) sets stat_result to its own size
            size = (self.stat_result or os.stat(self.path)).st_size
            keep = satisfiable_ranges(header, size)
            others = [(k, v) for k, v in scope["headers"] if k != b"range"]
            if keep is None:
                scope = {**scope, "headers": others}
            elif not keep:
                response = JSONResponse(
                    {"error": "range_not_satisfiable", "message": f"no range of {header[:80]!r} lies within the "
                     f"{size} bytes of this file", "size": size},
                    status_code=416, headers={"Content-Range": f"bytes */{size}", **self._extra_headers()})
                return await response(scope, receive, send)
            else:
                scope = {**scope, "headers": [*others, (b"range", ("bytes=" + ",".join(keep)).encode())]}
        return await super().__call__(scope, receive, send)

    def _extra_headers(self) -> dict:
        return {k: v for k, v in self.headers.items() if k.lower().startswith("x-spark-")}
