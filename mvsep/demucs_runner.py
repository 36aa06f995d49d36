"""Demucs inference window by window, on the exact grid of `demucs.apply.apply_model(split=True)`.

Whole-file `apply_model` cuts the input into segments at `range(0, length, stride)`, pads each to the model's
valid length with the real neighbouring samples (zeros only past the true ends), runs the model, trims it back
and blends the windows with triangle weights. Here the same windows are read from a signal on demand, run in
batches (both polarities of each window in one forward), blended by an `OverlapAdd` that only holds the windows
in flight, and handed on as soon as no later window can touch them. The shift trick delays the input by a
seeded offset instead of a random one, so identical requests give identical bytes.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .device import Backoff
from .signals import OverlapAdd, Reader

# emit(start, estimate [S, 2, n], scale): a finished piece of this model's P(), to be scaled by `scale`.
Emit = Callable[[int, np.ndarray, np.ndarray], None]


@dataclass
class Grid:
    segment: int  # samples
    stride: int
    weight: np.ndarray  # triangle, max 1

    def offsets(self, length: int) -> range:
        return range(0, length, self.stride)


def grid_for(model, overlap: float) -> Grid:
    seg = int(model.samplerate * model.segment)
    stride = int((1 - overlap) * seg)
    if stride < 1:
        raise ValueError(f"overlap {overlap} leaves no stride for a segment of {seg} samples")
    half = seg // 2
    tri = np.concatenate([np.arange(1, half + 1), np.arange(seg - half, 0, -1)]).astype(np.float32)
    return Grid(seg, stride, tri / tri.max())


def sub_models(model) -> list[tuple[object, np.ndarray]]:
    """(model, per-source scale) pairs: a bag's weights divided by their totals, as apply_model does."""
    if hasattr(model, "models"):
        w = np.asarray(model.weights, np.float32)
        return [(m, w[i] / w.sum(0)) for i, m in enumerate(model.models)]
    return [(model, np.ones(len(model.sources), np.float32))]


def shift_delays(model, shifts: int, rng: random.Random) -> list[int]:
    """apply_model's shift trick draws offset in [0, max_shift] and the input ends up delayed by
    max_shift - offset samples; here the draw comes from a seeded generator."""
    if not shifts:
        return [0]
    max_shift = int(0.5 * model.samplerate)
    return [max_shift - rng.randint(0, max_shift) for _ in range(shifts)]


def plan(model, length: int, overlap: float, shifts: int, seed: int, key: str):
    """Every pass a model makes: (sub-model, per-source scale, delay, grid), in order."""
    passes = []
    for index, (sub, scale) in enumerate(sub_models(model)):
        delays = shift_delays(sub, shifts, random.Random(f"{seed}:{key}:{index}"))
        passes += [(sub, scale / len(delays), d, grid_for(sub, overlap)) for d in delays]
    return passes


def window_count(model, length: int, overlap: float, shifts: int, seed: int, key: str) -> int:
    return sum(len(g.offsets(length + d)) for _, _, d, g in plan(model, length, overlap, shifts, seed, key))


def valid_length(model, length: int) -> int:
    return model.valid_length(length) if hasattr(model, "valid_length") else length


def center_trim(x: torch.Tensor, length: int) -> torch.Tensor:
    delta = x.shape[-1] - length
    return x[..., delta // 2: x.shape[-1] - (delta - delta // 2)] if delta else x


class DemucsRunner:
    both_polarities = True  # P() = (A(x) - A(-x)) / 2; False: A(x) alone (the cinematic recipe)

    def __init__(self, device: torch.device, batch_windows: int, half: bool = False,
                 on_oom: Callable[[], None] | None = None):
        self.device, self.half = device, half
        self.backoff = Backoff(batch_windows, "demucs", on_oom)

    def run(self, model, reader: Reader, length: int, overlap: float, emit: Emit, *, shifts: int = 0,
            seed: int = 0, key: str = "", step: Callable[[int], None] = lambda n: None) -> None:
        """Compute P(model, x, overlap) = (A(x) - A(-x)) / 2 of the signal `reader` ([n, 2] frames) of
        `length` frames, and hand it to `emit` piece by piece, in order."""
        for sub, scale, delay, grid in plan(model, length, overlap, shifts, seed, key):
            self._one_pass(sub, reader, length, delay, grid, emit, scale, step)

    def _one_pass(self, model, reader: Reader, length: int, delay: int, grid: Grid, emit: Emit,
                  scale: np.ndarray, step) -> None:
        total = length + delay  # the delayed signal v[t] = x[t - delay]

        def finished(start: int, y: np.ndarray) -> None:
            start -= delay
            if start < 0:
                y, start = y[..., -start:], 0
            if y.shape[-1]:
                emit(start, y, scale)

        ola = OverlapAdd(finished, total)
        offsets = list(grid.offsets(total))
        i = 0
        while i < len(offsets):
            group = self._next_group(model, offsets, i, total, grid.segment)
            outs = self.backoff.run(group, lambda ws: self._forward(model, reader, delay, ws))
            for (off, n, _), out in zip(group, outs):
                ola.add(off, out, grid.weight[:n])
                ola.flush(off + grid.stride)
            step(len(group))
            i += len(group)
        ola.flush(total)

    def _next_group(self, model, offsets, i, total, segment) -> list[tuple[int, int, int]]:
        """Up to a batch of windows (offset, length, padded length) that share a padded length."""
        group: list[tuple[int, int, int]] = []
        for off in offsets[i:i + self.backoff.size]:
            n = min(segment, total - off)
            padded = valid_length(model, n)
            if group and padded != group[0][2]:
                break
            group.append((off, n, padded))
        return group

    def _forward(self, model, reader: Reader, delay: int, windows) -> list[np.ndarray]:
        chunks = []
        for off, n, padded in windows:
            start = off - (padded - n) // 2 - delay  # centred padding, from the real neighbours
            chunks.append(reader(start, start + padded).T)
        x = torch.from_numpy(np.stack(chunks)).to(self.device)
        if self.both_polarities:
            x = torch.cat([x, -x])
        with torch.inference_mode(), torch.autocast(self.device.type, torch.float16, enabled=self.half):
            y = model(x).float()
        k = len(windows)
        if self.both_polarities:
            y = 0.5 * (y[:k] - y[k:])
        return [center_trim(y[j], n).cpu().numpy() for j, (_, n, _) in enumerate(windows)]
