"""The pipeline client (client/spark_client) against the real server: the `spark` command and the library, a
download cut in the middle by a loopback proxy, a full queue answering 429."""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

from testkit.service import TOKEN, Server, free_port, make_wav, wait_job

spark_client = pytest.importorskip("spark_client", reason="pip install -e ./client (setup.sh does)")
from spark_client import Client, Unavailable  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_pack):
    srv = Server(tmp_path_factory.mktemp("client") / "data", random_pack, SPARK_ALLOW_PRIVATE_URLS=1).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    (d / "folder").mkdir()
    return {"a": make_wav(d / "folder" / "scene one.wav", 1.0, extra_frames=11),
            "b": make_wav(d / "folder" / "scene two.flac", 0.7, sr=48000, seed=1),
            "c": make_wav(d / "single.wav", 1.2, channels=1, seed=2),
            "mid": make_wav(d / "mid.wav", 4.0), "long": make_wav(d / "long.wav", 25.0),
            "folder": d / "folder", "dir": d}


def spark(server, *args, token=TOKEN, timeout=120) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPARK_SERVER": server.base if hasattr(server, "base") else server}
    env.pop("SPARK_API_TOKEN", None)
    if token:
        env["SPARK_API_TOKEN"] = token
    r = subprocess.run([sys.executable, "-m", "spark_client", *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert TOKEN not in r.stdout + r.stderr  # the token is never echoed
    return r


class Proxy:
    """A loopback TCP proxy to the server that records requests and can cut one response after N bytes."""

    def __init__(self, port: int, cut_after: int | None = None, match: bytes = b""):
        self.target, self.cut_after, self.match = port, cut_after, match
        self.sent: list[bytes] = []  # everything each connection sent to the server
        self.cuts = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target))
            conn = {"armed": False, "sent": bytearray()}
            self.sent.append(conn["sent"])
            threading.Thread(target=self._pump_up, args=(down, up, conn), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(up, down, conn), daemon=True).start()

    def _pump_up(self, down, up, conn):
        try:
            while data := down.recv(65536):
                conn["sent"] += data
                if self.cut_after is not None and self.cuts == 0 and self.match in data:
                    conn["armed"] = True
                up.sendall(data)
        except OSError:
            pass
        finally:
            up.close()

    def _pump_down(self, up, down, conn):
        passed = 0
        try:
            while data := up.recv(16384):
                if conn["armed"]:
                    if passed + len(data) >= self.cut_after:
                        down.sendall(data[: self.cut_after - passed])
                        self.cuts += 1
                        conn["armed"] = False
                        down.shutdown(socket.SHUT_RDWR)
                        return
                    passed += len(data)
                down.sendall(data)
        except OSError:
            pass
        finally:
            down.close()

    def requests(self, method: str, path_part: str) -> list[dict]:
        """Request heads (as header dicts) with this method whose path contains path_part."""
        out = []
        for data in self.sent:
            for m in re.finditer(rb"(GET|POST|DELETE) (\S+) HTTP/1.1\r\n(.*?)\r\n\r\n", bytes(data), re.S):
                if m.group(1).decode() == method and path_part in m.group(2).decode():
                    out.append({k.lower(): v for k, _, v in (line.decode().partition(": ")
                                                             for line in m.group(3).split(b"\r\n"))})
        return out

    def close(self):
        self.sock.close()


