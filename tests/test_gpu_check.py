"""The start-up GPU self-test's decisions. The real torch / onnxruntime calls run here (a CPU-only machine); only
the facts a GPU machine would give (a driver's refusal, a visible device, a provider's load failure) are injected
through `gpu_check.Facts`, in process or, for the service, with a sitecustomize on the server's PYTHONPATH."""
from __future__ import annotations

import os
import stat
import textwrap
import time

import httpx
import numpy as np
import pytest
import torch

from mvsep import gpu_check
from testkit.service import ROOT, Server, make_wav

# The texts torch's CUDA build and ONNX Runtime give (c10/cuda and the provider bridge's loader).
DRIVER_TOO_OLD = ("The NVIDIA driver on your system is too old (found version 12040). Please update your GPU driver "
                  "by downloading and installing a new version from the URL: http://www.nvidia.com/Download/index.aspx")
CUDNN_MISSING = ("[E:onnxruntime:Default, provider_bridge_ort.cc:2167 TryGetProviderInfo_CUDA] Failed to load library "
                 "libonnxruntime_providers_cuda.so with error: libcudnn.so.9: cannot open shared object file: No such "
                 "file or directory\n")

# The server-side injection: an old driver refuses CUDA to torch, and ONNX Runtime's CUDA provider fails the same way.
OLD_DRIVER_SITECUSTOMIZE = f"""
import os
from mvsep import gpu_check

class OldDriver(gpu_check.Facts):
    def nvidia_evidence(self):
        return ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"]
    def torch_cuda_build(self):
        return "13.0"
    def torch_init(self):
        raise RuntimeError({DRIVER_TOO_OLD!r})
    def ort_providers(self):
        return [*super().ort_providers(), "CUDAExecutionProvider"]
    def ort_forward(self, gpu_id):
        raise RuntimeError("CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version")

gpu_check.FACTS = OldDriver()
"""


class GpuHost(gpu_check.Facts):
    """A host with `count` GPUs whose kernels compute what the CPU computes; ONNX Runtime's CUDA provider loads
    unless `ort_log` says why not (written to fd 2 as the provider bridge does, then the real session runs on the
    CPU, which is what ONNX Runtime falls back to)."""

    def __init__(self, count=1, ort_log=None, init_error=None, cuda="13.0", faulty=False):
        self.count, self.ort_log, self.init_error, self.cuda, self.faulty = count, ort_log, init_error, cuda, faulty

    def nvidia_evidence(self):
        return [f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})" for i in range(self.count)]

    def torch_cuda_build(self):
        return self.cuda

    def torch_init(self):
        if self.init_error:
            raise RuntimeError(self.init_error)
        return self.count

    def torch_forward(self, gpu_id):
        gen = torch.Generator().manual_seed(0)
        x, w = torch.randn(1, 2, 64, generator=gen), torch.randn(3, 2, 5, generator=gen)
        out = torch.nn.functional.conv1d(x, w)
        return (out + 1 if self.faulty else out), out

    def ort_providers(self):
        return [*super().ort_providers(), "CUDAExecutionProvider"]

    def ort_forward(self, gpu_id):
        import onnxruntime as ort
        if self.ort_log:
            os.write(2, self.ort_log.encode())
        session = ort.InferenceSession(gpu_check._TINY_ONNX, providers=["CPUExecutionProvider"])
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        providers = session.get_providers() + ([] if self.ort_log else ["CUDAExecutionProvider"])
        return providers, session.run(None, {"X": x})[0], x @ (np.arange(16, dtype=np.float32).reshape(4, 4) / 8)


def test_real_runtimes_here_cuda_is_refused_with_both_reasons():
    report = gpu_check.check("cuda", 0)
    assert report.torch.problem == "cpu_build" and report.torch.device == "cpu"
    assert report.onnxruntime.problem == "no_cuda_provider"
    assert "requirements-gpu.txt" in report.torch.advice
    assert "onnxruntime-gpu" in report.onnxruntime.advice
    assert "torch cannot use the GPU (cpu_build" in report.blocking
    assert "onnxruntime cannot use the GPU (no_cuda_provider" in report.blocking


