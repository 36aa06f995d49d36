"""Service settings, read once from the environment (tests set env vars on the server subprocess)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path


def _bool(env: dict, name: str, default: bool = False) -> bool:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _num(env: dict, name: str, default, kind=int):
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return kind(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a number") from None


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

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Config":
        env = os.environ if env is None else env
        device = (env.get("SPARK_DEVICE") or "auto").strip().lower()
        if device not in ("auto", "cpu", "cuda"):
            raise SystemExit(f"SPARK_DEVICE={device!r}: expected auto, cpu or cuda")
        return cls(
            host=env.get("HOST") or "0.0.0.0",
            port=_num(env, "PORT", 8185),
            api_token=env.get("SPARK_API_TOKEN") or None,
            allow_no_auth=_bool(env, "SPARK_ALLOW_NO_AUTH"),
            data_dir=Path(env.get("SPARK_DATA_DIR") or "/workspace/spark"),
            result_ttl_s=_num(env, "SPARK_RESULT_TTL", 86400.0, float),
            max_upload_mb=_num(env, "SPARK_MAX_UPLOAD_MB", 2048.0, float),
            max_duration_s=_num(env, "SPARK_MAX_DURATION_S", 14400.0, float),
            queue_size=_num(env, "SPARK_QUEUE_SIZE", 16),
            allow_private_urls=_bool(env, "SPARK_ALLOW_PRIVATE_URLS"),
            url_timeout_s=_num(env, "SPARK_URL_TIMEOUT_S", 600.0, float),
            models_dir=env.get("SPARK_MODELS_DIR") or None,
            device=device,
            gpu_id=_num(env, "SPARK_GPU_ID", 0),
            large_gpu=_bool(env, "SPARK_LARGE_GPU"),
            demo_pack=_bool(env, "SPARK_DEMO_PACK", True),
            header_timeout_s=_num(env, "SPARK_HEADER_TIMEOUT_S", 10.0, float),
            body_timeout_s=_num(env, "SPARK_BODY_TIMEOUT_S", 30.0, float),
            keepalive_s=_num(env, "SPARK_KEEPALIVE_S", 5.0, float),
            max_connections=_num(env, "SPARK_MAX_CONNECTIONS", 256),
            max_probes=_num(env, "SPARK_MAX_PROBES", 2),
        )

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
        return None
