"""The device-side data path (issue 22): batches go up through `device.to_device`, the overlap-add runs on the
runner's device, and results come back through `device.to_host` once per flushed block. On the CPU this is
the same code a GPU runs; the host synchronisations a GPU would pay (`.cpu()`, `.numpy()`, `.item()`, `bool()`
of a tensor...) are counted here by a torch function mode while the real runners run."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from conftest import SR
import mvsep
from mvsep import device as dev
from mvsep.demucs_runner import DemucsRunner
from mvsep.engine import Separator
from mvsep.mdx import MdxRunner, chunk_grid, pieces_of
from mvsep.roformer.demix import Grid, RoformerRunner
from mvsep.roformer.loader import load_model
from mvsep.signals import ArraySignal, OverlapAdd
from testkit import roformer as kit

CPU = torch.device("cpu")
ENGINE = Path(mvsep.__file__).parent
HOST_SYNCS = {"cpu", "numpy", "item", "tolist", "__bool__", "__float__", "__int__", "__index__"}


class HostSyncs(TorchFunctionMode):
    """Counts the tensor calls that make a GPU's host wait for its device, made by the engine's own code
    (`calls`) or by a model's library code (`in_models`: htdemucs' `pad1d` asserts on a tensor once per forward,
    the demucs package's own wait)."""

    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}
        self.in_models: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_SYNCS:
            ours = Path(sys._getframe(1).f_code.co_filename).is_relative_to(ENGINE)
            where = self.calls if ours else self.in_models
            where[name] = where.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def noise(frames, seed=0):
    return (np.random.default_rng(seed).standard_normal((frames, 2)) * 0.1).astype(np.float32)


@pytest.fixture
def transfers():
    """TRANSFERS counted from zero for the test."""
    before = dict(dev.TRANSFERS)
    yield lambda: {k: dev.TRANSFERS[k] - before.get(k, 0) for k in ("to_device", "to_host")}


def test_to_device_on_the_cpu_is_the_stacked_batch(transfers):
    parts = [noise(50, seed=s).T for s in range(3)]  # transposed views, as the runners hand them
    x = dev.to_device(parts, CPU)
    assert x.device == CPU and x.dtype == torch.float32 and tuple(x.shape) == (3, 2, 50)
    assert np.array_equal(x.numpy(), np.stack(parts))
    y = dev.to_host(x * 2)
    assert isinstance(y, np.ndarray) and np.array_equal(y, 2 * np.stack(parts))
    assert transfers() == {"to_device": 1, "to_host": 1}


def test_kernel_clock_adds_up_on_the_cpu():
    clock = dev.KernelClock()
    for _ in range(2):
        began = clock.start(CPU)
        torch.ones(1000).sum()
        clock.stop(CPU, began)
    assert 0 < clock.seconds < 5


def numpy_overlap_add(windows, end):
    """The plain weighted mean of windows over [0, end): the numbers the old numpy OverlapAdd produced."""
    out = np.zeros((2, end), np.float32)
    wsum = np.zeros(end, np.float32)
    for start, block, weight in windows:
        n = block.shape[-1]
        out[:, start:start + n] += block * weight
        wsum[start:start + n] += weight
    return out / wsum


def test_overlap_add_on_torch_gives_numpys_bytes(transfers):
    rng = np.random.default_rng(4)
    end, windows, start = 5000, [], 0
    while start < end:
        n = min(int(rng.integers(300, 900)), end - start)
        weight = rng.uniform(0.01, 1, n).astype(np.float32)
        windows.append((start, rng.standard_normal((2, n)).astype(np.float32), weight))
        start += int(rng.integers(100, n + 1)) if start + n < end else n
    got = np.full((2, end), np.nan, np.float32)
    spans = []

    def sink(s, y):
        assert isinstance(y, np.ndarray) and s == (spans[-1][1] if spans else 0)
        got[:, s:s + y.shape[1]] = y
        spans.append((s, s + y.shape[1]))

    ola = OverlapAdd(sink, end, CPU)
    for i, (s, block, weight) in enumerate(windows):
        ola.add(s, torch.from_numpy(block), torch.from_numpy(weight))
        if i % 3 == 2:  # flush every third window, to where the next one starts
            ola.flush(windows[i + 1][0] if i + 1 < len(windows) else end)
    ola.flush(end)
    assert spans[-1][1] == end
    assert got.tobytes() == numpy_overlap_add(windows, end).tobytes()
    assert transfers()["to_host"] == len(spans)


