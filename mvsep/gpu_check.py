"""Start-up GPU self-test: a tiny forward through torch and through ONNX Runtime's CUDA provider on one GPU.

`check(requested, gpu_id)` answers, for each runtime, which device it really uses and, when that is not the GPU,
why (a problem code) and what the operator should do. `Facts` is the seam between the decision logic and the
real torch / onnxruntime / driver calls: tests replace only the facts that cannot exist on a machine without a
GPU (a driver's refusal, a present device); everything else runs for real.
"""
from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field

log = logging.getLogger("mvsep.gpu_check")

# Y = X @ W, X [2, 4], W = arange(16) / 8 (ONNX IR 8, opset 13): small enough to embed, real enough to run.
_TINY_ONNX = base64.b64decode(
    "CAgSBXNwYXJrOpQBChEKAVgKAVcSAVkiBk1hdE11bBIIc2VsZnRlc3QqSwgECAQQAUIBV0pAAAAAAAAAAD4AAIA+AADAPgAAAD8AACA/AABAPwAA"
    "YD8AAIA/AACQPwAAoD8AALA/AADAPwAA0D8AAOA/AADwP1oTCgFYEg4KDAgBEggKAggCCgIIBGITCgFZEg4KDAgBEggKAggCCgIIBEIECgAQDQ==")

# Minimum Linux driver per CUDA major version (NVIDIA's CUDA compatibility table).
MIN_DRIVER = {11: "450.80", 12: "525.60", 13: "580.65"}

ADVICE = {
    "driver_too_old": "the host's NVIDIA driver is older than this CUDA build needs: rent a host whose driver is at "
                      "least {driver} (Vast.ai: filter on cuda_max_good; RunPod: allowedCudaVersions), or run an "
                      "image built for the older CUDA line",
    "no_driver": "no NVIDIA driver is visible in the container: start it with the GPU attached (docker --gpus all, "
                 "a GPU template) or set SPARK_DEVICE=cpu",
    "cpu_build": "this torch is a CPU-only build: install the pinned GPU requirements (requirements-gpu.txt)",
    "no_cuda_provider": "onnxruntime has no CUDAExecutionProvider: install onnxruntime-gpu (requirements-gpu.txt) "
                        "instead of onnxruntime",
    "cudnn_missing": "cuDNN cannot be loaded: install the cuDNN that onnxruntime-gpu needs (the nvidia-cudnn wheel "
                     "of requirements-gpu.txt, or a cudnn base image)",
    "cuda_libs_missing": "CUDA runtime libraries cannot be loaded: install the pinned nvidia-* wheels "
                         "(requirements-gpu.txt) or use a CUDA runtime base image",
    "device_out_of_range": "SPARK_GPU_ID={gpu_id} but only {count} GPU(s) are visible: set SPARK_GPU_ID to 0..{last}",
    "wrong_result": "the GPU computed a wrong result: the device or driver is faulty; use another host",
    "failed": "the GPU self-test failed: see the detail and the log",
}


@dataclass
class RuntimeCheck:
    """What one runtime (torch or onnxruntime) really uses."""
    device: str                    # "cuda:N" or "cpu"
    problem: str | None = None     # a key of ADVICE when the GPU is not usable
    detail: str | None = None      # the error text the runtime gave
    advice: str | None = None


@dataclass
class GpuReport:
    requested: str                 # auto | cpu | cuda
    gpu_id: int
    torch: RuntimeCheck
    onnxruntime: RuntimeCheck
    nvidia: list[str] = field(default_factory=list)  # evidence of an NVIDIA device on this machine

    @property
    def gpu_ok(self) -> bool:
        return self.torch.problem is None and self.onnxruntime.problem is None \
            and self.torch.device.startswith("cuda") and self.onnxruntime.device.startswith("cuda")

    @property
    def blocking(self) -> str | None:
        """Why the service must not serve: CUDA was asked for and a runtime cannot use it."""
        if self.requested != "cuda" or self.gpu_ok:
            return None
        return "; ".join(_summary(name, c) for name, c in self.runtimes() if c.problem)

    @property
    def degraded(self) -> str | None:
        """Why an `auto` service on a machine with an NVIDIA device does not (fully) use it."""
        if self.requested != "auto" or not self.nvidia or self.gpu_ok:
            return None
        parts = [_summary(name, c) for name, c in self.runtimes() if c.problem]
        return "; ".join(parts) or "a runtime runs on the CPU"

    def runtimes(self):
        return (("torch", self.torch), ("onnxruntime", self.onnxruntime))

    def as_dict(self) -> dict:
        return {"requested": self.requested, "gpu_id": self.gpu_id, "torch": asdict(self.torch),
                "onnxruntime": asdict(self.onnxruntime), "nvidia_device": bool(self.nvidia),
                "degraded": self.degraded}


