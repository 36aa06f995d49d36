"""The data path around the models, in its own threads: the input is decoded and resampled ahead of the model
that reads it (`Filling`), and finished stem blocks are encoded behind it (`Behind`).

Both hand data over through bounded buffers, so memory stays flat whatever the duration: `Filling` writes into
the job's disk signal and only holds a watermark; `Behind` queues at most `depth` blocks and blocks the producer
when the encoder falls behind. An error in a side thread reaches the main thread at its next read or put (the
original exception); cancel and errors in the main thread stop the side threads before the job ends.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable

import numpy as np

_POLL = 0.1  # seconds between looks at the stop flag while a buffer is full


class Stopped(Exception):
    """The main thread ended the job: a side thread leaves quietly."""


class Filling:
    """A signal that a side thread writes front to back (`feed`); `read` waits for the frames it needs.

    `progress(frames)` is called from the reading thread with the frames decoded since its last call, so the
    job's progress and cancel checks stay on the main thread."""

    def __init__(self, signal, progress: Callable[[int], None] = lambda n: None):
        self.signal, self.progress = signal, progress
        self.frames, self.channels = signal.frames, signal.channels
        self._upto = self._told = 0
        self._done = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def feed(self, blocks: Iterable[np.ndarray]) -> "Filling":
        """Start writing `blocks` (consecutive [n, channels] frames) in a side thread."""
        self._thread = threading.Thread(target=self._run, args=(blocks,), name="mvsep-decode", daemon=True)
        self._thread.start()
        return self

    def _run(self, blocks) -> None:
        try:
            pos = 0
            for block in blocks:
                if self._stop.is_set():
                    raise Stopped
                self.signal.write(pos, block)
                pos += len(block)
                with self._cond:
                    self._upto = pos
                    self._cond.notify_all()
        except Stopped:
            pass
        except BaseException as e:  # handed to the reader, raised there
            self._error = e
        finally:
            with self._cond:
                self._done = True  # frames never written read as zeros (a short decode), as before
                self._cond.notify_all()

    def read(self, start: int, end: int) -> np.ndarray:
        need = min(end, self.frames)
        with self._cond:
            self._cond.wait_for(lambda: self._done or self._upto >= need)
        if self._error is not None:
            raise self._error
        self._tell()
        return self.signal.read(start, end)

    def wait(self) -> None:
        """Block until the whole input is written; raise the side thread's error."""
        self.read(self.frames, self.frames)

    def write(self, start: int, block) -> None:
        self.signal.write(start, block)

    def add(self, start: int, block) -> None:
        self.signal.add(start, block)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _tell(self) -> None:
        upto = self.frames if self._done else self._upto
        if upto > self._told:
            n, self._told = upto - self._told, upto
            self.progress(n)


class Behind:
    """`put(item)` hands an item to `consume(item)` in a side thread through a queue of `depth` items; `close()`
    waits for the queue to drain and raises the consumer's error; `stop()` abandons what is queued."""

    def __init__(self, consume: Callable[[object], None], depth: int = 4, name: str = "mvsep-encode"):
        self.consume = consume
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    _END = object()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is self._END or self._stop.is_set():
                return
            if self._error is None:
                try:
                    self.consume(item)
                except BaseException as e:  # raised in the main thread at its next put or close
                    self._error = e

    def put(self, item) -> None:
        self._raise()
        while True:
            try:
                self._q.put(item, timeout=_POLL)
                return
            except queue.Full:
                self._raise()

    def close(self) -> None:
        self.put(self._END)
        self._thread.join()
        self._raise()

    def stop(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock the consumer: drop what is queued, then end it
            try:
                self._q.get_nowait()
            except queue.Empty:
                pass
            try:
                self._q.put_nowait(self._END)
            except queue.Full:
                pass
            self._thread.join(_POLL)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
