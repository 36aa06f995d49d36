"""RunPod serverless worker: the same engine as the HTTP service, one job per request, so a queue of jobs spreads
over as many GPU workers as the endpoint allows.

At start (before the first job) it runs the GPU self-test (`SPARK_DEVICE=cuda`: no GPU, no worker), loads the
model pack and warms the models of the default job, so the first job pays no loading time.

Job input (see test_input.json):
    url          http(s) URL of the media (a signed storage URL, typically); required. Fetched with the HTTP
                 service's own guard (`service.inputs.fetch_url`: redirects re-checked, pinned to the checked
                 address, non-global addresses refused unless SPARK_ALLOW_PRIVATE_URLS=1)
    recipe, stems, format, sample_rate, mono, precision, layout and each recipe's options (overlap_large,
                 shifts, high_quality, ...): exactly as in the HTTP API, read by the engine's translator; the
                 catalogue (`GET /recipes`, `mvsep.catalogue()`) lists them. stems: a comma list or "all";
                 default: the recipe's default stems (mdx23: vocals,instrumental)
    upload       optional {stem: presigned PUT URL}: that stem is PUT there (same guard as `url`)
Where each stem goes: its `upload` URL if given; else RunPod's bucket upload when BUCKET_ENDPOINT_URL is set
(with BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY; bucket BUCKET_NAME or the runpod SDK's default "%m-%y"; key
"<job id>/<file>"; a presigned GET URL valid 7 days comes back); else inline in base64, up to RUNPOD_INLINE_MAX_MB
(9) of base64 in all, so the answer fits RunPod's 10 MB /run payload (20 MB /runsync).
Output: {"stems": {stem: {"bytes", "sha256", "filename", and "uploaded": "put" | "bucket" (+ "url") or "base64"}},
"info", "timings"}. Errors come back as {"error": "..."} (RunPod marks the job failed).
Progress: `runpod.serverless.progress_update` with {"stage", "progress"} (at most every RUNPOD_PROGRESS_S, 5 s).

Environment: SPARK_MODELS_DIR (default: where the engine looks), SPARK_DEVICE (auto), SPARK_GPU_ID (0),
SPARK_RECIPES (recipe plug-in modules), SPARK_DEMO_PACK=0 (no demo-pack fallback),
SPARK_MAX_UPLOAD_MB (2048, the input size cap), SPARK_URL_TIMEOUT_S (600), SPARK_ALLOW_PRIVATE_URLS=1.
Local test (docs/deploy.md): `SPARK_ALLOW_PRIVATE_URLS=1 python handler.py` in this dir runs test_input.json.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import shutil
import tempfile
import time
import urllib.parse
from pathlib import Path

import httpx  # noqa: E402
import runpod  # noqa: E402

from mvsep import Options, Separator, gpu_check, recipes, translate  # noqa: E402, F401
from mvsep.catalog import request_fields  # noqa: E402
from mvsep.pack import settings_from_env  # noqa: E402
from mvsep.errors import InputError, ModelPackError, NotInPackError, OptionError  # noqa: E402
from service import inputs  # noqa: E402
from service.errors import ApiError  # noqa: E402

log = logging.getLogger("spark.runpod")

JOB_FIELDS = {"url", "upload"}   # everything else is a separation option, read by the engine's translator
MB = 1 << 20
CHUNK = 1 << 20
BUCKET_VARS = ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY")

_separator: Separator | None = None


class JobError(Exception):
    """A problem with the job's input: its message goes back to the caller."""


