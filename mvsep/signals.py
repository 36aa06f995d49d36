"""Full-length signals and the overlap-add accumulator the runners stream through.

A signal is float32 `[frames, channels]`. `DiskSignal` keeps it in a raw file and touches it with pread/pwrite,
so resident memory stays bounded by the blocks in flight whatever the duration (a memory map would count every
touched page as resident). `ArraySignal` is the same interface over a numpy array, for short clips.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .device import to_host

F32 = np.dtype("<f4")
BLOCK = 1 << 18  # frames per block when a whole signal is walked


class ArraySignal:
    def __init__(self, data: np.ndarray):
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self.frames, self.channels = self.data.shape

    @classmethod
    def zeros(cls, frames: int, channels: int) -> "ArraySignal":
        return cls(np.zeros((frames, channels), np.float32))

    def read(self, start: int, end: int) -> np.ndarray:
        """Frames [start, end) as a new array, zeros outside [0, frames)."""
        out = np.zeros((end - start, self.channels), np.float32)
        a, b = max(start, 0), min(end, self.frames)
        if a < b:
            out[a - start:b - start] = self.data[a:b]
        return out

    def write(self, start: int, block: np.ndarray) -> None:
        self.data[start:start + len(block)] = block

    def add(self, start: int, block: np.ndarray) -> None:
        self.data[start:start + len(block)] += block

    def close(self) -> None:
        pass


class DiskSignal:
    def __init__(self, path: Path, frames: int, channels: int, create: bool = True):
        self.path, self.frames, self.channels = Path(path), frames, channels
        self._frame_bytes = channels * F32.itemsize
        self._fd = os.open(self.path, os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0), 0o600)
        if create:
            os.ftruncate(self._fd, frames * self._frame_bytes)  # sparse: reads as zeros

    def read(self, start: int, end: int) -> np.ndarray:
        out = np.zeros((end - start, self.channels), np.float32)
        a, b = max(start, 0), min(end, self.frames)
        if a < b:
            raw = os.pread(self._fd, (b - a) * self._frame_bytes, a * self._frame_bytes)
            out[a - start:b - start] = np.frombuffer(raw, F32).reshape(b - a, self.channels)
        return out

    def write(self, start: int, block: np.ndarray) -> None:
        data = np.ascontiguousarray(block, dtype=F32).tobytes()
        view, offset = memoryview(data), start * self._frame_bytes
        while view:  # pwrite may write less than asked
            done = os.pwrite(self._fd, view, offset)
            view, offset = view[done:], offset + done

    def add(self, start: int, block: np.ndarray) -> None:
        self.write(start, self.read(start, start + len(block)) + block)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        self.close()


Signal = ArraySignal | DiskSignal
Reader = Callable[[int, int], np.ndarray]  # (start, end) -> [end - start, channels], zeros outside the signal


def blocks(frames: int, size: int = BLOCK) -> Iterator[tuple[int, int]]:
    for start in range(0, frames, size):
        yield start, min(start + size, frames)


class OverlapAdd:
    """Weighted overlap-add of windows that arrive in order of their start, on the models' device.

    `add(start, block, weight)` accumulates `block * weight` and `weight` over [start, start + n) (torch tensors
    on `device`; blocks are `[..., n]`, time last, the layout of the models' outputs); `flush(upto)` hands every
    finished frame before `upto` to `sink(start, out / weight_sum)` as a numpy array and forgets it, so only the
    frames still covered by windows in flight are held. Flushing is the one device -> host copy (`to_host`).
    The arithmetic is torch's on every device: on the CPU it gives numpy's bytes (elementwise float32 mul, add
    and divide, correctly rounded in both).
    """

    def __init__(self, sink: Callable[[int, np.ndarray], None], end: int, device="cpu"):
        self.sink, self.end, self.device = sink, end, torch.device(device)
        self.base = 0
        self.out: torch.Tensor | None = None
        self.wsum = torch.zeros(0, dtype=torch.float32, device=self.device)
        self._uncovered: torch.Tensor | None = None  # checked once at the end: no host sync per flush

    def add(self, start: int, block: torch.Tensor, weight: torch.Tensor) -> None:
        n = block.shape[-1]
        if self.out is None:
            self.out = torch.zeros(block.shape[:-1] + (0,), dtype=torch.float32, device=self.device)
        grow = start + n - self.base - self.wsum.shape[0]
        if grow > 0:
            self.out = torch.cat([self.out, self.out.new_zeros(self.out.shape[:-1] + (grow,))], -1)
            self.wsum = torch.cat([self.wsum, self.wsum.new_zeros(grow)])
        i = start - self.base
        self.out[..., i:i + n] += block * weight
        self.wsum[i:i + n] += weight

    def flush(self, upto: int) -> None:
        upto = min(upto, self.end)
        k = upto - self.base
        if k <= 0 or self.out is None:
            return
        gap = (self.wsum[:k] <= 0).any()
        self._uncovered = gap if self._uncovered is None else self._uncovered | gap
        self.sink(self.base, to_host(self.out[..., :k] / self.wsum[:k]))
        self.out, self.wsum = self.out[..., k:].clone(), self.wsum[k:].clone()
        self.base = upto
        if upto == self.end:
            self.check()

    def check(self) -> None:
        """Fail if a frame was flushed before any window covered it (a caller's bug: its weight sum was 0)."""
        if self._uncovered is not None and bool(self._uncovered):
            raise AssertionError("a frame was flushed before any window covered it")


@contextlib.contextmanager
def work_signals(work_dir=None) -> Iterator[Callable[[int, int, str], "DiskSignal"]]:
    """`new_signal(frames, channels, tag)`: float32 signals in a fresh temp dir under `work_dir`; every one is
    closed and the dir removed at the end, whatever happened."""
    tmp = Path(tempfile.mkdtemp(prefix="mvsep-", dir=work_dir))
    opened: list[DiskSignal] = []

    def new_signal(frames: int, channels: int, tag: str) -> DiskSignal:
        opened.append(DiskSignal(tmp / f"{tag}.f32", frames, channels))
        return opened[-1]

    try:
        yield new_signal
    finally:
        for sig in opened:
            sig.close()
        shutil.rmtree(tmp, ignore_errors=True)
