"""The download cookie (service/media_cookie.py): set it with the token in a header, or clear it."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from .. import media_cookie

router = APIRouter(tags=["jobs"])


@router.post("/media-cookie", status_code=204, response_class=Response,
             summary="Set a short-lived cookie that lets this browser GET stems and zips (no token in URLs)")
def set_cookie(request: Request) -> Response:
    token = request.app.state.services.cfg.api_token
    resp = Response(status_code=204)
    if token:  # without a token every route is open and no cookie is needed
        resp.set_cookie(media_cookie.NAME, media_cookie.make(token.encode()), max_age=media_cookie.MAX_AGE,
                        path="/jobs", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return resp


@router.delete("/media-cookie", status_code=204, response_class=Response, summary="Clear the download cookie")
def clear_cookie() -> Response:
    resp = Response(status_code=204)
    resp.delete_cookie(media_cookie.NAME, path="/jobs", httponly=True, samesite="strict")
    return resp
