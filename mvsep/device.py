"""Device choice, batch sizes per model learned per device, and out-of-memory back-off."""
from __future__ import annotations

import collections
import gc
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Callable, Sequence

from .errors import OutOfMemoryError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("mvsep.device")

# How torch (RuntimeError / AcceleratorError, CUDA, cuBLAS, cuDNN) and ONNX Runtime's CUDA provider
# (RuntimeException / Fail: BFC arena, "CUDA failure 2", cuBLAS/cuDNN) word an exhausted device memory.
_OOM_TEXT = re.compile(
    r"out of memory|failed to allocate memory|bfcarena|bfc_arena|cudaerrormemoryallocation"
    r"|cuda failure 2\b|cublas_status_alloc_failed|cudnn_status_alloc_failed"
    r"|cudnn_status_not_enough_workspace|cudnn error: .*alloc", re.IGNORECASE)
GROW_AFTER = 8  # successful batches in a row before a lowered batch doubles again


def resolve_device(device: str | None) -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"."""
    import torch
    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda asked but torch sees no GPU")
    return device


def is_oom(exc: BaseException) -> bool:
    """True for every form of exhausted device memory; MemoryError (host RAM) and everything else is not."""
    import torch
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, RuntimeError) or type(exc).__module__.startswith("onnxruntime"):
        return bool(_OOM_TEXT.search(str(exc)))
    return False


def free_caches(torch_device) -> None:
    """Give cached device memory back: torch's caching allocator (and garbage still holding tensors).
    ONNX Runtime's arena is shrunk by its next run (`mdx.py` asks for it through RunOptions)."""
    import torch
    if getattr(torch_device, "type", torch_device) != "cuda":
        return  # CPU memory is freed as tensors go; a full gc.collect() would hold the GIL for 0.1-0.5 s
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize(torch_device)  # this worker's GPU, whatever the thread's current device is
        torch.cuda.empty_cache()


def free_device_bytes(torch_device) -> int | None:
    import torch
    if torch_device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(torch_device)
    return free


