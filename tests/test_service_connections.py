"""Slow and idle clients against a real server with a small descriptor limit: /health and jobs still get through.

The server runs with RLIMIT_NOFILE 200, so it caps itself at 200 - 64 = 136 connections. Hundreds of
connections that send nothing or trickle a header line every second are opened; new connections close the
oldest idle ones, and every idle one is closed by the server within the header timeout.
"""
from __future__ import annotations

import resource
import socket
import threading
import time

import httpx
import pytest

from testkit.service import TOKEN, Server, make_wav

NOFILE = 200
HEADER_TIMEOUT = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory, vocals_pack):
    srv = Server(tmp_path_factory.mktemp("conn") / "data", vocals_pack, SPARK_HEADER_TIMEOUT_S=HEADER_TIMEOUT,
                 SPARK_BODY_TIMEOUT_S=3)
    srv.preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    srv.start()
    yield srv
    srv.stop()


def _open(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return None


def _closed_by_server(s: socket.socket, wait: float) -> bool:
    """True when the server closed the connection (EOF or reset) within `wait` seconds; any reply is read."""
    s.settimeout(wait)
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            if s.recv(65536) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def _open_fds(pid: int) -> int:
    import os
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_hundreds_of_slow_clients_do_not_lock_out_health_or_a_job(server, tmp_path):
    clip = make_wav(tmp_path / "clip.wav", 0.5).read_bytes()
    silent = [s for s in (_open(server.port) for _ in range(150)) if s]
    trickling = [s for s in (_open(server.port) for _ in range(150)) if s]
    assert len(silent) + len(trickling) == 300  # the kernel's backlog takes them all
    stop = threading.Event()

    def trickle():  # a header line every second, never the blank line that ends the head
        for s in trickling:
            try:
                s.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                pass
        while not stop.wait(1.0):
            for s in trickling:
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        time.sleep(1.0)
        health = [httpx.get(server.base + "/health", timeout=5).status_code for _ in range(5)]
        assert health == [200] * 5
        with server.client(timeout=120) as c:
            r = c.post("/separate", files={"file": ("clip.wav", clip)}, data={"stems": "vocals"})
        assert r.status_code == 200 and r.content[:4] == b"RIFF", r.text[:300]
        assert httpx.get(server.base + "/health", timeout=5).status_code == 200
        assert _open_fds(server.proc.pid) < NOFILE
        # Every idle or trickling connection is closed by the server within the header timeout.
        still_open = [s for s in silent + trickling if not _closed_by_server(s, HEADER_TIMEOUT + 3)]
        assert still_open == []
    finally:
        stop.set()
        t.join(5)
        for s in silent + trickling:
            s.close()
    log = server.log()
    assert "connection cap (136) reached" in log and "Too many open files" not in log
    assert "Traceback" not in log


def test_a_trickled_head_gets_408_json(server):
    s = _open(server.port)
    s.sendall(b"GET /health HTTP/1.1\r\n")
    t0 = time.monotonic()
    s.settimeout(HEADER_TIMEOUT + 3)
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    assert HEADER_TIMEOUT - 0.5 < time.monotonic() - t0 < HEADER_TIMEOUT + 2
    assert data.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in data
    s.close()


def test_a_huge_head_gets_431_json(server):
    s = _open(server.port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n")
    s.settimeout(5)
    data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 431") and b'"headers_too_large"' in data
    s.close()


def test_a_stalled_upload_is_closed_and_leaves_nothing(server):
    jobs_dir = server.data_dir / "jobs"
    before = set(jobs_dir.iterdir())
    s = _open(server.port)
    head = (f"POST /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 1000000\r\n\r\n").encode()
    s.sendall(head + b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF")
    t0 = time.monotonic()
    assert _closed_by_server(s, 10)  # the body timeout is 3 s
    assert time.monotonic() - t0 < 6
    s.close()
    time.sleep(0.5)
    assert set(jobs_dir.iterdir()) == before  # the partial upload was removed
    with server.client() as c:
        assert c.get("/health").status_code == 200


def test_an_unauthenticated_upload_gets_401_then_the_connection_closes(server):
    s = _open(server.port)
    s.sendall(b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
              b"Content-Length: 100000000\r\n\r\n--B\r\n")
    s.settimeout(5)
    assert s.recv(65536).startswith(b"HTTP/1.1 401")
    t0 = time.monotonic()
    stop = time.monotonic() + HEADER_TIMEOUT + 3
    closed = False
    while time.monotonic() < stop:  # keep trickling body bytes: they do not keep the connection alive
        try:
            s.sendall(b"x" * 100)
        except OSError:
            closed = True
            break
        if _closed_by_server(s, 0.5):
            closed = True
            break
    assert closed and time.monotonic() - t0 < HEADER_TIMEOUT + 2
    s.close()


def test_pipelined_and_keep_alive_requests_still_work(server):
    s = _open(server.port)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(5)
    data = b""
    while data.count(b'{"ok":true}') < 2:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    time.sleep(1.0)  # idle, under the keep-alive timeout: the connection is reused
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b'{"ok":true}' not in data:  # head and body may come in separate segments
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    s.close()
