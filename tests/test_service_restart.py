"""Jobs survive restarts (even kill -9) and results expire after the TTL."""
from __future__ import annotations

import io
import sqlite3
import time

import soundfile as sf

from testkit.service import Server, make_wav, wait_job


def test_kill_9_mid_job_loses_nothing(tmp_path, vocals_pack):
    data = tmp_path / "data"
    srv = Server(data, vocals_pack, SPARK_LEASE_S=2).start()
    try:
        with srv.client() as c:
            done = c.post("/jobs", files={"file": ("done.wav", make_wav(tmp_path / "d.wav", 0.5).read_bytes())},
                          data={"stems": "vocals"}).json()
            assert wait_job(c, done["id"])["state"] == "succeeded"
            before = c.get(f"/jobs/{done['id']}/stems/vocals").content
            running = c.post("/jobs", files={"file": ("run.wav", make_wav(tmp_path / "r.wav", 4.0).read_bytes())})
            queued = c.post("/jobs", files={"file": ("q.wav", make_wav(tmp_path / "q.wav", 0.7, sr=32000)
                                                     .read_bytes())})
            running, queued = running.json(), queued.json()
            wait_job(c, running["id"], until=("running",))
            while c.get(f"/jobs/{running['id']}").json()["progress"] < 0.05:
                time.sleep(0.05)
        srv.kill9()
        row = sqlite3.connect(data / "spark.db").execute("SELECT state FROM jobs WHERE id=?", (running["id"],))
        assert row.fetchone()[0] == "running"  # what the crash left

        srv = Server(data, vocals_pack, SPARK_LEASE_S=2)
        srv.start()
        with srv.client() as c:
            again = wait_job(c, running["id"])
            assert again["state"] == "succeeded" and again["attempts"] == 2  # ran again from the start
            logs = c.get(f"/jobs/{running['id']}/logs").json()["text"]
            assert "stopped; it runs again" in logs and "attempt 2" in logs
            q = wait_job(c, queued["id"])
            assert q["state"] == "succeeded"
            stem, sr = sf.read(io.BytesIO(c.get(q["stems"]["vocals"]).content))
            assert sr == 32000 and len(stem) == int(0.7 * 32000)
            assert c.get(f"/jobs/{done['id']}/stems/vocals").content == before  # finished results stay
        names = {p.name for p in (data / "jobs" / running["id"]).iterdir()}
        # no input, work files or temp names left behind (peaks: the waveforms' cache, service/peaks.py)
        assert names - {"peaks"} == {"job.log", "result.zip"}
    finally:
        srv.stop()


def test_results_expire_after_the_ttl(tmp_path, vocals_pack):
    data = tmp_path / "data"
    srv = Server(data, vocals_pack, SPARK_RESULT_TTL=2).start()
    try:
        with srv.client() as c:
            job = c.post("/jobs", files={"file": ("a.wav", make_wav(tmp_path / "a.wav", 0.5).read_bytes())},
                         data={"stems": "vocals"}).json()
            job = wait_job(c, job["id"])
            assert job["state"] == "succeeded"
            assert c.get(job["stems"]["vocals"]).status_code == 200
            deadline = time.monotonic() + 15
            while c.get(f"/jobs/{job['id']}").status_code == 200:
                assert time.monotonic() < deadline, "not expired"
                time.sleep(0.2)
            assert c.get(job["stems"]["vocals"]).status_code == 404
            assert not (data / "jobs" / job["id"]).exists()
            assert sqlite3.connect(data / "spark.db").execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    finally:
        srv.stop()


def test_graceful_stop_mid_job_runs_it_again(tmp_path, vocals_pack):
    data = tmp_path / "data"
    srv = Server(data, vocals_pack).start()
    try:
        with srv.client() as c:
            job = c.post("/jobs", files={"file": ("a.wav", make_wav(tmp_path / "a.wav", 4.0).read_bytes())},
                         data={"stems": "vocals"}).json()
            wait_job(c, job["id"], until=("running",))
        t0 = time.monotonic()
        srv.stop()  # SIGTERM: the worker stops within one window; the job is not marked failed or canceled
        assert "Application shutdown complete" in srv.log() and time.monotonic() - t0 < 10
        srv = Server(data, vocals_pack).start()
        with srv.client() as c:
            again = wait_job(c, job["id"])
            assert again["state"] == "succeeded" and again["attempts"] == 1  # a clean stop is not counted
            assert "interrupted by shutdown" in c.get(f"/jobs/{job['id']}/logs").json()["text"]
    finally:
        srv.stop()
