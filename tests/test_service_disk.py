"""A full disk under the real server: its data dir is a 4 MB tmpfs (needs root; skipped otherwise).

Uploads and URL downloads that run out of space, and SQLite's "database or disk is full" on POST /jobs and
DELETE, answer 507 `insufficient_storage` JSON, are logged, leave no partial files and harm no other job.
"""
from __future__ import annotations

import http.server
import os
import subprocess

import pytest

from testkit.service import Server, local_http, make_wav, wait_job

BIG = 5 * 2**20  # more than the tmpfs holds, less than SPARK_MAX_UPLOAD_MB


@pytest.fixture(scope="module")
def tmpfs(tmp_path_factory):
    mnt = tmp_path_factory.mktemp("tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture(scope="module")
def server(tmpfs, vocals_pack):
    srv = Server(tmpfs / "data", vocals_pack, SPARK_MAX_UPLOAD_MB=10, SPARK_ALLOW_PRIVATE_URLS=1,
                 SPARK_DISK_RESERVE_MB=0)
    srv.log_path = tmpfs.parent / f"server-{srv.port}.log"  # the log stays off the full disk
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def big_body_url():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(BIG))
            self.end_headers()
            for _ in range(BIG // 65536):
                self.wfile.write(b"\0" * 65536)

        def log_message(self, *a):
            pass

    with local_http(Handler) as base:
        yield f"{base}/big.wav"


def _fill(path, leave: int = 0) -> None:
    """Fill the filesystem of `path` to the last byte, then free `leave` bytes (whole 4 KB pages)."""
    with open(path, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    if leave:
        os.truncate(path, max(0, os.path.getsize(path) - leave))


def _job_dirs(server) -> set[str]:
    return {p.name for p in (server.data_dir / "jobs").iterdir()}


def _is_507(r, full: bool = True) -> dict:
    """507 JSON; `full`: the disk ran out under a write (Retry-After), not a job's estimated need."""
    assert r.status_code == 507, (r.status_code, r.text)
    body = r.json()
    assert body["error"] == "insufficient_storage", body
    if full:
        assert "disk is full" in body["message"] and r.headers["retry-after"].isdigit(), body
    return body


def test_a_full_disk_answers_507_and_harms_no_other_job(server, tmp_path, big_body_url):
    filler = server.data_dir / "filler"
    with server.client() as c:
        clip = make_wav(tmp_path / "a.wav", 0.3)
        done = c.post("/jobs", files={"file": ("a.wav", clip.read_bytes())}, data={"stems": "vocals"}).json()
        assert wait_job(c, done["id"])["state"] == "succeeded"
        vocals = c.get(f"/jobs/{done['id']}/stems/vocals").content
        dirs = _job_dirs(server)

        # An upload larger than the free space (multipart), then a URL body.
        big = tmp_path / "big.wav"
        big.write_bytes(b"RIFF" + b"\0" * (BIG - 4))
        with open(big, "rb") as fh:
            _is_507(c.post("/jobs", files={"file": ("big.wav", fh)}))
        assert _job_dirs(server) == dirs  # no partial upload left
        # A URL job answers 202 at once; its download runs out of space, which /separate answers with.
        failed = _is_507(c.post("/separate", json={"url": big_body_url}), full=False)
        assert c.get(f"/jobs/{failed['job_id']}").json()["state"] == "failed"
        left = {p.name for p in (server.data_dir / "jobs" / failed["job_id"]).iterdir()}
        assert left <= {"job.log"}, left  # no partial download
        dirs = _job_dirs(server)

        # Room for the upload but not for the job's estimated disk need: refused at submit with the figures.
        small = make_wav(tmp_path / "s.wav", 0.2).read_bytes()
        _fill(filler, leave=-(-len(small) // 4096) * 4096 + 8192)
        body = _is_507(c.post("/jobs", files={"file": ("s.wav", small)}), full=False)
        assert body["need_mb"] > body["free_mb"], body
        assert _job_dirs(server) == dirs

        # A completely full disk: reads still work; a URL job cannot write its row, DELETE cannot write its row.
        _fill(filler)
        assert c.get("/health").status_code == 200 and c.get("/status").status_code == 200
        _is_507(c.post("/jobs", json={"url": big_body_url}))
        _is_507(c.delete(f"/jobs/{done['id']}"))
        assert c.get(f"/jobs/{done['id']}").json()["state"] == "succeeded"
        assert c.get(f"/jobs/{done['id']}/stems/vocals").content == vocals

        # Space back: the same calls work, the earlier job is intact, a new job runs.
        filler.unlink()
        again = c.post("/jobs", files={"file": ("s.wav", small)}, data={"stems": "vocals"})
        assert again.status_code == 202, again.text
        assert wait_job(c, again.json()["id"])["state"] == "succeeded"
        assert c.delete(f"/jobs/{done['id']}").status_code == 204
    log = server.log()
    assert "disk full while receiving an upload" in log and "disk full while downloading a URL" in log
    assert "disk full on POST /jobs" in log and "disk full on DELETE" in log