def batch_size_for(torch_device, bytes_per_item: int, cpu_default: int, cap: int = 16) -> int:
    """How many items fit in half the free GPU memory; `cpu_default` on the CPU (batching gains little there)."""
    free = free_device_bytes(torch_device)
    if free is None:
        return cpu_default
    return max(1, min(cap, int(free * 0.5) // max(1, bytes_per_item)))


class Backoff:
    """Runs items through `fn` in batches of at most `size`; on out-of-memory, frees the caches, halves the size
    and retries that batch only (work already done is kept). After `grow_after` good batches in a row a
    lowered size doubles again, up to `limit`. Below one item it gives up with a clear error."""

    def __init__(self, size: int, what: str, release: Callable[[], None] | None = None,
                 limit: int | None = None, grow_after: int = GROW_AFTER):
        self.size, self.what, self.release = max(1, size), what, release
        self.limit = max(self.size, limit or self.size)
        self.grow_after, self.streak, self.ooms = grow_after, 0, 0

    def run(self, items: Sequence, fn: Callable[[Sequence], Sequence]) -> list:
        out: list = []
        i = 0
        while i < len(items):
            n = min(self.size, len(items) - i)
            why = None
            try:
                out.extend(fn(items[i:i + n]))
            except Exception as exc:
                if not is_oom(exc):
                    raise
                why = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            if why is not None:
                # Out of the except: the exception, its traceback and the failed batch's tensors are gone now.
                self._lower(n, why)
                continue
            i += n
            self._grow()
        return out

    def _lower(self, n: int, why: str) -> None:
        self.ooms += 1
        self.streak = 0
        if self.release:
            self.release()
        if n == 1:
            raise OutOfMemoryError(f"{self.what}: out of device memory even with a batch of 1 ({why})")
        self.size = max(1, n // 2)
        log.warning("%s: out of device memory with a batch of %d, retrying with %d (%s)", self.what, n,
                    self.size, why)

    def _grow(self) -> None:
        self.streak += 1
        if self.size < self.limit and self.streak >= self.grow_after:
            self.size, self.streak = min(self.limit, self.size * 2), 0
            log.info("%s: %d batches ran, batch back up to %d", self.what, self.grow_after, self.size)


class BatchBook:
    """One `Backoff` per model shape (its window size) on one device, kept for the life of the process so what
    a batch size learned (lowered or grown back) carries to the next job. `start(key)` gives the first size."""

    def __init__(self, device: str, release: Callable[[], None] | None = None, fixed: int | None = None):
        self.device, self.release, self.fixed = device, release, fixed
        self._by_key: dict[str, Backoff] = {}
        self._lock = threading.Lock()

    def get(self, key: str, start: Callable[[], int]) -> Backoff:
        with self._lock:
            b = self._by_key.get(key)
            if b is None:
                b = self._by_key[key] = Backoff(self.fixed or start(), f"{key} on {self.device}", self.release)
            return b

    def sizes(self) -> dict[str, int]:
        """Current batch size per model shape (what `bench/` prints)."""
        with self._lock:
            return {k: b.size for k, b in self._by_key.items()}


_BOOKS: dict[tuple[str, str], BatchBook] = {}
_BOOKS_LOCK = threading.Lock()


def batch_book(torch_device, what: str, fixed: int | None = None) -> BatchBook:
    """The process-wide book of `what` ("demucs" / "mdx") batch sizes on `torch_device`. A fixed batch size
    (an operator's or a test's choice) gets a book of its own, which lives as long as its runner."""
    release = lambda: free_caches(torch_device)  # noqa: E731
    if fixed:
        return BatchBook(str(torch_device), release, fixed)
    with _BOOKS_LOCK:
        key = (str(torch_device), what)
        if key not in _BOOKS:
            _BOOKS[key] = BatchBook(str(torch_device), release)
        return _BOOKS[key]


# --- the data path's host <-> device copies -------------------------------------------------------------------
# Every batch goes to the device through `to_device` and every finished block comes back through `to_host`, so
# the copies are in one place: pinned, non-blocking uploads on CUDA; plain views on the CPU. `TRANSFERS` counts
# both (tests check a runner copies back once per flushed block, not once per batch or window).
TRANSFERS: "collections.Counter[str]" = collections.Counter()


def to_device(arrays: Sequence, device) -> torch.Tensor:
    """Stack equally shaped float32 arrays into one batch on `device`. On CUDA the batch is assembled in a pinned
    host buffer (torch's caching host allocator keeps it alive until the copy ran) and copied without blocking
    the host; on the CPU it is the stacked array itself, no copy."""
    import numpy as np
    import torch
    TRANSFERS["to_device"] += 1
    if getattr(device, "type", device) != "cuda":
        return torch.from_numpy(np.stack(arrays))
    staging = torch.empty((len(arrays),) + tuple(arrays[0].shape), dtype=torch.float32, pin_memory=True)
    np.stack(arrays, out=staging.numpy())
    return staging.to(device, non_blocking=True)


def to_host(x: torch.Tensor):
    """A device tensor as a numpy array: the one place results leave the device (and the host waits)."""
    TRANSFERS["to_host"] += 1
    return x.detach().cpu().numpy()


class KernelClock:
    """Time spent inside the models, for bench/. On the CPU the wall time of each call; on CUDA a pair of events
    around it on the current stream, read without waiting (finished pairs are summed as they are found), so the
    clock adds no synchronisation to the window loop."""

    def __init__(self):
        self._done = 0.0
        self._pending: list = []

    def start(self, device):
        import torch
        if getattr(device, "type", device) != "cuda":
            return time.perf_counter()
        begin = torch.cuda.Event(enable_timing=True)
        begin.record(torch.cuda.current_stream(device))
        return begin

    def stop(self, device, began) -> None:
        import torch
        if not isinstance(began, torch.cuda.Event):
            self._done += time.perf_counter() - began
            return
        end = torch.cuda.Event(enable_timing=True)
        end.record(torch.cuda.current_stream(device))
        self._pending.append((began, end))
        self._collect(wait=False)

    def _collect(self, wait: bool) -> None:
        while self._pending and (wait or self._pending[0][1].query()):
            began, end = self._pending.pop(0)
            end.synchronize()
            self._done += began.elapsed_time(end) / 1000

    @property
    def seconds(self) -> float:
        self._collect(wait=True)
        return self._done
