"""Demucs inference window by window, on the exact grid of `demucs.apply.apply_model(split=True)`.

Whole-file `apply_model` cuts the input into segments at `range(0, length, stride)`, pads each to the model's
valid length with the real neighbouring samples (zeros only past the true ends), runs the model, trims it back
and blends the windows with triangle weights. Here the same windows are read from a signal on demand, run in
batches, blended by an `OverlapAdd` that only holds the windows in flight, and handed on as soon as no later
window can touch them. Without shifts both polarities of a window go through one forward. The shift trick
delays the input by a seeded offset instead of a random one, so identical requests give identical bytes; as in
the original's two apply_model calls (on x and on -x), each polarity draws its own offsets.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .device import Backoff, KernelClock, batch_book, batch_size_for, to_device
from .signals import OverlapAdd, Reader

# emit(start, estimate [S, 2, n], scale): a finished piece of this model's P(), to be scaled by `scale`.
Emit = Callable[[int, np.ndarray, np.ndarray], None]
# Rough device memory of one window (both polarities) of a full-size HTDemucs, per second of window.
WINDOW_BYTES_PER_S = (1 << 30) / 7.8


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


def plan(model, length: int, overlap: float, shifts: int, seed: int, key: str, both: bool = True):
    """Every pass a model makes: (sub-model, per-source scale, delay, grid, polarities), in order. Without
    shifts one pass per sub-model runs both polarities; with shifts each polarity has its own seeded delays.
    `both=False`: the plain A(x), positive polarity only (the cinematic recipe)."""
    passes = []
    for index, (sub, scale) in enumerate(sub_models(model)):
        grid = grid_for(sub, overlap)
        if not shifts:
            passes.append((sub, scale, 0, grid, (1, -1) if both else (1,)))
            continue
        for sign, tag in ((1, "+"), (-1, "-"))[:2 if both else 1]:
            rng = random.Random(f"{seed}:{key}:{index}:{tag}")
            passes += [(sub, scale / shifts, d, grid, (sign,)) for d in shift_delays(sub, shifts, rng)]
    return passes


def window_count(model, length: int, overlap: float, shifts: int, seed: int, key: str, both: bool = True) -> int:
    return sum(len(g.offsets(length + d)) * len(signs)
               for _, _, d, g, signs in plan(model, length, overlap, shifts, seed, key, both))


def valid_length(model, length: int) -> int:
    return model.valid_length(length) if hasattr(model, "valid_length") else length


def center_trim(x: torch.Tensor, length: int) -> torch.Tensor:
    delta = x.shape[-1] - length
    return x[..., delta // 2: x.shape[-1] - (delta - delta // 2)] if delta else x


def model_key(model, grid: Grid) -> str:
    """Batch sizes are kept per model shape: its class and window length."""
    return f"demucs {type(model).__name__} {grid.segment}"


class DemucsRunner:
    both_polarities = True  # P() = (A(x) - A(-x)) / 2; False: A(x) alone (the cinematic recipe)

    def __init__(self, device: torch.device, batch_windows: int | None = None, half: bool = False):
        """`batch_windows`: a fixed batch size; None: chosen per model from free device memory and learned."""
        self.device, self.half = device, half
        self.book = batch_book(device, "demucs", batch_windows)
        self.backoff: Backoff | None = None  # the one of the model that ran last
        self.clock = KernelClock()  # time inside the model's forward (the kernels), for bench/

    @property
    def model_seconds(self) -> float:
        return self.clock.seconds

    def run(self, model, reader: Reader, length: int, overlap: float, emit: Emit, *, shifts: int = 0,
            seed: int = 0, key: str = "", step: Callable[[int], None] = lambda n: None,
            half: "bool | torch.dtype | None" = None) -> None:
        """Compute P(model, x, overlap) = (A(x) - A(-x)) / 2 of the signal `reader` ([n, 2] frames) of
        `length` frames, and hand it to `emit` piece by piece, in order. `half`: under autocast to that dtype
        (True: float16; None/False: float32)."""
        half = self.half if half is None else half
        for sub, scale, delay, grid, signs in plan(model, length, overlap, shifts, seed, key, self.both_polarities):
            item_bytes = int(WINDOW_BYTES_PER_S * grid.segment / sub.samplerate)
            self.backoff = self.book.get(model_key(sub, grid),
                                         lambda b=item_bytes: batch_size_for(self.device, b, 1))
            self._one_pass(sub, reader, length, delay, grid, emit, scale, step, signs, half)

    def _one_pass(self, model, reader: Reader, length: int, delay: int, grid: Grid, emit: Emit,
                  scale: np.ndarray, step, signs: tuple[int, ...], half) -> None:
        total = length + delay  # the delayed signal v[t] = x[t - delay]

        def finished(start: int, y: np.ndarray) -> None:
            start -= delay
            if start < 0:
                y, start = y[..., -start:], 0
            if y.shape[-1]:
                emit(start, y, scale)

        ola = OverlapAdd(finished, total, self.device)
        weight = torch.from_numpy(grid.weight).to(self.device)
        offsets = list(grid.offsets(total))
        backoff = self.backoff
        i = 0
        while i < len(offsets):
            group = self._next_group(model, offsets, i, total, grid.segment, backoff.size)
            outs = backoff.run(group, lambda ws: self._forward(model, reader, delay, ws, signs, half))
            for (off, n, _), out in zip(group, outs):
                ola.add(off, out, weight[:n])
            ola.flush(group[-1][0] + grid.stride)  # once per batch: its finished frames leave the device together
            step(len(group) * len(signs))
            i += len(group)
        ola.flush(total)

    @staticmethod
    def _next_group(model, offsets, i, total, segment, size) -> list[tuple[int, int, int]]:
        """Up to a batch of windows (offset, length, padded length) that share a padded length."""
        group: list[tuple[int, int, int]] = []
        for off in offsets[i:i + size]:
            n = min(segment, total - off)
            padded = valid_length(model, n)
            if group and padded != group[0][2]:
                break
            group.append((off, n, padded))
        return group

    def _forward(self, model, reader: Reader, delay: int, windows, signs, half) -> list[torch.Tensor]:
        """0.5 * (A(x) - A(-x)) of each window, or one polarity's half of it: 0.5 * sign * A(sign * x)."""
        chunks = []
        for off, n, padded in windows:
            start = off - (padded - n) // 2 - delay  # centred padding, from the real neighbours
            chunks.append(reader(start, start + padded).T)
        began = self.clock.start(self.device)
        x = to_device(chunks, self.device)
        k = len(windows)
        if len(signs) == 2:
            x = torch.cat([x, -x])
        elif signs[0] < 0:
            x = -x
        dtype = half if isinstance(half, torch.dtype) else torch.float16
        with torch.inference_mode(), torch.autocast(self.device.type, dtype, enabled=bool(half)):
            y = model(x).float()
        w = 0.5 if self.both_polarities else 1.0  # the polarity average's half
        y = w * (y[:k] - y[k:]) if len(signs) == 2 else (w * signs[0]) * y
        self.clock.stop(self.device, began)
        return [center_trim(y[j], n) for j, (_, n, _) in enumerate(windows)]  # on the device, no host copy
