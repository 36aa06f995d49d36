"""soxr streaming resampling of [n, 2] blocks, with exact integer frame counts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import soxr


def out_frames(n: int, in_rate: int, out_rate: int) -> int:
    """Frames that `n` frames at `in_rate` become at `out_rate`: n * out_rate / in_rate rounded to the nearest
    integer, halves rounded up, computed exactly in integers (no float error for any length).

    Upsampling then downsampling back with this rule returns exactly n. Downsampling first loses that (two
    lengths can map to one), so a round trip that must end at a known length passes `total_out_frames`.
    """
    n, in_rate, out_rate = int(n), int(in_rate), int(out_rate)
    return (2 * n * out_rate + in_rate) // (2 * in_rate)


class StreamResampler:
    """Streaming soxr resampler ("HQ" quality, librosa's default) for float32 [n, 2] blocks.

    Over a whole stream (every `process` output plus `flush`) it returns exactly `total_out_frames` frames,
    by default out_frames(total_in_frames, in_rate, out_rate): soxr's output is trimmed or zero-padded at the
    end to that count. With total_in_frames=None and no total_out_frames the count is soxr's own.
    When in_rate == out_rate it is an identity (blocks are copied, counts still enforced).
    """

    def __init__(self, in_rate: int, out_rate: int, total_in_frames: int | None, total_out_frames: int | None = None):
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        if self.in_rate <= 0 or self.out_rate <= 0:
            raise ValueError("sample rates must be positive")
        if total_out_frames is not None:
            self.target = int(total_out_frames)
        elif total_in_frames is not None:
            self.target = out_frames(total_in_frames, self.in_rate, self.out_rate)
        else:
            self.target = None
        self.emitted = 0
        self._soxr = None
        if self.in_rate != self.out_rate:
            self._soxr = soxr.ResampleStream(self.in_rate, self.out_rate, 2, dtype="float32", quality="HQ")
        self._done = False

    def _limit(self, y: np.ndarray) -> np.ndarray:
        if self.target is not None:
            y = y[: max(0, self.target - self.emitted)]
        self.emitted += len(y)
        return y

    def process(self, block) -> np.ndarray:
        """Feed a [n, 2] block; returns the frames that are ready ([m, 2] float32, m may be 0)."""
        if self._done:
            raise RuntimeError("StreamResampler already flushed")
        x = _as_stereo_block(block)
        if self._soxr is None:
            return self._limit(x.copy())
        return self._limit(self._soxr.resample_chunk(x))

    def flush(self) -> np.ndarray:
        """End of stream: the remaining frames, zero-padded so the total is exact."""
        if self._done:
            return np.zeros((0, 2), np.float32)
        self._done = True
        y = np.zeros((0, 2), np.float32)
        if self._soxr is not None:
            y = self._soxr.resample_chunk(np.zeros((0, 2), np.float32), last=True)
        y = self._limit(y)
        if self.target is not None and self.emitted < self.target:
            pad = np.zeros((self.target - self.emitted, 2), np.float32)
            self.emitted = self.target
            y = np.concatenate([y, pad])
        return y


def _as_stereo_block(block) -> np.ndarray:
    x = np.asarray(block)
    if x.ndim == 1:  # [n] mono convenience
        x = np.repeat(x[:, None], 2, axis=1)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"expected a [n, 2] block, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def resample_blocks(
    blocks: Iterable[np.ndarray], in_rate: int, out_rate: int, total_in_frames: int | None,
    total_out_frames: int | None = None,
) -> Iterator[np.ndarray]:
    """Resample a stream of [n, 2] blocks with StreamResampler; yields non-empty [m, 2] float32 blocks."""
    r = StreamResampler(in_rate, out_rate, total_in_frames, total_out_frames)
    for block in blocks:
        y = r.process(block)
        if len(y):
            yield y
    y = r.flush()
    if len(y):
        yield y
