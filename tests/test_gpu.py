"""CUDA paths: run only where torch sees a GPU (the device tool's machine); skipped elsewhere."""
import numpy as np
import pytest
import torch

from conftest import SR
from mvsep import onnx_io
from mvsep.engine import Options, Separator
from mvsep.mdx import DIM_F, DIM_T, MdxRunner
from mvsep.signals import ArraySignal

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
    devices = gpu.devices()
    provider, options = devices["onnxruntime"]
    assert devices["torch"] == f"cuda:{gpu_id}" and provider == "CUDAExecutionProvider"
    assert options["device_id"] == gpu_id
    assert options["arena_extend_strategy"] == "kSameAsRequested"
    assert options["cudnn_conv_algo_search"] == "HEURISTIC"
    total = torch.cuda.get_device_properties(gpu_id).total_memory
    assert 0 < int(options["gpu_mem_limit"]) <= total * onnx_io.GPU_MEM_SHARE
    assert next(gpu.pack.demucs("htdemucs").parameters()).device == torch.device(f"cuda:{gpu_id}")
    assert gpu.mdx.fixed_shapes


def test_io_binding_equals_the_numpy_path(random_pack):
    sep = Separator(random_pack, device="cuda")
    session = sep.pack.onnx("Kim_Vocal_2.onnx")
    spec = torch.randn(3, 4, DIM_F, DIM_T, device="cuda") * 10
    bound = onnx_io.run_batch(session, spec)
    plain = session.run(None, {"input": spec.cpu().numpy()})[0]
    assert bound.device.type == "cuda" and bound.dtype == torch.float32
    assert np.abs(bound.cpu().numpy() - plain).max() < 1e-4


def test_torch_out_of_memory_backs_off_under_a_memory_cap(random_pack):
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
    print(f"torch forced OOM: demucs batch 64 -> {sep.demucs.backoff.size} after {sep.demucs.backoff.ooms} OOMs")
    assert sep.demucs.backoff.ooms > 0 and sep.demucs.backoff.size < 64
    assert np.abs(got - expected).max() < 1e-4


def test_onnxruntime_out_of_memory_backs_off_in_a_small_arena(random_pack, monkeypatch):
    x = noise(12 * SR, seed=2)

    def mdx(sep, batch):
        out = np.zeros_like(x)
        runner = MdxRunner(sep.pack.torch_device(), batch)
        runner.run(sep.pack.onnx("Kim_Vocal_2.onnx"), ArraySignal(x).read, len(x), 100_000, 0.5,
                   lambda s, y: out.__setitem__(slice(s, s + y.shape[1]), y.T))
        return out, runner

    expected, _ = mdx(Separator(random_pack, device="cuda"), 1)
    total = torch.cuda.get_device_properties(0).total_memory
    monkeypatch.setattr(onnx_io, "GPU_MEM_SHARE", (256 << 20) / total)  # an arena of 256 MB
    got, runner = mdx(Separator(random_pack, device="cuda"), 16)
    print(f"onnxruntime forced OOM: mdx batch 16 -> {runner.backoff.size} after {runner.backoff.ooms} OOMs")
    assert runner.backoff.ooms > 0 and runner.backoff.size < 16
    assert np.abs(got - expected).max() < 1e-4


def test_fp16_runs_with_the_shape_of_fp32(random_pack):
    sep = Separator(random_pack, device="cuda")
    mix = noise(3 * SR)
    fp32 = sep.separate_array(mix, SR, Options(shifts=0))
    fp16 = sep.separate_array(mix, SR, Options(shifts=0, precision="fp16"))
    assert "onnx:Kim_Vocal_2.onnx:fp16" in sep.pack.resident()
    for stem in fp32:
        assert fp16[stem].shape == fp32[stem].shape and fp16[stem].dtype == np.float32
        assert np.isfinite(fp16[stem]).all()
        diff = np.abs(fp16[stem] - fp32[stem]).max()
        print(f"fp16 vs fp32 {stem}: max abs diff {diff:.2e}")
        assert 0 < diff < 0.05 * np.abs(fp32[stem]).max() + 1e-3


def test_half_precision_of_the_older_api_runs(random_pack):
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


def test_device_data_path_pins_copies_and_adds_on_the_gpu(random_pack):
    """Issue 22's data path on CUDA: batches staged in pinned memory, the overlap-add on the GPU, one copy
    back per flushed block, two runs byte-identical and within 1e-4 of the CPU."""
    from mvsep import device as dev
    from mvsep.demucs_runner import DemucsRunner
    from mvsep.signals import OverlapAdd

    gpu = torch.device("cuda")
    parts = [noise(64, seed=s).T for s in range(3)]
    x = dev.to_device(parts, gpu)
    assert x.device.type == "cuda" and np.array_equal(dev.to_host(x), np.stack(parts))

    rng = np.random.default_rng(5)
    block, weight = rng.standard_normal((2, 900)).astype(np.float32), rng.uniform(0.1, 1, 900).astype(np.float32)
    got = {}
    for where in ("cpu", "cuda"):
        out = []
        ola = OverlapAdd(lambda s, y, out=out: out.append(y), 1200, where)
        for start in (0, 300):
            ola.add(start, torch.from_numpy(block).to(where), torch.from_numpy(weight).to(where))
        ola.flush(1200)
        got[where] = np.concatenate(out, 1)
    assert np.abs(got["cpu"] - got["cuda"]).max() <= 1e-6

    mix = noise(int(4.3 * SR), seed=1)

    def demucs(where):
        model = Separator(random_pack, device=where).pack.demucs("htdemucs")
        before, out = dict(dev.TRANSFERS), np.zeros((len(model.sources), 2, len(mix)), np.float32)

        def emit(s, y, scale):
            out[..., s:s + y.shape[-1]] = y

        DemucsRunner(torch.device(where), 3).run(model, ArraySignal(mix).read, len(mix), 0.5, emit)
        moved = {k: dev.TRANSFERS[k] - before.get(k, 0) for k in ("to_device", "to_host")}
        assert moved["to_host"] == moved["to_device"]  # one copy back per batch
        return out

    one, two = demucs("cuda"), demucs("cuda")
    assert one.tobytes() == two.tobytes()
    assert np.abs(one - demucs("cpu")).max() < 1e-4


def test_overlapped_models_give_the_sequential_bytes_on_the_gpu(random_pack):
    """The demucs vocals pass in its own stream beside the MDX passes (the CUDA default) == one after the other."""
    both = Separator(random_pack, device="cuda")
    seq = Separator(random_pack, device="cuda")
    seq.overlap_models = False
    assert both.overlap_models
    mix = noise(int(6.3 * SR), seed=4)
    opts = Options(shifts=1)
    a, b = both.separate_array(mix, SR, opts), seq.separate_array(mix, SR, opts)
    for stem in a:
        print(f"overlapped vs sequential {stem}: max abs diff {np.abs(a[stem] - b[stem]).max():.2e}")
        assert a[stem].tobytes() == b[stem].tobytes(), stem
