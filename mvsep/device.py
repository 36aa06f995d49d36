"""Device choice, batch sizes from device memory, and out-of-memory back-off."""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from .errors import OutOfMemoryError

log = logging.getLogger("mvsep.device")

# ONNX Runtime reports CUDA allocation failures as generic errors; these are the messages it uses.
_ORT_OOM_TEXT = ("out of memory", "failed to allocate memory", "cudaerrormemoryallocation",
                 "cublas_status_alloc_failed", "bfc_arena")


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
    import torch
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    kind = type(exc)
    if kind.__module__.startswith("onnxruntime"):
        text = str(exc).lower()
        return any(t in text for t in _ORT_OOM_TEXT)
    return False


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
    """Runs items through `fn` in batches of at most `size`; on out-of-memory, halves the size and retries that
    batch only (work already done is kept). Below one item it gives up with a clear error."""

    def __init__(self, size: int, what: str, on_oom: Callable[[], None] | None = None):
        self.size, self.what, self.on_oom = max(1, size), what, on_oom

    def run(self, items: Sequence, fn: Callable[[Sequence], Sequence]) -> list:
        out: list = []
        i = 0
        while i < len(items):
            n = min(self.size, len(items) - i)
            try:
                out.extend(fn(items[i:i + n]))
            except Exception as exc:
                if not is_oom(exc):
                    raise
                if self.on_oom:
                    self.on_oom()
                if n == 1:
                    raise OutOfMemoryError(f"{self.what}: out of device memory even with a batch of 1") from exc
                self.size = max(1, n // 2)
                log.warning("%s: out of device memory with a batch of %d, retrying with %d", self.what, n,
                            self.size)
                continue
            i += n
        return out