def env_num(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def allow_private() -> bool:
    return os.environ.get("SPARK_ALLOW_PRIVATE_URLS") == "1"


# ---- start-up --------------------------------------------------------------------------------------------------
def start_engine() -> Separator:
    """GPU self-test, pack, warm models; raises SystemExit with the reason when the worker cannot serve."""
    global _separator
    device = os.environ.get("SPARK_DEVICE") or "auto"
    gpu_id = int(os.environ.get("SPARK_GPU_ID") or 0)
    recipes.load_plugins(recipes.plugin_modules(os.environ.get("SPARK_RECIPES")))
    report = gpu_check.check(device, gpu_id)
    if report.blocking:
        raise SystemExit(f"not starting: SPARK_DEVICE=cuda and {report.blocking}")
    bucket_config()  # a half-configured bucket fails here, not after the first separation
    started = time.monotonic()
    try:
        pack = settings_from_env()
        sep = Separator(model_dir=pack["models_dir"], device=device, gpu_id=gpu_id, allow_demo=pack["allow_demo"])
        # the default job of the first recipe the pack can run (mdx23: vocals,instrumental)
        opts, stems = translate({"recipe": (sep.recipes() or ["mdx23"])[0]})
        if sep.missing(opts, stems):
            raise ModelPackError("model files missing", sep.missing(opts, stems))
        sep.warm(opts, stems)
    except ModelPackError as e:
        raise SystemExit(f"not starting: the model pack is not usable: {e} {list(e.missing)}") from None
    log.info("models of the default job warm on %s in %.1f s (pack %s, %s)", sep.device, time.monotonic() - started,
             sep.pack.dir, sep.pack.kind)
    _separator = sep
    return sep


def bucket_config() -> dict | None:
    """RunPod's bucket convention (the runpod SDK's rp_upload): all three variables or none."""
    values = {k: os.environ.get(k) or "" for k in BUCKET_VARS}
    if not values["BUCKET_ENDPOINT_URL"]:
        return None
    missing = [k for k, v in values.items() if not v]
    if missing:
        raise SystemExit(f"BUCKET_ENDPOINT_URL is set but {', '.join(missing)} is not")
    return values


# ---- input -----------------------------------------------------------------------------------------------------
def parse_options(inp: dict) -> tuple[Options, list[str]]:
    """The job input's options and stems, through the engine's one translator (`mvsep.translate`, the same as
    the HTTP API): any registered recipe, its stems and options."""
    fields = {k: v for k, v in inp.items() if k not in JOB_FIELDS}
    booleans = {name for name, o in request_fields().items() if o.type == "bool"}
    for name, value in fields.items():
        if name in booleans and not isinstance(value, bool):   # JSON input: booleans are JSON booleans
            raise JobError(f"{name}: must be true or false")
    try:
        return translate(fields)
    except OptionError as e:
        if e.message == "unknown option":
            raise JobError(f"unknown input field: {e.field}") from None
        raise JobError(str(e)) from None


def parse_uploads(inp: dict, stems: list[str]) -> dict[str, str]:
    uploads = inp.get("upload") or {}
    if not isinstance(uploads, dict):
        raise JobError("upload: must map stem names to URLs")
    for stem, target in uploads.items():
        if stem not in stems:
            raise JobError(f"upload.{stem}: not one of the requested stems")
        try:
            inputs.check_url(str(target))  # scheme and form now; the address when it is used
        except ApiError as e:
            raise JobError(f"upload.{stem}: {e.message.removeprefix('url: ')}") from None
    return {k: str(v) for k, v in uploads.items()}


# ---- output ----------------------------------------------------------------------------------------------------
async def put_stem(path: Path, url: str, what: str) -> None:
    """PUT a file to a presigned URL through the service's URL guard (the checked address, no redirects)."""
    scheme, host, port, target = inputs.check_url(url)
    ip = await inputs.resolve_checked(host, port, allow_private())
    ip_host = f"[{ip}]" if ":" in ip else ip
    size = path.stat().st_size

    async def body():
        with open(path, "rb") as fh:
            while block := await asyncio.to_thread(fh.read, CHUNK):
                yield block

    headers = {"Host": host if port in (80, 443) else f"{host}:{port}", "Content-Length": str(size),
               "Content-Type": "application/octet-stream"}
    timeout = httpx.Timeout(env_num("SPARK_URL_TIMEOUT_S", 600))
    async with httpx.AsyncClient(follow_redirects=False, timeout=timeout, trust_env=False) as client:
        request = client.build_request("PUT", f"{scheme}://{ip_host}:{port}{target}", headers=headers,
                                       content=body(), extensions={"sni_hostname": host})
        try:
            response = await client.send(request)
        except httpx.HTTPError as e:
            raise JobError(f"{what}: the upload failed ({type(e).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise JobError(f"{what}: the upload target answered HTTP {response.status_code}")


def bucket_upload(path: Path, job_id: str, cfg: dict) -> str:
    """Upload to RunPod's bucket (BUCKET_* variables, as the runpod SDK's rp_upload) and return a presigned GET
    URL. boto3 directly, with large parts: the SDK's 25 kB parts would exceed S3's 10,000-part limit on a long
    WAV stem."""
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from runpod.serverless.utils.rp_upload import extract_region_from_url

    endpoint = cfg["BUCKET_ENDPOINT_URL"]
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id=cfg["BUCKET_ACCESS_KEY_ID"],
        aws_secret_access_key=cfg["BUCKET_SECRET_ACCESS_KEY"], region_name=extract_region_from_url(endpoint),
        config=Config(signature_version="s3v4", retries={"max_attempts": 3, "mode": "standard"}))
    bucket = os.environ.get("BUCKET_NAME") or time.strftime("%m-%y")  # the SDK's default bucket name
    key = f"{job_id}/{path.name}"
    client.upload_file(str(path), bucket, key, Config=TransferConfig(multipart_threshold=64 * MB,
                                                                    multipart_chunksize=64 * MB))
    return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=604800)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


