"""The cinematic recipe (MVSEP-CDX23; ../shared/docs/dubbing-stems.md): dialog, music and effects from the
cinematic demixing HTDemucs checkpoints, run by the engine's windowed demucs runner.

For each checkpoint m of the set: o_m = apply_model(m, mix, shifts=1, split=True, overlap=0.8) (one polarity,
no averaging of x and -x in this recipe); o = mean of the o_m; music = o[0], effects = o[1], dialog = o[2];
background = mix - dialog, background2 = music + effects.
"""
from __future__ import annotations

import copy

import numpy as np

from .demucs_runner import window_count
from .errors import NotInPackError
from .signals import Signal, blocks

RECIPES = ("mdx23", "cinematic")
CINEMATIC_DEFAULT = "97d170e1-dbb4db15.th"
CINEMATIC_SET = ("97d170e1-a778de4a.th", "97d170e1-dbb4db15.th", "97d170e1-e41a5468.th")
CINEMATIC_FILES = CINEMATIC_SET
CINEMATIC_STEMS = ("dialog", "music", "effects", "background", "background2")
OVERLAP = 0.8
MUSIC, EFFECTS, DIALOG = 0, 1, 2   # source indices, as the reference program reads them


def files(high_quality: bool) -> list[str]:
    return list(CINEMATIC_SET) if high_quality else [CINEMATIC_DEFAULT]


def missing(pack, high_quality: bool) -> list[str]:
    return [f for f in files(high_quality) if pack.file(f) is None]


def check(pack, high_quality: bool) -> None:
    """Raise NotInPackError (HTTP 422) naming the files this pack lacks; verify the others."""
    lacking = missing(pack, high_quality)
    if lacking:
        what = "the cinematic recipe with high_quality (the mean of three checkpoints)" if high_quality \
            else "the cinematic recipe"
        raise NotInPackError(f"{what} is not in the {pack.kind} pack: it lacks {', '.join(lacking)}", lacking)
    pack.verify(files(high_quality))


def work_units(pack, length: int, opts) -> float:
    return sum(window_count(pack.demucs(f), length, OVERLAP, opts.shifts, opts.seed, f, both=False)
               for f in files(opts.high_quality))


def run(runner, pack, mix: Signal, new_signal, opts, job) -> dict[str, Signal]:
    """Stream every checkpoint of the set over `mix`; returns {"mix", "mde": [music LR, effects LR, dialog LR]}
    holding the mean of the checkpoints."""
    length = mix.frames
    names = files(opts.high_quality)
    out = new_signal(length, 6, "cinematic")
    plain = copy.copy(runner)          # the same runner (device, batch, back-off), one polarity only
    plain.both_polarities = False
    for name in names:
        model = pack.demucs(name)
        job.start(f"cinematic {name.split('.')[0]}")

        def add(start, y, scale):
            y = y[:3] * (scale[:3, None, None] / len(names))
            out.add(start, y.reshape(6, -1).T)

        plain.run(model, mix.read, length, OVERLAP, add, shifts=opts.shifts, seed=opts.seed, key=name,
                  step=job.step)
    return {"mix": mix, "mde": out}


def stem_blocks(signals: dict[str, Signal], stems, job, chunk: int):
    """The recipe's stems at 44.1 kHz, block by block."""
    mix, mde = signals["mix"], signals["mde"]
    for a, b in blocks(mix.frames):
        job.check()
        o = mde.read(a, b)
        music, effects, dialog = o[:, 0:2], o[:, 2:4], o[:, 4:6]
        out = {"dialog": dialog, "music": music, "effects": effects}
        if "background" in stems:
            out["background"] = mix.read(a, b) - dialog
        if "background2" in stems:
            out["background2"] = music + effects
        job.step((b - a) / chunk)
        yield {s: np.ascontiguousarray(out[s]) for s in stems}
