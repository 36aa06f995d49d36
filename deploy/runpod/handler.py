"""RunPod serverless worker: the same engine as the HTTP service, one job per request, so a queue of jobs spreads
over as many GPU workers as the endpoint allows.

Job input (see test_input.json):
    url          http(s) URL of the media (a signed storage URL, typically); required
    stems        "vocals,instrumental" (default), "all", or any comma list of vocals, instrumental, drums, bass,
                 other, instrumental2
    format, sample_rate, mono, overlap_large, overlap_small, chunk_size, shifts, single_onnx, use_kim_model_1,
    recipe, high_quality, layout
                 as in the HTTP API (recipe=cinematic: stems among dialog, music, effects, background, background2)
    upload       optional {stem: presigned PUT URL}: each stem is PUT there. Stems without one come back inline
                 (base64), up to RUNPOD_INLINE_MAX_MB (default 15) in all.
Output: {"stems": {stem: {"bytes", "sha256", "filename", and "uploaded": true or "base64"}}, "info", "timings"}.
Errors come back as {"error": "..."} (RunPod marks the job failed).

Environment: SPARK_MODELS_DIR (default: where the engine looks), SPARK_DEVICE (auto), SPARK_GPU_ID (0),
SPARK_MAX_UPLOAD_MB (2048, the input size cap), SPARK_URL_TIMEOUT_S (600), SPARK_ALLOW_PRIVATE_URLS=1 (allow
loopback/private input and upload hosts: local tests only).
Local test: `python handler.py` in a dir with test_input.json, or `python handler.py --test_input '{...}'`.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import shutil
import socket
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from deploy/runpod/
    sys.path.insert(0, str(REPO))

import runpod  # noqa: E402

from mvsep import Options, Separator  # noqa: E402
from mvsep.errors import InputError, ModelPackError, NotInPackError, OptionError  # noqa: E402

ALL_STEMS = ("vocals", "instrumental", "drums", "bass", "other", "instrumental2")
FOUR_STEM_ONLY = {"drums", "bass", "other", "instrumental2"}
OPTION_FIELDS = {"overlap_large": float, "overlap_small": float, "chunk_size": int, "shifts": int,
                 "single_onnx": bool, "use_kim_model_1": bool, "mono": bool, "recipe": str, "layout": str,
                 "high_quality": bool}
CINEMATIC_STEMS = ("dialog", "music", "effects", "background", "background2")
KNOWN = {"url", "stems", "format", "sample_rate", "upload", *OPTION_FIELDS}
CHUNK = 1 << 20

_separator: Separator | None = None


class JobError(Exception):
    """A problem with the job's input: its message goes back to the caller."""