# Terminal escape sequences (ONNX Runtime colours its log lines): never part of a reason or a log line we write.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def plain(text: str) -> str:
    return _ANSI.sub("", text)


def _summary(name: str, c: RuntimeCheck) -> str:
    return f"{name} cannot use the GPU ({c.problem}: {c.detail}); {c.advice}"


class Facts:
    """The real calls. Each raises (or returns) exactly what the runtime gives."""

    nvidia_paths = ("/proc/driver/nvidia/version", "/dev/nvidia0")

    def nvidia_evidence(self) -> list[str]:
        found = [p for p in self.nvidia_paths if os.path.exists(p)]
        if shutil.which("nvidia-smi"):
            try:
                out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
            except (OSError, subprocess.SubprocessError):
                out = ""
            found += [line.strip() for line in out.splitlines() if line.startswith("GPU ")]
        return found

    def torch_cuda_build(self) -> str | None:
        import torch
        return torch.version.cuda

    def torch_init(self) -> int:
        """Initialise CUDA in torch (raises the driver's refusal); returns the number of visible devices."""
        import torch
        torch.cuda.init()
        return torch.cuda.device_count()

    def torch_forward(self, gpu_id: int):
        """A 1-D convolution on the GPU and on the CPU; returns both outputs (as CPU tensors)."""
        import torch
        gen = torch.Generator().manual_seed(0)
        x, w = torch.randn(1, 2, 64, generator=gen), torch.randn(3, 2, 5, generator=gen)
        dev = torch.device(f"cuda:{gpu_id}")
        got = torch.nn.functional.conv1d(x.to(dev), w.to(dev))
        torch.cuda.synchronize(dev)
        return got.cpu(), torch.nn.functional.conv1d(x, w)

    def ort_providers(self) -> list[str]:
        import onnxruntime as ort
        return ort.get_available_providers()

    def ort_forward(self, gpu_id: int):
        """The tiny model through the CUDA provider; returns (providers the session uses, output, expected)."""
        import numpy as np
        import onnxruntime as ort
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        want = x @ (np.arange(16, dtype=np.float32).reshape(4, 4) / 8)
        session = ort.InferenceSession(_TINY_ONNX, providers=[("CUDAExecutionProvider", {"device_id": gpu_id}),
                                                              "CPUExecutionProvider"])
        return session.get_providers(), session.run(None, {"X": x})[0], want


@contextlib.contextmanager
def _native_stderr(into: list[str]):
    """Collect what native code writes to fd 2 (ONNX Runtime logs a provider's load failure there, then falls
    back to the CPU without raising)."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = plain(tmp.read().decode(errors="replace"))
            into.append(text)
            if text.strip():
                os.write(2, text.encode())


def classify(text: str) -> str:
    """A problem code from a runtime's error text."""
    t = text.lower()
    if "not compiled with cuda" in t:
        return "cpu_build"
    if "too old" in t or "insufficient" in t or "driver version" in t:
        return "driver_too_old"
    if "no nvidia driver" in t or "no cuda gpus are available" in t or "no cuda-capable device" in t:
        return "no_driver"
    if "invalid device ordinal" in t or "invalid device id" in t or "out of range" in t:
        return "device_out_of_range"
    if "libcudnn" in t:
        return "cudnn_missing"
    if re.search(r"lib(cudart|cublas|cufft|curand|nvrtc|cuda)\S*\.so", t):
        return "cuda_libs_missing"
    return "failed"


def _problem(code: str, detail: str, gpu_id: int, count: int | None, cuda: str | None) -> RuntimeCheck:
    major = int(cuda.split(".")[0]) if cuda and cuda.split(".")[0].isdigit() else None
    advice = ADVICE[code].format(driver=MIN_DRIVER.get(major, "the one its CUDA needs"), gpu_id=gpu_id,
                                 count=count if count is not None else "no", last=max(0, (count or 1) - 1))
    return RuntimeCheck("cpu", code, " ".join(plain(detail).split())[:500], advice)


