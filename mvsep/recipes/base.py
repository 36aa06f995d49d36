"""What a recipe is: its stems, its options, the pack files it needs, its work, and how it separates.

A recipe streams model passes over the 44.1 kHz stereo mix (`separate`) and then yields its stems block by block
(`stem_blocks`); the engine does everything else (decode, resampling, residual stems, encoding, surround inputs,
progress). See docs/recipes.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import NotInPackError, OptionError

TYPES = ("bool", "int", "float", "choice")


@dataclass(frozen=True)
class Option:
    """One option: `name` is the request field (HTTP, RunPod, the catalogue); `attr` the `Options` attribute and
    the CLI flag when they differ (`format` / `output_format`). `clamp`: out-of-range numbers are clamped by the
    engine (the original's overlaps) while the HTTP API refuses them. `api=False`: an engine/CLI option that
    requests do not carry (derived from other fields)."""
    name: str
    type: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    attr: str | None = None
    clamp: bool = False
    api: bool = True
    flags: tuple[str, ...] = ()   # extra CLI spellings (the original program's short flags)

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"option {self.name}: type must be one of {', '.join(TYPES)}")

    @property
    def key(self) -> str:
        return self.attr or self.name

    def as_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "default": self.default, "min": self.min, "max": self.max,
                "choices": list(self.choices) if self.choices is not None else None, "help": self.help}

    def check(self, value):
        """The value in its canonical type, clamped or refused (OptionError naming the Options attribute)."""
        if self.type == "bool":
            if isinstance(value, str):
                word = value.strip().lower()
                if word not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise OptionError(self.key, "must be true or false")
                return word in ("1", "true", "yes", "on")
            return bool(value)
        if self.type == "choice":
            for c in self.choices:
                if value == c or str(value) == str(c):
                    return c
            raise OptionError(self.key, f"must be one of {', '.join(map(str, self.choices))}")
        try:
            num = int(value) if self.type == "int" else float(value)
        except (TypeError, ValueError):
            raise OptionError(self.key, f"must be a number ({self.type})") from None
        if not math.isfinite(num):
            raise OptionError(self.key, "must be a finite number")
        if self.type == "int" and num != float(value):
            raise OptionError(self.key, "must be a whole number")
        if self.clamp:
            return min(max(num, self.min), self.max)
        if self.min is not None and self.max is not None and not self.min <= num <= self.max:
            raise OptionError(self.key, f"must be between {_n(self.min)} and {_n(self.max)}")
        if self.min is not None and num < self.min:
            raise OptionError(self.key, f"must be >= {_n(self.min)}")
        if self.max is not None and num > self.max:
            raise OptionError(self.key, f"must be <= {_n(self.max)}")
        return num


def _n(x) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class Stem:
    name: str
    summary: str
    in_all: bool = True   # part of `stems=all` (a sum of other stems, like instrumental2, is not)


class Recipe:
    """Base class of a recipe. Subclasses set the class attributes and implement `files`, `work_units`,
    `separate` and `stem_blocks`."""
    name: str = ""
    summary: str = ""
    stems: tuple[Stem, ...] = ()
    # residual stem -> the stem it is the remainder of: made by the engine at the output rate as
    # input - that stem, so stem + residual == input exactly at any rate.
    residuals: dict[str, str] = {}
    default_stems: tuple[str, ...] = ()
    # surround inputs: the stems that take the channels not separated (LFE, the rest in `center` mode) as they
    # are (None: the residual stems), and the stems that take the LFE too
    rest_stems: tuple[str, ...] | None = None
    lfe_stems: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()   # the options this recipe reads (shared names must agree across recipes)

    # --- stems ----------------------------------------------------------------------------------------------
    @property
    def stem_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stems)

    def stems_for(self, opts) -> tuple[str, ...]:
        """The stems a run with `opts` writes when the caller names none (the Python API and the CLI)."""
        return self.stem_names

    def request_options(self, stems: list[str]) -> dict:
        """Options implied by the stems a request asks for (mdx23: only_vocals)."""
        return {}

    # --- the pack --------------------------------------------------------------------------------------------
    def files(self, opts, stems) -> list[str]:
        """The pack files a run of `opts` making `stems` needs."""
        raise NotImplementedError

    def check(self, pack, opts, stems) -> None:
        """Raise NotInPackError (422) naming what the pack lacks for this request; verify the files it needs."""
        lacking = [f for f in self.files(opts, stems) if pack.file(f) is None]
        if lacking:
            raise NotInPackError(f"the {self.name} recipe is not in the {pack.kind} pack: it lacks "
                                 f"{', '.join(lacking)}", lacking)
        pack.verify(self.files(opts, stems))

    def warm(self, ctx, opts, stems) -> None:
        """Load the models of this request (ctx: the Separator: .pack, .demucs, .mdx, .half(opts))."""

    # --- the work -------------------------------------------------------------------------------------------
    def work_units(self, ctx, length: int, opts, stems) -> float:
        """Progress units of the model passes over `length` frames at 44.1 kHz (each unit ~ the samples of
        one MDX chunk through a model): drives progress and the ETA."""
        raise NotImplementedError

    def work_channels(self, opts, stems) -> int:
        """Float32 channels at 44.1 kHz this recipe keeps on disk while the stems are encoded (the mix
        included): the disk estimate."""
        raise NotImplementedError

    def separate(self, ctx, mix, new_signal, opts, stems, job) -> dict:
        """Stream the model passes over `mix` (a Signal, stereo 44.1 kHz); returns the signals `stem_blocks`
        reads. `new_signal(frames, channels, tag)` makes a work signal; call job.start(stage) per pass and
        job.step(units) as windows finish."""
        raise NotImplementedError

    def stem_blocks(self, signals: dict, stems, blocks) -> Iterator[dict[str, Any]]:
        """The asked `stems` (never a residual) at 44.1 kHz, one dict of float32 [n, 2] per (a, b) of
        `blocks`."""
        raise NotImplementedError


# Options several recipes share (the demucs shift trick): one definition, so the registry sees them agree.
SHIFTS = Option("shifts", "int", 1, "demucs shift trick passes (seeded), 0..10", min=0, max=10)
SEED = Option("seed", "int", 0, "seed of the demucs shifts", min=0)