def env_num(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def separator() -> Separator:
    """One engine per worker, kept warm across jobs (models stay resident)."""
    global _separator
    if _separator is None:
        _separator = Separator(model_dir=os.environ.get("SPARK_MODELS_DIR") or None,
                               device=os.environ.get("SPARK_DEVICE") or "auto",
                               gpu_id=int(os.environ.get("SPARK_GPU_ID") or 0))
    return _separator


def check_url(url: str, what: str) -> None:
    """http(s) only; no loopback/private/link-local hosts unless the operator allows them."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JobError(f"{what}: only http(s) URLs are accepted")
    if os.environ.get("SPARK_ALLOW_PRIVATE_URLS") == "1":
        return
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 443)}
    except socket.gaierror as e:
        raise JobError(f"{what}: cannot resolve {parts.hostname}") from e
    for a in addrs:
        ip = ipaddress.ip_address(a.split("%")[0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
            raise JobError(f"{what}: {parts.hostname} is a private or local address")


def parse_options(inp: dict) -> tuple[Options, list[str]]:
    unknown = sorted(set(inp) - KNOWN)
    if unknown:
        raise JobError(f"unknown input field: {unknown[0]}")
    cine = inp.get("recipe") == "cinematic"
    known = CINEMATIC_STEMS if cine else ALL_STEMS
    stems_arg = str(inp.get("stems") or ("all" if cine else "vocals,instrumental")).strip().lower()
    stems = list(known[:5]) if stems_arg == "all" else [s.strip() for s in stems_arg.split(",") if s.strip()]
    for s in stems:
        if s not in known:
            raise JobError(f"stems: unknown stem {s!r} (one of {', '.join(known)} or all)")
    kwargs = {"only_vocals": not (set(stems) & FOUR_STEM_ONLY),
              "output_format": str(inp.get("format") or "wav"),
              "sample_rate": inp.get("sample_rate") or "native"}
    for name, kind in OPTION_FIELDS.items():
        if name in inp:
            value = inp[name]
            if kind is bool and not isinstance(value, bool):
                raise JobError(f"{name}: must be true or false")
            try:
                kwargs[name] = kind(value)
            except (TypeError, ValueError) as e:
                raise JobError(f"{name}: not a {kind.__name__}") from e
    try:
        return Options(**kwargs).validate(), stems
    except OptionError as e:
        raise JobError(str(e)) from e


def download(url: str, dest: Path) -> None:
    limit = int(env_num("SPARK_MAX_UPLOAD_MB", 2048) * CHUNK)
    req = urllib.request.Request(url, headers={"User-Agent": "spark-separation-runpod"})
    try:
        with urllib.request.urlopen(req, timeout=env_num("SPARK_URL_TIMEOUT_S", 600)) as r, open(dest, "wb") as f:
            size = 0
            while block := r.read(CHUNK):
                size += len(block)
                if size > limit:
                    raise JobError(f"url: the input is larger than {limit // CHUNK} MB")
                f.write(block)
    except OSError as e:  # urllib's HTTP and network errors
        raise JobError(f"url: cannot download the input ({e})") from e


def upload(path: Path, url: str) -> None:
    req = urllib.request.Request(url, data=open(path, "rb"), method="PUT",
                                 headers={"Content-Length": str(path.stat().st_size),
                                          "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=env_num("SPARK_URL_TIMEOUT_S", 600)) as r:
            if r.status >= 300:
                raise JobError(f"upload: HTTP {r.status}")
    except OSError as e:
        raise JobError(f"upload: cannot PUT the stem ({e})") from e
    finally:
        req.data.close()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def handler(job: dict) -> dict:
    inp = job.get("input") or {}
    work = Path(tempfile.mkdtemp(prefix="spark-runpod-"))
    try:
        url = inp.get("url")
        if not url:
            raise JobError("url: required")
        check_url(str(url), "url")
        uploads = inp.get("upload") or {}
        if not isinstance(uploads, dict):
            raise JobError("upload: must map stem names to URLs")
        for stem, target in uploads.items():
            check_url(str(target), f"upload.{stem}")
        opts, stems = parse_options(inp)
        name = Path(urllib.parse.urlsplit(url).path).name or "input"
        src = work / "input"
        download(str(url), src)
        if os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):  # only on RunPod; the local test mode has no webhook
            runpod.serverless.progress_update(job, "separating")
        res = separator().separate_file(src, work / "out", opts, name=Path(name).stem)
        out, inline = {}, 0
        for stem in stems:
            path = Path(res.stems[stem])
            entry = {"filename": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)}
            if stem in uploads:
                upload(path, str(uploads[stem]))
                entry["uploaded"] = True
            else:
                inline += entry["bytes"]
                if inline > env_num("RUNPOD_INLINE_MAX_MB", 15) * CHUNK:
                    raise JobError("the stems are too large to return inline: pass upload URLs")
                entry["base64"] = base64.b64encode(path.read_bytes()).decode()
            out[stem] = entry
        info = res.info
        return {"stems": out, "timings": res.timings,
                "info": {"sample_rate": info.sample_rate, "channels": info.channels, "frames": info.frames,
                         "duration": info.duration}}
    except (JobError, InputError, NotInPackError) as e:
        return {"error": str(e)}
    except ModelPackError as e:
        return {"error": f"model pack not ready: {e}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