def test_auto_on_a_machine_without_nvidia_is_plain_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setattr(gpu_check.Facts, "nvidia_paths", (str(tmp_path / "no-such-file"),))
    report = gpu_check.check("auto", 0)
    assert report.nvidia == [] and report.blocking is None and report.degraded is None


def test_auto_with_an_nvidia_smi_is_degraded(monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A40 (UUID: GPU-1234)'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(gpu_check.Facts, "nvidia_paths", ())
    report = gpu_check.check("auto", 0)
    assert report.nvidia == ["GPU 0: NVIDIA A40 (UUID: GPU-1234)"]
    assert report.blocking is None
    assert "cpu_build" in report.degraded and report.as_dict()["degraded"] == report.degraded


def test_driver_too_old_names_the_driver_this_cuda_needs():
    report = gpu_check.check("cuda", 0, GpuHost(init_error=DRIVER_TOO_OLD))
    assert report.torch.problem == "driver_too_old"
    assert "580.65" in report.torch.advice
    assert "found version 12040" in report.torch.detail
    assert "driver_too_old" in report.blocking


def test_cudnn_missing_is_read_from_onnxruntime_native_log(capfd):
    report = gpu_check.check("cuda", 0, GpuHost(ort_log=CUDNN_MISSING))
    assert report.torch.device == "cuda:0" and report.torch.problem is None
    assert report.onnxruntime.problem == "cudnn_missing" and report.onnxruntime.device == "cpu"
    assert "libcudnn.so.9" in report.onnxruntime.detail
    assert "libcudnn.so.9" in capfd.readouterr().err  # passed on to the log, not swallowed


def test_reasons_and_the_log_carry_no_terminal_codes(capfd):
    coloured = "\x1b[0;93m" + CUDNN_MISSING.rstrip("\n") + "\x1b[m\n"  # ONNX Runtime colours its log lines
    report = gpu_check.check("cuda", 0, GpuHost(ort_log=coloured))
    assert report.onnxruntime.problem == "cudnn_missing"
    assert "\x1b" not in report.blocking and "[0;93m" not in report.blocking
    assert report.onnxruntime.detail.startswith("[E:onnxruntime:Default")
    err = capfd.readouterr().err
    assert "libcudnn.so.9" in err and "\x1b" not in err


class NoGpuMachine(gpu_check.Facts):
    """A CPU machine with the GPU wheels: torch's CUDA build finds no driver, onnxruntime-gpu lists its CUDA
    provider; creating a CUDA session there would print ONNX Runtime's red library errors."""

    def __init__(self):
        self.ort_sessions = 0

    def nvidia_evidence(self):
        return []

    def torch_cuda_build(self):
        return "13.0"

    def torch_init(self):
        raise RuntimeError("Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and "
                           "installed a driver from http://www.nvidia.com/Download/index.aspx")

    def ort_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def ort_forward(self, gpu_id):
        self.ort_sessions += 1
        os.write(2, b"\x1b[1;31m[E:onnxruntime:Default, provider_bridge_ort.cc:2167] libcuda.so.1: cannot open\x1b[m\n")
        raise AssertionError("not reached")


@pytest.mark.parametrize("requested", ["auto", "cuda"])
def test_a_cpu_start_with_the_gpu_wheels_does_not_try_the_cuda_provider(capfd, requested):
    facts = NoGpuMachine()
    report = gpu_check.check(requested, 0, facts)
    assert facts.ort_sessions == 0 and capfd.readouterr().err == ""
    assert report.torch.problem == report.onnxruntime.problem == "no_driver"
    assert report.degraded is None  # auto without an NVIDIA device: a plain CPU machine
    assert (report.blocking is not None) == (requested == "cuda")


def test_device_id_out_of_range():
    report = gpu_check.check("cuda", 2, GpuHost(count=2))
    assert report.torch.problem == report.onnxruntime.problem == "device_out_of_range"
    assert "SPARK_GPU_ID=2" in report.torch.advice and "0..1" in report.torch.advice


def test_a_working_gpu_passes_and_cpu_probes_nothing():
    good = gpu_check.check("cuda", 1, GpuHost(count=2))
    assert good.gpu_ok and good.blocking is None and good.degraded is None
    assert good.torch.device == good.onnxruntime.device == "cuda:1"

    class Untouchable(gpu_check.Facts):
        def __getattribute__(self, name):
            raise AssertionError(f"SPARK_DEVICE=cpu probed {name}")
    assert gpu_check.check("cpu", 0, Untouchable()).torch.device == "cpu"


def test_a_gpu_that_computes_wrong_results_is_refused():
    report = gpu_check.check("cuda", 0, GpuHost(faulty=True))
    assert report.torch.problem == "wrong_result" and report.blocking


@pytest.mark.parametrize("text, code", [
    ("Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU", "no_driver"),
    ("CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version", "driver_too_old"),
    ("CUDA error: invalid device ordinal", "device_out_of_range"),
    ("libcublasLt.so.13: cannot open shared object file", "cuda_libs_missing"),
    ("something else entirely", "failed"),
])
def test_classify(text, code):
    assert gpu_check.classify(text) == code


def _inject(tmp_path, facts_class_source: str) -> str:
    """A sitecustomize that swaps gpu_check.FACTS in the server process; returns the server's PYTHONPATH (the
    repo too: sitecustomize runs before the script's dir is on sys.path)."""
    d = tmp_path / "inject"
    d.mkdir()
    (d / "sitecustomize.py").write_text(textwrap.dedent(facts_class_source))
    return f"{d}:{ROOT}"


def test_service_cuda_on_an_old_driver_is_not_ready_and_says_why(tmp_path, random_pack):
    srv = Server(tmp_path / "data", random_pack, SPARK_DEVICE="cuda",
                 PYTHONPATH=_inject(tmp_path, OLD_DRIVER_SITECUSTOMIZE)).start(wait_ready=False)
    try:
        with srv.client() as c:
            for _ in range(100):
                r = c.get("/ready")
                if r.json()["reason"] != "loading":
                    break
                time.sleep(0.1)
            assert r.status_code == 503
            assert r.json()["reason"].startswith("gpu_unusable: torch cannot use the GPU (driver_too_old")
            assert "580.65" in r.json()["reason"]
            status = c.get("/status").json()
            assert status["pack"]["state"] == "error" and status["pack"]["reason"] == r.json()["reason"]
            dev = status["device"]
            assert dev["requested"] == "cuda" and dev["nvidia_device"] is True
            assert dev["torch"]["problem"] == "driver_too_old"
            assert dev["onnxruntime"]["problem"] == "driver_too_old" and dev["onnxruntime"]["device"] == "cpu"
            wav = make_wav(tmp_path / "a.wav", 0.5)
            job = c.post("/jobs", files={"file": ("a.wav", wav.read_bytes(), "audio/wav")})
            assert job.status_code == 503 and job.json()["error"] == "not_ready"
        assert "not serving" in srv.log() and "rent a host whose driver is at least 580.65" in srv.log()
    finally:
        srv.stop()


def test_service_auto_on_a_gpu_machine_that_falls_back_to_cpu_is_degraded(tmp_path, random_pack):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A40 (UUID: GPU-1234)'\n")
    smi.chmod(0o755)
    srv = Server(tmp_path / "data", random_pack, SPARK_DEVICE="auto",
                 PATH=f"{bin_dir}:{os.environ['PATH']}").start()
    try:
        with srv.client() as c:
            assert c.get("/ready").status_code == 200
            status = c.get("/status").json()
            assert "torch cannot use the GPU (cpu_build" in status["degraded"]
            assert status["device"]["degraded"] == status["degraded"]
            assert status["device"]["torch"]["device"] == status["device"]["onnxruntime"]["device"] == "cpu"
        assert "has an NVIDIA device (GPU 0: NVIDIA A40" in srv.log()
    finally:
        srv.stop()


def test_service_cpu_is_not_degraded(tmp_path, random_pack):
    srv = Server(tmp_path / "data", random_pack, SPARK_DEVICE="cpu").start()
    try:
        with httpx.Client(base_url=srv.base, headers={"Authorization": f"Bearer {srv.token}"}) as c:
            status = c.get("/status").json()
            assert status["degraded"] is None and status["device"]["requested"] == "cpu"
    finally:
        srv.stop()
