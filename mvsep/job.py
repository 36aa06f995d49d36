"""One separation's progress, cancellation and stage timings, and its result (shared by the engine, surround
inputs and the recipes)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .audio import AudioInfo
from .errors import Cancelled

Progress = Callable[[float, str], None]
# Progress unit: the samples of one MDX chunk (261120 frames at 44.1 kHz) through one model; decoding and
# encoding count one unit per UNIT frames too.
UNIT = 261120


@dataclass
class SeparationResult:
    stems: dict[str, Path]
    info: AudioInfo
    timings: dict[str, float] = field(default_factory=dict)
    pack: str = "real"


class Job:
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
