"""The MDX23 ensemble (docs: ../shared/docs/mdx23-algorithm.md) and the engine's public API.

Every full-length signal (the 44.1 kHz mix, the vocals, the drums/bass/other sums) lives in a `Signal`: on disk
for files (bounded memory whatever the duration), in memory for the array API. The models stream over them
window by window (`mdx.py`, `demucs_runner.py`) and add their weighted share of the ensemble as soon as a piece
is final, so nothing is ever held whole in RAM.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import audio, cinematic, surround
from .demucs_runner import DemucsRunner, window_count
from .device import resolve_device
from .errors import Cancelled, NotInPackError, OptionError
from .mdx import CHUNK, MdxRunner, piece_count
from .pack import DEMUCS_VOCALS, FOUR_STEM_BAGS, KIM_INST, KIM_VOCAL_1, KIM_VOCAL_2, ModelPack
from .signals import ArraySignal, Signal, blocks, work_signals

log = logging.getLogger("mvsep.engine")

MODEL_RATE = 44100
VOCAL_STEMS = ("vocals", "instrumental")
LAYOUTS = ("keep", "center", "stereo")
# Stems that are the input minus another stem: computed at the output rate from the input itself, so that
# stem + residual == input exactly whatever the rate (what the models never saw stays in the residual).
RESIDUALS = {"instrumental": "vocals", "background": "dialog"}
FOUR_STEMS = ("drums", "bass", "other", "instrumental2")
# The 4-stem weights of the spec, per model in FOUR_STEM_BAGS order.
WEIGHTS = {"drums": (18, 2, 4, 9), "bass": (19, 4, 5, 8), "other": (14, 2, 5, 10)}
PRECISIONS = ("fp32", "fp16")

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Options:
    only_vocals: bool = False
    overlap_large: float = 0.6
    overlap_small: float = 0.5
    chunk_size: int = 1_000_000
    shifts: int = 1
    seed: int = 0
    single_onnx: bool = False
    use_kim_model_1: bool = False
    output_format: str = "wav"
    sample_rate: str | int = "native"
    mono: bool = False
    precision: str = "fp32"  # fp16: demucs under autocast and float16 MDX graphs, CUDA only
    recipe: str = "mdx23"           # mdx23 | cinematic (cinematic.py)
    high_quality: bool = False      # cinematic: the mean of three checkpoints instead of one
    layout: str = "keep"            # surround inputs: keep | center | stereo (surround.py)

    def validate(self) -> "Options":
        """A checked copy: overlaps clamped to [0, 0.99] as the original did, everything else must be in range."""
        if not 44_100 <= int(self.chunk_size) <= 10_000_000:
            raise OptionError("chunk_size", "must be between 44100 and 10000000 samples")
        if not 0 <= int(self.shifts) <= 10:
            raise OptionError("shifts", "must be between 0 and 10")
        if int(self.seed) < 0:
            raise OptionError("seed", "must be >= 0")
        if self.output_format not in audio.OUTPUT_FORMATS:
            raise OptionError("output_format", f"must be one of {', '.join(audio.OUTPUT_FORMATS)}")
        if self.precision not in PRECISIONS:
            raise OptionError("precision", f"must be one of {', '.join(PRECISIONS)}")
        rate = str(self.sample_rate)
        if rate not in ("native", str(MODEL_RATE)):
            raise OptionError("sample_rate", f"must be native or {MODEL_RATE}")
        if self.recipe not in cinematic.RECIPES:
            raise OptionError("recipe", f"must be one of {', '.join(cinematic.RECIPES)}")
        if self.layout not in LAYOUTS:
            raise OptionError("layout", f"must be one of {', '.join(LAYOUTS)}")
        clamp = lambda v: min(max(float(v), 0.0), 0.99)  # noqa: E731
        return replace(self, overlap_large=clamp(self.overlap_large), overlap_small=clamp(self.overlap_small),
                       chunk_size=int(self.chunk_size), shifts=int(self.shifts), seed=int(self.seed),
                       sample_rate=rate if rate == "native" else MODEL_RATE)

    @property
    def stems(self) -> tuple[str, ...]:
        if self.recipe == "cinematic":
            return cinematic.CINEMATIC_STEMS
        return VOCAL_STEMS if self.only_vocals else VOCAL_STEMS + FOUR_STEMS


@dataclass
class SeparationResult:
    stems: dict[str, Path]
    info: audio.AudioInfo
    timings: dict[str, float] = field(default_factory=dict)
    pack: str = "real"


class _Job:
    """Progress, cancellation and stage timings of one separation."""

    def __init__(self, progress: Progress | None, cancel: Callable[[], bool] | None):
        self.progress, self.cancel = progress, cancel
        self.total, self.done = 1.0, 0.0
        self.timings: dict[str, float] = {}
        self.stage, self._t0 = "", time.monotonic()

    def start(self, stage: str) -> None:
        self.check()
        self._close_stage()
        self.stage, self._t0 = stage, time.monotonic()
        self._report()

    def step(self, units: float) -> None:
        self.done += units
        self._report()
        self.check()

    def check(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("separation canceled")

    def finish(self) -> None:
        self._close_stage()
        self.done = self.total
        self._report()

    def _close_stage(self) -> None:
        if self.stage:
            self.timings[self.stage] = self.timings.get(self.stage, 0.0) + time.monotonic() - self._t0

    def _report(self) -> None:
        if self.progress:
            self.progress(min(self.done / self.total, 1.0), self.stage)


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
        self.half = half  # fp16 whatever the options ask (older API); Options.precision is the way now
        # batch sizes: per model, learned on this device for the life of the process (unless fixed here)
        self.demucs = DemucsRunner(tdev, batch_size, half)
        self.mdx = MdxRunner(tdev, batch_size)

    # --- pack --------------------------------------------------------------------------------------------
    def missing(self, opts: Options) -> list[str]:
        if opts.recipe == "cinematic":
            return cinematic.missing(self.pack, opts.high_quality)
        return self.pack.missing(opts.only_vocals, opts.single_onnx, opts.use_kim_model_1)

    def recipes(self) -> list[str]:
        """The recipes this pack can run (their default options)."""
        return [r for r in cinematic.RECIPES if not self.missing(Options(recipe=r, only_vocals=True))]

    def check(self, opts: Options) -> None:
        """Raise when the pack cannot serve `opts`: NotInPackError (422) for a recipe or stems it does not ship,
        ModelPackError (503) for a broken pack; verify the files against the manifest."""
        if opts.recipe == "cinematic":
            return cinematic.check(self.pack, opts.high_quality)
        lacking = self.pack.missing(True, opts.single_onnx, opts.use_kim_model_1)
        if lacking and len(lacking) == len(self.pack.needed(True, opts.single_onnx, opts.use_kim_model_1)) \
                and "cinematic" in self.recipes():
            raise NotInPackError(f"the mdx23 recipe is not in the {self.pack.kind} pack (it holds the cinematic "
                                 f"models only): it lacks {', '.join(lacking)}; ask for recipe=cinematic", lacking)
        self.pack.check(opts.only_vocals, opts.single_onnx, opts.use_kim_model_1)

    def warm(self, opts: Options | None = None) -> None:
        """Verify and load the models `opts` need, so the first request does not pay for it."""
        opts = self.check_options(opts or Options(only_vocals=True))
        self.check(opts)
        if opts.recipe == "cinematic":
            for name in cinematic.files(opts.high_quality):
                self.pack.demucs(name)
            return
        self.pack.demucs(DEMUCS_VOCALS)
        for name in self._mdx_models(opts):
            self.pack.onnx(name, self._half(opts))
        if not opts.only_vocals:
            for bag, _ in FOUR_STEM_BAGS:
                self.pack.demucs(bag)

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
        stems = self._stems_asked(opts, stems)
        info = info or audio.probe(input_path)
        self.check(opts)
        if surround.applies(info, opts):
            return surround.separate_file(self, input_path, info, output_dir, opts, stems, progress, cancel,
                                          work_dir, name, suffixes)
        out_rate = info.sample_rate if opts.sample_rate == "native" else MODEL_RATE
        out_frames = info.frames if opts.sample_rate == "native" else audio.out_frames(
            info.frames, info.sample_rate, MODEL_RATE)
        length = audio.out_frames(info.frames, info.sample_rate, MODEL_RATE)
        job = _Job(progress, cancel)
        job.start("load models")
        job.total = self._work_units(length, opts) + 2 * length / CHUNK  # + decode and encode
        paths = audio.stem_paths(output_dir, name or Path(input_path).stem, stems, opts.output_format, suffixes)
        written: list[Path] = []
        try:
            with work_signals(work_dir) as new_signal:
                job.start("decode")
                mix = new_signal(length, 2, "mix")
                # the input at the output rate, for the residual stems (at 44.1 kHz out, the mix itself)
                native = new_signal(info.frames, 2, "native") if out_rate != MODEL_RATE else mix
                pos = 0
                decoded = _tee(audio.iter_decode(input_path), native, mix)
                for block in audio.resample_blocks(decoded, info.sample_rate, MODEL_RATE, info.frames):
                    mix.write(pos, block)
                    pos += len(block)
                    job.step(len(block) / CHUNK)
                signals = self._ensemble(mix, new_signal, opts, job)
                job.start("encode")
                writers = {s: audio.StemWriter(p, out_rate, opts.output_format, opts.mono, frames=out_frames)
                           for s, p in paths.items()}
                try:
                    for stem_blocks in self._final_blocks(signals, native, stems, out_rate, out_frames, job):
                        for s, block in stem_blocks.items():
                            writers[s].write(block)
                    for s, w in writers.items():
                        w.close()
                        written.append(paths[s])
                except BaseException:
                    for w in writers.values():
                        w.abort()
                    raise
                job.finish()
                return SeparationResult(paths, info, job.timings, self.pack.kind)
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise

    def separate_array(self, mix: np.ndarray, sample_rate: int, opts: Options | None = None, *, stems=None,
                       progress: Progress | None = None,
                       cancel: Callable[[], bool] | None = None) -> dict[str, np.ndarray]:
        """Separate an in-memory clip (float32 [T, 2] or [T]); stems come back at `sample_rate` with T frames
        (or at 44.1 kHz when opts.sample_rate == 44100)."""
        opts = self.check_options(opts or Options())
        stems = self._stems_asked(opts, stems)
        mix = np.asarray(mix, np.float32)
        if mix.ndim == 1:
            mix = mix[:, None]
        if mix.ndim != 2 or mix.shape[0] == 0 or mix.shape[1] not in (1, 2):
            raise OptionError("mix", "must be a non-empty [frames] or [frames, 1|2] array")
        if mix.shape[1] == 1:
            mix = np.repeat(mix, 2, axis=1)
        self.check(opts)
        frames = len(mix)
        length = audio.out_frames(frames, sample_rate, MODEL_RATE)
        out_rate = sample_rate if opts.sample_rate == "native" else MODEL_RATE
        out_frames = frames if opts.sample_rate == "native" else length
        job = _Job(progress, cancel)
        job.start("load models")
        job.total = self._work_units(length, opts) + length / CHUNK
        mix44 = ArraySignal(np.concatenate(list(audio.resample_blocks([mix], sample_rate, MODEL_RATE, frames))))
        signals = self._ensemble(mix44, lambda n, ch, tag: ArraySignal.zeros(n, ch), opts, job)
        parts: dict[str, list[np.ndarray]] = {s: [] for s in stems}
        native = ArraySignal(mix) if out_rate != MODEL_RATE else mix44
        for stem_blocks in self._final_blocks(signals, native, stems, out_rate, out_frames, job):
            for s, block in stem_blocks.items():
                parts[s].append(block)
        job.finish()
        return {s: np.concatenate(p) for s, p in parts.items()}

    # --- the ensemble ----------------------------------------------------------------------------------------
    def _ensemble(self, mix: Signal, new_signal, opts: Options, job: _Job) -> dict[str, Signal]:
        """Vocals = (12 v1 + 8 v2 + 3 v_demucs) / 23 (single_onnx: (6 v1 + v_demucs) / 7); then, unless
        only_vocals, the weighted drums/bass/other of the four demucs models on the instrumental."""
        if opts.recipe == "cinematic":
            return cinematic.run(self.demucs, self.pack, mix, new_signal, opts, job)
        length = mix.frames
        vocals = new_signal(length, 2, "vocals")
        w_demucs, w_v1, w_v2 = (1 / 7, 6 / 7, 0.0) if opts.single_onnx else (3 / 23, 12 / 23, 8 / 23)
        half = self._half(opts)

        model = self.pack.demucs(DEMUCS_VOCALS)
        iv = list(model.sources).index("vocals")
        job.start("demucs vocals")
        self.demucs.run(model, mix.read, length, opts.overlap_large,
                        lambda s, y, scale: vocals.add(s, y[iv].T * (scale[iv] * w_demucs)),
                        shifts=opts.shifts, seed=opts.seed, key="vocals", step=job.step, half=half)

        kim_vocal = self._mdx_models(opts)[0]
        job.start(f"mdx {Path(kim_vocal).stem}")
        self.mdx.run(self.pack.onnx(kim_vocal, half), mix.read, length, opts.chunk_size, opts.overlap_large,
                     lambda s, y: vocals.add(s, y.T * w_v1), job.step)
        if not opts.single_onnx:
            # v2 = mix - (-M(Kim_Inst, -mix)) = mix + M(Kim_Inst, -mix)
            job.start(f"mdx {Path(KIM_INST).stem}")
            self.mdx.run(self.pack.onnx(KIM_INST, half), lambda a, b: -mix.read(a, b), length, opts.chunk_size,
                         opts.overlap_large,
                         lambda s, y: vocals.add(s, (mix.read(s, s + y.shape[1]) + y.T) * w_v2), job.step)
        signals = {"mix": mix, "vocals": vocals}
        if opts.only_vocals:
            return signals

        dbo = new_signal(length, 6, "dbo")  # drums L R, bass L R, other L R: weighted sums
        instrum = lambda a, b: mix.read(a, b) - vocals.read(a, b)  # noqa: E731
        for i, (bag, which) in enumerate(FOUR_STEM_BAGS):
            model = self.pack.demucs(bag)
            sources = list(model.sources)
            job.start(bag)

            def add(s, est, scale, i=i, sources=sources):
                est = est * scale[:, None, None]
                if len(sources) > 4:  # htdemucs_6s: guitar and piano go to other
                    est[sources.index("other")] += est[sources.index("guitar")] + est[sources.index("piano")]
                parts = [est[sources.index(k)] * (WEIGHTS[k][i] / sum(WEIGHTS[k])) for k in ("drums", "bass",
                                                                                          "other")]
                dbo.add(s, np.concatenate(parts).T)

            overlap = opts.overlap_small if which == "small" else opts.overlap_large
            self.demucs.run(model, instrum, length, overlap, add, shifts=opts.shifts, seed=opts.seed, key=bag,
                            step=job.step, half=half)
        signals["dbo"] = dbo
        return signals

    def _stem_blocks(self, signals: dict[str, Signal], stems, job: _Job):
        """The final stems at 44.1 kHz, block by block, as the spec derives them."""
        if "mde" in signals:
            yield from cinematic.stem_blocks(signals, stems, job, CHUNK)
            return
        mix, vocals, dbo = signals["mix"], signals["vocals"], signals.get("dbo")
        for a, b in blocks(mix.frames):
            job.check()
            v = vocals.read(a, b)
            rest = mix.read(a, b) - v  # the instrumental
            out = {"vocals": v, "instrumental": rest}
            if dbo is not None:
                s = dbo.read(a, b)
                d, bs, o = s[:, 0:2], s[:, 2:4], s[:, 4:6]
                o1 = (2 * np.clip(rest - d - bs, -1, 1) + o) / 3
                d1 = (np.clip(rest - bs - o, -1, 1) + 2 * d) / 3
                b1 = (np.clip(rest - d - o, -1, 1) + 2 * bs) / 3
                # each final stem uses the two first-pass others, as the original did
                out["other"] = rest - b1 - d1
                out["drums"] = rest - b1 - o1
                out["bass"] = rest - d1 - o1
                out["instrumental2"] = out["bass"] + out["drums"] + out["other"]
            job.step((b - a) / CHUNK)
            yield {s: out[s] for s in stems}

    # --- devices and options -------------------------------------------------------------------------------
    def check_options(self, opts: Options) -> Options:
        """`opts.validate()`, plus what this engine's device cannot do: fp16 needs CUDA."""
        opts = opts.validate()
        if opts.precision == "fp16" and self.device != "cuda":
            raise OptionError("precision", "fp16 needs a CUDA GPU; this engine runs on the CPU (use fp32)")
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
    def _half(self, opts: Options) -> bool:
        return self.device == "cuda" and (self.half or opts.precision == "fp16")

    def _mdx_models(self, opts: Options) -> list[str]:
        first = KIM_VOCAL_1 if opts.use_kim_model_1 else KIM_VOCAL_2
        return [first] if opts.single_onnx else [first, KIM_INST]

    def _stems_asked(self, opts: Options, stems) -> tuple[str, ...]:
        if stems is None:
            return opts.stems
        stems = tuple(stems)
        bad = [s for s in stems if s not in opts.stems]
        if bad or not stems:
            raise OptionError("stems", f"must be among {', '.join(opts.stems)} for these options")
        return stems

    def _work_units(self, length: int, opts: Options) -> float:
        """Total model work, in windows/pieces weighted by the samples each runs through its model."""
        if opts.recipe == "cinematic":
            return cinematic.work_units(self.pack, length, opts)
        units = window_count(self.pack.demucs(DEMUCS_VOCALS), length, opts.overlap_large, opts.shifts,
                             opts.seed, "vocals")
        units += len(self._mdx_models(opts)) * piece_count(length, opts.chunk_size, opts.overlap_large)
        if not opts.only_vocals:
            for bag, which in FOUR_STEM_BAGS:
                overlap = opts.overlap_small if which == "small" else opts.overlap_large
                units += window_count(self.pack.demucs(bag), length, overlap, opts.shifts, opts.seed, bag)
        return units


    def _final_blocks(self, signals: dict[str, Signal], native: Signal, stems, out_rate: int, out_frames: int,
                      job: _Job):
        """The stems at `out_rate`, `out_frames` long, block by block. A residual stem (instrumental,
        background) is `native` (the input at the output rate) minus its resampled counterpart."""
        base = [s for s in stems if s not in RESIDUALS]
        base += [RESIDUALS[s] for s in stems if s in RESIDUALS and RESIDUALS[s] not in base]
        pos = 0
        for got in _fit_all(self._stem_blocks(signals, base, job), base, MODEL_RATE, out_rate,
                            signals["mix"].frames, out_frames):
            n = len(next(iter(got.values())))
            for r, src in RESIDUALS.items():
                if r in stems:
                    got[r] = native.read(pos, pos + n) - got[src]
            pos += n
            yield {s: got[s] for s in stems}


def _tee(decoded, native: Signal, mix: Signal):
    """Pass decoded blocks on, keeping a copy in `native` (unless it is the 44.1 kHz mix, written later)."""
    pos = 0
    for block in decoded:
        if native is not mix:
            native.write(pos, block)
        pos += len(block)
        yield block


def _fit_all(stem_blocks, stems, in_rate: int, out_rate: int, in_frames: int, out_frames: int):
    """Resample each stem stream to `out_rate`, exactly `out_frames` long."""
    resamplers = {s: audio.StreamResampler(in_rate, out_rate, in_frames, out_frames) for s in stems}
    for blocks_in in stem_blocks:
        yield {s: resamplers[s].process(b) for s, b in blocks_in.items()}
    yield {s: r.flush() for s, r in resamplers.items()}
