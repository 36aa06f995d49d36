"""The engine's public API: `Separator` runs any registered recipe (`mvsep.recipes`) on files or arrays.

The engine is recipe-agnostic: it decodes the input to a 44.1 kHz stereo mix `Signal` (on disk for files, so
memory stays bounded whatever the duration; in memory for the array API), has the recipe stream its model passes
over it, derives the residual stems at the output rate, resamples and encodes; inputs with more than two channels
go through `surround.py`, which uses the same public methods.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import audio, pipeline, precision, recipes, surround
from .audio import MODEL_RATE
from .demucs_runner import DemucsRunner
from .device import resolve_device
from .errors import NotInPackError, NumericError, OptionError
from .job import UNIT, Job, Progress, SeparationResult
from .mdx import MdxRunner
from .options import Options
from .roformer.demix import RoformerRunner
from .pack import KIM_INST, KIM_VOCAL_1, KIM_VOCAL_2, ModelPack
from .signals import ArraySignal, Signal, blocks, work_signals

__all__ = ["Separator", "Options", "SeparationResult", "MODEL_RATE"]

log = logging.getLogger("mvsep.engine")


class Separator:
    def __init__(self, model_dir=None, device: str | None = "auto", gpu_id: int = 0, large_gpu: bool = False,
                 memory_budget_mb: int | None = None, allow_demo: bool | None = None,
                 batch_size: int | None = None, threads: int | None = None, half: bool = False):
        self.device = resolve_device(device)
        if self.device == "cuda":
            torch.cuda.set_device(gpu_id)
        if threads:
            torch.set_num_threads(threads)
        self.pack = ModelPack(model_dir, self.device, gpu_id, large_gpu, memory_budget_mb, allow_demo, threads)
        tdev = self.pack.torch_device()
        self.half_models = half  # fp16 whatever the options ask (older API); Options.precision is the way now
        # batch sizes: per model, learned on this device for the life of the process (unless fixed here)
        self.demucs = DemucsRunner(tdev, batch_size, half)
        self.mdx = MdxRunner(tdev, batch_size)
        self.roformer = RoformerRunner(tdev, batch_size, half)
        # the demucs pass beside the MDX passes (recipes/mdx23.py): on a GPU they fill each other's gaps; on
        # the CPU they would only share the same cores
        self.overlap_models = self.device == "cuda"

    # --- pack --------------------------------------------------------------------------------------------
    def recipe(self, opts: Options) -> recipes.Recipe:
        return recipes.get(opts.recipe)

    def missing(self, opts: Options, stems=None) -> list[str]:
        """Files the request needs but the pack lacks (stems: opts.stems when not given)."""
        return self.pack.missing(self.recipe(opts).files(opts, tuple(stems or opts.stems)))

    def recipes(self) -> list[str]:
        """The recipes this pack can run (their default options and stems)."""
        return [r.name for r in recipes.all_recipes()
                if not self.pack.missing(r.files(Options(recipe=r.name), r.default_stems))]

    def check(self, opts: Options, stems=None) -> None:
        """Raise when the pack cannot serve `opts`: NotInPackError (422) for a recipe or stems it does not ship,
        ModelPackError (503) for a broken pack; verify the files against the manifest."""
        recipe = self.recipe(opts)
        stems = tuple(stems or opts.stems)
        basic = recipe.files(opts, recipe.default_stems)
        lacking = self.pack.missing(basic)
        others = [r for r in self.recipes() if r != recipe.name] if len(lacking) == len(basic) else []
        if lacking and others:
            raise NotInPackError(f"the {recipe.name} recipe is not in the {self.pack.kind} pack (it holds the "
                                 f"models of {', '.join(others)} only): it lacks {', '.join(lacking)}; ask for "
                                 f"recipe={others[0]}", lacking)
        recipe.check(self.pack, opts, stems)

    def warm(self, opts: Options | None = None, stems=None) -> None:
        """Verify and load the models `opts` need, so the first request does not pay for it."""
        opts = self.check_options(opts or Options(only_vocals=True))
        stems = tuple(stems or opts.stems)
        self.check(opts, stems)
        self.recipe(opts).warm(self, opts, stems)

    # --- public API ----------------------------------------------------------------------------------------
    def separate_file(self, input_path, output_dir, opts: Options | None = None, *, stems=None,
                      progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
                      work_dir=None, name: str | None = None,
                      suffixes: dict[str, str] | None = None,
                      info: audio.AudioInfo | None = None) -> SeparationResult:
        """Separate a media file into stem files `<name>_<stem><ext>` in `output_dir`.

        `info`: the input's `probe()` when the caller already has it (the probe decodes the whole file).

        Stems have the input's sample rate and exactly its frame count (or 44.1 kHz when asked). Each file is
        written under a temporary name and renamed when complete; on any error none of them is left behind.
        """
        opts = self.check_options(opts or Options())
        stems = self.stems_asked(opts, stems)
        info = info or audio.probe(input_path)
        self.check(opts, stems)
        if surround.applies(info, opts):
            return surround.separate_file(self, input_path, info, output_dir, opts, stems, progress, cancel,
                                          work_dir, name, suffixes)
        out_rate = info.sample_rate if opts.sample_rate == "native" else MODEL_RATE
        out_frames = info.frames if opts.sample_rate == "native" else audio.out_frames(
            info.frames, info.sample_rate, MODEL_RATE)
        length = audio.out_frames(info.frames, info.sample_rate, MODEL_RATE)
        job = Job(progress, cancel)
        paths = audio.stem_paths(output_dir, name or Path(input_path).stem, stems, opts.output_format, suffixes)
        written: list[Path] = []
        decoding = encoding = None
        loading = self._load_in_background(opts, stems)  # the models load while the input decodes
        try:
            with work_signals(work_dir) as new_signal:
                job.start("decode")
                # the input at the output rate, for the residual stems (at 44.1 kHz out, the mix itself)
                native = new_signal(info.frames, 2, "native") if out_rate != MODEL_RATE else None
                # decoded and resampled in a side thread while the first model reads it (pipeline.Filling)
                mix = decoding = pipeline.Filling(new_signal(length, 2, "mix"), lambda n: job.step(n / UNIT))
                decoded = _tee(audio.iter_decode(input_path), native)
                decoding.feed(audio.resample_blocks(decoded, info.sample_rate, MODEL_RATE, info.frames))
                job.start("load models")
                job.total = self.work_units(length, opts, stems) + 2 * length / UNIT  # + decode and encode
                signals = self.run_recipe(mix, new_signal, opts, stems, job)
                decoding.wait()  # `native` is whole now; a decode error after the last read still fails the job
                job.start("encode")
                writers = {s: audio.StemWriter(p, out_rate, opts.output_format, opts.mono, frames=out_frames)
                           for s, p in paths.items()}
                # encoded in a side thread behind the blocks being made (pipeline.Behind, bounded queue)
                encoding = pipeline.Behind(lambda blocks: [writers[s].write(b) for s, b in blocks.items()])
                try:
                    for stem_blocks in self.final_blocks(signals, mix if native is None else native, opts, stems,
                                                         out_rate, out_frames, job):
                        encoding.put(stem_blocks)
                    encoding.close()
                    for s, w in writers.items():
                        w.close()
                        written.append(paths[s])
                except BaseException:
                    encoding.stop()
                    for w in writers.values():
                        w.abort()
                    raise
                job.finish()
                return SeparationResult(paths, info, job.timings, self.pack.kind)
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        finally:
            if decoding is not None:
                decoding.stop()
            loading.join()

    def separate_array(self, mix: np.ndarray, sample_rate: int, opts: Options | None = None, *, stems=None,
                       progress: Progress | None = None,
                       cancel: Callable[[], bool] | None = None) -> dict[str, np.ndarray]:
        """Separate an in-memory clip (float32 [T, 2] or [T]); stems come back at `sample_rate` with T frames
        (or at 44.1 kHz when opts.sample_rate == 44100)."""
        opts = self.check_options(opts or Options())
        stems = self.stems_asked(opts, stems)
        mix = np.asarray(mix, np.float32)
        if mix.ndim == 1:
            mix = mix[:, None]
        if mix.ndim != 2 or mix.shape[0] == 0 or mix.shape[1] not in (1, 2):
            raise OptionError("mix", "must be a non-empty [frames] or [frames, 1|2] array")
        if mix.shape[1] == 1:
            mix = np.repeat(mix, 2, axis=1)
        self.check(opts, stems)
        frames = len(mix)
        length = audio.out_frames(frames, sample_rate, MODEL_RATE)
        out_rate = sample_rate if opts.sample_rate == "native" else MODEL_RATE
        out_frames = frames if opts.sample_rate == "native" else length
        job = Job(progress, cancel)
        job.start("load models")
        job.total = self.work_units(length, opts, stems) + length / UNIT
        mix44 = ArraySignal(np.concatenate(list(audio.resample_blocks([mix], sample_rate, MODEL_RATE, frames))))
        signals = self.run_recipe(mix44, lambda n, ch, tag: ArraySignal.zeros(n, ch), opts, stems, job)
        parts: dict[str, list[np.ndarray]] = {s: [] for s in stems}
        native = ArraySignal(mix) if out_rate != MODEL_RATE else mix44
        for stem_blocks in self.final_blocks(signals, native, opts, stems, out_rate, out_frames, job):
            for s, block in stem_blocks.items():
                parts[s].append(block)
        job.finish()
        return {s: np.concatenate(p) for s, p in parts.items()}

    # --- the recipe's work (public: surround.py uses it per channel group) ------------------------------------
    def run_recipe(self, mix: Signal, new_signal, opts: Options, stems, job: Job) -> dict[str, Signal]:
        """The recipe's model passes over the 44.1 kHz stereo `mix`; returns its signals ("mix" included)."""
        signals = self.recipe(opts).separate(self, mix, new_signal, opts, tuple(stems), job)
        signals.setdefault("mix", mix)
        return signals

    def work_units(self, length: int, opts: Options, stems) -> float:
        """Total model work of one pass of the recipe over `length` frames at 44.1 kHz, in progress units."""
        return self.recipe(opts).work_units(self, length, opts, tuple(stems))

    def final_blocks(self, signals: dict[str, Signal], native, opts: Options, stems, out_rate: int,
                     out_frames: int, job: Job):
        """The stems at `out_rate`, `out_frames` long, block by block. A residual stem (instrumental,
        background) is `native` (the input at the output rate) minus its resampled counterpart."""
        recipe = self.recipe(opts)
        residuals = recipe.residuals
        base = [s for s in stems if s not in residuals]
        base += [residuals[s] for s in stems if s in residuals and residuals[s] not in base]
        frames = signals["mix"].frames

        def walk():
            for a, b in blocks(frames):
                job.check()
                yield a, b

        def at_model_rate():
            for out in recipe.stem_blocks(signals, base, walk()):
                job.step(len(next(iter(out.values()))) / UNIT)
                yield out

        pos = 0
        reduced = opts.precision != "fp32" or self.half_models  # fp32 can make no NaN from finite input
        for got in _fit_all(at_model_rate(), base, MODEL_RATE, out_rate, frames, out_frames):
            if reduced and not all(np.isfinite(b).all() for b in got.values()):
                raise NumericError(f"precision {opts.precision} overflowed: the models made non-finite samples "
                                   "(NaN or inf); run it with precision=fp32")
            n = len(next(iter(got.values())))
            for r, src in residuals.items():
                if r in stems:
                    got[r] = native.read(pos, pos + n) - got[src]
            pos += n
            yield {s: got[s] for s in stems}

    # --- devices and options -------------------------------------------------------------------------------
    def check_options(self, opts: Options) -> Options:
        """`opts.validate()`, plus what this engine's device cannot do (`mvsep.precision`)."""
        opts = opts.validate()
        precision.check(opts.precision, self.device)
        return opts

    def devices(self) -> dict:
        """Where this engine's models run, as torch and a loaded ONNX Runtime session report it: {"gpu_id": 1,
        "torch": "cuda:1", "onnxruntime": ("CUDAExecutionProvider", {"device_id": 1, ...})}; on the CPU "cpu"
        and ("CPUExecutionProvider", {...}). Loads the pack's first MDX model if needed (None: the pack has none)."""
        from .onnx_io import session_device
        name = next((n for n in (KIM_VOCAL_2, KIM_VOCAL_1, KIM_INST) if self.pack.file(n)), None)
        onnx = session_device(self.pack.onnx(name)) if name else None
        return {"gpu_id": self.pack.gpu_id, "torch": str(self.pack.torch_device()), "onnxruntime": onnx}

    # --- helpers -----------------------------------------------------------------------------------------
    def _load_in_background(self, opts: Options, stems) -> threading.Thread:
        """Start loading the request's models (the recipe's `warm`) in a side thread. A failure there is left
        to the main thread, which meets it again when it asks for that model."""
        def warm():
            try:
                self.recipe(opts).warm(self, opts, stems)
            except Exception as e:  # noqa: BLE001 - raised again, with its context, by the main thread's load
                log.debug("background model load failed: %s", e)

        t = threading.Thread(target=warm, name="mvsep-load", daemon=True)
        t.start()
        return t

    def half(self, opts: Options) -> bool:
        """Run the MDX models as float16 graphs (CUDA only): fp16 asked, or the Separator was made so."""
        return self.device == "cuda" and (self.half_models or opts.precision == "fp16")

    def autocast(self, opts: Options):
        """The autocast dtype of the torch models (False: float32): bf16 -> bfloat16, fp16 -> float16."""
        if self.device != "cuda":
            return False
        if opts.precision == "bf16":
            return torch.bfloat16
        return torch.float16 if self.half(opts) else False

    def stems_asked(self, opts: Options, stems) -> tuple[str, ...]:
        """The stems to write: the caller's (each made by the recipe), else the options' default."""
        if stems is None:
            return opts.stems
        stems = tuple(stems)
        bad = [s for s in stems if s not in opts.stems]
        if bad or not stems:
            raise OptionError("stems", f"must be among {', '.join(opts.stems)} for these options")
        return stems


def _tee(decoded, native: Signal | None):
    """Pass decoded blocks on, keeping a copy in `native` (None: the output rate is 44.1 kHz, no copy)."""
    pos = 0
    for block in decoded:
        if native is not None:
            native.write(pos, block)
        pos += len(block)
        yield block


def _fit_all(stem_blocks, stems, in_rate: int, out_rate: int, in_frames: int, out_frames: int):
    """Resample each stem stream to `out_rate`, exactly `out_frames` long."""
    resamplers = {s: audio.StreamResampler(in_rate, out_rate, in_frames, out_frames) for s in stems}
    for blocks_in in stem_blocks:
        yield {s: resamplers[s].process(b) for s, b in blocks_in.items()}
    yield {s: r.flush() for s, r in resamplers.items()}
