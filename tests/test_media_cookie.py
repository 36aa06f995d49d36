"""The download cookie (service/media_cookie.py) on the real server: what it opens (GET/HEAD of a stem or a zip,
with Range) and what it never opens (lists, changes, events, peaks, other tokens, after expiry, tampered)."""
from __future__ import annotations

import time

import httpx
import pytest

from page_support import finished_long_job
from service import media_cookie
from testkit.service import TOKEN, Server


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_pack):
    srv = Server(tmp_path_factory.mktemp("cookie") / "data", random_pack).start()
    yield srv
    srv.stop()


def test_cookie_values():
    value = media_cookie.make(b"k")
    assert media_cookie.valid(b"k", value)
    assert not media_cookie.valid(b"other token", value)
    assert not media_cookie.valid(b"k", media_cookie.make(b"k", now=time.time() - media_cookie.MAX_AGE - 1))
    expiry, _, mac = value.partition(".")
    assert not media_cookie.valid(b"k", f"{int(expiry) + 3600}.{mac}")  # a longer life is not for the taking
    for junk in ("", ".", "x.y", f"{expiry}.", "9" * 40 + ".00"):
        assert not media_cookie.valid(b"k", junk)


def test_the_cookie_opens_downloads_only(server):
    job_id = finished_long_job(server.data_dir, 2.0, name="clip")
    stem, zip_ = f"/jobs/{job_id}/stems/vocals", f"/jobs/{job_id}/result.zip"
    with httpx.Client(base_url=server.base) as anon:
        assert anon.post("/media-cookie").status_code == 401  # the token is needed to get one
        assert anon.get(stem).status_code == 401
    with server.client() as c:
        r = c.post("/media-cookie")
        assert r.status_code == 204
        header = r.headers["set-cookie"]
        for part in ("spark_media=", "HttpOnly", "Path=/jobs", "SameSite=strict", f"Max-Age={media_cookie.MAX_AGE}"):
            assert part in header, header
        assert "Secure" not in header  # plain http on loopback; set when the request came over https
        value = r.cookies["spark_media"]
        whole = c.get(stem).content
    jar = {"spark_media": value}
    with httpx.Client(base_url=server.base, cookies=jar) as b:
        r = b.get(stem, headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == whole[100:200]
        assert b.head(stem).status_code == 200 and b.get(zip_).status_code == 200
        for method, path in (("GET", "/jobs"), ("GET", f"/jobs/{job_id}"), ("DELETE", f"/jobs/{job_id}"),
                             ("GET", f"/jobs/{job_id}/stems/vocals/peaks"), ("GET", f"/jobs/{job_id}/events"),
                             ("GET", f"/jobs/{job_id}/logs"), ("GET", "/status"), ("GET", "/recipes"),
                             ("POST", "/jobs"), ("POST", "/media-cookie")):
            assert b.request(method, path).status_code == 401, (method, path)
    for bad in (media_cookie.make(b"another token"), value[:-1] + ("0" if value[-1] != "0" else "1"),
                media_cookie.make(TOKEN.encode(), now=time.time() - 2 * media_cookie.MAX_AGE)):
        with httpx.Client(base_url=server.base, cookies={"spark_media": bad}) as b:
            assert b.get(stem).status_code == 401
    with server.client() as c:
        cleared = c.delete("/media-cookie")
        assert cleared.status_code == 204 and 'spark_media=""' in cleared.headers["set-cookie"]
        assert c.delete(f"/jobs/{job_id}").status_code == 204
