"""The HTTP service end to end: real uvicorn on 127.0.0.1, real engine on a small toypack, real HTTP."""
from __future__ import annotations

import http.server
import io
import shutil
import subprocess
import time
import zipfile

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch

from testkit.service import TOKEN, Server, local_http, make_wav, wait_job

ROUTES = [("GET", "/ready"), ("GET", "/status"), ("GET", "/metrics"), ("POST", "/separate"), ("POST", "/jobs"),
          ("GET", "/jobs"), ("GET", "/jobs/0123456789abcdef0123456789abcdef"),
          ("GET", "/jobs/0123456789abcdef0123456789abcdef/stems/vocals"),
          ("GET", "/jobs/0123456789abcdef0123456789abcdef/result.zip"),
          ("GET", "/jobs/0123456789abcdef0123456789abcdef/logs"),
          ("DELETE", "/jobs/0123456789abcdef0123456789abcdef"), ("GET", "/docs"), ("GET", "/openapi.json")]


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_pack):
    srv = Server(tmp_path_factory.mktemp("svc") / "data", random_pack, SPARK_ALLOW_PRIVATE_URLS=1,
                 SPARK_MAX_UPLOAD_MB=2, SPARK_MAX_DURATION_S=30, SPARK_URL_TIMEOUT_S=2).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    return {"stereo48": make_wav(d / "song take1.wav", 1.5, sr=48000, channels=2, extra_frames=17),
            "mono22": make_wav(d / "voice.flac", 1.0, sr=22050, channels=1, extra_frames=5, subtype="PCM_16"),
            "long": make_wav(d / "long.wav", 6.0, sr=44100, channels=2), "dir": d}


def _zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_health_is_open_and_every_other_route_needs_the_token(server):
    assert httpx.get(server.base + "/health").json() == {"ok": True}
    for method, path in ROUTES:
        r = httpx.request(method, server.base + path)
        assert r.status_code == 401, (method, path)
        assert "Bearer" in r.headers["www-authenticate"]
        r = httpx.request(method, server.base + path, headers={"Authorization": "Bearer " + TOKEN + "x"})
        assert r.status_code == 401, (method, path)
        r = httpx.request(method, server.base + path, headers={"Authorization": "Bearer " + TOKEN})
        assert r.status_code != 401, (method, path)
    # A browser on /docs: HTTP Basic with the token as password.
    assert httpx.get(server.base + "/docs", auth=("operator", TOKEN)).status_code == 200
    assert httpx.get(server.base + "/docs", auth=("operator", "nope")).status_code == 401


