"""The demucs vocals pass beside the MDX passes (`Separator.overlap_models`, on by default on CUDA), forced on
here on the CPU: the same bytes as the sequential order, the two passes really run at the same time, and an
error, a cancel or an out-of-memory in either ends or continues the job as the sequential order does."""
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import SR
from mvsep import pipeline
from mvsep.engine import Options, Separator
from mvsep.errors import Cancelled
from mvsep.recipes.mdx23 import DEMUCS_VOCALS


def noise(frames, seed=0):
    return (np.random.default_rng(seed).standard_normal((frames, 2)) * 0.1).astype(np.float32)


def side_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("mvsep-") and t.name != "mvsep-load"]


@pytest.fixture(scope="module")
def seps(random_pack):
    seq = Separator(random_pack, device="cpu")
    both = Separator(random_pack, device="cpu")
    assert not seq.overlap_models  # the CPU default: the passes would only share the cores
    both.overlap_models = True
    return seq, both


class Recorder(torch.nn.Module):
    """A demucs model that records each forward (time, thread, batch) and fails as told."""

    def __init__(self, model, fail_at=None, error=None, limit=10**9):
        super().__init__()
        self.model, self.fail_at, self.limit = model, fail_at, limit
        self.error = error or ValueError("demucs broke")
        self.calls: list[tuple[float, str, int]] = []
        for name in ("samplerate", "segment", "sources", "audio_channels"):
            setattr(self, name, getattr(model, name))

    def valid_length(self, n):
        return self.model.valid_length(n)

    def forward(self, x):
        self.calls.append((time.monotonic(), threading.current_thread().name, len(x)))
        if len(self.calls) == self.fail_at or len(x) > self.limit:
            raise self.error
        return self.model(x)


@pytest.fixture
def recorded(seps, monkeypatch):
    """Puts a Recorder around the demucs vocals model of the overlapping Separator; returns a setter."""
    _, both = seps
    original = both.pack.demucs

    def use(**kw):
        rec = Recorder(original(DEMUCS_VOCALS), **kw)
        monkeypatch.setattr(both.pack, "demucs", lambda name: rec if name == DEMUCS_VOCALS else original(name))
        return rec
    return use


CASES = {
    "vocals, shifts 0": dict(only_vocals=True, shifts=0),
    "4 stems, shifts 1, small chunks": dict(shifts=1, chunk_size=200_000),
    "single onnx": dict(single_onnx=True, shifts=0),
}


@pytest.mark.parametrize("case", CASES)
def test_overlapped_passes_give_the_sequential_bytes(seps, case):
    seq, both = seps
    mix = noise(int(3.3 * SR), seed=7)
    a = seq.separate_array(mix, SR, Options(**CASES[case]))
    b = both.separate_array(mix, SR, Options(**CASES[case]))
    assert a.keys() == b.keys()
    for stem in a:
        assert a[stem].tobytes() == b[stem].tobytes(), stem
    assert side_threads() == []


def test_mdx_shares_held_past_the_cap_wait_for_demucs(seps, monkeypatch):
    """With no room to hold MDX blocks, the main thread waits for the demucs pass at each one: same bytes."""
    seq, both = seps
    polls = []
    poll = pipeline.Beside.poll
    monkeypatch.setattr(pipeline.AfterFrontier, "CAP", 0)
    monkeypatch.setattr(pipeline.Beside, "poll", lambda self, job: polls.append(1) or poll(self, job))
    mix = noise(int(3.3 * SR), seed=12)
    opts = Options(only_vocals=True, shifts=1, chunk_size=100_000)
    a, b = seq.separate_array(mix, SR, opts), both.separate_array(mix, SR, opts)
    assert polls, "the MDX pass never waited for the demucs pass"
    for stem in a:
        assert a[stem].tobytes() == b[stem].tobytes(), stem


