"""Service settings, read once from the environment (tests set env vars on the server subprocess)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, fields
from pathlib import Path

from mvsep.pack import settings_from_env


def _parse(name: str, value: str, kind: str):
    if kind == "str":
        return value
    value = value.strip()
    if kind == "bool":
        return value.lower() in ("1", "true", "yes", "on")
    if kind in ("int", "float"):
        try:
            return int(value) if kind == "int" else float(value)
        except ValueError:
            raise SystemExit(f"{name}={value!r} is not a number") from None
    if kind == "path":
        return Path(value)
    if kind == "lower":
        return value.lower()
    if kind == "modules":
        from mvsep.recipes import plugin_modules   # the engine's parser of SPARK_RECIPES
        try:
            return plugin_modules(value)
        except ValueError as e:
            raise SystemExit(str(e)) from None
    raise ValueError(f"unknown kind {kind}")


# Config field -> (environment variable, kind). Unset or empty: the field's default (written once, below).
ENV = {
    "host": ("HOST", "str"), "port": ("PORT", "int"), "api_token": ("SPARK_API_TOKEN", "str"),
    "allow_no_auth": ("SPARK_ALLOW_NO_AUTH", "bool"), "data_dir": ("SPARK_DATA_DIR", "path"),
    "result_ttl_s": ("SPARK_RESULT_TTL", "float"), "max_upload_mb": ("SPARK_MAX_UPLOAD_MB", "float"),
    "max_duration_s": ("SPARK_MAX_DURATION_S", "float"), "queue_size": ("SPARK_QUEUE_SIZE", "int"),
    "allow_private_urls": ("SPARK_ALLOW_PRIVATE_URLS", "bool"), "url_timeout_s": ("SPARK_URL_TIMEOUT_S", "float"),
    "device": ("SPARK_DEVICE", "lower"), "gpu_id": ("SPARK_GPU_ID", "int"), "large_gpu": ("SPARK_LARGE_GPU", "bool"),
    "header_timeout_s": ("SPARK_HEADER_TIMEOUT_S", "float"), "body_timeout_s": ("SPARK_BODY_TIMEOUT_S", "float"),
    "keepalive_s": ("SPARK_KEEPALIVE_S", "float"), "max_connections": ("SPARK_MAX_CONNECTIONS", "int"),
    "max_probes": ("SPARK_MAX_PROBES", "int"), "gpus": ("SPARK_GPUS", "lower"),
    "worker_threads": ("SPARK_WORKER_THREADS", "int"), "max_attempts": ("SPARK_MAX_ATTEMPTS", "int"),
    "job_stall_s": ("SPARK_JOB_STALL_S", "float"), "lease_s": ("SPARK_LEASE_S", "float"),
    "separate_wait_s": ("SPARK_SEPARATE_WAIT_S", "float"), "disk_reserve_mb": ("SPARK_DISK_RESERVE_MB", "float"),
    "recipes": ("SPARK_RECIPES", "modules"),
}


@dataclass(frozen=True)
class Config:
    host: str = "0.0.0.0"
    port: int = 8185
    api_token: str | None = None
    allow_no_auth: bool = False
    data_dir: Path = Path("/workspace/spark")
    result_ttl_s: float = 86400.0
    max_upload_mb: float = 2048.0
    max_duration_s: float = 14400.0
    queue_size: int = 16
    allow_private_urls: bool = False
    url_timeout_s: float = 600.0
    models_dir: str | None = None
    device: str = "auto"
    gpu_id: int = 0
    large_gpu: bool = False
    demo_pack: bool = True
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_s: float = 5.0
    max_connections: int = 256
    max_probes: int = 2
    gpus: str = ""  # SPARK_GPUS as given: "" = every visible GPU (the CPU when none), "cpu", "cpu,cpu", "0,1"
    worker_threads: int = 0  # SPARK_WORKER_THREADS: torch/ORT threads per CPU worker (0 = cores / workers)
    max_attempts: int = 3
    job_stall_s: float = 900.0
    lease_s: float = 30.0
    separate_wait_s: float = 3600.0
    disk_reserve_mb: float | None = None  # None: 5% of the data disk, at most 256 MB
    recipes: tuple[str, ...] = ()  # SPARK_RECIPES: recipe plug-in modules to import (docs/recipes.md)

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Config":
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            if f.name in ENV:
                name, kind = ENV[f.name]
                raw = env.get(name)
                if raw is not None and raw.strip() != "":
                    values[f.name] = _parse(name, raw, kind)
        pack = settings_from_env(env)   # SPARK_MODELS_DIR, SPARK_DEMO_PACK: the engine's parser
        values.update(models_dir=pack["models_dir"], demo_pack=pack["allow_demo"])
        if values.get("device", "auto") not in ("auto", "cpu", "cuda"):
            raise SystemExit(f"SPARK_DEVICE={values['device']!r}: expected auto, cpu or cuda")
        return cls(**values)

    def worker_devices(self, visible_gpus: int) -> list[tuple[str, int]]:
        """(device, gpu id) of each worker: SPARK_GPUS, else every visible GPU, else one CPU worker."""
        items = [g.strip() for g in self.gpus.split(",") if g.strip()] if self.gpus not in ("", "all") else []
        if not items:
            if self.device == "cpu" or visible_gpus == 0:
                return [("cpu", 0)]
            if self.gpus == "" and self.gpu_id:
                return [("cuda", self.gpu_id)]  # the older single-GPU setting
            return [("cuda", i) for i in range(visible_gpus)]
        out = []
        for i, item in enumerate(items):
            if item == "cpu":
                out.append(("cpu", i))
            elif item.isdigit():
                out.append(("cuda", int(item)))
            else:
                raise SystemExit(f"SPARK_GPUS={self.gpus!r}: expected GPU numbers, cpu, or a comma list of them")
        return out

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def is_loopback_host(self) -> bool:
        if self.host in ("localhost", "localhost.localdomain"):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def startup_problem(self) -> str | None:
        """Why the server must not start with these settings, or None."""
        if not self.api_token and not self.allow_no_auth and not self.is_loopback_host():
            return (f"refusing to listen on {self.host} without SPARK_API_TOKEN; "
                    "set a token, or SPARK_ALLOW_NO_AUTH=1 to run open on purpose")
        if self.queue_size < 1:
            return "SPARK_QUEUE_SIZE must be at least 1"
        if self.max_connections < 2 or self.max_probes < 1:
            return "SPARK_MAX_CONNECTIONS must be at least 2 and SPARK_MAX_PROBES at least 1"
        if min(self.header_timeout_s, self.body_timeout_s, self.keepalive_s) <= 0:
            return "SPARK_HEADER_TIMEOUT_S, SPARK_BODY_TIMEOUT_S and SPARK_KEEPALIVE_S must be positive"
        if self.max_attempts < 1:
            return "SPARK_MAX_ATTEMPTS must be at least 1"
        if self.lease_s <= 0 or self.job_stall_s <= 0 or self.separate_wait_s <= 0:
            return "SPARK_LEASE_S, SPARK_JOB_STALL_S and SPARK_SEPARATE_WAIT_S must be positive"
        return None
