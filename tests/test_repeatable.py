"""Same input and options, same bytes; and the shift trick as the original runs it (one draw per polarity)."""
import hashlib
import random
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import SR
from mvsep import audio
from mvsep.demucs_runner import DemucsRunner, plan
from mvsep.engine import Options, Separator
from mvsep.signals import ArraySignal
from testkit.reference import reference_demucs

TOL = 1e-4


def noise(frames, seed=0):
    return (np.random.default_rng(seed).standard_normal((frames, 2)) * 0.1).astype(np.float32)


def engine_draws(model, shifts, seed, key, tag):
    """The offsets the engine draws for one polarity: per sub-model, a generator seeded by seed, key, index."""
    subs = model.models if hasattr(model, "models") else [model]
    out = []
    for i, sub in enumerate(subs):
        rng = random.Random(f"{seed}:{key}:{i}:{tag}")
        out += [rng.randint(0, int(0.5 * sub.samplerate)) for _ in range(shifts)]
    return out


@pytest.fixture(scope="module")
def sep(random_pack):
    return Separator(random_pack, device="cpu")


@pytest.mark.parametrize("name,shifts", [("04573f0d-f3cf25b2.th", 1), ("04573f0d-f3cf25b2.th", 2),
                                         ("htdemucs_ft", 1)])
def test_shift_trick_equals_the_originals_two_apply_model_calls(sep, name, shifts):
    model = sep.pack.demucs(name)
    x = noise(int(3.3 * SR), seed=21)
    draws = {tag: engine_draws(model, shifts, 5, "k", tag) for tag in "+-"}
    assert draws["+"] != draws["-"]  # each polarity has its own offsets
    ref = reference_demucs(model, x.T, 0.5, draws)
    out = np.zeros_like(ref)

    def emit(s, y, scale):
        out[..., s:s + y.shape[-1]] += y * scale[:, None, None]

    DemucsRunner(torch.device("cpu"), 2).run(model, ArraySignal(x).read, len(x), 0.5, emit, shifts=shifts,
                                             seed=5, key="k")
    assert np.abs(out - ref).max() < TOL
    assert np.abs(ref - reference_demucs(model, x.T, 0.5)).max() > 1e-3  # the shifts changed the numbers


def test_each_polarity_pass_has_its_own_delay(sep):
    passes = plan(sep.pack.demucs("04573f0d-f3cf25b2.th"), SR, 0.6, shifts=1, seed=0, key="vocals")
    assert [p[4] for p in passes] == [(1,), (-1,)]
    assert passes[0][2] != passes[1][2]
    no_shift = plan(sep.pack.demucs("04573f0d-f3cf25b2.th"), SR, 0.6, shifts=0, seed=0, key="vocals")
    assert [(p[2], p[4]) for p in no_shift] == [(0, (1, -1))]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", audio.OUTPUT_FORMATS)
def test_same_request_same_bytes(vocals_pack, tmp_path, fmt):
    src = tmp_path / "in.wav"
    sf.write(src, noise(int(1.3 * SR), seed=2), SR, subtype="PCM_16")
    opts = Options(only_vocals=True, output_format=fmt)  # default shifts=1: seeded
    runs = []
    for i in range(2):
        res = Separator(vocals_pack, device="cpu").separate_file(src, tmp_path / str(i), opts)
        runs.append({s: digest(p) for s, p in res.stems.items()})
        if i == 0:
            time.sleep(1.1)  # a timestamp in the file would now differ
    assert runs[0] == runs[1]
    other = Separator(vocals_pack, device="cpu").separate_file(src, tmp_path / "seed", Options(
        only_vocals=True, output_format=fmt, seed=1))
    assert digest(other.stems["vocals"]) != runs[0]["vocals"]  # the comparison can tell stems apart


def test_float_wav_has_no_peak_chunk(tmp_path):
    path = audio.write_stem(tmp_path / "a.wav", noise(1000), SR, "wav")
    assert b"PEAK" not in path.read_bytes()
    assert np.array_equal(sf.read(path, dtype="float32")[0], noise(1000))
