"""What a container's start and stop look like from outside, on the real server (127.0.0.1, real uvicorn): a clean
SIGINT, health probes kept out of the access log, and the image's HEALTHCHECK script (scripts/healthcheck.sh)
answering from /ready, so a box that cannot serve (here: SPARK_DEVICE=cuda without a GPU) is unhealthy."""
from __future__ import annotations

import os
import signal
import subprocess

import httpx

from testkit.service import ROOT, TOKEN, Server

HEALTHCHECK = ROOT / "scripts" / "healthcheck.sh"


def healthcheck(srv: Server, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("SPARK_API_TOKEN", "TOKEN_FILE", "SPARK_DATA_DIR")}
    return subprocess.run(["bash", str(HEALTHCHECK)], env={**base, "HOST": "0.0.0.0", "PORT": str(srv.port), **env},
                          capture_output=True, text=True, timeout=30)


def test_sigint_is_a_clean_stop_and_probes_stay_out_of_the_access_log(tmp_path, random_pack):
    srv = Server(tmp_path / "data", random_pack).start()
    try:
        with srv.client() as c:
            for _ in range(3):
                assert httpx.get(srv.base + "/health").status_code == 200
                assert c.get("/ready").status_code == 200
            assert c.get("/status").status_code == 200
        assert httpx.get(srv.base + "/ready").status_code == 401  # a failed probe is still logged
        srv.proc.send_signal(signal.SIGINT)
        assert srv.proc.wait(30) == 0
    finally:
        srv.stop()
    log = srv.log()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert "stopped by SIGINT" in log and "Application shutdown complete" in log
    assert '"GET /status HTTP/1.1" 200' in log
    assert '"GET /ready HTTP/1.1" 401' in log
    assert '"GET /health' not in log and '"GET /ready HTTP/1.1" 200' not in log


def test_the_healthcheck_follows_ready_with_the_token_from_env_or_file(tmp_path, random_pack):
    srv = Server(tmp_path / "data", random_pack).start()
    try:
        r = healthcheck(srv, SPARK_API_TOKEN=TOKEN)
        assert r.returncode == 0 and r.stdout.startswith("/ready 200"), r.stdout + r.stderr
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        assert healthcheck(srv, TOKEN_FILE=str(token_file)).returncode == 0
        r = healthcheck(srv, SPARK_API_TOKEN="wrong")
        assert r.returncode == 1 and "/ready 401" in r.stdout
        assert TOKEN not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    finally:
        srv.stop()
    r = healthcheck(srv, SPARK_API_TOKEN=TOKEN)  # nothing listening
    assert r.returncode == 1 and "no answer on /ready" in r.stdout


def test_a_box_that_cannot_use_its_gpu_is_unhealthy(tmp_path, random_pack):
    srv = Server(tmp_path / "data", random_pack, SPARK_DEVICE="cuda").start(wait_ready=False)
    try:
        with srv.client() as c:
            for _ in range(100):
                body = c.get("/ready").json()
                if body["reason"] != "loading":
                    break
        r = healthcheck(srv, SPARK_API_TOKEN=TOKEN)
    finally:
        srv.stop()
    assert r.returncode == 1
    assert "/ready 503" in r.stdout and "gpu_unusable" in r.stdout and "\\u001b" not in r.stdout
