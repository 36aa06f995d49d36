"""Out-of-memory faults injected into the real runners (small toy models): every form torch and ONNX Runtime
use is absorbed by a smaller batch and the numbers still equal the whole-file reference; other errors pass."""
import logging
import sys
import weakref

import numpy as np
import pytest
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from conftest import SR
from mvsep.demucs_runner import DemucsRunner
from mvsep.device import GROW_AFTER, is_oom
from mvsep.engine import Separator
from mvsep.errors import OutOfMemoryError
from mvsep.mdx import GEN, MdxRunner
from mvsep.signals import ArraySignal
from testkit.reference import reference_demucs, reference_mdx

TOL = 1e-4
ORT_PREFIX = "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv node. "
# Each way the frameworks report an exhausted device (type, message), as torch 2.13 and ONNX Runtime word them.
OOM_FORMS = {
    "torch OutOfMemoryError": (torch.OutOfMemoryError, "CUDA out of memory. Tried to allocate 2.00 GiB"),
    "torch AcceleratorError": (torch.AcceleratorError, "CUDA error: out of memory\nCUDA kernel errors might be "
                                                       "asynchronously reported"),
    "RuntimeError CUDA": (RuntimeError, "CUDA error: out of memory"),
    "cuBLAS": (RuntimeError, "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    "cuDNN": (RuntimeError, "cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    "ORT BFC arena": (ort_errors.RuntimeException, ORT_PREFIX + "Status Message: bfc_arena.cc:376 "
                      "onnxruntime::BFCArena::AllocateRawInternal Failed to allocate memory for requested buffer "
                      "of size 1073741824"),
    "ORT CUDA failure 2": (ort_errors.RuntimeException, ORT_PREFIX + "Status Message: CUDA failure 2: out of "
                           "memory ; GPU=0 ; file=cuda_allocator.cc ; line=47 ; expr=cudaMalloc((void**)&p, size);"),
    "ORT Fail": (ort_errors.Fail, "[ONNXRuntimeError] : 1 : FAIL : CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED"),
}
NOT_OOM = [ValueError("bad shape"), RuntimeError("CUDA error: device-side assert triggered"),
           MemoryError("host RAM"), ort_errors.InvalidArgument("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT"),
           KeyError("input")]


def noise(frames, seed=0):
    return (np.random.default_rng(seed).standard_normal((frames, 2)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def sep(random_pack):
    return Separator(random_pack, device="cpu")


def test_every_oom_form_is_recognised_and_nothing_else():
    for name, (kind, text) in OOM_FORMS.items():
        assert is_oom(kind(text)), name
    for exc in NOT_OOM:
        assert not is_oom(exc), exc


class OomDemucs(torch.nn.Module):
    """A demucs model whose device fails with `error` when a forward holds more than `limit` items, or on the
    calls listed in `fail_calls`. Keeps a weak reference to each input to tell when a failed batch is freed."""

    def __init__(self, model, limit=10**9, error=(torch.OutOfMemoryError, "CUDA out of memory"), fail_calls=()):
        super().__init__()
        self.model, self.limit, self.error, self.fail_calls = model, limit, error, set(fail_calls)
        self.sizes, self.last_input = [], None
        for name in ("samplerate", "segment", "sources", "audio_channels"):
            setattr(self, name, getattr(model, name))

    def valid_length(self, n):
        return self.model.valid_length(n)

    def forward(self, x):
        self.sizes.append(len(x))
        self.last_input = weakref.ref(x)
        if len(x) > self.limit or len(self.sizes) in self.fail_calls:
            kind, text = self.error
            raise kind(text) if isinstance(text, str) else text
        return self.model(x)


def run_demucs(model, x, batch, release=None, **kw):
    out = np.zeros((len(model.sources), 2, len(x)), np.float32)

    def emit(s, y, scale):
        out[..., s:s + y.shape[-1]] += y * scale[:, None, None]

    runner = DemucsRunner(torch.device("cpu"), batch)
    if release:
        runner.book.release = release
    runner.run(model, ArraySignal(x).read, len(x), 0.5, emit, **kw)
    return out, runner


@pytest.mark.parametrize("form", OOM_FORMS)
def test_demucs_absorbs_each_oom_form(sep, form, caplog):
    model = sep.pack.demucs("04573f0d-f3cf25b2.th")
    x = noise(7 * SR + 5, seed=11)  # 8 windows of 2 s every 1 s
    flaky = OomDemucs(model, limit=4, error=OOM_FORMS[form])  # both polarities: at most 2 windows fit
    with caplog.at_level(logging.WARNING, "mvsep.device"):
        got, runner = run_demucs(flaky, x, 8)
    assert "with a batch of 8, retrying with 4" in caplog.text
    assert np.abs(got - reference_demucs(model, x.T, 0.5)).max() < TOL
    assert runner.backoff.size == 2 and runner.backoff.ooms == 2
    assert flaky.sizes[:2] == [16, 8] and max(flaky.sizes[2:]) <= 4  # no batch over the limit tried again
    assert sum(flaky.sizes[2:]) == 2 * 8  # every window ran once after the back-off: no work redone


class OomSession:
    """An ONNX Runtime session whose device fails with `error` above `limit` pieces (real session inside)."""

    def __init__(self, session, limit, error):
        self.session, self.limit, self.error, self.shapes = session, limit, error, []

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, outputs, feeds):
        x = next(iter(feeds.values()))
        self.shapes.append(x.shape)
        if len(x) > self.limit:
            kind, text = self.error
            raise kind(text)
        return self.session.run(outputs, feeds)


def run_mdx(session, x, batch, chunk_size=100_000, overlap=0.5, fixed_shapes=False):
    out = np.zeros((len(x), 2), np.float32)

    def emit(start, y):
        out[start:start + y.shape[1]] = y.T

    runner = MdxRunner(torch.device("cpu"), batch)
    runner.fixed_shapes = fixed_shapes
    runner.run(session, ArraySignal(x).read, len(x), chunk_size, overlap, emit)
    return out, runner


@pytest.mark.parametrize("form", OOM_FORMS)
def test_mdx_absorbs_each_oom_form(sep, random_pack, form):
    x = noise(5 * SR, seed=12)  # 5 chunks of up to 100000 every 50000, one piece each
    flaky = OomSession(sep.pack.onnx("Kim_Vocal_2.onnx"), limit=1, error=OOM_FORMS[form])
    got, runner = run_mdx(flaky, x, 4)
    ref = reference_mdx(random_pack / "Kim_Vocal_2.onnx", x.T, 100_000, 0.5).T
    assert np.abs(got - ref).max() < TOL and np.abs(ref).max() > 1e-3
    assert runner.backoff.size == 1 and runner.backoff.ooms == 2
    assert [s[0] for s in flaky.shapes] == [4, 2, 1, 1, 1, 1, 1]  # 4 failed, 2 failed, then single pieces


def test_other_errors_pass_through_unchanged(sep):
    model = sep.pack.demucs("04573f0d-f3cf25b2.th")
    for exc in NOT_OOM:
        flaky = OomDemucs(model, limit=0, error=(type(exc), exc))
        with pytest.raises(type(exc)) as got:
            run_demucs(flaky, noise(3 * SR), 4)
        assert got.value is exc and flaky.sizes == [6]  # the same object, and no retry with a smaller batch
        session = OomSession(sep.pack.onnx("Kim_Vocal_2.onnx"), limit=0, error=(type(exc), str(exc)))
        with pytest.raises(type(exc)):
            run_mdx(session, noise(SR), 4)
        assert len(session.shapes) == 1


def test_out_of_memory_at_batch_one_is_a_clear_error(sep):
    model = OomDemucs(sep.pack.demucs("04573f0d-f3cf25b2.th"), limit=0)
    with pytest.raises(OutOfMemoryError, match="even with a batch of 1"):
        run_demucs(model, noise(SR), 4)


def test_caches_are_freed_outside_the_except_with_the_failed_batch_gone(sep):
    flaky = OomDemucs(sep.pack.demucs("04573f0d-f3cf25b2.th"), limit=4)
    seen = []

    def release():
        seen.append((sys.exc_info()[0], flaky.last_input()))

    run_demucs(flaky, noise(5 * SR, seed=3), 8, release=release)
    assert seen and set(seen) == {(None, None)}  # no exception in flight, the failed input already freed


def test_a_lowered_batch_grows_back_after_a_run_of_successes(sep):
    model = sep.pack.demucs("04573f0d-f3cf25b2.th")
    x = noise(23 * SR, seed=4)  # 23 windows: 1 + 2 * GROW_AFTER to grow back, and some at 4 after
    flaky = OomDemucs(model, fail_calls={1})  # one transient failure: batch 4 -> 2
    got, runner = run_demucs(flaky, x, 4)
    assert np.abs(got - reference_demucs(model, x.T, 0.5)).max() < TOL
    windows = [n // 2 for n in flaky.sizes]
    assert windows[:1 + GROW_AFTER] == [4] + [2] * GROW_AFTER  # 4 failed once, then GROW_AFTER batches of 2
    assert windows[1 + GROW_AFTER] == 4 and runner.backoff.size == 4


def test_batch_sizes_are_per_model_and_learned_for_the_process(sep):
    """Each model shape has its own batch; what one runner learned, the next runner on the device starts at."""
    vocals, mmi = sep.pack.demucs("04573f0d-f3cf25b2.th"), sep.pack.demucs("hdemucs_mmi")
    a = DemucsRunner(torch.device("cpu"))
    keys = []
    for model in (vocals, mmi):
        a.run(model, ArraySignal(noise(SR)).read, SR, 0.5, lambda *args: None)
        keys.append(next(k for k, b in a.book._by_key.items() if b is a.backoff))
    assert keys[0] != keys[1]
    a.book.get(keys[1], lambda: 1).size = 3
    b = DemucsRunner(torch.device("cpu"))
    assert b.book is a.book and b.book.sizes()[keys[1]] == 3 and b.book.sizes()[keys[0]] == 1
    a.book.get(keys[1], lambda: 1).size = 1


def test_fixed_batch_shapes_pad_the_last_batch_and_keep_the_numbers(sep, random_pack):
    x = noise(2 * GEN + 1000, seed=6)  # one chunk of 3 pieces, batches of 2: the last one padded
    session = OomSession(sep.pack.onnx("Kim_Vocal_2.onnx"), limit=99, error=None)
    got, _ = run_mdx(session, x, 2, chunk_size=1_000_000, fixed_shapes=True)
    ref = reference_mdx(random_pack / "Kim_Vocal_2.onnx", x.T, 1_000_000, 0.5).T
    assert [s[0] for s in session.shapes] == [2, 2]
    assert np.abs(got - ref).max() < TOL