def _check_torch(facts: Facts, gpu_id: int) -> tuple[RuntimeCheck, int | None, str | None]:
    cuda = None
    try:
        cuda = facts.torch_cuda_build()
        count = facts.torch_init()
    except BaseException as e:  # torch raises AssertionError for a CPU build, RuntimeError for the driver
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return _problem(classify(str(e)), str(e) or type(e).__name__, gpu_id, None, cuda), None, cuda
    if not count:
        return _problem("no_driver", "torch sees no CUDA device", gpu_id, 0, cuda), 0, cuda
    if not 0 <= gpu_id < count:
        return _problem("device_out_of_range", f"gpu_id {gpu_id}, {count} visible", gpu_id, count, cuda), count, cuda
    try:
        got, want = facts.torch_forward(gpu_id)
    except Exception as e:
        return _problem(classify(str(e)), str(e), gpu_id, count, cuda), count, cuda
    if (got - want).abs().max().item() > 1e-2 * want.abs().max().item() + 1e-3:  # cuDNN may use TF32
        return _problem("wrong_result", "conv1d on the GPU differs from the CPU", gpu_id, count, cuda), count, cuda
    return RuntimeCheck(f"cuda:{gpu_id}"), count, cuda


def _check_onnxruntime(facts: Facts, gpu_id: int, count: int | None, cuda: str | None,
                       nvidia: list[str]) -> RuntimeCheck:
    try:
        providers = facts.ort_providers()
    except Exception as e:
        return _problem("failed", f"onnxruntime: {e}", gpu_id, count, cuda)
    if "CUDAExecutionProvider" not in providers:
        return _problem("no_cuda_provider", "available providers: " + ", ".join(providers), gpu_id, count, cuda)
    if not nvidia and not count:
        # No device node, no driver, no GPU for torch: the CUDA provider cannot load, and trying only fills a CPU
        # machine's log with ONNX Runtime's red library errors.
        return _problem("no_driver", "no NVIDIA device or driver on this machine (CUDA provider not tried)",
                        gpu_id, count, cuda)
    if count is not None and not 0 <= gpu_id < count:
        return _problem("device_out_of_range", f"gpu_id {gpu_id}, {count} visible", gpu_id, count, cuda)
    native: list[str] = []
    try:
        with _native_stderr(native):
            used, got, want = facts.ort_forward(gpu_id)
    except Exception as e:
        text = f"{e} {''.join(native)}"
        return _problem(classify(text), text, gpu_id, count, cuda)
    if "CUDAExecutionProvider" not in used:
        text = "".join(native).strip() or "the CUDA provider failed to initialise; the session fell back to the CPU"
        return _problem(classify(text), text, gpu_id, count, cuda)
    if abs(got - want).max() > 1e-3:
        return _problem("wrong_result", "MatMul on the GPU differs from the CPU", gpu_id, count, cuda)
    return RuntimeCheck(f"cuda:{gpu_id}")


def check(requested: str, gpu_id: int = 0, facts: Facts | None = None) -> GpuReport:
    """Run the self-test for `requested` (auto | cpu | cuda). With cpu nothing is probed."""
    facts = facts or FACTS
    requested = (requested or "auto").lower()
    if requested == "cpu":
        return GpuReport("cpu", gpu_id, RuntimeCheck("cpu"), RuntimeCheck("cpu"))
    nvidia = facts.nvidia_evidence()
    torch_check, count, cuda = _check_torch(facts, gpu_id)
    ort_check = _check_onnxruntime(facts, gpu_id, count, cuda, nvidia)
    report = GpuReport(requested, gpu_id, torch_check, ort_check, nvidia)
    if report.blocking:
        log.error("SPARK_DEVICE=cuda but the GPU is not usable, not serving: %s", report.blocking)
    elif report.degraded:
        log.warning("this machine has an NVIDIA device (%s) but the service runs (partly) on the CPU, much slower: "
                    "%s", ", ".join(nvidia), report.degraded)
    elif report.gpu_ok:
        log.info("GPU self-test passed on cuda:%d (torch and onnxruntime)", gpu_id)
    return report


FACTS = Facts()
