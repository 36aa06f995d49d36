"""Job events (server-sent events) and waveform peaks against the real server on a small toypack."""
from __future__ import annotations

import json
import re
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from testkit.service import Server, make_wav, wait_job

UNKNOWN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_pack):
    srv = Server(tmp_path_factory.mktemp("events") / "data", random_pack).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_wav(tmp_path_factory.mktemp("in") / "talk.wav", 4.0)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    return make_wav(tmp_path_factory.mktemp("in") / "long.wav", 25.0)


def submit(client, path, **fields) -> dict:
    with open(path, "rb") as f:
        r = client.post("/jobs", files={"file": (path.name, f)}, data=fields)
    assert r.status_code == 202, r.text
    return r.json()


def events(client, job_id, on_event=None) -> list[dict]:
    """Every `job` event of the stream until the server closes it."""
    out = []
    with client.stream("GET", f"/jobs/{job_id}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:") and name == "job":
                out.append(json.loads(line[5:]))
                if on_event:
                    on_event(out[-1])
    return out


def open_streams(server) -> float:
    text = httpx.get(server.base + "/metrics", headers={"Authorization": f"Bearer {server.token}"}).text
    return float(re.search(r"^spark_event_streams (\S+)$", text, re.M).group(1))


def test_events_follow_a_job_to_its_end_with_the_stems(server, client, clip):
    job = submit(client, clip, stems="vocals,instrumental")
    seen = events(client, job["id"])
    assert len(seen) >= 3, seen  # at least: first look, some progress, the end
    assert all(e["id"] == job["id"] for e in seen)
    progress = [e["progress"] for e in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(e["state"] == "running" and 0 < e["progress"] < 1 for e in seen)
    assert any(e["eta_s"] is not None for e in seen if e["state"] == "running")
    last = seen[-1]
    assert last["state"] == "succeeded" and set(last["stems"]) == {"vocals", "instrumental"}
    assert [e for e in seen if e["state"] == "succeeded"] == [last]  # the stream closed after the end
    # A finished job: one event, then the stream closes.
    again = events(client, job["id"])
    assert [e["state"] for e in again] == ["succeeded"] and again[0]["stems"] == last["stems"]


def test_events_need_the_token_and_a_known_job(server, client):
    assert httpx.get(f"{server.base}/jobs/{UNKNOWN}/events").status_code == 401
    assert client.get(f"/jobs/{UNKNOWN}/events").json()["error"] == "not_found"
    assert client.get("/jobs/..%2F..%2Fetc/events").status_code == 404


def test_cancel_ends_the_stream_and_a_client_leaving_closes_it(server, client, clip, long_clip):
    base = open_streams(server)
    job = submit(client, clip)
    canceled = {}

    def cancel_once_running(e):
        if e["state"] == "running" and e["progress"] > 0 and not canceled:
            canceled["r"] = client.delete(f"/jobs/{job['id']}")

    seen = events(client, job["id"], cancel_once_running)
    assert canceled["r"].status_code == 200
    assert seen[-1]["state"] == "canceled"

    # A client that leaves mid-stream: the server drops its subscription. The job waits behind a long one.
    ahead = submit(client, long_clip)
    job = submit(client, clip)
    with httpx.Client(base_url=server.base, headers=client.headers, timeout=30) as c2:
        with c2.stream("GET", f"/jobs/{job['id']}/events") as r:
            lines = r.iter_lines()  # held: a dropped iterator closes the response
            data = next(line for line in lines if line.startswith("data:"))
            assert json.loads(data[5:])["state"] == "queued"
            ahead_running = client.get(f"/jobs/{ahead['id']}").json()
            if ahead_running["state"] == "queued":  # its claim moves this job's queue position: an event
                assert json.loads(next(line for line in lines if line.startswith("data:"))[5:])["state"] == "queued"
            assert open_streams(server) == base + 1
    deadline = time.monotonic() + 20
    while open_streams(server) != base and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_streams(server) == base
    for j in (job, ahead):
        client.delete(f"/jobs/{j['id']}")


def test_peaks_of_stems_and_of_the_input(server, client, clip):
    job = submit(client, clip, stems="vocals,instrumental")
    # Not finished yet: a stem's peaks are refused clearly.
    r = client.get(f"/jobs/{job['id']}/stems/vocals/peaks")
    if r.status_code != 200:
        assert r.status_code == 409 and r.json()["error"] == "not_ready"
    job = wait_job(client, job["id"])
    assert job["state"] == "succeeded"
    wav = client.get(job["stems"]["vocals"]).content
    with open(server.data_dir / "vocals.wav", "wb") as f:
        f.write(wav)
    x, _ = sf.read(server.data_dir / "vocals.wav", dtype="float32")
    for points in (16, 300, 8192):
        body = client.get(f"/jobs/{job['id']}/stems/vocals/peaks", params={"points": points}).json()
        peaks = np.array(body["peaks"])
        # a bucket holds at least 256 frames: a short stem gives fewer buckets than asked for
        assert body["points"] == len(peaks) == min(points, -(-len(x) // 256)) and peaks.shape[1] == 2
        assert (peaks[:, 0] <= peaks[:, 1]).all()
        assert peaks[:, 0].min() == pytest.approx(x.min(), abs=1e-4)
        assert peaks[:, 1].max() == pytest.approx(x.max(), abs=1e-4)
    # The first of 16 buckets covers (about) the first sixteenth of the stem.
    first = np.array(client.get(f"/jobs/{job['id']}/stems/vocals/peaks?points=16").json()["peaks"][0])
    head = x[: len(x) // 16]
    assert first[1] == pytest.approx(head.max(), abs=0.05) and first[0] == pytest.approx(head.min(), abs=0.05)
    assert (server.data_dir / "jobs" / job["id"] / "peaks" / "vocals.npy").is_file()  # cached next to the job
    # The input's waveform, made while the job ran (the input itself is gone now).
    orig = client.get(f"/jobs/{job['id']}/stems/original/peaks?points=64").json()
    src, _ = sf.read(clip, dtype="float32")
    assert np.array(orig["peaks"])[:, 1].max() == pytest.approx(src.max(), abs=1e-3)
    # Bounds and names.
    for bad in (15, 8193, "x"):
        r = client.get(f"/jobs/{job['id']}/stems/vocals/peaks", params={"points": bad})
        assert r.status_code == 422 and r.json()["field"] == "points"
    assert client.get(f"/jobs/{job['id']}/stems/drums/peaks").json()["error"] == "not_found"
    assert client.get(f"/jobs/{job['id']}/stems/secret/peaks").status_code == 422
    assert client.get(f"/jobs/{UNKNOWN}/stems/vocals/peaks").status_code == 404
    assert httpx.get(f"{server.base}/jobs/{job['id']}/stems/vocals/peaks").status_code == 401
    assert client.delete(f"/jobs/{job['id']}").status_code == 204
    assert client.get(f"/jobs/{job['id']}/stems/vocals/peaks").status_code == 404
    assert not (server.data_dir / "jobs" / job["id"]).exists()


def test_page_shell_is_open_and_talks_to_this_server_only(server):
    page = httpx.get(server.base + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    from service.routes.page import UI_FILES
    shell = [page.text]
    for path in (f"/ui/{name}" for name in UI_FILES):
        r = httpx.get(server.base + path)
        assert r.status_code == 200 and r.text
        shell.append(r.text)
    # Everything the page loads is on this server: no absolute URL to another host in the shell.
    for text in shell:
        assert not re.search(r"(src|href)=\"(https?:)?//", text)
        assert "localStorage" not in text
    assert httpx.get(server.base + "/ui/other.js").status_code == 401  # only the shell is open


def test_stream_sends_heartbeats_and_ends_with_the_job(monkeypatch, tmp_path):
    """The stream generator itself (no HTTP): a keep-alive comment while nothing changes, the final event, then
    the end, with the subscription gone. Real Store and hub; the heartbeat period shortened."""
    import asyncio

    from service import events
    from service.config import Config
    from service.context import Services
    from service.metrics import Metrics
    from service.store import Store

    monkeypatch.setattr(events, "HEARTBEAT_S", 0.2)

    async def run():
        svc = Services(cfg=Config(data_dir=tmp_path), runner=None, metrics=Metrics())
        svc.store = Store(tmp_path)
        hub = events.attach(svc, asyncio.get_running_loop())
        svc.store.insert(UNKNOWN, {"stems": ["vocals"]}, {"name": "x"}, "demo")
        svc.store.claim_next("test-worker", 30.0)
        sub = hub.subscribe(UNKNOWN)
        first = hub.event(UNKNOWN)
        sub.state = first["state"]
        chunks, gen = [], events.stream(hub, sub, first)
        chunks.append(await gen.__anext__())
        chunks.append(await asyncio.wait_for(gen.__anext__(), 2))  # nothing changed: a heartbeat
        await asyncio.to_thread(svc.store.update_running, UNKNOWN, progress=0.5, stage="encode")
        chunks.append(await asyncio.wait_for(gen.__anext__(), 2))
        await asyncio.to_thread(svc.store.finish, UNKNOWN, "succeeded", progress=1.0, stage="done",
                                stems=["vocals"])
        chunks.append(await asyncio.wait_for(gen.__anext__(), 2))
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()
        return chunks, hub, svc

    chunks, hub, svc = asyncio.run(run())
    assert chunks[0].startswith(b"retry: 3000\n\nevent: job\ndata: ")
    assert chunks[1] == b": keep-alive\n\n"
    mid = json.loads(chunks[2].split(b"data: ", 1)[1])
    assert mid["progress"] == 0.5 and mid["stage"] == "encode"
    last = json.loads(chunks[3].split(b"data: ", 1)[1])
    assert last["state"] == "succeeded" and last["stems"] == {"vocals": f"/jobs/{UNKNOWN}/stems/vocals"}
    assert hub.subs == {} and svc.metrics.registry.get_sample_value("spark_event_streams") == 0
    svc.store.close()
