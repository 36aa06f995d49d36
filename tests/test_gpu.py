"""CUDA paths: run only where torch sees a GPU (the device tool's machine); skipped elsewhere."""
import numpy as np
import pytest
import torch

from conftest import SR
from mvsep.engine import Options, Separator

pytestmark = pytest.mark.gpu


def noise(frames, seed=0):
    return (np.random.default_rng(seed).standard_normal((frames, 2)) * 0.1).astype(np.float32)


def test_cuda_equals_cpu_and_onnx_runs_on_the_same_gpu(random_pack):
    gpu_id = torch.cuda.device_count() - 1
    gpu = Separator(random_pack, device="cuda", gpu_id=gpu_id)
    cpu = Separator(random_pack, device="cpu")
    mix = noise(int(4.2 * SR))
    opts = Options(shifts=0)
    a, b = gpu.separate_array(mix, SR, opts), cpu.separate_array(mix, SR, opts)
    for stem in a:
        assert np.abs(a[stem] - b[stem]).max() < 1e-3, stem
    session = gpu.pack.onnx("Kim_Vocal_2.onnx")
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    assert int(session.get_provider_options()["CUDAExecutionProvider"]["device_id"]) == gpu_id
    assert next(gpu.pack.demucs("htdemucs").parameters()).device == torch.device(f"cuda:{gpu_id}")


def test_out_of_memory_back_off_under_a_memory_cap(random_pack):
    sep = Separator(random_pack, device="cuda", batch_size=64)
    mix = noise(40 * SR, seed=1)
    opts = Options(only_vocals=True, shifts=0)
    expected = Separator(random_pack, device="cuda", batch_size=1).separate_array(mix, SR, opts)["vocals"]
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    used = total - free
    torch.cuda.set_per_process_memory_fraction(min(1.0, (used + (300 << 20)) / total))
    try:
        got = sep.separate_array(mix, SR, opts)["vocals"]
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert sep.demucs.backoff.size < 64
    assert np.abs(got - expected).max() < 1e-4


def test_half_precision_runs(random_pack):
    sep = Separator(random_pack, device="cuda", half=True)
    out = sep.separate_array(noise(3 * SR), SR, Options(only_vocals=True, shifts=0))
    assert np.isfinite(out["vocals"]).all()


def test_self_test_passes_on_the_real_gpu_and_refuses_an_absent_one():
    from mvsep import gpu_check
    last = torch.cuda.device_count() - 1
    report = gpu_check.check("cuda", last)
    assert report.gpu_ok, report.as_dict()
    assert report.torch.device == report.onnxruntime.device == f"cuda:{last}"
    assert report.nvidia  # /proc/driver/nvidia/version, /dev/nvidia0 or nvidia-smi -L
    absent = gpu_check.check("cuda", last + 1)
    assert absent.torch.problem == absent.onnxruntime.problem == "device_out_of_range"
    assert absent.blocking
