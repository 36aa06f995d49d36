"""Issue 24: nothing one client does makes the box look dead. Real server on 127.0.0.1, real HTTP.

Event streams are capped (overall, per token) and bounded in time, /health and /status keep answering past the
connection cap, peaks never block cached reads nor decode an unchecked input, a second DELETE cannot pull a
folder from under a worker, limits are stated truthfully, Idempotency-Key mismatches are 422, a restart takes
a dead process's jobs at once.
"""
from __future__ import annotations

import http.server
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from testkit.service import Server, local_http, make_wav, wait_job


def silent_flac(path: Path, seconds: int, sr: int = 44100, channels: int = 2) -> Path:
    """Silence compresses to almost nothing: hours of audio in a few hundred KB."""
    block = np.zeros((sr * 60, channels), np.int16)
    with sf.SoundFile(str(path), "w", sr, channels, subtype="PCM_16", format="FLAC") as f:
        for _ in range(seconds // 60):
            f.write(block)
    return path


def stalling_handler(body: bytes, release: threading.Event, first: int = 4096):
    """Serves `body`: the first `first` bytes at once, the rest once `release` is set."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:first])
            self.wfile.flush()
            release.wait(120)
            try:
                self.wfile.write(body[first:])
            except OSError:
                pass

        def log_message(self, *a):
            pass
    return Handler


def raw_get(port: int, path: str, token: str | None) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    return s


def status_of(s: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            return 0
        head += chunk
    return int(head.split(b" ", 2)[1])


def timed_get(client: httpx.Client, path: str) -> tuple[int, float]:
    t0 = time.monotonic()
    r = client.get(path)
    return r.status_code, time.monotonic() - t0


# ---- defect 1: event streams


def test_event_streams_are_capped_bounded_in_time_and_never_lock_out_health(tmp_path, vocals_pack):
    release = threading.Event()
    body = make_wav(tmp_path / "slow.wav", 1.0).read_bytes()
    with local_http(stalling_handler(body, release)) as base:
        srv = Server(tmp_path / "data", vocals_pack, SPARK_ALLOW_PRIVATE_URLS=1, SPARK_MAX_CONNECTIONS=48,
                     SPARK_MAX_EVENT_STREAMS=24, SPARK_MAX_EVENT_STREAMS_PER_TOKEN=24,
                     SPARK_EVENT_STREAM_S=6).start()
        socks = []
        try:
            with srv.client(timeout=10) as c:
                job = c.post("/jobs", json={"url": base + "/slow.wav"}).json()
                assert job["state"] == "downloading"  # held there: streams on it never end by themselves
                t_open = time.monotonic()
                socks = [raw_get(srv.port, f"/jobs/{job['id']}/events", srv.token) for _ in range(60)]
                codes = [status_of(s) for s in socks]
                assert codes.count(200) == 24, codes  # the cap, not the connection limit, decides
                assert codes.count(429) == 36, codes
                r = c.get(f"/jobs/{job['id']}/events")
                assert r.status_code == 429 and r.json()["error"] == "too_many_streams"
                assert int(r.headers["retry-after"]) > 0 and "SPARK_MAX_EVENT_STREAMS" in r.json()["message"]
                for path in ("/health", "/status"):
                    assert c.get(path).status_code == 200
                # The streams end on their own after SPARK_EVENT_STREAM_S; then new ones get in.
                for s in socks:
                    s.settimeout(15)
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                    if b" 200 OK" in data[:20]:
                        assert b"time is up" in data
                assert time.monotonic() - t_open < 20
                with c.stream("GET", f"/jobs/{job['id']}/events") as r:
                    assert r.status_code == 200
                release.set()
                wait_job(c, job["id"])
        finally:
            release.set()
            for s in socks:
                s.close()
            srv.stop()


def test_per_token_cap_and_reserved_slots_for_health(tmp_path, vocals_pack):
    """Without a token, the per-token cap is per address (127.0.0.1 and 127.0.0.2 are two clients). With every
    connection busy, /health and /status still get in through the reserved slots; other paths get 503."""
    release = threading.Event()
    body = make_wav(tmp_path / "slow.wav", 1.0).read_bytes()
    with local_http(stalling_handler(body, release)) as base:
        srv = Server(tmp_path / "data", vocals_pack, token=None, SPARK_ALLOW_PRIVATE_URLS=1,
                     SPARK_MAX_CONNECTIONS=12, SPARK_MAX_EVENT_STREAMS=10,
                     SPARK_MAX_EVENT_STREAMS_PER_TOKEN=6).start()
        held = []
        try:
            with srv.client(timeout=10) as c:
                job = c.post("/jobs", json={"url": base + "/slow.wav"}).json()
                path = f"/jobs/{job['id']}/events"
                one = [raw_get(srv.port, path, None) for _ in range(7)]
                assert [status_of(s) for s in one] == [200] * 6 + [429]
                two = []
                for _ in range(5):
                    s = socket.socket()
                    s.bind(("127.0.0.2", 0))
                    s.connect(("127.0.0.1", srv.port))
                    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    two.append(s)
                assert [status_of(s) for s in two] == [200] * 4 + [429]  # the overall cap (10)
                held = one[:6] + two[:4]
                # 10 streams + 2 more busy connections (POST /separate waiting on the held download) = the cap
                waiting = [threading.Thread(target=lambda: httpx.post(
                    srv.base + "/separate", json={"url": base + "/slow.wav"}, timeout=30)) for _ in range(2)]
                for t in waiting:
                    t.start()
                time.sleep(1.0)
                with httpx.Client(base_url=srv.base, timeout=10) as fresh:
                    for p in ("/health", "/status", "/health"):
                        assert fresh.get(p, headers={"Connection": "close"}).status_code == 200, p
                    r = fresh.get("/jobs", headers={"Connection": "close"})
                    assert r.status_code == 503 and r.json()["error"] == "too_many_connections"
                release.set()
                for t in waiting:
                    t.join(30)
        finally:
            release.set()
            for s in held:
                s.close()
            srv.stop()


# ---- defects 2, 3, 5: peaks and the duration cap


def test_cached_peaks_and_status_do_not_wait_for_a_long_waveform(tmp_path, vocals_pack):
    srv = Server(tmp_path / "data", vocals_pack).start()
    try:
        with srv.client(timeout=60) as c:
            small = c.post("/jobs", files={"file": ("s.wav", make_wav(tmp_path / "s.wav", 1.0).read_bytes())},
                           data={"stems": "vocals"}).json()
            assert wait_job(c, small["id"])["state"] == "succeeded"
            assert c.get(f"/jobs/{small['id']}/stems/vocals/peaks").status_code == 200  # cached now
            long_in = silent_flac(tmp_path / "long.flac", 2 * 3600)
            with open(long_in, "rb") as f:
                big = c.post("/jobs", files={"file": ("long.flac", f)}, data={"stems": "vocals"}).json()
            cache = srv.data_dir / "jobs" / big["id"] / "peaks" / "original.npy"
            # The input's peaks are being made now (one decode of 2 h). Meanwhile, cached reads and /status:
            with ThreadPoolExecutor(40) as pool:
                jobs = [pool.submit(timed_get, c, f"/jobs/{small['id']}/stems/vocals/peaks?points=500")
                        for _ in range(40)] + [pool.submit(timed_get, c, "/status") for _ in range(5)]
                results = [j.result() for j in jobs]
            assert all(code == 200 for code, _ in results), results
            assert not cache.exists(), "the cached reads waited for the long decode"
            r = None
            for _ in range(30):
                r = c.get(f"/jobs/{big['id']}/stems/original/peaks?points=64")
                if r.status_code == 200:
                    break
                assert r.status_code == 503 and r.json()["error"] == "peaks_pending" and r.headers["retry-after"]
            assert r.status_code == 200 and np.abs(np.array(r.json()["peaks"])).max() == 0
            assert c.delete(f"/jobs/{big['id']}").status_code == 200
    finally:
        srv.stop()


def test_no_waveform_of_an_unchecked_input_and_nothing_left_of_a_too_long_one(tmp_path, vocals_pack):
    """The URL job's file is longer than the cap: while it downloads its waveform is refused (nothing is
    decoded); the job then fails too_long with a message that does not call the cap its length, and its folder
    keeps the log only."""
    release = threading.Event()
    body = silent_flac(tmp_path / "long.flac", 600, sr=8000, channels=1).read_bytes()
    with local_http(stalling_handler(body, release, first=len(body) // 2)) as base:
        srv = Server(tmp_path / "data", vocals_pack, SPARK_ALLOW_PRIVATE_URLS=1, SPARK_MAX_DURATION_S=60).start()
        try:
            with srv.client(timeout=30) as c:
                job = c.post("/jobs", json={"url": base + "/long.flac"}).json()
                r = c.get(f"/jobs/{job['id']}/stems/original/peaks")
                assert r.status_code == 409 and r.json()["state"] == "downloading"
                release.set()
                done = wait_job(c, job["id"])
                assert done["state"] == "failed" and done["error"]["code"] == "too_long"
                msg = done["error"]["message"]
                assert "longer than the limit of 60 s" in msg and "lasts 60 s" not in msg, msg
                assert c.get(f"/jobs/{job['id']}/stems/original/peaks").status_code == 404
                left = {p.name for p in (srv.data_dir / "jobs" / job["id"]).iterdir()}
                assert left == {"job.log"}, left
                # The same file uploaded: the same truthful 413.
                r = c.post("/jobs", files={"file": ("long.flac", body)})
                assert r.status_code == 413 and "longer than the limit" in r.json()["message"], r.text
        finally:
            release.set()
            srv.stop()


def test_peaks_decode_stops_at_the_cap(tmp_path):
    from service import peaks
    path = silent_flac(tmp_path / "ten.flac", 600, sr=8000, channels=1)
    full = peaks.compute(path)
    capped = peaks.compute(path, max_frames=60 * 8000)
    assert len(full) == peaks.BASE and len(capped) == 60 * 8000 // peaks.FINE


# ---- defect 4: cancel racing a second DELETE


def test_a_second_delete_waits_for_the_worker_to_let_go(tmp_path, vocals_pack):
    srv = Server(tmp_path / "data", vocals_pack).start()
    try:
        with srv.client(timeout=60) as c:
            wav = make_wav(tmp_path / "a.wav", 30.0)
            job = c.post("/jobs", files={"file": ("a.wav", wav.read_bytes())}).json()
            wait_job(c, job["id"], until=("running",))
            while c.get(f"/jobs/{job['id']}").json()["progress"] < 0.05:
                time.sleep(0.05)
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(c.delete, f"/jobs/{job['id']}")
                time.sleep(0.02)
                second = pool.submit(c.delete, f"/jobs/{job['id']}")
                codes = sorted([first.result().status_code, second.result().status_code])
                # when the 204 came, no worker held the job any more
                workers = c.get("/status").json()["workers"]
            assert codes == [200, 204], codes
            assert all(w["job"] != job["id"] for w in workers), workers
            assert c.get(f"/jobs/{job['id']}").status_code == 404
            assert not (srv.data_dir / "jobs" / job["id"]).exists()
            time.sleep(0.5)
        log = srv.log()
        assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    finally:
        srv.stop()


# ---- also to settle


def test_an_idempotency_key_reused_with_another_body_is_422(tmp_path, vocals_pack):
    srv = Server(tmp_path / "data", vocals_pack).start()
    try:
        with srv.client(timeout=60) as c:
            wav = make_wav(tmp_path / "a.wav", 1.0).read_bytes()
            other = make_wav(tmp_path / "b.wav", 1.0, seed=1).read_bytes()
            first = c.post("/jobs", files={"file": ("a.wav", wav)}, data={"stems": "vocals"},
                           headers={"Idempotency-Key": "k1"})
            assert first.status_code == 202
            same = c.post("/jobs", files={"file": ("a.wav", wav)}, data={"stems": "vocals", "wait": "false"},
                          headers={"Idempotency-Key": "k1"})
            assert same.status_code == 202 and same.json()["id"] == first.json()["id"]
            for kw in ({"files": {"file": ("a.wav", other)}, "data": {"stems": "vocals"}},
                       {"files": {"file": ("a.wav", wav)}, "data": {"stems": "vocals,instrumental"}},
                       {"json": {"url": "http://127.0.0.1:1/a.wav"}}):
                r = c.post("/jobs", headers={"Idempotency-Key": "k1"}, **kw)
                assert r.status_code == 422, r.text
                assert r.json()["error"] == "idempotency_key_mismatch" and r.json()["job_id"] == first.json()["id"]
            assert len(c.get("/jobs").json()["jobs"]) == 1
            assert len(list((srv.data_dir / "jobs").iterdir())) == 1  # the retries left no folders
    finally:
        srv.stop()


def test_a_restart_takes_its_dead_workers_jobs_at_once(tmp_path, vocals_pack):
    """kill -9, then a new server on the same data dir: the job runs again well before its 30 s lease ends."""
    data = tmp_path / "data"
    srv = Server(data, vocals_pack, SPARK_LEASE_S=30).start()
    try:
        with srv.client() as c:
            job = c.post("/jobs", files={"file": ("r.wav", make_wav(tmp_path / "r.wav", 20.0).read_bytes())}).json()
            wait_job(c, job["id"], until=("running",))
        srv.kill9()
        t0 = time.monotonic()
        srv = Server(data, vocals_pack, SPARK_LEASE_S=30).start()
        with srv.client() as c:
            again = wait_job(c, job["id"], until=("running", "succeeded"), timeout=25)
            assert again["attempts"] == 2 and time.monotonic() - t0 < 25
            assert "stopped; it runs again" in c.get(f"/jobs/{job['id']}/logs").json()["text"]
            c.delete(f"/jobs/{job['id']}")
        assert len(list((data / "owners").glob("*.lock"))) == 1  # the dead one's lock file is gone
    finally:
        srv.stop()


@pytest.mark.parametrize("channels,sr", [(64, 384000)])
def test_many_channels_at_a_high_rate_get_a_clear_message(tmp_path, vocals_pack, channels, sr):
    srv = Server(tmp_path / "data", vocals_pack).start()
    try:
        x = np.zeros((sr, channels), np.int16)
        path = tmp_path / "wide.wav"
        sf.write(str(path), x, sr, subtype="PCM_16")
        with srv.client() as c:
            r = c.post("/jobs", files={"file": ("wide.wav", path.read_bytes())})
        assert r.status_code == 422, r.text
        msg = r.json()["message"]
        assert "Invalid argument" not in msg and str(channels) in msg, msg
    finally:
        srv.stop()


def test_an_input_with_hundreds_of_streams_is_refused_before_ffmpeg_opens_them(tmp_path, vocals_pack):
    """FFmpeg opens a decoder for every stream while it reads a file's header (~0.7 MB per AAC stream: 300 of
    them took ~210 MB, per open, and an input is opened by the probe, the peaks and the engine); more than
    100 streams are refused at the header."""
    import shutil
    import subprocess
    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg CLI not installed")
    one = tmp_path / "one.m4a"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=f=440:d=1", "-c:a", "aac",
                    str(one)], check=True)
    many = tmp_path / "many.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(one), *(["-map", "0:a"] * 300), "-c", "copy",
                    str(many)], check=True)
    srv = Server(tmp_path / "data", vocals_pack).start()
    try:
        with srv.client() as c:
            r = c.post("/jobs", files={"file": ("many.mp4", many.read_bytes())})
            assert r.status_code == 422 and "more than 100 streams" in r.json()["message"], r.text
            r = c.post("/jobs", files={"file": ("one.m4a", one.read_bytes())}, data={"stems": "vocals"})
            assert r.status_code == 202, r.text  # one stream: fine
            wait_job(c, r.json()["id"])
    finally:
        srv.stop()
