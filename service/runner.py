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

from mvsep.audio import MODEL_RATE  # noqa: F401 (the service's one sample-rate fact, re-exported)

log = logging.getLogger("spark.runner")


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
    """The model pack, shared by the workers: one `Separator` per worker device, loaded in the background.

    The pack's state (loading | ready | missing_models | error) is one fact for all devices. Each worker calls
    `separate(..., slot=i)` on its own Separator from its own thread only.
    """
    probe_cap_s: float | None = None  # see limit_probes
    _probe_slots = threading.BoundedSemaphore(2)

    def __init__(self, models_dir: str | None, devices: list[tuple[str, int]] | None = None,
                 large_gpu: bool = False, allow_demo: bool = True, threads: int | None = None,
                 requested: str = "auto"):
        self.models_dir = models_dir
        self.requested = requested  # SPARK_DEVICE: auto | cpu | cuda
        self.allow_demo = allow_demo
        self.devices = devices or [("cpu", 0)]
        self.large_gpu = large_gpu
        self.threads = threads
        self.state = "loading"  # loading | ready | missing_models | error
        self.reason = "loading"
        self.missing: list[str] = []
        self.pack_kind: str | None = None
        self.recipes: list[str] = []  # what the pack can run (mdx23, cinematic)
        self.device = "cpu"  # the first worker's (older /status field)
        self.device_facts: dict = {"type": "cpu"}
        self.degraded: str | None = None  # why an `auto` service on a GPU machine runs (partly) on the CPU
        self._seps: list = []
        self._reports: list = []  # the GPU self-test of each worker's device
        self._thread: threading.Thread | None = None

    # ---- start-up
    def start(self) -> None:
        self._thread = threading.Thread(target=self._load, name="spark-loader", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            from mvsep import Separator, gpu_check
            # SPARK_DEVICE=cuda on a box where no GPU is visible still resolves to a CPU worker: the self-test
            # of the requested device is what makes that a loud failure.
            self._reports = [gpu_check.check(self.requested if dev == "cpu" else "cuda", gpu_id)
                             for dev, gpu_id in self.devices]
            gpu0 = self.devices[0][1]
            self.device_facts = _device_facts("cpu", gpu0, self.threads, self._reports[0])
            blocking = [r.blocking for r in self._reports if r.blocking]
            if blocking:  # state "error": submit and the worker already refuse / fail jobs on it
                self.state, self.reason = "error", "gpu_unusable: " + blocking[0]
                return
            self.degraded = next((r.degraded for r in self._reports if r.degraded), None)
            seps = []
            for device, gpu_id in self.devices:
                sep = Separator(model_dir=self.models_dir, device=device, gpu_id=gpu_id, large_gpu=self.large_gpu,
                                allow_demo=self.allow_demo, threads=self.threads if device == "cpu" else None)
                if seps:  # the pack's files were verified once already (same files, same size+mtime)
                    sep.pack.share_verified(seps[0].pack)
                self.pack_kind = sep.pack.kind
                self.recipes = sep.recipes()
                opts, stems = self.translate({"recipe": (self.recipes or ["mdx23"])[0]})
                missing = list(sep.missing(opts, stems))
                if missing:
                    raise ModelPackError("model files missing", missing)
                sep.warm(opts, stems)
                seps.append(sep)
            self._seps = seps
            self.device = seps[0].device
            self.device_facts = _device_facts(self.device, gpu0, self.threads, self._reports[0])
            self.state, self.reason = "ready", "ready"
            log.info("model pack %s (%s) ready on %s", seps[0].pack.dir, seps[0].pack.kind,
                     ", ".join(self.facts(i)["torch"] for i in range(len(seps))))
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

    def facts(self, slot: int) -> dict:
        """Where worker `slot` runs, as torch and ONNX Runtime were actually set up (read back from them)."""
        device, gpu_id = self.devices[slot]
        if slot >= len(self._seps):
            return {"type": device, "gpu_id": gpu_id if device == "cuda" else None}
        sep = self._seps[slot]
        facts = _device_facts(sep.device, gpu_id, self.threads)
        facts["torch"] = str(sep.pack.torch_device())
        onnx = {}
        for key in sep.pack.resident():
            session = sep.pack.peek(key) if key.startswith("onnx:") else None
            if session is not None:  # peek: never waits for a model being loaded
                onnx = {"providers": session.get_providers(),
                        "device_id": session.get_provider_options().get("CUDAExecutionProvider", {}).get(
                            "device_id"),
                        "threads": session.get_session_options().intra_op_num_threads}
                break
        facts["onnx"] = onnx
        return facts

    def bind_thread(self, slot: int) -> None:
        """Make worker `slot`'s GPU the calling thread's current CUDA device (torch keeps it per thread)."""
        device, gpu_id = self.devices[slot]
        if device == "cuda":
            import torch
            torch.cuda.set_device(gpu_id)

    # ---- requests
    @staticmethod
    def translate(params: dict):
        """Engine (`Options`, stems) from a request's fields (the engine's one translator); raises OptionError."""
        from mvsep import translate
        opts, stems = translate(params)
        if opts.precision != "fp32":  # the engine refuses it too; this answers at submit
            import torch

            from mvsep import precision
            if not torch.cuda.is_available():
                raise OptionError("precision", f"{opts.precision} needs a CUDA GPU; this server has none (use fp32)")
            precision.check(opts.precision, "cuda")
        return opts, stems

    @classmethod
    def normalize(cls, fields: dict):
        """A request's option fields, checked: (the fields as the job stores them: stems, recipe, the engine-wide
        options and the recipe options the request set; the engine `Options`; the stems). Raises OptionError."""
        from mvsep.catalog import request_dict
        opts, stems = cls.translate(fields)
        full = request_dict(opts, stems)
        stored = {k: v for k, v in full.items()
                  if k in ("stems", "recipe", "format", "sample_rate", "mono") or fields.get(k) is not None}
        return stored, opts, stems

    def catalogue(self, limits: dict) -> dict:
        """The engine's catalogue for the installed pack (GET /recipes)."""
        from mvsep import catalogue
        if self._seps:
            return catalogue(self._seps[0].pack, limits)
        why = {"loading": "the model pack is still loading"}.get(self.state, f"the model pack is not usable "
                                                                             f"({self.reason})")
        return catalogue(None, limits, unavailable=why)

    @staticmethod
    def work_channels(options: dict) -> int:
        """Float32 channels at 44.1 kHz the recipe of these (stored) options keeps while encoding."""
        from mvsep import recipes
        opts, stems = Runner.translate(options)
        return recipes.get(opts.recipe).work_channels(opts, stems)

    @staticmethod
    def load_recipes(modules) -> None:
        """Import recipe plug-in modules (SPARK_RECIPES); a module that fails to import stops the start."""
        from mvsep import recipes
        try:
            recipes.load_plugins(modules)
        except Exception as e:
            raise SystemExit(f"SPARK_RECIPES: cannot load {', '.join(modules)}: {type(e).__name__}: {e}") from None

    @staticmethod
    def stem_names() -> set[str]:
        """Every stem any registered recipe makes."""
        from mvsep import recipes
        return {s for r in recipes.all_recipes() for s in r.stem_names}

    def check(self, opts, stems) -> None:
        """Raise NotInPackError (422) when the pack lacks a model these options chose.

        The pack serves its first recipe's default options (else the runner is not ready and submit answers 503),
        so whatever is missing here was chosen by the request: a recipe, `high_quality`, 4 stems,
        `use_kim_model_1`, or `single_onnx`.
        """
        if not self._seps:
            return  # still loading: the job waits in the queue
        sep = self._seps[0]
        missing = sep.missing(opts, stems)
        if missing:
            try:
                sep.check(opts, stems)
            except NotInPackError:
                raise
            except ModelPackError:
                raise NotInPackError(f"the {self.pack_kind} pack has no {', '.join(missing)}, which the chosen "
                                     f"options need ({', '.join(_chosen(opts, stems))})", missing) from None

    def limit_probes(self, max_probes: int, cap_s: float | None) -> None:
        """At most `max_probes` probes at once (decoding is CPU-bound); each stops decoding past `cap_s`."""
        self._probe_slots = threading.BoundedSemaphore(max_probes)
        self.probe_cap_s = cap_s

    def probe(self, path: Path) -> dict:
        """Input facts; raises InputError / UnsupportedMediaError for unusable media.

        Past `probe_cap_s` (SPARK_MAX_DURATION_S) the decode stops: `duration_s` is then just over the cap.
        """
        from mvsep import probe
        with self._probe_slots:
            info = probe(str(path), max_seconds=self.probe_cap_s)
        if not info.frames or info.frames <= 0 or not info.sample_rate:
            raise InputError("the input has no audio samples")
        return {"duration_s": float(info.duration), "sample_rate": int(info.sample_rate),
                "channels": int(info.channels), "frames": int(info.frames),
                "codec": getattr(info, "codec", None), "container": getattr(info, "container", None)}

    def separate(self, input_path: Path, out_dir: Path, params: dict,
                 progress: Callable[[float, str], None], cancel: Callable[[], bool],
                 work_dir: Path | None = None, slot: int = 0, facts: dict | None = None,
                 ) -> tuple[dict[str, Path], dict]:
        """Run one separation on worker `slot`'s device; `facts` (from `probe`) spare the engine its own probe.
        Returns ({stem: path} of every stem the engine wrote, {stage: seconds})."""
        if slot >= len(self._seps):
            raise ModelPackError(self.reason, self.missing)
        opts, stems = self.translate(params)
        info = None
        if facts and facts.get("frames") and facts.get("sample_rate"):
            from mvsep.audio import AudioInfo
            info = AudioInfo(int(facts["sample_rate"]), int(facts["channels"]), int(facts["frames"]),
                             float(facts["duration_s"]), facts.get("codec") or "", facts.get("container") or "")
        res = self._seps[slot].separate_file(str(input_path), str(out_dir), opts, stems=stems,
                                             progress=progress, cancel=cancel, info=info,
                                             work_dir=str(work_dir) if work_dir else None, name="stem")
        return {k: Path(v) for k, v in res.stems.items()}, dict(res.timings or {})


def iter_decode(source, block_frames: int):
    """The engine's streaming decode (float32 [n, 2] blocks at the input's rate): the waveform peaks read it."""
    from mvsep.audio import iter_decode as decode
    return decode(source, block_frames=block_frames)


def _chosen(opts, stems) -> list[str]:
    """The request's choices that differ from the recipe's defaults (they picked the missing files)."""
    from mvsep import Options, recipes
    recipe, base = recipes.get(opts.recipe), Options(recipe=opts.recipe)
    chosen = [o.name for o in recipe.options if o.api and getattr(opts, o.key) != getattr(base, o.key)]
    return chosen + ([] if list(stems) == list(recipe.default_stems) else ["stems"])


def _device_facts(device: str, gpu_id: int, threads: int | None = None, report=None) -> dict:
    """A worker's device: the engine's device, then what torch and onnxruntime each really use (and why not)."""
    import torch
    checks = report.as_dict() if report is not None else {}
    if device != "cuda":  # the engine puts both runtimes on the CPU, whatever the self-test found
        for runtime in ("torch", "onnxruntime"):
            if runtime in checks:
                checks[runtime]["device"] = "cpu"
        facts = {"type": "cpu", "threads": threads or torch.get_num_threads()}
    else:
        props = torch.cuda.get_device_properties(gpu_id)
        facts = {"type": "cuda", "gpu_id": gpu_id, "name": props.name,
                 "memory_gb": round(props.total_memory / 2**30, 1)}
    return {**facts, **checks}
