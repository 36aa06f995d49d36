"""Request and response shapes (they also make the OpenAPI document at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

EXT = {"wav": "wav", "wav16": "wav", "wav24": "wav", "flac": "flac", "mp3": "mp3"}
MEDIA_TYPE = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}


def job_options_model() -> type[BaseModel]:
    """The request's option fields as a pydantic model, made from the engine's catalogue: it documents the
    request in the OpenAPI schema. Validation itself is the engine's translator (`Runner.normalize`), so a
    recipe registered later is accepted too."""
    from mvsep import catalogue
    cat = catalogue()
    kinds = {"bool": bool, "int": int, "float": float}
    fields = {
        "stems": (list[str], Field(default=["vocals", "instrumental"], description="comma list of stems of the "
              "recipe, or `all`; default: the recipe's default stems. " + "; ".join(
                  f"{r['name']}: {', '.join(s['name'] for s in r['stems'])}" for r in cat["recipes"]))),
        "recipe": (Literal[tuple(r["name"] for r in cat["recipes"])], Field(
            cat["default_recipe"], description="; ".join(f"{r['name']}: {r['summary']}" for r in cat["recipes"]))),
    }
    seen = set(fields)
    options = [(o, None) for o in cat["options"]] + [(o, r["name"]) for r in cat["recipes"] for o in r["options"]]
    for o, recipe in options:
        if o["name"] in seen:
            continue
        seen.add(o["name"])
        kind = Literal[tuple(o["choices"])] if o["type"] == "choice" else kinds[o["type"]]
        where = f"{recipe}: " if recipe else ""
        fields[o["name"]] = (kind | None, Field(None, description=f"{where}{o['help']} (default {o['default']})",
                                                ge=o["min"], le=o["max"]))
    return create_model("JobOptions", __config__=ConfigDict(extra="forbid"), **fields)


def parse_bool(field: str, value) -> bool:
    """A boolean form field or JSON value; anything else is a 422 naming the field."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    from .errors import ApiError
    raise ApiError(422, "invalid_option", f"{field}: must be true or false", field=field)


def json_request_model(options: type[BaseModel]) -> type[BaseModel]:
    """A JSON request: the option fields, the media's URL and `wait`."""
    return create_model(
        "JsonJobRequest", __base__=options, url=(str, Field(..., description="http(s) URL of the media")),
        wait=(bool | None, Field(None, description="POST /separate only: false answers 202 with the job")))


class InputFacts(BaseModel):
    name: str | None = None
    source: Literal["upload", "url"] | None = None
    bytes: int | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    frames: int | None = None
    codec: str | None = None
    container: str | None = None


class JobError(BaseModel):
    code: str
    message: str
    status: int
    field: str | None = None
    need_mb: float | None = Field(None, description="insufficient_storage: the job's estimated disk need")
    free_mb: float | None = Field(None, description="insufficient_storage: free disk beyond the reserve")


class Job(BaseModel):
    id: str
    state: Literal["downloading", "queued", "running", "succeeded", "failed", "canceled"]
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = Field(None, description="results and the job are deleted after this")
    progress: float = Field(..., ge=0, le=1)
    stage: str | None = None
    eta_s: float | None = Field(None, description="estimated seconds left (running jobs)")
    queue_position: int | None = Field(None, description="1 = next to run (queued jobs)")
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per stage")
    error: JobError | None = None
    input: InputFacts
    options: dict
    pack: str | None = Field(None, description="model pack kind: real or demo")
    attempts: int = 0
    stems: dict[str, str] = Field(default_factory=dict, description="stem name -> download URL")
    result_zip: str | None = None
    logs: str


class JobList(BaseModel):
    jobs: list[Job]


class LogChunk(BaseModel):
    offset: int
    next_offset: int
    text: str
    complete: bool = Field(..., description="the job is finished and the log has no more bytes")


class Ready(BaseModel):
    ready: bool
    reason: str
    pack: str | None = None
    missing: list[str] = Field(default_factory=list)
    recipes: list[str] = Field(default_factory=list, description="recipes the pack can run (GET /recipes has "
                                                                 "their stems and options)")


class QueueState(BaseModel):
    queued: int
    running: int
    capacity: int
    current: str | None = None


class WorkerState(BaseModel):
    id: str
    device: str = Field(..., description="cpu, or cuda:<gpu id>")
    facts: dict = Field(default_factory=dict, description="torch device, ONNX Runtime providers, GPU name")
    job: str | None = Field(None, description="the job it runs now")
    busy_s: float = Field(..., description="seconds spent on jobs since the start")


class Status(BaseModel):
    version: str
    uptime_s: float
    device: dict
    workers: list[WorkerState] = Field(default_factory=list)
    pack: dict
    queue: QueueState
    jobs: dict[str, int]
    limits: dict
    degraded: str | None = Field(None, description="set when a GPU machine runs (partly) on the CPU: why")


class ErrorBody(BaseModel):
    error: str = Field(..., description="machine-readable code")
    message: str
    field: str | None = None
    missing: list[str] | None = None
    error_id: str | None = None
    job_id: str | None = None
