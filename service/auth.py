"""Bearer-token auth as a pure ASGI middleware, so an unauthenticated upload is refused before its body is read."""

from __future__ import annotations

import hmac
from base64 import b64decode

from fastapi.responses import JSONResponse

from . import media_cookie
from .routes.page import FILES


class TokenAuth:
    OPEN = {"/health", *FILES}  # the page shell holds no data (routes/page.py)

    def __init__(self, app, token: str | None):
        self.app = app
        self.token = token.encode() if token else None

    def _ok(self, header: bytes) -> bool:
        scheme, _, value = header.partition(b" ")
        value = value.strip()
        if scheme.lower() == b"basic":  # a browser on /docs: any user name, the token as password
            try:
                value = b64decode(value, validate=True).partition(b":")[2]
            except ValueError:
                return False
        elif scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(value, self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.token is None or scope["path"] in self.OPEN:
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization", b"")
        if self._ok(header) or media_cookie.allows(scope, self.token):
            return await self.app(scope, receive, send)
        response = JSONResponse(
            {"error": "unauthorized", "message": "missing or wrong token (Authorization: Bearer <token>)"},
            status_code=401, headers={"WWW-Authenticate": 'Bearer realm="spark", Basic realm="spark"'})
        await response(scope, receive, send)
