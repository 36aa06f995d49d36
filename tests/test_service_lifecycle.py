"""Job lifecycle: workers in parallel, leases across kill -9, the attempts cap, the watchdog, fatal device
errors, a full disk, SIGTERM during POST /separate, Idempotency-Key, the store's change feed.

Real server subprocesses on 127.0.0.1; faults are injected into the real code path (a pack model that hangs or
raises a CUDA error on a marked input, a tmpfs data dir that fills up)."""
from __future__ import annotations

import http.server
import io
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from testkit import toypack
from service import disk
from service.config import Config
from service.store import Store, new_job_id
from testkit.service import Server, make_wav, wait_job


def upload(c, path, **data):
    with open(path, "rb") as f:
        return c.post("/jobs", files={"file": (Path(path).name, f)}, data={"stems": "vocals", **data})


def marked_wav(path, seconds: float = 3.0) -> Path:
    """Near-silence with one click: the input FaultyDemucs faults on."""
    n = int(seconds * 44100)
    x = 0.001 * np.random.default_rng(1).standard_normal((n, 2))
    x[n // 3] = 0.9
    sf.write(str(path), x.astype(np.float32), 44100, subtype="FLOAT")
    return Path(path)


@pytest.fixture(scope="module")
def faulty_packs(tmp_path_factory, bandsplit_pack):
    """Vocals packs whose demucs model hangs (sleep) or raises a fatal CUDA error on a marked input."""
    packs = {}
    for fault in ("sleep", "cuda"):
        d = tmp_path_factory.mktemp(f"faulty_{fault}")
        for name in toypack.VOCALS_FILES:
            shutil.copy(bandsplit_pack / name, d / name)
        toypack.write_faulty_demucs(d / toypack.PACK_FILES["demucs_vocals"], fault)
        toypack.write_manifest(d)
        packs[fault] = d
    return packs


def test_two_cpu_workers_run_jobs_in_parallel(tmp_path, vocals_pack):
    srv = Server(tmp_path / "data", vocals_pack, SPARK_GPUS="cpu,cpu", SPARK_WORKER_THREADS=1).start()
    try:
        with srv.client() as c:
            workers = c.get("/status").json()["workers"]
            assert [w["device"] for w in workers] == ["cpu", "cpu"] and workers[0]["id"] != workers[1]["id"]
            for w in workers:  # what torch and ONNX Runtime were set up with, read back from them
                assert w["facts"]["torch"] == "cpu" and w["facts"]["threads"] == 1
                assert w["facts"]["onnx"]["providers"] == ["CPUExecutionProvider"]
                assert w["facts"]["onnx"]["threads"] == 1
            jobs = [upload(c, make_wav(tmp_path / f"{i}.wav", 3.0, seed=i)).json()["id"] for i in range(2)]
            seen = set()
            done = [wait_job(c, j, check=lambda _: seen.update(
                w["job"] for w in c.get("/status").json()["workers"] if w["job"])) for j in jobs]
            assert all(j["state"] == "succeeded" for j in done)
            a, b = done
            assert max(a["started_at"], b["started_at"]) < min(a["finished_at"], b["finished_at"])  # overlap
            logs = [c.get(f"/jobs/{j}/logs").json()["text"] for j in jobs]
            assert (workers[0]["id"] in logs[0]) != (workers[0]["id"] in logs[1])  # one job on each worker
            status = c.get("/status").json()
            assert all(w["busy_s"] > 0 and w["job"] is None for w in status["workers"])
            metrics = c.get("/metrics").text
            for w in workers:
                assert f'spark_worker_busy_seconds{{device="cpu",worker="{w["id"]}"}}' in metrics
    finally:
        srv.stop()


@pytest.mark.gpu
def test_each_gpu_worker_runs_torch_and_onnx_on_its_own_device(tmp_path, vocals_pack):
    n = min(2, torch.cuda.device_count())
    srv = Server(tmp_path / "data", vocals_pack, SPARK_DEVICE="auto",
                 SPARK_GPUS=",".join(str(i) for i in range(n))).start()
    try:
        with srv.client() as c:
            workers = c.get("/status").json()["workers"]
            assert [w["device"] for w in workers] == [f"cuda:{i}" for i in range(n)]
            for i, w in enumerate(workers):
                assert w["facts"]["torch"] == f"cuda:{i}"
                assert w["facts"]["onnx"]["providers"][0] == "CUDAExecutionProvider"
                assert str(w["facts"]["onnx"]["device_id"]) == str(i)
    finally:
        srv.stop()


def test_a_job_killed_with_the_process_three_times_fails_and_the_next_runs(tmp_path, vocals_pack):
    data = tmp_path / "data"
    env = dict(SPARK_LEASE_S=1, SPARK_MAX_ATTEMPTS=3)
    srv = Server(data, vocals_pack, **env).start()
    try:
        with srv.client() as c:
            victim = upload(c, make_wav(tmp_path / "v.wav", 6.0)).json()["id"]
            nxt = upload(c, make_wav(tmp_path / "n.wav", 0.5)).json()["id"]
        for attempt in (1, 2, 3):
            with srv.client() as c:
                job = wait_job(c, victim, until=("running",))
                assert job["attempts"] == attempt
            srv.kill9()
            srv = Server(data, vocals_pack, **env).start()
        with srv.client() as c:
            job = wait_job(c, victim)
            assert job["state"] == "failed" and job["error"]["code"] == "interrupted"
            assert "interrupted 3 times" in job["error"]["message"]
            assert wait_job(c, nxt)["state"] == "succeeded"
        assert sorted(p.name for p in (data / "jobs" / victim).iterdir() if p.name != "peaks") == ["job.log"]
    finally:
        srv.stop()


def test_two_processes_on_one_data_dir_share_the_queue_and_take_over_a_dead_ones_job(tmp_path, vocals_pack):
    data = tmp_path / "data"
    a = Server(data, vocals_pack, SPARK_LEASE_S=2).start()
    b = Server(data, vocals_pack, SPARK_LEASE_S=2).start()
    try:
        with a.client() as c:
            ids = [upload(c, make_wav(tmp_path / f"{i}.wav", 3.0, seed=i)).json()["id"] for i in range(4)]
            deadline = time.monotonic() + 60
            while not (mine := [w["job"] for w in c.get("/status").json()["workers"] if w["job"]]):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        a.kill9()  # its job's lease is no longer renewed: b takes it over after SPARK_LEASE_S
        with b.client() as c:
            jobs = {j: wait_job(c, j) for j in ids}
        assert all(j["state"] == "succeeded" for j in jobs.values())
        assert jobs[mine[0]]["attempts"] == 2 and sum(j["attempts"] for j in jobs.values()) == 5
        for j in ids:  # never two runs at once: each run's start is followed by its end or a takeover
            log = (data / "jobs" / j / "job.log").read_text()
            assert log.count("started (attempt") == jobs[j]["attempts"]
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("fault,code", [("sleep", "stalled"), ("cuda", "device_error")])
def test_a_hung_model_or_a_fatal_cuda_error_fails_the_job_and_restarts_the_process(tmp_path, faulty_packs,
                                                                                    fault, code):
    data = tmp_path / "data"
    srv = Server(data, faulty_packs[fault], SPARK_JOB_STALL_S=2).start()
    try:
        with srv.client() as c:
            with open(marked_wav(tmp_path / "marked.wav"), "rb") as f:
                r = c.post("/separate", files={"file": f}, data={"stems": "vocals"})
            assert r.status_code == 500 and r.json()["error"] == code, r.text
            job_id = r.json()["job_id"]
        assert srv.proc.wait(60) == 3  # non-zero: the platform's restart policy starts a fresh process
        assert "exiting with status 3" in srv.log()
        srv = Server(data, faulty_packs[fault]).start()
        with srv.client() as c:
            assert c.get(f"/jobs/{job_id}").json()["state"] == "failed"  # marked before the exit, not re-run
            ok = wait_job(c, upload(c, make_wav(tmp_path / "ok.wav", 1.0)).json()["id"])
            assert ok["state"] == "succeeded"
        assert sorted(p.name for p in (data / "jobs" / job_id).iterdir() if p.name != "peaks") == ["job.log"]
    finally:
        srv.stop()


@pytest.fixture()
def small_disk(tmp_path):
    """A 40 MB tmpfs as the data dir."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def test_disk_estimate_and_a_disk_that_fills_mid_job(tmp_path, small_disk, vocals_pack):
    data = small_disk / "data"
    srv = Server(data, vocals_pack, SPARK_DISK_RESERVE_MB=0).start()
    try:
        with srv.client() as c:
            # 60 s of 44.1 kHz stereo: ~40 MB of work signals and ~21 MB of float stems do not fit in 40 MB
            r = upload(c, make_wav(tmp_path / "long.wav", 60.0, channels=1, sr=8000))
            assert r.status_code == 507 and r.json()["error"] == "insufficient_storage", r.text
            assert r.json()["need_mb"] > r.json()["free_mb"] > 0
            assert not any((data / "jobs").iterdir())

            job = upload(c, make_wav(tmp_path / "a.wav", 8.0)).json()["id"]
            wait_job(c, job, until=("running",))
            while c.get(f"/jobs/{job}").json()["progress"] < 0.05:
                time.sleep(0.05)
            filler = data / "filler"
            with open(filler, "wb") as f:  # take every byte left
                try:
                    while True:
                        f.write(b"\0" * (1 << 20))
                        f.flush()
                except OSError:
                    pass
            try:
                failed = wait_job(c, job)
            finally:
                filler.unlink()
            assert failed["state"] == "failed" and failed["error"]["code"] == "insufficient_storage"
            assert failed["error"]["status"] == 507
            left = (data / "jobs" / job).iterdir()
            assert sorted(p.name for p in left if p.name != "peaks") == ["job.log"]  # no partial files
            nxt = wait_job(c, upload(c, make_wav(tmp_path / "b.wav", 1.0)).json()["id"])  # the worker goes on
            assert nxt["state"] == "succeeded"
    finally:
        srv.stop()


def test_sigterm_answers_the_waiting_client_503_and_the_job_runs_after_the_restart(tmp_path, vocals_pack):
    data = tmp_path / "data"
    srv = Server(data, vocals_pack).start()
    answer = {}
    try:
        def separate():
            with srv.client() as c, open(make_wav(tmp_path / "a.wav", 6.0), "rb") as f:
                r = c.post("/separate", files={"file": f}, data={"stems": "vocals"})
                answer.update(status=r.status_code, body=r.json())

        t = threading.Thread(target=separate)
        t.start()
        with srv.client() as c:
            deadline = time.monotonic() + 60
            while not (running := c.get("/jobs?state=running").json()["jobs"]):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        srv.proc.send_signal(signal.SIGTERM)
        t.join(30)
        assert answer["status"] == 503 and answer["body"]["error"] == "shutting_down"
        assert answer["body"]["job_id"] == running[0]["id"]
        srv.proc.wait(30)
        srv = Server(data, vocals_pack).start()
        with srv.client() as c:
            job = wait_job(c, answer["body"]["job_id"])
            assert job["state"] == "succeeded" and job["attempts"] == 1
    finally:
        srv.stop()


def test_sigterm_during_a_url_download_fetches_it_again_after_the_restart(tmp_path, vocals_pack):
    wav = make_wav(tmp_path / "slow.wav", 2.0).read_bytes()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(wav)))
            self.end_headers()
            try:
                for i in range(0, len(wav), 20000):  # ~4 s in all
                    self.wfile.write(wav[i:i + 20000])
                    time.sleep(0.2)
            except OSError:
                pass

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/slow.wav"
    data = tmp_path / "data"
    srv = Server(data, vocals_pack, SPARK_ALLOW_PRIVATE_URLS=1).start()
    answer = {}
    try:
        def separate():
            with srv.client() as c:
                r = c.post("/separate", json={"url": url, "stems": "vocals"})
                answer.update(status=r.status_code, body=r.json())

        t = threading.Thread(target=separate)
        t.start()
        with srv.client() as c:
            deadline = time.monotonic() + 30
            while not c.get("/jobs?state=downloading").json()["jobs"]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        srv.proc.send_signal(signal.SIGTERM)
        t.join(30)
        assert answer["status"] == 503 and answer["body"]["error"] == "shutting_down", answer
        srv.proc.wait(30)
        srv = Server(data, vocals_pack, SPARK_ALLOW_PRIVATE_URLS=1).start()
        with srv.client() as c:
            job = wait_job(c, answer["body"]["job_id"])
            assert job["state"] == "succeeded" and job["input"]["bytes"] == len(wav)
            assert "downloading again" in c.get(f"/jobs/{job['id']}/logs").json()["text"]
    finally:
        srv.stop()
        httpd.shutdown()


def test_idempotency_key_and_the_bounded_wait(tmp_path, vocals_pack):
    srv = Server(tmp_path / "data", vocals_pack, SPARK_SEPARATE_WAIT_S=1).start()
    try:
        with srv.client() as c:
            wav = make_wav(tmp_path / "a.wav", 4.0)
            with open(wav, "rb") as f:
                r = c.post("/separate", files={"file": f}, data={"stems": "vocals"}, headers={"Idempotency-Key": "k1"})
            assert r.status_code == 202 and r.headers["location"] == f"/jobs/{r.json()['id']}"  # the wait's bound
            first = r.json()["id"]
            r = upload(c, wav)  # no key: a new job
            other = r.json()["id"]
            assert other != first
            with open(wav, "rb") as f:
                again = c.post("/jobs", files={"file": f}, data={"stems": "vocals"}, headers={"Idempotency-Key": "k1"})
            assert again.status_code == 202 and again.json()["id"] == first
            r = c.post("/jobs", json={"url": "http://127.0.0.1:1/x.wav"}, headers={"Idempotency-Key": "k1"})
            assert r.json()["id"] == first  # the key decides, not the body
            assert c.post("/jobs", json={"url": "http://x/"}, headers={"Idempotency-Key": "a b"}).status_code == 422
            assert len(c.get("/jobs").json()["jobs"]) == 2
            wait_job(c, first)
            wait_job(c, other)
            r = c.post("/separate", json={"url": "http://127.0.0.1:1/x.wav"}, headers={"Idempotency-Key": "k1"})
            assert r.status_code == 200 and r.headers["x-spark-job-id"] == first  # the first job's result
            assert sf.info(io.BytesIO(r.content)).frames == 4 * 44100
    finally:
        srv.stop()


@pytest.mark.parametrize("env,visible,expected", [
    ({}, 0, [("cpu", 0)]),
    ({}, 2, [("cuda", 0), ("cuda", 1)]),
    ({"SPARK_GPUS": "cpu"}, 2, [("cpu", 0)]),
    ({"SPARK_GPUS": "cpu,cpu"}, 0, [("cpu", 0), ("cpu", 1)]),
    ({"SPARK_GPUS": "1, 3"}, 4, [("cuda", 1), ("cuda", 3)]),
    ({"SPARK_DEVICE": "cpu"}, 2, [("cpu", 0)]),
    ({"SPARK_GPU_ID": "2"}, 4, [("cuda", 2)]),
])
def test_spark_gpus_names_the_workers(env, visible, expected):
    assert Config.from_env(env).worker_devices(visible) == expected


def test_spark_gpus_refuses_junk():
    with pytest.raises(SystemExit, match="SPARK_GPUS"):
        Config.from_env({"SPARK_GPUS": "gpu0"}).worker_devices(1)


def test_the_disk_estimate_bounds_what_a_job_writes(tmp_path, random_pack):
    data = tmp_path / "data"
    srv = Server(data, random_pack).start()
    try:
        with srv.client() as c:
            job = upload(c, make_wav(tmp_path / "a.wav", 4.0, sr=48000), stems="all").json()
            peak = 0
            while (state := c.get(f"/jobs/{job['id']}").json()["state"]) in ("queued", "running"):
                used = 0
                for p in (data / "jobs" / job["id"]).rglob("*"):
                    try:
                        if p.is_file() and not p.name.startswith("input"):
                            used += p.stat().st_blocks * 512
                    except OSError:
                        pass  # renamed or deleted meanwhile
                peak = max(peak, used)
                time.sleep(0.01)
            assert state == "succeeded"
        need = disk.need_bytes(job["input"], job["options"])
        assert peak <= need["total"] and peak > need["work"] / 2, (peak, need)
    finally:
        srv.stop()


def test_store_change_feed_calls_listeners_after_each_write(tmp_path):
    store = Store(tmp_path)
    seen: list[str] = []
    store.add_listener(lambda job_id: 1 / 0)  # a failing listener is logged and ignored
    store.add_listener(seen.append)
    job_id = new_job_id()
    assert store.insert(job_id, {"stems": ["vocals"]}, {}, "real") == job_id
    claimed = store.claim_next("w0", 30)
    assert claimed["id"] == job_id and claimed["worker"] == "w0"
    store.update_running(job_id, progress=0.5)
    store.renew([(job_id, "w0")], 30)  # a heartbeat is not a visible change
    assert store.finish(job_id, "succeeded")
    store.delete(job_id)
    assert seen == [job_id] * 5  # insert, claim, progress, finish, delete
    assert store.get(job_id) is None
    store.close()


def test_an_expired_lease_is_reclaimed_a_live_one_is_left_alone(tmp_path):
    store = Store(tmp_path)
    live, dead = new_job_id(), new_job_id()
    for j in (live, dead):
        store.insert(j, {"stems": ["vocals"]}, {}, "real")
    store.claim_next("alive/w0", 60)
    store.claim_next("dead/w0", 0.01)
    time.sleep(0.05)
    other = Store(tmp_path)  # a second process on the same data dir
    requeued, failed = other.reclaim_expired(max_attempts=3)
    assert [j["id"] for j in requeued] == [dead] and failed == []
    assert other.get(live)["state"] == "running" and other.get(live)["worker"] == "alive/w0"
    assert other.claim_next("other/w0", 60)["id"] == dead  # a live lease is never claimed twice
    assert other.claim_next("other/w1", 60) is None
    store.close()
    other.close()
