"""The RoFormer demix (spec "The demix"): the windowed runner against the plain whole-file implementation of
steps 1-5 (`testkit/roformer_reference.py`) on the small configs, at the edge lengths the spec lists; batch
sizes and out-of-memory back-off give the same stems."""
import numpy as np
import pytest
import torch

from mvsep.errors import OutOfMemoryError
from mvsep.roformer.demix import Grid, RoformerRunner, read_piece
from mvsep.roformer.loader import load_model
from mvsep.signals import ArraySignal, DiskSignal
from testkit import roformer as kit
from testkit import roformer_reference as reference

C = kit.SIZES["small"]["chunk"]  # 2560
S = C // 2                       # 1280 = the border too
# N <= S (one chunk); S < N <= 2 border (no border); N = 2 border; 2 border + 1; last piece C/2 (zero padded)
# and C/2 + 1 (reflected); a longer one with several full chunks.
EDGES = [1, 700, S, S + 1, 2 * S - 1, 2 * S, 2 * S + 1, 3 * S, 3 * S + 1, 5 * S + 77]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for kind in ("mel", "bs"):
        ckpt, cfg = kit.write(tmp_path_factory.mktemp(f"demix_{kind}"), kind, seed=3)
        out[kind] = load_model(ckpt, cfg, kind)
    return out


def noise(n, seed=0, dc=0.05):
    return (np.random.default_rng(seed).standard_normal((n, 2)) * 0.1 + dc).astype(np.float32)


def run(model, mix, batch=1, runner=None, signal=None):
    n = len(mix)
    out = np.full((2, n), np.nan, np.float32)
    spans = []

    def emit(start, block):
        assert start == (spans[-1][1] if spans else 0), "pieces come in order, without gaps"
        out[:, start:start + block.shape[1]] = block
        spans.append((start, start + block.shape[1]))

    runner = runner or RoformerRunner(CPU, batch)
    runner.run(model, (signal or ArraySignal(mix)).read, n, emit)
    assert spans[-1][1] == n
    return out


def test_the_edge_lengths_hit_the_cases():
    cases = set()
    for n in EDGES:
        g = Grid(n, C, S)
        cases.add("border" if g.border else "no border")
        last = g.piece_length(g.starts()[-1])
        second = g.piece_length(g.starts()[-2]) if len(g.starts()) > 1 else None
        for piece in (last, second):
            if piece == C // 2:
                cases.add("zeros at C/2")
            if piece == C // 2 + 1:
                cases.add("reflect at C/2+1")
    assert cases == {"border", "no border", "zeros at C/2", "reflect at C/2+1"}
    assert Grid(2 * S, C, S).border == 0 and Grid(2 * S + 1, C, S).border == S


@pytest.mark.parametrize("n", EDGES)
def test_windowed_equals_whole_file_mel(models, n):
    mix = noise(n, n)
    want = reference.demix(models["mel"], torch.from_numpy(mix.T.copy()), C).numpy()
    got = run(models["mel"], mix)
    assert got.shape == (2, n)
    assert np.abs(got - want).max() <= 1e-6


@pytest.mark.parametrize("n", [S, 2 * S + 1, 3 * S + 1])
def test_windowed_equals_whole_file_bs(models, n):
    mix = noise(n, n + 1)
    want = reference.demix(models["bs"], torch.from_numpy(mix.T.copy()), C).numpy()
    assert np.abs(run(models["bs"], mix) - want).max() <= 1e-6


def test_pieces_reflect_from_the_real_neighbours():
    n = 3 * S + 1
    mix = noise(n, 5)
    g = Grid(n, C, S)
    padded = np.pad(mix.T, ((0, 0), (S, S)), mode="reflect")
    assert np.array_equal(read_piece(ArraySignal(mix).read, g, 0), padded[:, :C])
    last = g.starts()[-2]  # the C/2 + 1 piece, reflected on its right
    piece = read_piece(ArraySignal(mix).read, g, last)
    ln = g.piece_length(last)
    assert ln == C // 2 + 1
    assert np.array_equal(piece, np.pad(padded[:, last:], ((0, 0), (0, C - ln)), mode="reflect"))
    assert not read_piece(ArraySignal(mix).read, g, g.starts()[-1])[:, 1:].any()  # one sample, then zeros


def test_batch_size_does_not_change_the_stems(models):
    mix = noise(6 * S + 123, 9)
    one = run(models["mel"], mix, 1)
    for batch in (2, 3, 4):
        # only the BLAS rounding of other matrix shapes; the windows are per chunk, never per batch
        assert np.abs(run(models["mel"], mix, batch) - one).max() <= 1e-7, batch


def test_oom_back_off_in_the_real_path(models):
    model = models["mel"]
    mix = noise(7 * S, 4)
    want = run(model, mix, 1)
    sizes = []

    def device_of_two(module, args):  # the device holds two chunks at most
        sizes.append(args[0].shape[0])
        if args[0].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = model.register_forward_pre_hook(device_of_two)
    try:
        runner = RoformerRunner(CPU, 4)
        got = run(model, mix, runner=runner)
    finally:
        hook.remove()
    assert sizes[:3] == [4, 2, 2] and runner.backoff.ooms >= 1 and runner.backoff.size == 2
    assert np.abs(got - want).max() <= 1e-7


def test_oom_at_batch_one_is_a_clear_error(models):
    model = models["bs"]

    def no_memory(module, args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    hook = model.register_forward_pre_hook(no_memory)
    try:
        with pytest.raises(OutOfMemoryError, match="batch of 1"):
            run(model, noise(3 * S), runner=RoformerRunner(CPU, 2))
    finally:
        hook.remove()


def test_disk_signal_reads_only_pieces(models, tmp_path):
    n = 9 * S + 5
    mix = noise(n, 2)
    sig = DiskSignal(tmp_path / "mix.f32", n, 2)
    sig.write(0, mix)
    spans = []
    read = sig.read

    class Watch:
        def read(self, a, b):
            spans.append(b - a)
            return read(a, b)

    got = run(models["mel"], mix, signal=Watch())
    assert max(spans) <= C  # a piece at a time, never the whole input
    assert np.abs(got - run(models["mel"], mix)).max() == 0


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["mel", "bs"])
def test_cuda_equals_the_cpu(models, kind):
    # fp32 on the GPU (no TF32 in matmuls: torch's default) against the CPU, batched as the device chooses
    assert not torch.backends.cuda.matmul.allow_tf32
    mix = noise(5 * S + 9, 11)
    cpu = run(models[kind], mix)
    gpu_model = models[kind].to("cuda")
    try:
        got = run(gpu_model, mix, runner=RoformerRunner(torch.device("cuda")))
    finally:
        models[kind].to("cpu")
    assert np.abs(got - cpu).max() <= 1e-5
