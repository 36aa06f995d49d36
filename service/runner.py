"""The only module that calls the engine (`mvsep`): pack loading, probing, options, separation.

Everything engine-specific the service needs goes through `Runner`, so the rest of the service sees plain
dicts and the engine's error classes.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from mvsep.errors import (Cancelled, InputError, ModelPackError, MvsepError, NotInPackError,  # noqa: F401
                          OptionError, OutOfMemoryError, UnsupportedMediaError)

log = logging.getLogger("spark.runner")

FOUR_STEMS = ("drums", "bass", "other")
ENGINE_OPTIONS = ("overlap_large", "overlap_small", "chunk_size", "shifts", "single_onnx", "use_kim_model_1",
                  "recipe", "high_quality", "layout")


def http_status(err: BaseException) -> int:
    """HTTP status of an engine error (500: not an error the engine raises on purpose)."""
    if isinstance(err, UnsupportedMediaError):
        return 415
    if isinstance(err, NotInPackError):
        return 422
    if isinstance(err, ModelPackError):
        return 503
    if isinstance(err, (InputError, OptionError)):
        return 422
    if isinstance(err, OutOfMemoryError):
        return 500
    if isinstance(err, Cancelled):
        return 409
    return 500


def error_code(err: BaseException) -> str:
    return {UnsupportedMediaError: "unsupported_media", InputError: "bad_input", OptionError: "invalid_option",
            NotInPackError: "not_in_pack", ModelPackError: "models_missing", OutOfMemoryError: "out_of_memory",
            Cancelled: "canceled"}.get(type(err), "engine_error" if isinstance(err, MvsepError) else "internal")


class Runner:
    """Loads the model pack in the background and runs separations (from the worker thread only)."""

    def __init__(self, models_dir: str | None, device: str = "auto", gpu_id: int = 0, large_gpu: bool = False,
                 allow_demo: bool = True):
        self.models_dir = models_dir
        self.allow_demo = allow_demo
        self.device_pref = device
        self.gpu_id = gpu_id
        self.large_gpu = large_gpu
        self.state = "loading"  # loading | ready | missing_models | error
        self.reason = "loading"
        self.missing: list[str] = []
        self.pack_kind: str | None = None
        self.recipes: list[str] = []  # what the pack can run (mdx23, cinematic)
        self.device = "cpu"
        self.device_facts: dict = {"type": "cpu"}
        self._sep = None
        self._thread: threading.Thread | None = None

    # ---- start-up
    def start(self) -> None:
        self._thread = threading.Thread(target=self._load, name="spark-loader", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            from mvsep import Separator
            sep = Separator(model_dir=self.models_dir, device=self.device_pref, gpu_id=self.gpu_id,
                            large_gpu=self.large_gpu, allow_demo=self.allow_demo)
            self.device, self.device_facts = sep.device, _device_facts(sep.device, self.gpu_id)
            self.pack_kind = sep.pack.kind
            self.recipes = sep.recipes()
            opts = self.make_options({"recipe": (self.recipes or ["mdx23"])[0]})
            missing = list(sep.missing(opts))
            if missing:
                raise ModelPackError("model files missing", missing)
            sep.warm(opts)
            self._sep = sep
            self.state, self.reason = "ready", "ready"
            log.info("model pack %s (%s) ready on %s", sep.pack.dir, sep.pack.kind, self.device)
        except ModelPackError as e:
            self.missing = list(e.missing)
            if self.missing:
                self.state, self.reason = "missing_models", "missing_models: " + ", ".join(self.missing)
            else:
                self.state, self.reason = "error", f"error: {e}"
            log.error("model pack not usable: %s", self.reason)
        except MvsepError as e:
            self.state, self.reason = "error", f"error: {e}"
            log.error("model pack not usable: %s", e)
        except Exception as e:  # a bug or a broken install: the trace goes to the log only
            self.state, self.reason = "error", f"error: {type(e).__name__} while loading the model pack"
            log.exception("loading the model pack failed")

    # ---- requests
    @staticmethod
    def make_options(params: dict):
        """Engine `Options` from the service's validated options; raises OptionError."""
        from mvsep import Options
        stems = params.get("stems") or ["vocals", "instrumental"]
        kwargs = {k: params[k] for k in ENGINE_OPTIONS if params.get(k) is not None}
        opts = Options(only_vocals=not any(s in FOUR_STEMS for s in stems),
                       output_format=params.get("format", "wav"),
                       sample_rate=params.get("sample_rate", "native"),
                       mono=bool(params.get("mono", False)), **kwargs)
        opts.validate()
        return opts

    def check(self, opts) -> None:
        """Raise ModelPackError (503) / NotInPackError (422) when the pack cannot serve these options."""
        if self._sep is None:
            return  # still loading: the job waits in the queue
        if self._sep.missing(opts):
            self._sep.check(opts)  # raises

    @staticmethod
    def probe(path: Path) -> dict:
        """Input facts; raises InputError / UnsupportedMediaError for unusable media."""
        from mvsep import probe
        info = probe(str(path))
        if not info.frames or info.frames <= 0 or not info.sample_rate:
            raise InputError("the input has no audio samples")
        return {"duration_s": float(info.duration), "sample_rate": int(info.sample_rate),
                "channels": int(info.channels), "frames": int(info.frames),
                "codec": getattr(info, "codec", None), "container": getattr(info, "container", None)}

    def separate(self, input_path: Path, out_dir: Path, params: dict,
                 progress: Callable[[float, str], None], cancel: Callable[[], bool],
                 work_dir: Path | None = None) -> tuple[dict[str, Path], dict]:
        """Run one separation; returns ({stem: path} of every stem the engine wrote, {stage: seconds})."""
        if self._sep is None:
            raise ModelPackError(self.reason, self.missing)
        opts = self.make_options(params)
        res = self._sep.separate_file(str(input_path), str(out_dir), opts, stems=params["stems"],
                                      progress=progress, cancel=cancel,
                                      work_dir=str(work_dir) if work_dir else None, name="stem")
        return {k: Path(v) for k, v in res.stems.items()}, dict(res.timings or {})


def _device_facts(device: str, gpu_id: int) -> dict:
    import torch
    if device != "cuda":
        return {"type": "cpu", "threads": torch.get_num_threads()}
    props = torch.cuda.get_device_properties(gpu_id)
    return {"type": "cuda", "gpu_id": gpu_id, "name": props.name,
            "memory_gb": round(props.total_memory / 2**30, 1)}
