"""Helpers for the service tests: start the real server (`python server.py`) as a subprocess, make inputs.

No tests here; the test_service*.py modules import it.
"""
from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_wav(path, seconds: float, sr: int = 44100, channels: int = 2, extra_frames: int = 0,
             subtype: str = "PCM_16", seed: int = 0) -> Path:
    """Tones plus a little noise; `extra_frames` makes lengths that are not round numbers."""
    n = int(seconds * sr) + extra_frames
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    x = np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.02 * rng.standard_normal(n)
                  for c in range(channels)], axis=1)
    sf.write(str(path), x.astype(np.float32), sr, subtype=subtype)
    return Path(path)


class Server:
    """The real service on 127.0.0.1 with its own data dir; env overrides on top of the test defaults."""

    def __init__(self, data_dir: Path, models_dir: Path | None, token: str | None = TOKEN, **env):
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), "SPARK_DATA_DIR": str(data_dir),
                    "SPARK_DEVICE": "cpu", "SPARK_DEMO_PACK": "0", "OMP_NUM_THREADS": "1",
                    "PYTHONUNBUFFERED": "1"}
        self.env.pop("SPARK_API_TOKEN", None)
        if token:
            self.env["SPARK_API_TOKEN"] = token
        if models_dir is not None:
            self.env["SPARK_MODELS_DIR"] = str(models_dir)
        self.env.update({k: str(v) for k, v in env.items()})
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.preexec = None  # e.g. a resource.setrlimit call for the server process

    def start(self, wait_ready: bool = True) -> "Server":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=self.preexec)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("server did not answer /health:\n" + self.log())
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while time.monotonic() < deadline:
                r = c.get("/ready")
                if r.status_code == 200:
                    return
                if r.json()["reason"] != "loading":
                    raise RuntimeError(f"server not ready: {r.json()}")
                time.sleep(0.2)
        raise RuntimeError("server not ready in time:\n" + self.log())

    def client(self, timeout: float = 120, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=timeout, **kw)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc:
            self._log.close()


def wait_job(client: httpx.Client, job_id: str, until=("succeeded", "failed", "canceled"),
             timeout: float = 120, check=None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if check:
            check(job)
        if job["state"] in until:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s")


@contextlib.contextmanager
def local_http(handler):
    """A threaded HTTP server with `handler` on 127.0.0.1 (a free port); yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
