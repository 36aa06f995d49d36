"""The pipelined data path of `Separator.separate_file` (issue 22): decoding runs ahead of the model and encoding
behind it, in their own threads with bounded buffers; an error or a cancel in any stage ends the job cleanly.

A test-only recipe stands in for a slow device (it sleeps per window, as a busy GPU would make the host wait),
the real decoder and encoder are slowed by a sleep per block; everything else is the engine's real path."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import soundfile as sf

from mvsep import audio, recipes
from mvsep.engine import Options, Separator
from mvsep.errors import Cancelled, InputError
from mvsep.recipes import Recipe, Stem
from mvsep.signals import blocks
from testkit import toypack

SR = 44100
WINDOW = SR // 2


class Slow(Recipe):
    """`half` = the input / 2, one window at a time with a sleep per window; `rest` = the input - half."""
    name = "slowtest"
    summary = "test recipe: a slow stand-in for a model"
    stems = (Stem("half", "the input halved"), Stem("rest", "the input minus half"))
    residuals = {"rest": "half"}
    default_stems = ("half", "rest")
    options = ()
    delay, fail_at, events = 0.0, None, []

    def files(self, opts, stems):
        return ["slow.npy"]

    def warm(self, ctx, opts, stems):
        pass

    def work_units(self, ctx, length, opts, stems):
        return length / WINDOW

    def work_channels(self, opts, stems):
        return 4

    def separate(self, ctx, mix, new_signal, opts, stems, job):
        out = new_signal(mix.frames, 2, "half")
        job.start("slow model")
        for i, (a, b) in enumerate(blocks(mix.frames, WINDOW)):
            if i == self.fail_at:
                raise RuntimeError("device lost")
            x = mix.read(a, b)
            self.events.append(("model", time.monotonic()))
            time.sleep(self.delay)
            out.write(a, x * np.float32(0.5))
            job.step(1)
        return {"mix": mix, "half": out}

    def stem_blocks(self, signals, stems, walk):
        for a, b in walk:
            self.events.append(("made", time.monotonic()))
            yield {"half": signals["half"].read(a, b)}


@pytest.fixture(scope="module")
def sep(tmp_path_factory):
    d = tmp_path_factory.mktemp("slow_pack")
    np.save(d / "slow.npy", np.zeros(1))
    toypack.write_manifest(d)
    recipes.register(Slow(), replace=True)
    try:
        yield Separator(d, device="cpu", allow_demo=False)
    finally:
        recipes.unregister("slowtest")


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    x = (np.random.default_rng(3).standard_normal((30 * SR, 2)) * 0.1).astype(np.float32)
    path = tmp_path_factory.mktemp("song") / "song.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    return path, x


@pytest.fixture
def slowed(monkeypatch):
    """The real decoder and encoder, each slowed by a sleep per block and logging when it works."""
    Slow.events, Slow.delay, Slow.fail_at = [], 0.01, None
    state = {"decode_fail_at": None, "encode_fail_at": None, "encodes": 0}
    real_decode, real_write = audio.iter_decode, audio.StemWriter.write

    def decode(path, block_frames=262144):
        for i, block in enumerate(real_decode(path, SR // 4)):
            if i == state["decode_fail_at"]:
                raise InputError("the input is corrupt at 0:03")
            time.sleep(0.01)
            Slow.events.append(("decoded", time.monotonic()))
            yield block

    def write(self, block):
        state["encodes"] += 1
        if state["encodes"] == state["encode_fail_at"]:
            raise OSError("cannot write: No space left on device")
        t0 = time.monotonic()
        time.sleep(0.05)
        real_write(self, block)
        Slow.events.append(("encoded", t0, time.monotonic()))

    monkeypatch.setattr(audio, "iter_decode", decode)
    monkeypatch.setattr(audio.StemWriter, "write", write)
    return state


def side_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("mvsep-")]


def run_with_deadline(fn, seconds: float = 120):
    """fn() in a thread; fails the test if it has not ended in `seconds` (a hang), else its result/raise."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "the job hung"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_decode_model_and_encode_overlap_with_bounded_buffers(sep, song, slowed, tmp_path):
    path, x = song
    res = run_with_deadline(lambda: sep.separate_file(path, tmp_path, Options(recipe="slowtest")))
    half, _ = sf.read(res.stems["half"], dtype="float32")
    rest, _ = sf.read(res.stems["rest"], dtype="float32")
    np.testing.assert_array_equal(half, x * np.float32(0.5))  # the pipeline changes no sample
    np.testing.assert_array_equal(rest, x - x * np.float32(0.5))
    ev = Slow.events
    decoded = [e[1] for e in ev if e[0] == "decoded"]
    model = [e[1] for e in ev if e[0] == "model"]
    made = [e[1] for e in ev if e[0] == "made"]
    encoded = [(e[1], e[2]) for e in ev if e[0] == "encoded"]
    assert model[0] < decoded[-1], "the model waited for the whole decode"
    assert any(a < m < b for m in made for a, b in encoded), "blocks were not made while others encoded"
    # bounded: the blocks made but not yet encoded never exceed the queue (4) plus the ones in hand
    for m in made:
        ahead = sum(1 for t in made if t <= m) - sum(1 for _, b in encoded if b <= m) / 2  # 2 stems per block
        assert ahead <= 4 + 2
    assert side_threads() == []


@pytest.mark.parametrize("stage", ["decode", "model", "encode", "cancel"])
def test_an_error_or_cancel_in_any_stage_ends_the_job_cleanly(sep, song, slowed, tmp_path, stage):
    path, _ = song
    reads = []
    cancel = None
    if stage == "decode":
        slowed["decode_fail_at"] = 30  # well after the model has started
    elif stage == "model":
        Slow.fail_at = 3
    elif stage == "encode":
        slowed["encode_fail_at"] = 5
    else:
        def cancel():
            reads.append(1)
            return sum(1 for e in Slow.events if e[0] == "model") >= 3
    expected = {"decode": InputError, "model": RuntimeError, "encode": OSError, "cancel": Cancelled}[stage]
    out = tmp_path / "out"
    with pytest.raises(expected):
        run_with_deadline(lambda: sep.separate_file(path, out, Options(recipe="slowtest"), cancel=cancel,
                                                    work_dir=tmp_path))
    assert not out.exists() or list(out.iterdir()) == []  # no stem, no temp file
    assert list(tmp_path.glob("mvsep-*")) == []  # the work signals are gone
    assert side_threads() == []  # decode and encode threads ended