class Progress:
    """RunPod progress updates, at most every RUNPOD_PROGRESS_S and at each new stage. Only on RunPod (or where a
    webhook is configured): the local test mode has nowhere to send them."""

    def __init__(self, job: dict):
        self.job, self.every = job, env_num("RUNPOD_PROGRESS_S", 5)
        self.enabled = bool(os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"))
        self.last, self.stage = 0.0, None

    def __call__(self, fraction: float, stage: str) -> None:
        now = time.monotonic()
        if not self.enabled or (stage == self.stage and now - self.last < self.every):
            return
        self.last, self.stage = now, stage
        runpod.serverless.progress_update(self.job, {"stage": stage, "progress": round(float(fraction), 3)})


# ---- the job ---------------------------------------------------------------------------------------------------
async def handler(job: dict) -> dict:
    inp = job.get("input") or {}
    work = Path(tempfile.mkdtemp(prefix="spark-runpod-"))
    progress = Progress(job)
    try:
        url = inp.get("url")
        if not url or not isinstance(url, str):
            raise JobError("url: required")
        opts, stems = parse_options(inp)
        uploads = parse_uploads(inp, stems)
        bucket = bucket_config()
        progress(0.0, "download")
        src = work / "input"
        await inputs.fetch_url(url, src, int(env_num("SPARK_MAX_UPLOAD_MB", 2048) * MB),
                               env_num("SPARK_URL_TIMEOUT_S", 600), allow_private())
        name = Path(urllib.parse.urlsplit(url).path).stem or "input"
        sep = _separator or start_engine()
        res = await asyncio.to_thread(sep.separate_file, src, work / "out", opts, stems=stems, progress=progress,
                                      name=name)
        return {"stems": await deliver(res, stems, uploads, bucket, job, progress), "timings": res.timings,
                "info": {"sample_rate": res.info.sample_rate, "channels": res.info.channels,
                         "frames": res.info.frames, "duration": res.info.duration}}
    except (JobError, InputError, NotInPackError) as e:
        return {"error": str(e)}
    except ApiError as e:  # the URL guard and fetch: messages meant for the caller
        return {"error": e.message}
    except ModelPackError as e:
        return {"error": f"model pack not ready: {e}"}
    except Exception as e:  # a bug or a broken machine: the trace goes to the worker's log only
        log.exception("job %s failed", job.get("id"))
        return {"error": f"internal error ({type(e).__name__}); see the worker log"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def deliver(res, stems: list[str], uploads: dict, bucket: dict | None, job: dict, progress) -> dict:
    cap_mb = env_num("RUNPOD_INLINE_MAX_MB", 9)
    paths = {stem: Path(res.stems[stem]) for stem in stems}
    inline = [s for s in stems if s not in uploads and not bucket]
    encoded = sum(4 * -(-paths[s].stat().st_size // 3) for s in inline)
    if encoded > cap_mb * MB:
        raise JobError(f"the stems are {encoded / MB:.1f} MB in base64, over the inline cap of "
                       f"{cap_mb:g} MB (RunPod's payload limit): pass upload URLs or set BUCKET_ENDPOINT_URL")
    out = {}
    for i, stem in enumerate(stems):
        path = paths[stem]
        progress(i / len(stems), "upload")
        entry = {"filename": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)}
        if stem in uploads:
            await put_stem(path, uploads[stem], f"upload.{stem}")
            entry["uploaded"] = "put"
        elif bucket:
            try:
                entry["url"] = await asyncio.to_thread(bucket_upload, path, str(job.get("id") or "local"), bucket)
            except Exception as e:  # boto3/botocore errors: name the kind, not the credentials
                log.error("bucket upload of %s failed: %s", stem, e)
                raise JobError(f"bucket upload of {stem} failed ({type(e).__name__})") from None
            entry["uploaded"] = "bucket"
        else:
            entry["base64"] = base64.b64encode(path.read_bytes()).decode()
        out[stem] = entry
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start_engine()
    runpod.serverless.start({"handler": handler})
