"""Request and response shapes (they also make the OpenAPI document at /docs)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The engine's own ranges (mvsep.engine.Options.validate); tests/test_service_inputs.py checks they agree.
MAX_SHIFTS = 10
CHUNK_RANGE = (44_100, 10_000_000)

STEMS = ("vocals", "instrumental", "drums", "bass", "other")
CINEMATIC_STEMS = ("dialog", "music", "effects", "background", "background2")
EXT = {"wav": "wav", "wav16": "wav", "wav24": "wav", "flac": "flac", "mp3": "mp3"}
MEDIA_TYPE = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}


class Stem(str, Enum):
    vocals = "vocals"
    instrumental = "instrumental"
    drums = "drums"
    bass = "bass"
    other = "other"
    dialog = "dialog"
    music = "music"
    effects = "effects"
    background = "background"
    background2 = "background2"


PeaksOf = Enum("PeaksOf", {**{s.name: s.value for s in Stem}, "original": "original"}, type=str)
PeaksOf.__doc__ = "a stem, or `original` (the input)"


class JobOptions(BaseModel):
    """Separation options: form fields of a multipart request, or keys of a JSON body."""
    model_config = ConfigDict(extra="forbid")

    stems: list[str] = Field(default=["vocals", "instrumental"],
                             description="comma list of vocals, instrumental, drums, bass, other; or `all`. "
                                         "recipe=cinematic: dialog, music, effects, background, background2 "
                                         "(default: all five)")
    recipe: Literal["mdx23", "cinematic"] = Field("mdx23", description="mdx23 (vocals/instrumental/4 stems) or "
                                                  "cinematic (dialog/music/effects)")
    high_quality: bool | None = Field(None, description="cinematic: the mean of three checkpoints (3x the time)")
    layout: Literal["keep", "center", "stereo"] | None = Field(
        None, description="surround inputs: keep (every channel pair, default), center (the centre only), "
                          "stereo (downmix)")
    format: Literal["wav", "wav16", "wav24", "flac", "mp3"] = Field("wav", description="wav is float32")
    sample_rate: Literal["native", 44100] = Field("native", description="`native` keeps the input's rate")
    mono: bool = False
    overlap_large: float | None = Field(None, ge=0, le=0.99, allow_inf_nan=False)
    overlap_small: float | None = Field(None, ge=0, le=0.99, allow_inf_nan=False)
    chunk_size: int | None = Field(None, ge=CHUNK_RANGE[0], le=CHUNK_RANGE[1])
    shifts: int | None = Field(None, ge=0, le=MAX_SHIFTS)
    single_onnx: bool | None = None
    use_kim_model_1: bool | None = None
    precision: Literal["fp32", "fp16"] | None = Field(None, description="fp16: CUDA only, faster, not exact")

    @field_validator("stems", mode="before")
    @classmethod
    def _parse_stems(cls, v):
        if isinstance(v, str):
            v = v.split(",")
        if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
            raise ValueError(f"expected a comma list of {', '.join(STEMS + CINEMATIC_STEMS)} or 'all' (or a JSON "
                             "array of names)")
        items = [s.strip().lower() for s in v if s.strip()]
        known = STEMS + CINEMATIC_STEMS
        if items == ["all"]:
            return items   # expanded for the recipe below
        bad = [s for s in items if s not in known]
        if bad or not items:
            raise ValueError(f"expected a comma list of {', '.join(known)} or 'all'")
        return sorted(set(items), key=known.index)

    @model_validator(mode="after")
    def _stems_of_recipe(self):
        names = CINEMATIC_STEMS if self.recipe == "cinematic" else STEMS
        if self.stems == ["all"] or (self.recipe == "cinematic" and "stems" not in self.model_fields_set):
            self.stems = list(names)
        bad = [s for s in self.stems if s not in names]
        if bad:
            raise ValueError(f"stems: {', '.join(bad)} not made by recipe {self.recipe} (it makes "
                             f"{', '.join(names)})")
        return self

    @field_validator("sample_rate", mode="before")
    @classmethod
    def _parse_rate(cls, v):
        return 44100 if str(v).strip() == "44100" else v


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


class JsonJobRequest(JobOptions):
    url: str = Field(..., description="http(s) URL of the media")
    wait: bool | None = Field(None, description="POST /separate only: false answers 202 with the job")


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
    recipes: list[str] = Field(default_factory=list, description="recipes the pack can run: mdx23, cinematic")


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