def test_a_frame_no_window_covered_fails_the_pass():
    ola = OverlapAdd(lambda s, y: None, 300, CPU)
    ola.add(0, torch.ones(2, 100), torch.ones(100))
    ola.add(200, torch.ones(2, 100), torch.ones(100))  # 100..200 never covered
    with pytest.raises(AssertionError, match="flushed before any window covered it"):
        ola.flush(300)


def run_counted(run, transfers):
    """Runs `run(emit)`; returns (emitted blocks, transfers, the engine's host syncs)."""
    blocks = []
    with HostSyncs() as syncs:
        run(lambda start, y, *scale: blocks.append((start, y.shape[-1])))
    for (a, n), (b, _) in zip(blocks, blocks[1:]):
        assert b == a + n, "blocks come in order, without gaps"
    assert sum(syncs.in_models.values()) <= transfers()["to_device"]  # at most one wait per batch in a model
    return blocks, transfers(), syncs.calls


def test_demucs_copies_back_once_per_batch_and_never_waits_otherwise(random_pack, transfers):
    model = Separator(random_pack, device="cpu").pack.demucs("htdemucs")
    x = noise(int(4.3 * SR), seed=1)
    runner = DemucsRunner(CPU, 3)
    blocks, moved, syncs = run_counted(
        lambda emit: runner.run(model, ArraySignal(x).read, len(x), 0.5, emit), transfers)
    batches = moved["to_device"]
    assert batches >= 2 and blocks[-1][0] + blocks[-1][1] == len(x)
    assert moved["to_host"] == len(blocks) == batches  # one flush per batch, every one with finished frames
    # the only host waits: to_host's copy per block, and the pass's one coverage check at its end
    assert syncs == {"cpu": batches, "numpy": batches, "__bool__": 1}


def test_mdx_copies_back_once_per_batch_with_finished_chunks(random_pack, transfers):
    session = Separator(random_pack, device="cpu").pack.onnx("Kim_Vocal_2.onnx")
    x = noise(int(3.1 * SR), seed=2)
    runner = MdxRunner(CPU, 2)
    blocks, moved, syncs = run_counted(
        lambda emit: runner.run(session, ArraySignal(x).read, len(x), 100_000, 0.5, emit), transfers)
    pieces = sum(pieces_of(e - s) for s, e in chunk_grid(len(x), 100_000, 0.5))
    batches = -(-pieces // 2)
    assert moved["to_device"] == batches and blocks[-1][0] + blocks[-1][1] == len(x)
    assert moved["to_host"] == len(blocks) <= batches
    # ONNX Runtime's CPU provider reads numpy: one feed per batch (on CUDA, IO binding on the device tensors)
    assert syncs == {"cpu": len(blocks) + batches, "numpy": len(blocks) + batches, "__bool__": 1}


def test_roformer_copies_back_once_per_batch(tmp_path, transfers):
    ckpt, cfg = kit.write(tmp_path, "mel", seed=3)
    model = load_model(ckpt, cfg, "mel")
    n = 5 * model.cfg.step + 77
    runner = RoformerRunner(CPU, 2)
    blocks, moved, syncs = run_counted(
        lambda emit: runner.run(model, ArraySignal(noise(n, seed=4)).read, n, emit), transfers)
    batches = -(-len(Grid(n, model.cfg.chunk, model.cfg.step).starts()) // 2)
    assert moved["to_device"] == batches and blocks[-1][0] + blocks[-1][1] == n
    assert moved["to_host"] <= batches and len(blocks) <= moved["to_host"]  # the cropped border may emit nothing
    assert syncs.get("cpu") == moved["to_host"]
    # + the fade windows (first, middle, last chunk), built on the host with torch.linspace once per pass
    assert moved["to_host"] <= syncs.get("numpy") <= moved["to_host"] + 3
    assert set(syncs) <= {"cpu", "numpy", "__bool__"} and syncs.get("__bool__", 0) <= 1