def test_a_file_still_decoding_gives_the_same_bytes_and_the_passes_overlap(seps, recorded, tmp_path):
    seq, both = seps
    rec = recorded()
    src = tmp_path / "in.wav"
    sf.write(src, noise(int(6.1 * SR), seed=8), SR, subtype="FLOAT")
    stages = []
    opts = Options(only_vocals=True, shifts=0, chunk_size=100_000)
    a = seq.separate_file(src, tmp_path / "seq", opts)
    b = both.separate_file(src, tmp_path / "both", opts,
                           progress=lambda f, stage: stages.append((time.monotonic(), stage,
                                                                    threading.current_thread().name)))
    for stem, path in a.stems.items():
        assert path.read_bytes() == b.stems[stem].read_bytes(), stem
    assert {name for _, name, _ in rec.calls} == {"mvsep-beside"}
    assert {name for _, _, name in stages} == {threading.current_thread().name}  # progress: the caller's thread
    mdx = [t for t, stage, _ in stages if stage.startswith("mdx")]
    assert any(mdx[0] < t < mdx[-1] for t, _, _ in rec.calls), "no demucs forward ran while MDX ran"
    assert side_threads() == []


@pytest.mark.parametrize("where", ["demucs", "mdx"])
def test_an_error_on_either_side_ends_the_job_with_no_thread_left(seps, recorded, monkeypatch, where, tmp_path):
    _, both = seps
    mix = noise(int(4.2 * SR), seed=9)
    if where == "demucs":
        recorded(fail_at=2)
    else:
        rec = recorded()  # slows nothing; checks the side was running when MDX failed
        session = both.pack.onnx("Kim_Vocal_2.onnx")
        monkeypatch.setattr(both.pack, "onnx", lambda name, half=False: BrokenSession(session, fail_at=2))
    with pytest.raises(ValueError, match="broke"):
        both.separate_array(mix, SR, Options(only_vocals=True, shifts=0, chunk_size=100_000))
    assert side_threads() == []
    if where == "mdx":
        assert rec.calls, "the demucs pass never started"


class BrokenSession:
    """An ONNX Runtime session whose run fails at its `fail_at`-th call."""

    def __init__(self, session, fail_at):
        self.session, self.fail_at, self.runs = session, fail_at, 0
        self.mvsep_name = "broken"

    def run(self, *args, **kw):
        self.runs += 1
        if self.runs == self.fail_at:
            raise ValueError("mdx broke")
        return self.session.run(*args, **kw)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_cancel_stops_both_passes(seps, recorded):
    _, both = seps
    rec = recorded()
    with pytest.raises(Cancelled):
        both.separate_array(noise(int(6.1 * SR), seed=10), SR, Options(only_vocals=True, shifts=0),
                            cancel=lambda: len(rec.calls) >= 2)
    assert side_threads() == []
    n = len(rec.calls)
    time.sleep(0.3)
    assert len(rec.calls) == n  # nothing runs on


def test_out_of_memory_beside_backs_off_and_keeps_the_numbers(seps, random_pack):
    seq, _ = seps
    both = Separator(random_pack, device="cpu", batch_size=2)
    both.overlap_models = True
    original = both.pack.demucs
    # both polarities of a window go through one forward: a batch of 2 windows is 4 items
    rec = Recorder(original(DEMUCS_VOCALS), error=torch.OutOfMemoryError("CUDA out of memory"), limit=2)
    both.pack.demucs = lambda name: rec if name == DEMUCS_VOCALS else original(name)
    mix = noise(int(4.2 * SR), seed=11)
    opts = Options(only_vocals=True, shifts=0)
    got = both.separate_array(mix, SR, opts)
    want = seq.separate_array(mix, SR, opts)
    assert [n for _, _, n in rec.calls][:2] == [4, 2] and both.demucs.backoff.ooms >= 1
    for stem in want:
        assert np.abs(got[stem] - want[stem]).max() < 1e-4
    assert side_threads() == []


def test_after_frontier_holds_blocks_until_the_other_writer_passes_them():
    from mvsep.signals import ArraySignal
    sig = ArraySignal.zeros(100, 2)
    later = pipeline.AfterFrontier(sig, cap=400)  # 50 frames of stereo float32
    waits = []

    def wait():  # the main thread's poll: meanwhile the other writer moves on by 25 frames
        waits.append(1)
        later.advance(25 * len(waits))

    later.add(0, np.full((40, 2), 1, np.float32), wait)
    assert not waits and not sig.data.any()  # 320 bytes held, under the cap: no wait, nothing applied
    later.add(40, np.full((20, 2), 2, np.float32), wait)  # 480 bytes: wait until the first block can go
    assert len(waits) == 2 and (sig.data[:40] == 1).all() and not sig.data[40:].any()
    later.finish()
    assert (sig.data[40:60] == 2).all() and not sig.data[60:].any()
