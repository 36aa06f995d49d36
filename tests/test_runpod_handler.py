"""The RunPod serverless worker (deploy/runpod/handler.py): the runpod package's real local mode in a subprocess,
and the handler in process, against real local servers on 127.0.0.1: the Range/PUT test server, a webhook that
records RunPod progress updates, and moto's S3 server for RunPod's bucket upload convention."""
from __future__ import annotations

import asyncio
import hashlib
import http.server
import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import numpy as np
import pytest
import soundfile as sf

from test_bootchain import Server as FileServer
from test_bootchain import free_port

pytest.importorskip("runpod")

REPO = Path(__file__).resolve().parents[1]
HANDLER = REPO / "deploy" / "runpod" / "handler.py"
RATE, FRAMES = 22050, 33075


def load_handler():
    spec = importlib.util.spec_from_file_location("spark_runpod_handler", HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    t = np.arange(FRAMES) / RATE
    clip = np.stack([0.3 * np.sin(2 * np.pi * 330 * t), 0.3 * np.sin(2 * np.pi * 550 * t)], axis=1)
    sf.write(d / "test_clip.wav", clip.astype(np.float32), RATE, subtype="FLOAT")
    return d


@pytest.fixture(scope="module")
def file_server(files, tmp_path_factory):
    srv = FileServer(files, tmp_path_factory.mktemp("srv"))
    yield srv
    srv.stop()


@pytest.fixture
def handler_module(monkeypatch, vocals_pack):
    for k in list(os.environ):
        if k.startswith(("RUNPOD_", "BUCKET_", "SPARK_")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("SPARK_MODELS_DIR", str(vocals_pack))
    monkeypatch.setenv("SPARK_DEVICE", "cpu")
    return load_handler()


def run_handler(cwd: Path, pack: Path, *args: str, **extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "BUCKET_", "SPARK_"))}
    env.update({"SPARK_MODELS_DIR": str(pack), "SPARK_DEVICE": "cpu", "SPARK_ALLOW_PRIVATE_URLS": "1",
                "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra})
    # one stream, in order: the SDK prints to stdout, the worker logs to stderr
    return subprocess.run([sys.executable, str(HANDLER), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)


class Webhook:
    """Records what the runpod SDK POSTs to RUNPOD_WEBHOOK_POST_OUTPUT (its progress updates)."""

    def __init__(self):
        self.posts: list[dict] = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.posts.append({"query": parse_qs(self.path.partition("?")[2]), "body": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_local_mode_warms_before_the_job_puts_a_stem_and_reports_progress(file_server, files, random_pack,
                                                                          tmp_path):
    hook = Webhook()
    try:
        job = {"input": {"url": f"{file_server.url}/test_clip.wav", "stems": "vocals,instrumental", "format": "flac",
                         "upload": {"vocals": f"{file_server.url}/uploads/vocals.flac"}}}
        r = run_handler(tmp_path, random_pack, "--test_input", json.dumps(job),
                        RUNPOD_WEBHOOK_POST_OUTPUT=f"{hook.url}/done?id=$ID", RUNPOD_PROGRESS_S="0")
    finally:
        hook.stop()
    out = r.stdout
    assert r.returncode == 0, out
    assert "completed successfully" in out
    # models were loaded and warmed before the worker took its first job
    assert out.index("models of the default job warm on cpu") < out.index("--- Starting Serverless Worker")
    # vocals PUT to the presigned-style URL through the service's guard; instrumental inline
    assert {"path": "/uploads/vocals.flac", "range": None, "status": 201} in file_server.requests()
    data, sr = sf.read(files / "uploads" / "vocals.flac")
    assert sr == RATE and data.shape == (FRAMES, 2)
    assert "'uploaded': 'put'" in out and "'base64': '" in out
    # RunPod progress updates reached the webhook: IN_PROGRESS with stage and fraction, download first
    stages = [p["body"]["output"]["stage"] for p in hook.posts if p["body"].get("status") == "IN_PROGRESS"]
    assert stages[0] == "download" and "upload" in stages and "decode" in stages, stages
    assert all(0 <= p["body"]["output"]["progress"] <= 1 for p in hook.posts if p["body"].get("status"))


def test_documented_test_input_and_refusals(file_server, files, random_pack, tmp_path):
    """deploy/runpod/test_input.json as shipped (it names the example clip on 127.0.0.1:8000): here pointed at the
    test server. Then the worker without SPARK_ALLOW_PRIVATE_URLS refuses that loopback URL."""
    (files / "dialog_over_music.flac").write_bytes((REPO / "examples/dialog_over_music.flac").read_bytes())
    text = (REPO / "deploy/runpod/test_input.json").read_text().replace("http://127.0.0.1:8000", file_server.url)
    (tmp_path / "test_input.json").write_text(text)
    r = run_handler(tmp_path, random_pack)
    assert r.returncode == 0, r.stdout
    assert "'base64': '" in r.stdout
    r = run_handler(tmp_path, random_pack, SPARK_ALLOW_PRIVATE_URLS="0")
    assert r.returncode != 0 and "SPARK_ALLOW_PRIVATE_URLS=1" in r.stdout


def test_worker_refuses_to_start_without_the_gpu_it_was_told_to_use(random_pack, tmp_path):
    r = run_handler(tmp_path, random_pack, "--test_input", '{"input": {"url": "http://127.0.0.1:9/x.wav"}}',
                    SPARK_DEVICE="cuda")
    assert r.returncode != 0
    assert "not starting: SPARK_DEVICE=cuda and torch cannot use the GPU (cpu_build" in r.stdout
    r = run_handler(tmp_path, random_pack, BUCKET_ENDPOINT_URL="http://127.0.0.1:9")
    assert r.returncode != 0 and "BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY is not" in r.stdout


def test_bucket_upload_to_a_real_s3_server(handler_module, file_server, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    port = free_port()
    s3 = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    s3.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("BUCKET_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("BUCKET_ACCESS_KEY_ID", "test-key")
        monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", "test-secret")
        monkeypatch.setenv("BUCKET_NAME", "spark-stems")
        monkeypatch.setenv("SPARK_ALLOW_PRIVATE_URLS", "1")
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test-key", aws_secret_access_key="test-secret",
                     region_name="us-east-1").create_bucket(Bucket="spark-stems")
        job = {"id": "job-123", "input": {"url": f"{file_server.url}/test_clip.wav", "format": "wav16"}}
        out = asyncio.run(handler_module.handler(job))
        assert "error" not in out, out
        for stem in ("vocals", "instrumental"):
            entry = out["stems"][stem]
            assert entry["uploaded"] == "bucket" and "base64" not in entry
            assert f"/spark-stems/job-123/{entry['filename']}" in entry["url"]
            got = httpx.get(entry["url"], timeout=30)  # the presigned GET the caller would use
            assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == entry["sha256"]
    finally:
        s3.stop()


def test_inline_cap_and_guarded_uploads(handler_module, file_server, monkeypatch, tmp_path):
    monkeypatch.setenv("SPARK_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("RUNPOD_INLINE_MAX_MB", "0.01")
    job = {"id": "j1", "input": {"url": f"{file_server.url}/test_clip.wav"}}
    out = asyncio.run(handler_module.handler(job))
    assert "over the inline cap of 0.01 MB" in out["error"] and "BUCKET_ENDPOINT_URL" in out["error"]
    for upload, message in [({"vocals": "ftp://example.com/x"}, "upload.vocals: only http and https"),
                            ({"drums": f"{file_server.url}/d"}, "upload.drums: not one of the requested stems"),
                            ("http://x", "upload: must map stem names to URLs")]:
        out = asyncio.run(handler_module.handler({"id": "j2", "input": {"url": "http://127.0.0.1:9/x", "upload":
                                                                             upload}}))
        assert message in out["error"], out
    # without the operator's permission, a loopback PUT target is refused by the service's guard (no packet sent)
    monkeypatch.delenv("SPARK_ALLOW_PRIVATE_URLS")
    stem = tmp_path / "vocals.wav"
    stem.write_bytes(b"RIFF")
    with pytest.raises(handler_module.ApiError, match="SPARK_ALLOW_PRIVATE_URLS=1"):
        asyncio.run(handler_module.put_stem(stem, f"{file_server.url}/uploads/x.wav", "upload.vocals"))
    out = asyncio.run(handler_module.handler({"id": "j3", "input": {"url": f"{file_server.url}/test_clip.wav"}}))
    assert "SPARK_ALLOW_PRIVATE_URLS=1" in out["error"]
