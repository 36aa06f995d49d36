"""The cinematic recipe (MVSEP-CDX23; ../shared/docs/dubbing-stems.md): dialog, music and effects from the
cinematic demixing HTDemucs checkpoints, run by the engine's windowed demucs runner.

For each checkpoint m of the set: o_m = apply_model(m, mix, shifts=1, split=True, overlap=0.8) (one polarity,
no averaging of x and -x in this recipe); o = mean of the o_m; music = o[0], effects = o[1], dialog = o[2];
background = mix - dialog (a residual, made by the engine), background2 = music + effects.
"""
from __future__ import annotations

import copy

import numpy as np

from ..errors import NotInPackError
from .base import SEED, SHIFTS, Option, Recipe, Stem

CINEMATIC_DEFAULT = "97d170e1-dbb4db15.th"
CINEMATIC_SET = ("97d170e1-a778de4a.th", "97d170e1-dbb4db15.th", "97d170e1-e41a5468.th")
OVERLAP = 0.8


def files(high_quality: bool) -> list[str]:
    return list(CINEMATIC_SET) if high_quality else [CINEMATIC_DEFAULT]


class Cinematic(Recipe):
    name = "cinematic"
    summary = "film and TV: dialog, music and effects (MVSEP-CDX23 demucs checkpoints)"
    stems = (Stem("dialog", "speech"), Stem("music", "the score and songs"), Stem("effects", "sound effects"),
             Stem("background", "everything but the dialog (the input minus dialog)"),
             Stem("background2", "music + effects"))
    residuals = {"background": "dialog"}
    default_stems = ("dialog", "music", "effects", "background", "background2")
    rest_stems = ("background", "background2")
    lfe_stems = ("effects",)
    options = (Option("high_quality", "bool", False, "the mean of three checkpoints (3x the time)"), SHIFTS, SEED)

    def files(self, opts, stems) -> list[str]:
        return files(opts.high_quality)

    def check(self, pack, opts, stems) -> None:
        lacking = [f for f in self.files(opts, stems) if pack.file(f) is None]
        if lacking:
            what = "the cinematic recipe with high_quality (the mean of three checkpoints)" if opts.high_quality \
                else "the cinematic recipe"
            raise NotInPackError(f"{what} is not in the {pack.kind} pack: it lacks {', '.join(lacking)}", lacking)
        pack.verify(self.files(opts, stems))

    def warm(self, ctx, opts, stems) -> None:
        for name in files(opts.high_quality):
            ctx.pack.demucs(name)

    def work_units(self, ctx, length: int, opts, stems) -> float:
        from ..demucs_runner import window_count
        return sum(window_count(ctx.pack.demucs(f), length, OVERLAP, opts.shifts, opts.seed, f, both=False)
                   for f in files(opts.high_quality))

    def work_channels(self, opts, stems) -> int:
        return 2 + 6   # the mix, music/effects/dialog sums

    def separate(self, ctx, mix, new_signal, opts, stems, job) -> dict:
        """Stream every checkpoint of the set over `mix`; "mde" holds the mean of the checkpoints' music,
        effects and dialog (L R each)."""
        length = mix.frames
        names = files(opts.high_quality)
        out = new_signal(length, 6, "cinematic")
        plain = copy.copy(ctx.demucs)        # the same runner (device, batch, back-off), one polarity only
        plain.both_polarities = False
        for name in names:
            model = ctx.pack.demucs(name)
            job.start(f"cinematic {name.split('.')[0]}")

            def add(start, y, scale):
                y = y[:3] * (scale[:3, None, None] / len(names))
                out.add(start, y.reshape(6, -1).T)

            plain.run(model, mix.read, length, OVERLAP, add, shifts=opts.shifts, seed=opts.seed, key=name,
                      step=job.step)
        return {"mix": mix, "mde": out}

    def stem_blocks(self, signals, stems, blocks):
        mde = signals["mde"]
        for a, b in blocks:
            o = mde.read(a, b)
            music, effects, dialog = o[:, 0:2], o[:, 2:4], o[:, 4:6]
            out = {"dialog": dialog, "music": music, "effects": effects}
            if "background2" in stems:
                out["background2"] = music + effects
            yield {s: np.ascontiguousarray(out[s]) for s in stems}
