"""The MVSEP-MDX23 ensemble (../shared/docs/mdx23-algorithm.md): vocals from two MDX-Net models and a demucs
model, then, for 4 stems, drums/bass/other from four demucs bags on the instrumental.

Every full-length signal (the vocals, the drums/bass/other sums) is a `Signal` the models add their weighted
share into as soon as a piece is final, so nothing is held whole in RAM.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelPackError, NotInPackError
from ..pack import DEMUCS_FILES, KIM_INST, KIM_VOCAL_1, KIM_VOCAL_2, bag_definition
from .base import SEED, SHIFTS, Option, Recipe, Stem

DEMUCS_VOCALS = DEMUCS_FILES["04573f0d"]
# The 4-stem step, in the spec's order: bag name, which overlap it uses.
FOUR_STEM_BAGS = (("htdemucs_ft", "small"), ("htdemucs", "large"), ("htdemucs_6s", "large"),
                  ("hdemucs_mmi", "large"))
FOUR_STEMS = ("drums", "bass", "other", "instrumental2")
# The 4-stem weights of the spec, per model in FOUR_STEM_BAGS order.
WEIGHTS = {"drums": (18, 2, 4, 9), "bass": (19, 4, 5, 8), "other": (14, 2, 5, 10)}


def bag_files(name: str) -> list[str]:
    return [DEMUCS_FILES.get(sig, f"{sig}-*.th") for sig in bag_definition(name)["models"]]


def vocals_files(single_onnx: bool, use_kim_model_1: bool) -> list[str]:
    files = [KIM_VOCAL_1 if use_kim_model_1 else KIM_VOCAL_2]
    if not single_onnx:
        files.append(KIM_INST)
    return files + [DEMUCS_VOCALS]


def four_stem_files() -> list[str]:
    names: list[str] = []
    for bag, _ in FOUR_STEM_BAGS:
        names += [f for f in bag_files(bag) if f not in names]
    return names


def mdx_models(opts) -> list[str]:
    first = KIM_VOCAL_1 if opts.use_kim_model_1 else KIM_VOCAL_2
    return [first] if opts.single_onnx else [first, KIM_INST]


class Mdx23(Recipe):
    name = "mdx23"
    summary = "MDX23 ensemble: vocals and instrumental, optionally drums, bass, other"
    stems = (Stem("vocals", "the voice / dialog"),
             Stem("instrumental", "everything but the vocals (the input minus vocals)"),
             Stem("drums", "drums of the instrumental (four demucs models)"),
             Stem("bass", "bass of the instrumental"),
             Stem("other", "the rest of the instrumental"),
             Stem("instrumental2", "drums + bass + other", in_all=False))
    residuals = {"instrumental": "vocals"}
    default_stems = ("vocals", "instrumental")
    rest_stems = ("instrumental", "instrumental2")
    lfe_stems = ("bass",)
    options = (
        Option("only_vocals", "bool", False, "only vocals and instrumental (no 4-stem models)", api=False),
        Option("overlap_large", "float", 0.6, "window overlap of the lighter models, 0..0.99 (higher: slower, "
               "smoother)", min=0.0, max=0.99, clamp=True, flags=("-ol",)),
        Option("overlap_small", "float", 0.5, "window overlap of htdemucs_ft, 0..0.99", min=0.0, max=0.99,
               clamp=True, flags=("-os",)),
        Option("chunk_size", "int", 1_000_000, "samples per MDX chunk (lower uses less GPU memory)",
               min=44_100, max=10_000_000, flags=("-cz",)),
        SHIFTS, SEED,
        Option("single_onnx", "bool", False, "vocals from Kim_Vocal only (no Kim_Inst)"),
        Option("use_kim_model_1", "bool", False, "use Kim_Vocal_1 instead of Kim_Vocal_2"),
    )

    def stems_for(self, opts) -> tuple[str, ...]:
        return self.default_stems if opts.only_vocals else self.stem_names

    def request_options(self, stems) -> dict:
        return {"only_vocals": not any(s in FOUR_STEMS for s in stems)}

    @staticmethod
    def _four(opts, stems) -> bool:
        return not opts.only_vocals and any(s in FOUR_STEMS for s in stems)

    def files(self, opts, stems) -> list[str]:
        files = vocals_files(opts.single_onnx, opts.use_kim_model_1)
        if self._four(opts, stems):
            files += [f for f in four_stem_files() if f not in files]
        return files

    def check(self, pack, opts, stems) -> None:
        needed = self.files(opts, stems)
        missing = [f for f in needed if pack.file(f) is None]
        if missing:
            vocal = vocals_files(opts.single_onnx, opts.use_kim_model_1)
            four = set(four_stem_files()) - set(vocal)
            if self._four(opts, stems) and set(missing) >= four and not (set(missing) - four):
                raise NotInPackError(f"4-stem separation is not in the {pack.kind} pack (it holds the vocals "
                                     "models only); ask for vocals and instrumental", sorted(four))
            # no server paths in messages: they reach HTTP callers
            raise ModelPackError(f"model files missing: {', '.join(missing)}", missing)
        pack.verify(needed)

    def warm(self, ctx, opts, stems) -> None:
        """Load every model of the request at the same time (torch and ONNX Runtime release the GIL while
        they read and build; on a GPU the uploads overlap too)."""
        from concurrent.futures import ThreadPoolExecutor
        loads = [lambda: ctx.pack.demucs(DEMUCS_VOCALS)]
        loads += [lambda n=name: ctx.pack.onnx(n, ctx.half(opts)) for name in mdx_models(opts)]
        if self._four(opts, stems):
            loads += [lambda b=bag: ctx.pack.demucs(b) for bag, _ in FOUR_STEM_BAGS]
        with ThreadPoolExecutor(min(4, len(loads)), thread_name_prefix="mvsep-load") as pool:
            for done in [pool.submit(f) for f in loads]:
                done.result()

    def work_units(self, ctx, length: int, opts, stems) -> float:
        from ..demucs_runner import window_count
        from ..mdx import piece_count
        units = window_count(ctx.pack.demucs(DEMUCS_VOCALS), length, opts.overlap_large, opts.shifts,
                             opts.seed, "vocals")
        units += len(mdx_models(opts)) * piece_count(length, opts.chunk_size, opts.overlap_large)
        if self._four(opts, stems):
            for bag, which in FOUR_STEM_BAGS:
                overlap = opts.overlap_small if which == "small" else opts.overlap_large
                units += window_count(ctx.pack.demucs(bag), length, overlap, opts.shifts, opts.seed, bag)
        return units

    def work_channels(self, opts, stems) -> int:
        return 4 + (6 if self._four(opts, stems) else 0)   # mix, vocals (+ drums/bass/other sums)

    def separate(self, ctx, mix, new_signal, opts, stems, job) -> dict:
        """Vocals = (12 v1 + 8 v2 + 3 v_demucs) / 23 (single_onnx: (6 v1 + v_demucs) / 7); then, for 4 stems,
        the weighted drums/bass/other of the four demucs models on the instrumental."""
        length = mix.frames
        vocals = self._vocals(ctx, mix, new_signal, opts, job)
        autocast = ctx.autocast(opts)
        signals = {"mix": mix, "vocals": vocals}
        if not self._four(opts, stems):
            return signals

        dbo = new_signal(length, 6, "dbo")  # drums L R, bass L R, other L R: weighted sums
        instrum = lambda a, b: mix.read(a, b) - vocals.read(a, b)  # noqa: E731
        for i, (bag, which) in enumerate(FOUR_STEM_BAGS):
            model = ctx.pack.demucs(bag)
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
            ctx.demucs.run(model, instrum, length, overlap, add, shifts=opts.shifts, seed=opts.seed, key=bag,
                           step=job.step, half=autocast)
        signals["dbo"] = dbo
        return signals

    @staticmethod
    def _vocals(ctx, mix, new_signal, opts, job):
        """The vocals signal: the demucs pass, then the MDX passes, each adding its weighted share. With
        `ctx.overlap_models` (CUDA) the demucs pass runs beside the MDX passes (`pipeline.Beside`) and each MDX
        share is added once the demucs pass has finished that stretch (`AfterFrontier`): the same sums in the
        same order, so the same bytes."""
        from ..demucs_runner import plan
        length = mix.frames
        w_demucs, w_v1, w_v2 = (1 / 7, 6 / 7, 0.0) if opts.single_onnx else (3 / 23, 12 / 23, 8 / 23)
        half, autocast = ctx.half(opts), ctx.autocast(opts)
        model = ctx.pack.demucs(DEMUCS_VOCALS)
        iv = list(model.sources).index("vocals")
        vocals = new_signal(length, 2, "vocals")

        def demucs_vocals(read, step, done=lambda frames: None):
            def add(s, y, scale):
                vocals.add(s, y[iv].T * (scale[iv] * w_demucs))
                done(y.shape[-1])
            ctx.demucs.run(model, read, length, opts.overlap_large, add, shifts=opts.shifts, seed=opts.seed,
                           key="vocals", step=step, half=autocast)

        def mdx_vocals(add, step):
            kim_vocal = mdx_models(opts)[0]
            job.start(f"mdx {Path(kim_vocal).stem}")
            ctx.mdx.run(ctx.pack.onnx(kim_vocal, half), mix.read, length, opts.chunk_size, opts.overlap_large,
                        lambda s, y: add(s, y.T * w_v1), step)
            if not opts.single_onnx:
                # v2 = mix - (-M(Kim_Inst, -mix)) = mix + M(Kim_Inst, -mix)
                job.start(f"mdx {Path(KIM_INST).stem}")
                ctx.mdx.run(ctx.pack.onnx(KIM_INST, half), lambda a, b: -mix.read(a, b), length, opts.chunk_size,
                            opts.overlap_large, lambda s, y: add(s, (mix.read(s, s + y.shape[1]) + y.T) * w_v2),
                            step)

        if not ctx.overlap_models:
            job.start("demucs vocals")
            demucs_vocals(mix.read, job.step)
            mdx_vocals(vocals.add, job.step)
            return vocals

        from ..pipeline import AfterFrontier, Beside
        later = AfterFrontier(vocals)
        # each pass of the demucs model emits every frame once, in order: the last pass's frames are final
        passes = len(plan(model, length, opts.overlap_large, opts.shifts, opts.seed, "vocals",
                          ctx.demucs.both_polarities))
        emitted = [0]

        def done(frames):
            emitted[0] += frames
            later.advance(emitted[0] - (passes - 1) * length)

        quiet = getattr(mix, "read_quiet", None)  # a mix still decoding: progress is the main thread's
        side = Beside(lambda step, stopping: demucs_vocals(
            (lambda a, b: quiet(a, b, stopping)) if quiet else mix.read, step, done), ctx.demucs.device)
        try:
            mdx_vocals(lambda s, block: later.add(s, block, lambda: side.poll(job)),
                       lambda n: job.step(n + side.take()))
            job.start("demucs vocals")
            side.join(job)
        except BaseException:
            side.stop()
            raise
        later.finish()
        return vocals

    def stem_blocks(self, signals, stems, blocks):
        """The final stems at 44.1 kHz, block by block, as the spec derives them."""
        mix, vocals, dbo = signals["mix"], signals["vocals"], signals.get("dbo")
        for a, b in blocks:
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
            yield {s: out[s] for s in stems}
