"""The operator's web page: a static shell (HTML, JS, CSS) served without auth; its data calls carry the token."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parents[1] / "static"
UI_FILES = ("app.js", "util.js", "form.js", "jobs.js", "player.js", "app.css")  # ES modules, no build step
FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         **{f"/ui/{n}": (n, "text/css; charset=utf-8" if n.endswith(".css") else "text/javascript; charset=utf-8")
            for n in UI_FILES}}
# The page talks to this server only; media streams from its own URLs (the download cookie, media_cookie.py).
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data: blob:; media-src 'self' blob:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)  # TokenAuth.OPEN lists exactly these paths


def _serve(path: str):
    name, media = FILES[path]
    return lambda: FileResponse(STATIC / name, media_type=media, headers=HEADERS)


for _path in FILES:
    router.add_api_route(_path, _serve(_path), methods=["GET"])