def test_separate_files_a_folder_json_and_cleanup(server, media, tmp_path):
    out = tmp_path / "stems"
    r = spark(server, "separate", str(media["folder"]), str(media["c"]), "--out", str(out), "--format", "flac",
              "--stems", "vocals,instrumental", "--json")
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    assert [x["name"] for x in results] == ["scene one", "scene two", "single"]
    for res, src in zip(results, (media["a"], media["b"], media["c"])):
        assert res["state"] == "succeeded" and set(res["files"]) == {"vocals", "instrumental"}
        for path in res["files"].values():
            assert path.startswith(str(out / res["name"])) and path.endswith(".flac")
            info, src_info = sf.info(path), sf.info(str(src))
            assert info.frames == src_info.frames and info.samplerate == src_info.samplerate
    with server.client() as c:  # jobs deleted once downloaded (no --keep)
        ids = {j["id"] for j in c.get("/jobs").json()["jobs"]}
    assert not ids & {x["job_id"] for x in results}
    # Not --json: one line per input with its files.
    r = spark(server, "separate", str(media["c"]), "--out", str(tmp_path / "again"), "--keep")
    assert r.returncode == 0 and str(tmp_path / "again" / "single" / "vocals.wav") in r.stdout


def test_submit_list_wait_download_cancel(server, media, tmp_path):
    r = spark(server, "submit", str(media["a"]), str(media["c"]), "--stems", "vocals")
    assert r.returncode == 0, r.stderr
    ids = r.stdout.split()
    assert len(ids) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    r = spark(server, "wait", *ids)
    assert r.returncode == 0 and r.stdout.split() == [ids[0], "succeeded", ids[1], "succeeded"]
    listed = json.loads(spark(server, "list", "--json", "--state", "succeeded").stdout)
    assert set(ids) <= {j["id"] for j in listed}
    r = spark(server, "download", ids[0], "--out", str(tmp_path / "z"), "--zip", "--json")
    assert r.returncode == 0
    (zpath,) = json.loads(r.stdout)
    assert zpath == str(tmp_path / "z" / "scene one" / "stems.zip")
    assert zipfile.ZipFile(zpath).namelist() == ["scene one_vocals.wav"]
    r = spark(server, "download", ids[1], "--out", str(tmp_path / "s"))
    assert r.returncode == 0 and r.stdout.strip() == str(tmp_path / "s" / "single" / "vocals.wav")
    assert sf.info(r.stdout.strip()).frames == sf.info(str(media["c"])).frames
    assert spark(server, "cancel", *ids).stdout.split() == [ids[0], "deleted", ids[1], "deleted"]
    # A running job canceled from another shell: `wait` says so with its own exit code.
    job_id = spark(server, "submit", str(media["long"])).stdout.strip()
    waiter = subprocess.Popen([sys.executable, "-m", "spark_client", "wait", job_id, "--json"],
                              env={**os.environ, "SPARK_SERVER": server.base, "SPARK_API_TOKEN": TOKEN},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    assert spark(server, "cancel", job_id).returncode == 0
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 7, err
    assert json.loads(out)[0]["state"] == "canceled"


def test_exit_codes_per_failure_kind(server, media, tmp_path):
    r = spark(server, "list", token="wrong-token")
    assert r.returncode == 3 and "token" in r.stderr
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio\n" * 50)
    r = spark(server, "submit", str(bad), "--json")
    assert r.returncode == 4 and json.loads(r.stdout)["status"] == 415
    r = spark(server, "submit", str(media["c"]), "--stems", "vocals,guitar")
    assert r.returncode == 4 and "stems" in r.stderr
    assert spark(server, "wait", "0" * 32).returncode == 8
    t0 = time.monotonic()
    r = spark(f"http://127.0.0.1:{free_port()}", "list", "--retries", "2")
    assert r.returncode == 5 and "cannot reach" in r.stderr and r.stderr.count("retrying") == 2
    assert time.monotonic() - t0 < 30
    assert spark(server, "list", "--no-such-flag").returncode == 2


def test_download_resumes_after_a_cut_connection(server, media, tmp_path):
    with Client(server.base, TOKEN) as direct:
        job = direct.wait(direct.submit(media["mid"], {"format": "wav"})["id"])
        whole = direct.http.get(f"/jobs/{job['id']}/result.zip").content
    assert len(whole) > 1_000_000
    proxy = Proxy(server.port, cut_after=400_000, match=b"result.zip")
    retries = []
    try:
        with Client(proxy.base, TOKEN, backoff=0.1, on_retry=lambda why, d: retries.append(why)) as c:
            seen = []
            path = c.download(job["id"], tmp_path, progress=lambda done, total: seen.append((done, total)))
    finally:
        proxy.close()
    assert proxy.cuts == 1 and retries and "resuming" in retries[0]
    assert path.name == "mid_stems.zip" and path.read_bytes() == whole
    assert not list(tmp_path.glob("*.part"))
    gets = proxy.requests("GET", "result.zip")
    assert len(gets) == 2 and "range" not in gets[0]
    start = int(gets[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start < 400_000 and gets[1]["if-range"]  # resumed from the bytes kept, same file version
    assert seen[-1] == (len(whole), len(whole))


def test_full_queue_429_is_retried_after_retry_after_with_one_idempotency_key(tmp_path, random_pack, media):
    srv = Server(tmp_path / "data", random_pack, SPARK_QUEUE_SIZE=1).start()
    proxy = Proxy(srv.port)
    try:
        with srv.client() as c:
            running = c.post("/jobs", files={"file": ("long.wav", open(media["long"], "rb"))}).json()
            wait_job(c, running["id"], until=("running",))
            queued = c.post("/jobs", files={"file": ("long.wav", open(media["long"], "rb"))}).json()
            assert c.post("/jobs", files={"file": ("c.wav", open(media["c"], "rb"))}).status_code == 429
            # The command gives up when told not to wait: exit 5, the reason on stderr.
            r = spark(srv, "submit", str(media["c"]), "--max-wait", "0")
            assert r.returncode == 5 and "queue is full" in r.stderr

            retried = []

            def on_retry(why, delay):
                retried.append((why, delay))
                c.delete(f"/jobs/{queued['id']}")  # room in the queue for the retry

            with Client(proxy.base, TOKEN, on_retry=on_retry, max_wait=6) as client:  # max_wait caps the pause
                job = client.submit(media["c"], {"stems": "vocals"})
            assert len(retried) == 1 and "429" in retried[0][0] and 5 <= retried[0][1] <= 6  # Retry-After >= 5
            posts = proxy.requests("POST", "/jobs")
            assert len(posts) == 2 and posts[0]["idempotency-key"] == posts[1]["idempotency-key"]
            assert job["state"] in ("queued", "running")
            for j in (running, job):
                c.delete(f"/jobs/{j['id']}")
    finally:
        proxy.close()
        srv.stop()


def test_library_separate_upload_progress_url_and_unreachable_server(server, media, tmp_path):
    with Client(server.base, TOKEN) as c:
        updates = []
        files = c.separate(media["a"], tmp_path, {"stems": ["vocals", "instrumental"]}, on_update=updates.append)
        assert set(files) == {"vocals", "instrumental"} and all(p.is_file() for p in files.values())
        assert updates[-1]["state"] == "succeeded" and len(updates) >= 2
        sent = []
        job = c.submit(media["long"], {"stems": "vocals"}, progress=lambda done, total: sent.append((done, total)))
        size = media["long"].stat().st_size
        assert sent[-1] == (size, size) and len(sent) > 10  # streamed in chunks, reported as it goes
        c.cancel(job["id"])
        # A URL input, served by a local web server.
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(media["dir"]))
        with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as web:
            threading.Thread(target=web.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{web.server_address[1]}/single.wav"
            files = c.separate(url, tmp_path / "from_url", {"stems": "vocals"})
            web.shutdown()
        assert sf.info(str(files["vocals"])).frames == sf.info(str(media["c"])).frames
    with Client(f"http://127.0.0.1:{free_port()}", TOKEN, retries=1, backoff=0.05) as c:
        with pytest.raises(Unavailable):
            c.jobs()


def job_count(server) -> int:
    with server.client() as c:
        return len(c.get("/jobs").json()["jobs"])


def test_local_input_problems_exit_10_before_any_upload(server, media, tmp_path):
    empty, junk = tmp_path / "empty", tmp_path / "junk"
    empty.mkdir()
    junk.mkdir()
    (junk / "readme.txt").write_text("no media here")
    before = job_count(server)
    cases = [(["submit", str(tmp_path / "missing.wav")], "missing.wav: no such file or folder"),
             (["separate", str(tmp_path / "missing.wav"), "--out", str(tmp_path / "o")], "no such file or folder"),
             (["separate", str(empty), "--out", str(tmp_path / "o")], "empty: no media files in this folder"),
             (["submit", str(junk)], "junk: no media files in this folder"),
             # a good input first: nothing is uploaded when a later one is missing
             (["submit", str(media["c"]), str(tmp_path / "gone.flac")], "gone.flac: no such file or folder")]
    for args, words in cases:
        r = spark(server, *args)
        assert r.returncode == 10, (args, r.returncode, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = spark(server, "submit", str(tmp_path / "missing.wav"), "--json")
    assert r.returncode == 10 and json.loads(r.stdout)["error"] == "InputMissing"
    assert job_count(server) == before  # nothing reached the server
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "locked.wav"
        locked.write_bytes(media["c"].read_bytes())
        locked.chmod(0)
        r = spark(server, "submit", str(locked))
        assert r.returncode == 10 and "cannot read it" in r.stderr
    r = spark(server, "submit", "/dev/null")
    assert r.returncode == 10 and "not a regular file" in r.stderr
    assert "10 a local input is" in spark(server, "--help").stdout.replace("\n", " ")


def test_a_closed_stdout_ends_quietly(server, media):
    env = {**os.environ, "SPARK_SERVER": server.base, "SPARK_API_TOKEN": TOKEN}
    for args in (["list", "--json"], ["recipes"], ["list"]):
        p = subprocess.Popen([sys.executable, "-m", "spark_client", *args], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        p.stdout.close()  # the reader is gone before the first line (`spark list --json | head -0`)
        err = p.stderr.read()
        assert p.wait(30) == 141 and err == "", (args, err)


def test_separate_and_download_write_one_layout(server, media, tmp_path):
    r = spark(server, "separate", str(media["c"]), "--out", str(tmp_path / "a"), "--keep", "--json")
    assert r.returncode == 0, r.stderr
    (res,) = json.loads(r.stdout)
    r = spark(server, "download", res["job_id"], "--out", str(tmp_path / "b"), "--json")
    assert r.returncode == 0, r.stderr
    sep = sorted(str(Path(p).relative_to(tmp_path / "a")) for p in res["files"].values())
    down = sorted(str(Path(p).relative_to(tmp_path / "b")) for p in json.loads(r.stdout))
    assert sep == down == ["single/instrumental.wav", "single/vocals.wav"]
    # again into the same folder: a new folder, nothing overwritten
    r = spark(server, "download", res["job_id"], "--out", str(tmp_path / "b"), "--stem", "vocals")
    assert r.stdout.strip() == str(tmp_path / "b" / f"single_{res['job_id'][:8]}" / "vocals.wav")
    spark(server, "cancel", res["job_id"])


@pytest.fixture(scope="module")
def film_server(tmp_path_factory):
    """A pack with the vocals models and the default cinematic checkpoint: no 4 stems, no high_quality."""
    from testkit import toypack
    pack = toypack.build_pack(tmp_path_factory.mktemp("film_pack"), kind="random", stems="vocals")
    toypack.build_cinematic(pack, files=(toypack.CINEMATIC_FILES[1],))
    srv = Server(tmp_path_factory.mktemp("film") / "data", pack, SPARK_MAX_UPLOAD_MB=1).start()
    yield srv
    srv.stop()


def test_recipes_and_their_options_from_the_catalogue(film_server, media, tmp_path):
    srv = film_server
    # Help lists each recipe's stems, read from the server (only what its pack can make).
    r = spark(srv, "separate", "--help")
    assert r.returncode == 0
    assert "mdx23: vocals, instrumental\n" in r.stdout, r.stdout
    assert "cinematic: dialog, music, effects, background, background2" in r.stdout
    for flag in ("--recipe", "--layout", "--high-quality", "--sample-rate", "--mono", "--precision"):
        assert flag in r.stdout
    offline = spark(f"http://127.0.0.1:{free_port()}", "submit", "--help")  # no server: the built-in list
    assert offline.returncode == 0 and "cinematic: dialog, music, effects" in offline.stdout
    r = spark(srv, "recipes")
    assert r.returncode == 0 and "drums  (unavailable: the installed pack lacks" in r.stdout, r.stdout
    assert "option high_quality=False" in r.stdout and "limits: 1 MB" in r.stdout
    with Client(srv.base, TOKEN) as direct:
        served = [x["name"] for x in direct.catalogue()["recipes"]]
    listed = [x["name"] for x in json.loads(spark(srv, "recipes", "--json").stdout)["recipes"]]
    assert listed == served and {"mdx23", "cinematic", "mel-roformer"} <= set(listed)  # the server's catalogue

    # What the catalogue rules out is refused before the upload (exit 4), in plain words.
    before = job_count(srv)
    for args, words in ((["--recipe", "karaoke"], "recipe karaoke: this server offers mdx23, "),
                        (["--recipe", "cinematic", "--stems", "vocals"], "stems: vocals not made by recipe cinematic"),
                        (["--stems", "vocals,drums"], "stem drums: the installed pack lacks"),
                        ([str(media["long"])], "this server takes files up to 1 MB"),
                        (["--set", "high_quality=true"], "--set high_quality: not an option of recipe mdx23"),
                        (["--set", "overlap_large"], "--set overlap_large: expected NAME=VALUE")):
        r = spark(srv, "submit", str(media["c"]), *args)
        assert r.returncode == 4 and words in r.stderr and "Value error" not in r.stderr, (args, r.stderr)
    assert job_count(srv) == before
    # The server's own refusal (high_quality needs files this pack lacks) arrives as exit 4 too.
    r = spark(srv, "submit", str(media["c"]), "--recipe", "cinematic", "--high-quality")
    assert r.returncode == 4 and "97d170e1-a778de4a.th" in r.stderr, r.stderr

    # The film options reach the job.
    r = spark(srv, "separate", str(media["c"]), "--out", str(tmp_path), "--recipe", "cinematic", "--stems",
              "dialog,background", "--layout", "stereo", "--sample-rate", "44100", "--mono", "--format", "flac",
              "--set", "shifts=0", "--keep", "--json")
    assert r.returncode == 0, r.stderr
    (res,) = json.loads(r.stdout)
    assert sorted(res["files"]) == ["background", "dialog"]
    info = sf.info(res["files"]["dialog"])
    assert info.channels == 1 and info.samplerate == 44100 and info.format == "FLAC"
    with srv.client() as c:
        opts = c.get(f"/jobs/{res['job_id']}").json()["options"]
    assert opts["recipe"] == "cinematic" and opts["layout"] == "stereo" and opts["mono"] is True
    assert opts["shifts"] == 0  # --set reaches the job


def test_the_eta_is_withheld_until_steady():
    from spark_client.cli import SteadyEta
    now = [0.0]
    eta = SteadyEta(clock=lambda: now[0])
    swing = []
    for raw in (30, 45, 70, 110, 150, 190, 220):  # the climb on a 150 s file, one estimate per 2 s
        swing.append(eta.words(raw))
        now[0] += 2
    assert set(swing) == {"estimating the time left"}
    eta, shown = SteadyEta(clock=lambda: now[0]), []
    for raw in (600, 560, 640, 570, 590, 610, 560, 580, 600):
        shown.append(eta.words(raw))
        now[0] += 2
    assert shown[:3] == ["estimating the time left"] * 3 and set(shown[3:]) == {"about 8-12 min left"}, shown
    assert eta.words(None) == ""
