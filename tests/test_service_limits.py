"""Service limits and start-up rules: queue bound under load, private URLs, missing pack, refusing to start."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from testkit.service import ROOT, Server, free_port, make_wav, wait_job


@pytest.fixture(scope="module")
def server(tmp_path_factory, vocals_pack):
    # Private URLs not allowed (the default); a queue of 2 so that 20 clients overflow it.
    srv = Server(tmp_path_factory.mktemp("limits") / "data", vocals_pack, SPARK_QUEUE_SIZE=2).start()
    yield srv
    srv.stop()


def test_private_urls_are_refused_by_default(server):
    # Loopback targets only here; other private and special ranges are refused inside a loopback-only
    # namespace (tests/test_urlguard.py), so no packet could leave the machine.
    with server.client() as c:
        for url in ("http://127.0.0.1:8185/a.wav", "http://localhost/a.wav", "http://[::1]/a.wav",
                    "http://[::ffff:127.0.0.1]/a.wav", "http://0.0.0.0/a.wav"):
            r = c.post("/separate", json={"url": url})  # the job fetches its URL; /separate answers its error
            assert r.status_code == 422, (url, r.text)
            assert r.json()["error"] == "url_refused" and r.json()["field"] == "url"
            if "0.0.0.0" not in url:  # unspecified: refused even when private targets are allowed
                assert "SPARK_ALLOW_PRIVATE_URLS" in r.json()["message"]


def test_four_stems_on_a_vocals_only_pack(server, tmp_path):
    with server.client() as c:
        r = c.post("/jobs", files={"file": ("a.wav", make_wav(tmp_path / "a.wav", 0.5).read_bytes())},
                   data={"stems": "vocals,drums"})
    assert r.status_code == 422 and r.json()["error"] == "not_in_pack"
    assert "4-stem" in r.json()["message"] and "955717e8-8726e21a.th" in r.json()["missing"]


def test_twenty_clients_during_a_job_get_answers_or_429(server, tmp_path):
    clip = make_wav(tmp_path / "clip.wav", 1.0, channels=2).read_bytes()
    with server.client() as c:
        first = c.post("/jobs", files={"file": ("long.wav", make_wav(tmp_path / "l.wav", 4.0).read_bytes())})
        assert first.status_code == 202
        wait_job(c, first.json()["id"], until=("running",))

    results: list = []
    health_times: list[float] = []

    def client_run(i):
        with server.client(timeout=180) as c:
            try:
                r = c.post("/separate", files={"file": (f"c{i}.wav", clip)}, data={"stems": "vocals"})
                results.append((r.status_code, r.headers.get("retry-after"), r.content[:4]))
            except httpx.HTTPError as e:
                results.append((type(e).__name__, None, None))

    def prober():
        with server.client(timeout=10) as c:
            for _ in range(20):
                t = time.monotonic()
                assert c.get("/status").status_code == 200 and c.get("/health").status_code == 200
                health_times.append(time.monotonic() - t)
                time.sleep(0.1)

    threads = [threading.Thread(target=client_run, args=(i,)) for i in range(20)]
    probe = threading.Thread(target=prober)
    for t in threads + [probe]:
        t.start()
    for t in threads + [probe]:
        t.join(240)
    statuses = [s for s, _, _ in results]
    assert len(statuses) == 20 and set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1
    assert all(ra and ra.isdigit() and int(ra) >= 1 for s, ra, _ in results if s == 429)
    assert all(body == b"RIFF" for s, _, body in results if s == 200)  # one stem: a WAV file
    # The event loop never waits for inference: status and health answer fast during jobs.
    assert len(health_times) == 20 and max(health_times) < 1.0, health_times
    with server.client() as c:
        wait_job(c, first.json()["id"])
        metrics = c.get("/metrics").text
        assert f'spark_jobs_total{{outcome="succeeded"}} {1 + statuses.count(200)}.0' in metrics


def test_missing_pack_answers_503_with_the_files(tmp_path):
    empty = tmp_path / "models"
    empty.mkdir()
    srv = Server(tmp_path / "data", empty).start(wait_ready=False)
    try:
        with srv.client() as c:
            deadline = time.monotonic() + 60
            while (r := c.get("/ready")).json()["reason"] == "loading" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert r.status_code == 503 and r.json()["reason"].startswith("missing_models: ")
            assert "Kim_Vocal_2.onnx" in r.json()["missing"]
            clip = make_wav(tmp_path / "a.wav", 0.5).read_bytes()
            for path in ("/jobs", "/separate"):
                r = c.post(path, files={"file": ("a.wav", clip)})
                assert r.status_code == 503 and r.json()["error"] == "models_missing"
                assert "Kim_Vocal_2.onnx" in r.json()["missing"] and "04573f0d-f3cf25b2.th" in r.json()["missing"]
            assert c.get("/status").json()["pack"]["state"] == "missing_models"
            assert c.get("/health").status_code == 200
    finally:
        srv.stop()


def _run_server(env: dict, seconds: float = 20) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_")}
    return subprocess.run([sys.executable, "server.py"], cwd=ROOT, env={**base, **env}, capture_output=True,
                          text=True, timeout=seconds)


def test_refuses_public_host_without_token(tmp_path):
    r = _run_server({"HOST": "0.0.0.0", "PORT": str(free_port()), "SPARK_DATA_DIR": str(tmp_path)})
    assert r.returncode == 2 and "SPARK_API_TOKEN" in r.stderr and "SPARK_ALLOW_NO_AUTH" in r.stderr


def test_opt_out_starts_open_on_a_public_host(tmp_path):
    srv = Server(tmp_path / "data", tmp_path / "none", token=None, HOST="0.0.0.0", SPARK_ALLOW_NO_AUTH=1)
    srv.start(wait_ready=False)
    try:
        assert httpx.get(srv.base + "/status").status_code == 200  # no token asked
    finally:
        srv.stop()
