"""The data path around the models, in its own threads: the input is decoded and resampled ahead of the model
that reads it (`Filling`), and finished stem blocks are encoded behind it (`Behind`).

Both hand data over through bounded buffers, so memory stays flat whatever the duration: `Filling` writes into
the job's disk signal and only holds a watermark; `Behind` queues at most `depth` blocks and blocks the producer
when the encoder falls behind. An error in a side thread reaches the main thread at its next read or put (the
original exception); cancel and errors in the main thread stop the side threads before the job ends.
`Beside` runs a model pass next to the main thread's (on CUDA in its own stream), its progress folded into the
main thread's steps; `AfterFrontier` holds the main thread's additions to a signal until the side pass has
written its final values there, so every sample is summed in the sequential order.
"""
from __future__ import annotations

import collections
import contextlib
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

    def read_quiet(self, start: int, end: int, stop: threading.Event | None = None) -> np.ndarray:
        """`read` for a thread other than the main one: waits the same (or until `stop` is set: `Stopped`),
        reports no progress (the main thread's next read reports it)."""
        need = min(end, self.frames)
        with self._cond:
            while not (self._done or self._upto >= need):
                if stop is not None and stop.is_set():
                    raise Stopped
                self._cond.wait(_POLL)
        if self._error is not None:
            raise self._error
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


class Beside:
    """`work(step)` in a side thread while the main thread runs its own pass: two models at the same time.

    On CUDA the side thread queues its kernels on a stream of its own, so they run beside the main thread's.
    The side's `step(units)` only counts (progress and cancel stay on the main thread): the main thread folds the
    count into its own steps with `take()`, which also raises the side's error as soon as there is one.
    `join(job)` waits for the side while reporting its progress and checking cancel; `stop()` (on any error or
    cancel in the main thread) makes the side end at its next step (or wait for input, given `stopping`) and
    waits for it. `work(step, stopping)`: `stopping` is the event `stop()` sets."""

    # One side stream per (device, calling thread), kept: torch's caching allocator keeps freed blocks per
    # stream, so a fresh stream per job would strand the last job's cached memory until the next empty_cache.
    _streams: dict = {}
    _streams_lock = threading.Lock()

    def __init__(self, work: Callable[[Callable[[float], None], threading.Event], None], device=None,
                 name: str = "mvsep-beside"):
        self.work, self.device = work, device
        self._cuda_stream = self._side_stream(device)
        self._units = 0.0
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._stream():
                self.work(self._step, self._stop)
        except Stopped:
            pass
        except BaseException as e:  # raised in the main thread at its next take or join
            self._error = e

    @classmethod
    def _side_stream(cls, device):
        if getattr(device, "type", None) != "cuda":
            return None
        import torch
        with cls._streams_lock:
            key = (str(device), threading.get_ident())
            if key not in cls._streams:
                cls._streams[key] = torch.cuda.Stream(device)
            return cls._streams[key]

    def _stream(self):
        if self._cuda_stream is None:
            return contextlib.nullcontext()
        import torch
        if self.device.index is not None:  # the current device is per thread
            torch.cuda.set_device(self.device)
        return torch.cuda.stream(self._cuda_stream)

    def _step(self, units: float) -> None:
        with self._lock:
            self._units += units
        if self._stop.is_set():
            raise Stopped

    def take(self) -> float:
        """The side's units since the last take; its error, if it failed."""
        if self._error is not None:
            raise self._error
        with self._lock:
            units, self._units = self._units, 0.0
        return units

    def poll(self, job) -> bool:
        """Wait a little for the side; report its progress and check cancel. False once it has ended."""
        self._thread.join(_POLL)
        job.step(self.take())  # checks cancel too
        return self._thread.is_alive()

    def join(self, job) -> None:
        while self.poll(job):
            pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class AfterFrontier:
    """Additions to `signal` that must land after another thread's: that thread writes the signal front to back
    (its final values up to `advance(upto)`), the main thread's `add(start, block)` are applied in their order
    once the frontier has passed their end. Held blocks are kept in memory up to `cap` bytes; past it `add`
    calls `wait()` (the main thread's poll of the side) until they fit."""

    CAP = 64 << 20  # about 3 minutes of stereo float32 ahead of the other writer

    def __init__(self, signal, cap: int | None = None):
        self.signal, self.cap = signal, self.CAP if cap is None else cap
        self._upto = 0
        self._lock = threading.Lock()
        self._held: collections.deque = collections.deque()
        self._bytes = 0

    def advance(self, upto: int) -> None:
        with self._lock:
            self._upto = max(self._upto, upto)

    def add(self, start: int, block: np.ndarray, wait: Callable[[], object]) -> None:
        self._held.append((start, block))
        self._bytes += block.nbytes
        self._apply()
        while self._bytes > self.cap:
            wait()
            self._apply()

    def finish(self) -> None:
        """Apply everything held: the other writer has ended."""
        self.advance(self.signal.frames)
        self._apply()

    def _apply(self) -> None:
        with self._lock:
            upto = self._upto
        while self._held and self._held[0][0] + len(self._held[0][1]) <= upto:
            start, block = self._held.popleft()
            self.signal.add(start, block)
            self._bytes -= block.nbytes