def test_ready_status_openapi(client):
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["pack"] == "real"
    st = client.get("/status").json()
    assert st["device"]["type"] == "cpu" and st["pack"]["state"] == "ready"
    assert st["queue"]["capacity"] == 16 and st["uptime_s"] >= 0 and st["version"]
    spec = client.get("/openapi.json").json()
    for path in ("/separate", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/stems/{stem}",
                 "/jobs/{job_id}/result.zip", "/jobs/{job_id}/logs", "/ready", "/status", "/metrics"):
        assert path in spec["paths"], path
    body = spec["paths"]["/separate"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "stems" in body["multipart/form-data"]["schema"]["properties"]
    assert "Job" in spec["components"]["schemas"]


def test_curl_upload_returns_zip_with_exact_rate_and_length(server, inputs, tmp_path):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    out = tmp_path / "stems.zip"
    subprocess.run(["curl", "-sSf", "-H", f"Authorization: Bearer {TOKEN}", "-F", f"file=@{inputs['stereo48']}",
                    f"{server.base}/separate", "-o", str(out), "-D", str(tmp_path / "headers")],
                   check=True, timeout=120)
    headers = (tmp_path / "headers").read_text().lower()
    assert "x-spark-pack: real" in headers and 'filename="song take1_stems.zip"' in headers
    members = _zip_members(out.read_bytes())
    assert sorted(members) == ["song take1_instrumental.wav", "song take1_vocals.wav"]
    src = sf.info(str(inputs["stereo48"]))
    for data in members.values():
        stem, sr = sf.read(io.BytesIO(data), dtype="float32")
        assert sr == 48000 and stem.shape == (src.frames, 2)  # the input's exact rate and sample count
        assert sf.info(io.BytesIO(data)).subtype == "FLOAT"


def test_one_stem_answers_the_audio_file(client, inputs):
    with open(inputs["mono22"], "rb") as f:
        r = client.post("/separate", files={"file": ("voice.flac", f)},
                        data={"stems": "instrumental", "format": "flac"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/flac" and r.headers["x-spark-pack"] == "real"
    assert 'filename="voice_instrumental.flac"' in r.headers["content-disposition"]
    stem, sr = sf.read(io.BytesIO(r.content))
    assert sr == 22050 and len(stem) == sf.info(str(inputs["mono22"])).frames


def test_all_stems(client, inputs):
    with open(inputs["mono22"], "rb") as f:
        r = client.post("/separate", files={"file": ("mix.wav", f)}, data={"stems": "all", "format": "wav24"})
    assert r.status_code == 200, r.text
    members = _zip_members(r.content)
    assert sorted(members) == [f"mix_{s}.wav" for s in ("bass", "drums", "instrumental", "other", "vocals")]
    frames = sf.info(str(inputs["mono22"])).frames
    for data in members.values():
        info = sf.info(io.BytesIO(data))
        assert (info.samplerate, info.frames, info.subtype) == (22050, frames, "PCM_24")
    # instrumental2 (drums + bass + other) is made over HTTP too, as by the CLI and RunPod (issue 20)
    with open(inputs["mono22"], "rb") as f:
        r = client.post("/separate", files={"file": ("mix.wav", f)}, data={"stems": "instrumental2,drums"})
    assert r.status_code == 200, r.text
    two = {k: sf.read(io.BytesIO(v))[0] for k, v in _zip_members(r.content).items()}
    assert sorted(two) == ["mix_drums.wav", "mix_instrumental2.wav"]
    assert np.abs(two["mix_instrumental2.wav"]).max() > 1e-3


def test_async_submit_poll_download_range_logs(client, inputs):
    with open(inputs["stereo48"], "rb") as f:
        r = client.post("/jobs", files={"file": ("a.wav", f)}, data={"stems": "vocals,instrumental",
                                                                      "format": "wav16"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}" and job["state"] in ("queued", "running")
    assert job["input"] == {"name": "a", "source": "upload", "bytes": inputs["stereo48"].stat().st_size,
                            "duration_s": pytest.approx(1.5 + 17 / 48000), "sample_rate": 48000, "channels": 2,
                            "frames": 72017, "codec": "pcm_s16le", "container": "wav"}
    seen = []
    job = wait_job(client, job["id"], check=lambda j: seen.append((j["state"], j["progress"], j["stage"])))
    assert job["state"] == "succeeded", job
    progress = [p for s, p, _ in seen if s == "running"]
    assert progress == sorted(progress) and all(0 <= p <= 1 for p in progress)
    assert job["progress"] == 1 and job["stage"] == "done" and job["attempts"] == 1
    assert {"decode", "encode", "total"} <= set(job["timings"]) and job["timings"]["total"] > 0
    assert job["stems"] == {s: f"/jobs/{job['id']}/stems/{s}" for s in ("vocals", "instrumental")}
    assert job["expires_at"] and job["result_zip"] == f"/jobs/{job['id']}/result.zip"

    full = client.get(job["stems"]["vocals"])
    assert full.status_code == 200 and full.headers["accept-ranges"] == "bytes"
    assert sf.info(io.BytesIO(full.content)).subtype == "PCM_16"
    part = client.get(job["stems"]["vocals"], headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == full.content[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(full.content)}"
    tail = client.get(job["result_zip"], headers={"Range": "bytes=-50"})
    whole = client.get(job["result_zip"])
    assert tail.status_code == 206 and tail.content == whole.content[-50:]
    assert sorted(_zip_members(whole.content)) == ["a_instrumental.wav", "a_vocals.wav"]
    assert client.get(f"/jobs/{job['id']}/stems/drums").status_code == 404  # not asked, not made

    logs = client.get(f"/jobs/{job['id']}/logs").json()
    assert logs["offset"] == 0 and logs["next_offset"] == len(logs["text"].encode())
    assert "queued: a (upload" in logs["text"] and "stage decode" in logs["text"] and "succeeded" in logs["text"]
    rest = client.get(f"/jobs/{job['id']}/logs", params={"offset": logs["next_offset"]}).json()
    assert rest["text"] == "" and rest["complete"] is True
    assert client.get(f"/jobs/{job['id']}/logs", params={"offset": 5}).json()["text"] == logs["text"][5:]

    listed = client.get("/jobs", params={"state": "succeeded"}).json()["jobs"]
    assert job["id"] in [j["id"] for j in listed]
    metrics = client.get("/metrics").text
    assert 'spark_jobs_total{outcome="succeeded"}' in metrics and "spark_queue_depth" in metrics
    assert "spark_audio_seconds_total" in metrics and 'spark_stage_seconds_count{stage="decode"}' in metrics

    assert client.delete(f"/jobs/{job['id']}").status_code == 204  # a finished job: deleted with its files
    assert client.get(f"/jobs/{job['id']}").status_code == 404


def test_prefer_respond_async_and_wait_false(client, inputs):
    with open(inputs["mono22"], "rb") as f:
        r = client.post("/separate", files={"file": f}, data={"stems": "vocals"},
                        headers={"Prefer": "respond-async"})
    assert r.status_code == 202 and r.json()["state"] in ("queued", "running")
    with open(inputs["mono22"], "rb") as f:
        r2 = client.post("/separate", params={"wait": "false"}, files={"file": f}, data={"stems": "vocals"})
    assert r2.status_code == 202 and r2.headers["location"].startswith("/jobs/")
    for job_id in (r.json()["id"], r2.json()["id"]):
        assert wait_job(client, job_id)["state"] == "succeeded"


def test_cancel_running_and_queued_jobs(server, client, inputs):
    with open(inputs["long"], "rb") as f:
        running = client.post("/jobs", files={"file": f}).json()
    with open(inputs["mono22"], "rb") as f:
        queued = client.post("/jobs", files={"file": f}).json()
    wait_job(client, running["id"], until=("running",))
    while (job := client.get(f"/jobs/{running['id']}").json())["progress"] < 0.05:
        time.sleep(0.05)
    assert job["eta_s"] > 0 and job["stage"] and job["started_at"]
    assert client.get(f"/jobs/{queued['id']}").json()["queue_position"] == 1
    r = client.delete(f"/jobs/{queued['id']}")
    assert r.status_code == 200 and r.json()["state"] == "canceled"
    assert not (server.data_dir / "jobs" / queued["id"]).exists()
    r = client.delete(f"/jobs/{running['id']}")
    assert r.status_code == 200 and r.json()["state"] == "canceled"
    t0 = time.monotonic()
    while (server.data_dir / "jobs" / running["id"]).exists():  # the worker stops within one window
        assert time.monotonic() - t0 < 30
        time.sleep(0.1)
    final = client.get(f"/jobs/{running['id']}").json()
    assert (final["state"], final["stage"], final["stems"]) == ("canceled", "canceled", {})
    assert client.get(f"/jobs/{running['id']}/stems/vocals").status_code == 409
    assert client.get("/status").json()["queue"] == {"queued": 0, "running": 0, "capacity": 16, "current": None}


ERROR_CASES = [
    ({"bogus": "1"}, 422, "invalid_option", "bogus"),
    ({"stems": "vocals,guitar"}, 422, "invalid_option", "stems"),
    ({"format": "ogg"}, 422, "invalid_option", "format"),
    ({"sample_rate": "48000"}, 422, "invalid_option", "sample_rate"),
    ({"overlap_large": "1.5"}, 422, "invalid_option", "overlap_large"),
    ({"chunk_size": "5"}, 422, "invalid_option", "chunk_size"),
    ({"mono": "maybe"}, 422, "invalid_option", "mono"),
    ({"precision": "fp8"}, 422, "invalid_option", "precision"),
    pytest.param({"precision": "fp16"}, 422, "invalid_option", "precision",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused without CUDA only")),
]


@pytest.mark.parametrize("fields,status,code,field", ERROR_CASES)
def test_bad_options_name_the_field(client, inputs, fields, status, code, field):
    with open(inputs["mono22"], "rb") as f:
        r = client.post("/jobs", files={"file": f}, data=fields)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body.get("field") == field and "Traceback" not in r.text


def test_bad_inputs(client, inputs, tmp_path):
    def post(name, data, **kw):
        return client.post("/jobs", files={"file": (name, data)}, **kw)

    r = post("notes.txt", b"hello, this is not audio at all" * 10)
    assert r.status_code in (415, 422) and r.json()["error"] in ("unsupported_media", "bad_input")
    r = post("empty.wav", b"")
    assert r.status_code == 422 and "empty" in r.json()["message"]
    truncated = inputs["stereo48"].read_bytes()[:44]  # a WAV header and no samples
    r = post("zero.wav", truncated)
    assert r.status_code in (415, 422), r.text
    r = post("big.wav", b"\0" * (2 * 2**20 + 10))  # SPARK_MAX_UPLOAD_MB=2
    assert r.status_code == 413 and r.json()["limit_bytes"] == 2 * 2**20
    long = make_wav(tmp_path / "long.wav", 40, sr=8000, channels=1)  # SPARK_MAX_DURATION_S=30
    r = post("long.wav", long.read_bytes())
    assert r.status_code == 413 and r.json()["error"] == "too_long" and r.json()["limit_s"] == 30
    r = client.post("/jobs", data={"stems": "vocals"})  # urlencoded without url
    assert r.status_code == 422 and r.json()["field"] == "file"
    r = client.post("/jobs", content=b"raw", headers={"content-type": "application/octet-stream"})
    assert r.status_code == 415
    r = client.post("/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    for r in (client.post("/jobs", json={"url": "ftp://example.com/a.wav"}),
              client.post("/jobs", json={"url": "file:///etc/passwd"})):
        assert r.status_code == 422 and r.json()["field"] == "url"


def test_ids_and_names_never_become_paths(server, client, inputs):
    for path in ("/jobs/..%2F..%2Fetc%2Fpasswd", "/jobs/../../etc/passwd", "/jobs/ABC",
                 "/jobs/0123456789abcdef0123456789abcdef", "/jobs/0123456789abcdef0123456789abcdef/logs",
                 "/jobs/..%2Fspark.db/result.zip"):
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code)
    r = client.get("/jobs/0123456789abcdef0123456789abcdef/stems/..%2F..%2Fspark.db")
    assert r.status_code == 404
    r = client.get("/jobs/0123456789abcdef0123456789abcdef/stems/guitar")
    assert r.status_code == 422 and r.json()["field"] == "stem"  # stems are a fixed set
    with open(inputs["mono22"], "rb") as f:
        r = client.post("/jobs", files={"file": ("../../../etc/evil name?.wav", f)}, data={"stems": "vocals"})
    assert r.status_code == 202
    job = wait_job(client, r.json()["id"])
    assert job["input"]["name"] == "evil name"
    dl = client.get(job["stems"]["vocals"])
    assert 'filename="evil name_vocals.wav"' in dl.headers["content-disposition"]
    names = {p.name for p in (server.data_dir / "jobs" / job["id"]).iterdir()}
    # each stem is stored once, inside the zip (peaks: the waveforms' cache, service/peaks.py)
    assert names - {"peaks"} == {"job.log", "result.zip"}


@pytest.fixture()
def media_server(inputs):
    """A local HTTP server for URL inputs (with a redirect)."""
    directory = str(inputs["dir"])

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=directory, **kw)

        def do_GET(self):
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/voice.flac")
                self.end_headers()
                return
            if self.path in ("/slow", "/big"):  # a trickle past the time cap; a body past the size cap
                self.send_response(200)
                self.end_headers()
                for _ in range(40 if self.path == "/slow" else 3):
                    try:
                        self.wfile.write(b"\0" * (1000 if self.path == "/slow" else 2**20))
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(0.1 if self.path == "/slow" else 0)
                return
            super().do_GET()

        def log_message(self, *a):
            pass

    with local_http(Handler) as base:
        yield base


def test_url_input_from_a_local_server(server, client, media_server, inputs):
    r = client.post("/jobs", json={"url": media_server + "/redirect", "stems": "vocals"})
    assert r.status_code == 202, r.text  # at once: the download runs in the job
    assert r.json()["input"]["source"] == "url" and r.json()["state"] in ("downloading", "queued", "running")
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "succeeded" and job["input"]["name"] == "voice"
    stem, sr = sf.read(io.BytesIO(client.get(job["stems"]["vocals"]).content))
    assert sr == 22050 and len(stem) == sf.info(str(inputs["mono22"])).frames
    r = client.post("/separate", data={"url": media_server + "/missing.wav"})  # multipart-free form post
    assert r.status_code == 422 and "404" in r.json()["message"] and r.json()["job_id"]

    def failed(url):  # the job fails with the code the request itself answered before downloads were async
        r = client.post("/jobs", json={"url": url})
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"])
        assert job["state"] == "failed" and not job["stems"]
        left = (server.data_dir / "jobs" / job["id"]).iterdir()
        assert sorted(p.name for p in left if p.name != "peaks") == ["job.log"]
        return job["error"]

    err = failed("http://127.0.0.1:1/a.wav")  # nothing listens there
    assert err["status"] == 502 and err["code"] == "url_unreachable"
    err = failed(media_server + "/big")  # no Content-Length, 3 MB > 2 MB
    assert err["status"] == 413 and err["code"] == "too_large"
    t0 = time.monotonic()
    err = failed(media_server + "/slow")  # SPARK_URL_TIMEOUT_S=2
    assert err["status"] == 504 and err["code"] == "url_timeout" and time.monotonic() - t0 < 5
