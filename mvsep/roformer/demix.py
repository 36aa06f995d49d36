"""The RoFormer demix of ../shared/docs/roformer-recipes.md ("The demix"), window by window.

Chunks of C samples every S = C // num_overlap over the mix reflect-padded by C - S at both ends (when it is
longer than twice that), a short last piece padded on the right by reflection (longer than C/2) or zeros,
linear fades of C // 10 (none at the start of the first chunk, none at the end of the last), the weighted
mean of the overlapping chunks, then the border cropped. Here the pieces are read from the signal on demand
(the reflections from the real neighbours), run in batches, and blended in an `OverlapAdd` that only holds
the chunks in flight. Each chunk gets its own window (the per-chunk rule: MSST with batch 1), so the output
does not depend on the batch size the device allows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..device import Backoff, KernelClock, batch_book, batch_size_for, to_device
from ..signals import OverlapAdd, Reader
from .model import Roformer

# Rough device memory of one 8-s chunk through a full-size model (activations of 801 frames x ~60 bands);
# scaled by the chunk length. A guess until measured on a GPU; the OOM back-off corrects it.
CHUNK_BYTES = 3 << 30
FULL_CHUNK = 352800


@dataclass(frozen=True)
class Grid:
    length: int  # N, the input
    chunk: int   # C
    step: int    # S

    @property
    def border(self) -> int:
        """Reflected samples at each end (0 for inputs of at most twice C - S)."""
        b = self.chunk - self.step
        return b if self.length > 2 * b else 0

    @property
    def padded(self) -> int:
        return self.length + 2 * self.border

    @property
    def fade(self) -> int:
        return self.chunk // 10

    def starts(self) -> list[int]:
        return list(range(0, self.padded, self.step))

    def piece_length(self, s: int) -> int:
        return min(self.chunk, self.padded - s)

    def edges(self, s: int) -> tuple[bool, bool]:
        """(first, last): whether the chunk at `s` opens or closes the signal; its window depends on nothing else."""
        return s == 0, s + self.step >= self.padded

    def window(self, s: int) -> np.ndarray:
        """The chunk at `s`'s weights: linear fades, no fade-in on the first chunk, else none at the end of the
        last (a lone chunk keeps its fade-out, as MSST does; only its first <= S samples are used then)."""
        w = np.ones(self.chunk, np.float32)
        f = self.fade
        if f:
            ramp = torch.linspace(0, 1, f).numpy()
            w[:f] = ramp
            w[-f:] = ramp[::-1]
            first, last = self.edges(s)
            if first:
                w[:f] = 1
            elif last:
                w[-f:] = 1
        return w

    def sources(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """For each of the C samples of the piece at `s`: the input index it copies and whether it is
        a sample at all (False: zero padding). Reflections (border, short last piece) become indices."""
        c, n, b = self.chunk, self.length, self.border
        ln = self.piece_length(s)
        j = np.arange(c)
        real = np.ones(c, bool)
        if ln < c:
            if ln > c // 2:
                j = np.where(j < ln, j, 2 * (ln - 1) - j)  # right reflection of the piece itself
            else:
                real = j < ln
        u = s + j - b
        if b:
            u = np.abs(u)
            u = np.where(u >= n, 2 * (n - 1) - u, u)
        return u, real


def read_piece(reader: Reader, grid: Grid, s: int) -> np.ndarray:
    """[2, C] float32: the model's input for the chunk at `s`, read from `reader` ([n, 2] frames)."""
    u, real = grid.sources(s)
    out = np.zeros((2, grid.chunk), np.float32)
    if real.any():
        lo, hi = int(u[real].min()), int(u[real].max()) + 1
        block = reader(lo, hi)
        out[:, real] = block[u[real] - lo].T
    return out


class RoformerRunner:
    def __init__(self, device: torch.device, batch_chunks: int | None = None, half: bool = False):
        """`batch_chunks`: a fixed batch size; None: chosen from free device memory and learned per model."""
        self.device, self.half = device, half
        self.book = batch_book(device, "roformer", batch_chunks)
        self.backoff: Backoff | None = None
        self.clock = KernelClock()  # time inside the model (the kernels), for bench/

    @property
    def model_seconds(self) -> float:
        return self.clock.seconds

    @staticmethod
    def chunk_count(length: int, chunk: int, step: int) -> int:
        return len(Grid(length, chunk, step).starts())

    def run(self, model: Roformer, reader: Reader, length: int, emit: Callable[[int, np.ndarray], None],
            step: Callable[[int], None] = lambda n: None, half: bool | None = None) -> None:
        """The demixed vocals of the signal `reader` ([n, 2] frames, `length` of them), handed to
        `emit(start, [2, n])` piece by piece, in order. `half`: the network under fp16 autocast (CUDA)."""
        half = self.half if half is None else half
        cfg = model.cfg
        grid = Grid(length, cfg.chunk, cfg.step)
        if length < 1:
            return
        key = f"roformer {cfg.kind} {cfg.dim}x{cfg.depth} {cfg.chunk}"
        item_bytes = int(CHUNK_BYTES * cfg.chunk / FULL_CHUNK)
        backoff = self.backoff = self.book.get(key, lambda: batch_size_for(self.device, item_bytes, 1))
        border = grid.border

        def finished(start: int, y: np.ndarray) -> None:  # padded coordinates -> the input's, border cropped
            a, b = max(start, border), min(start + y.shape[-1], border + length)
            if a < b:
                emit(a - border, y[:, a - start:b - start])

        ola = OverlapAdd(finished, grid.padded, self.device)
        windows: dict[tuple[bool, bool], torch.Tensor] = {}  # on the device, one per kind of chunk

        def window(s: int) -> torch.Tensor:
            kind = grid.edges(s)
            if kind not in windows:
                windows[kind] = torch.from_numpy(grid.window(s)).to(self.device)
            return windows[kind]

        starts = grid.starts()
        i = 0
        while i < len(starts):
            group = starts[i:i + backoff.size]
            outs = backoff.run(group, lambda ss: self._forward(model, reader, grid, ss, half))
            for s, y in zip(group, outs):
                n = grid.piece_length(s)
                ola.add(s, y[:, :n], window(s)[:n])
            ola.flush(group[-1] + grid.step)  # once per batch: its finished frames leave the device together
            step(len(group))
            i += len(group)
        ola.flush(grid.padded)

    def _forward(self, model: Roformer, reader: Reader, grid: Grid, starts, half: bool) -> list[torch.Tensor]:
        began = self.clock.start(self.device)
        x = to_device([read_piece(reader, grid, s) for s in starts], self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, torch.float16, enabled=half):
            y = model(x).float()
        self.clock.stop(self.device, began)
        return list(y)  # on the device: the overlap-add runs there
