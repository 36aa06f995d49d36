"""A cookie scoped to downloads, so the page's <audio> elements stream stems with Range and its downloads are the
browser's own, without the token in a URL (URLs land in logs, histories and Referer headers).

`POST /media-cookie` (Authorization header required) sets `spark_media=<expiry>.<HMAC>`: HttpOnly (no script reads
it), SameSite=Strict (no other site's page makes the browser send it), Path=/jobs, short-lived (MAX_AGE; the page
renews it while open), Secure when the request came over HTTPS. The key is derived from the API token, so rotating
the token ends every cookie. TokenAuth accepts it only for GET/HEAD of a stem or a result zip: it reads results,
never lists, changes or deletes anything.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

NAME = "spark_media"
MAX_AGE = 900  # seconds
MEDIA_PATH = re.compile(r"^/jobs/[0-9a-f]{32}/(stems/[A-Za-z0-9_-]+|result\.zip)$")  # a stem name or the zip


def _key(token: bytes) -> bytes:
    return hmac.new(token, b"spark media cookie v1", hashlib.sha256).digest()


def make(token: bytes, now: float | None = None) -> str:
    expiry = int((now or time.time()) + MAX_AGE)
    mac = hmac.new(_key(token), str(expiry).encode(), hashlib.sha256).hexdigest()
    return f"{expiry}.{mac}"


def valid(token: bytes, value: str, now: float | None = None) -> bool:
    expiry, _, mac = value.partition(".")
    if not expiry.isdigit() or len(expiry) > 12 or int(expiry) < (now or time.time()):
        return False
    want = hmac.new(_key(token), expiry.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac.encode(), want.encode())


def cookie_value(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The spark_media value among a request's Cookie headers (None when absent)."""
    for key, value in headers:
        if key != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            name, _, val = part.strip().partition("=")
            if name == NAME:
                return val
    return None


def allows(scope, token: bytes) -> bool:
    """A GET/HEAD of a stem or zip carrying a valid download cookie."""
    if scope.get("method") not in ("GET", "HEAD") or not MEDIA_PATH.match(scope.get("path", "")):
        return False
    value = cookie_value(scope.get("headers", []))
    return value is not None and valid(token, value)
