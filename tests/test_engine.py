"""The engine against the whole-file reference, models with known behaviour, packs, determinism, errors."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from conftest import SR
from testkit import toypack
from mvsep.engine import Options, Separator
from mvsep.errors import Cancelled, ModelPackError, NotInPackError, OptionError
from mvsep.mdx import CUTOFF_HZ, GEN, MdxRunner
from mvsep.signals import ArraySignal
from testkit.reference import reference_separate

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-4


def sdr(ref, est):
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - est).astype(np.float64) ** 2))


def noise(frames, seed=0):
    return (np.random.default_rng(seed).standard_normal((frames, 2)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def random_sep(random_pack):
    return Separator(random_pack, device="cpu")


# Every mode, on lengths at the grid's edges: shorter than one MDX piece and one demucs segment, exact
# multiples of gen (demix_base pads a whole extra gen), not a multiple of the demucs segment, many MDX chunks.
CASES = {
    "vocals-only, 5.3 s": (int(5.3 * SR), dict(only_vocals=True)),
    "4 stems, 3.1 s": (int(3.1 * SR), dict()),
    "4 stems single_onnx, shorter than everything": (int(0.7 * SR), dict(single_onnx=True)),
    "kim 1, chunks of exactly gen": (2 * GEN, dict(only_vocals=True, use_kim_model_1=True, chunk_size=GEN,
                                                   overlap_large=0.5)),
    "one chunk of 2 gen": (2 * GEN, dict(only_vocals=True, single_onnx=True)),
    "many small chunks, odd overlaps": (int(4.1 * SR), dict(chunk_size=100_000, overlap_large=0.3,
                                                             overlap_small=0.1)),
}


@pytest.mark.parametrize("case", CASES)
def test_engine_equals_whole_file_reference(random_pack, random_sep, case):
    frames, kw = CASES[case]
    mix = noise(frames, seed=len(case))
    ref = reference_separate(random_pack, mix, **kw)
    out = random_sep.separate_array(mix, SR, Options(shifts=0, **kw))
    assert set(out) == set(ref)
    for stem in ref:
        assert out[stem].shape == (frames, 2)
        assert np.abs(out[stem]).max() > 1e-3, f"{stem} is silent: the comparison would prove nothing"
        assert np.abs(out[stem] - ref[stem]).max() < TOL, stem


def test_vocals_only_runs_no_four_stem_model(random_pack):
    sep = Separator(random_pack, device="cpu")
    out = sep.separate_array(noise(SR), SR, Options(only_vocals=True, shifts=0))
    assert set(out) == {"vocals", "instrumental"}
    assert sorted(sep.pack.resident()) == ["demucs:04573f0d-f3cf25b2.th", "onnx:Kim_Inst.onnx",
                                           "onnx:Kim_Vocal_2.onnx"]
    sep.separate_array(noise(SR), SR, Options(only_vocals=False, shifts=0))
    assert "demucs:hdemucs_mmi" in sep.pack.resident()


def test_identity_mdx_gives_back_the_input_below_17640_hz(identity_pack):
    sep = Separator(identity_pack, device="cpu")
    x = noise(3 * SR, seed=3)
    out = np.zeros((len(x), 2), np.float32)
    runner = MdxRunner(torch.device("cpu"), 3)

    def emit(start, y):
        out[start:start + y.shape[1]] = y.T

    runner.run(sep.pack.onnx("Kim_Vocal_2.onnx"), ArraySignal(x).read, len(x), 100_000, 0.5, emit)
    w = np.hanning(len(x))[:, None]
    spec_in, spec_out = np.fft.rfft(x * w, axis=0), np.fft.rfft(out * w, axis=0)
    f = np.fft.rfftfreq(len(x), 1 / SR)
    low, high = f < CUTOFF_HZ - 200, f > CUTOFF_HZ + 200
    err = np.sum(np.abs(spec_out[low] - spec_in[low]) ** 2) / np.sum(np.abs(spec_in[low]) ** 2)
    assert 10 * np.log10(err) < -40
    # zero above the band limit up to the leakage of the chunk joins (the input itself is at ratio 1 there)
    assert np.sum(np.abs(spec_out[high]) ** 2) / np.sum(np.abs(spec_in[high]) ** 2) < 1e-4


@pytest.mark.parametrize("rate", [44100, 48000])
def test_band_split_pack_separates_two_sources_through_the_whole_engine(bandsplit_pack, two_band_sources,
                                                                        tmp_path, rate):
    low, high = two_band_sources(6.0, seed=1)
    if rate != SR:
        low, high = (soxr.resample(s, SR, rate, "HQ").astype(np.float32) for s in (low, high))
    src = tmp_path / "mix.wav"
    sf.write(src, low + high, rate, subtype="FLOAT")
    res = Separator(bandsplit_pack, device="cpu").separate_file(src, tmp_path / "out", Options(only_vocals=True))
    vocals, vr = sf.read(res.stems["vocals"], dtype="float32")
    instrum, _ = sf.read(res.stems["instrumental"], dtype="float32")
    assert vr == rate and len(vocals) == len(low) == len(instrum)
    edge = rate // 10  # the resampler's own filter settles within the first and last 100 ms
    assert sdr(low[edge:-edge], vocals[edge:-edge]) >= 30
    assert sdr(high[edge:-edge], instrum[edge:-edge]) >= 30


def test_shifts_are_seeded(vocals_pack):
    sep = Separator(vocals_pack, device="cpu")
    mix = noise(int(2.5 * SR), seed=5)
    opts = Options(only_vocals=True, shifts=2, seed=7)
    a = sep.separate_array(mix, SR, opts)["vocals"]
    b = sep.separate_array(mix, SR, opts)["vocals"]
    c = sep.separate_array(mix, SR, Options(only_vocals=True, shifts=2, seed=8))["vocals"]
    d = sep.separate_array(mix, SR, Options(only_vocals=True, shifts=0))["vocals"]
    assert a.tobytes() == b.tobytes()
    assert np.abs(a - c).max() > 1e-6 and np.abs(a - d).max() > 1e-6


def test_batched_equals_unbatched(random_pack):
    mix = noise(int(3.3 * SR), seed=9)
    opts = Options(only_vocals=False, shifts=1, chunk_size=200_000)
    one = Separator(random_pack, device="cpu", batch_size=1).separate_array(mix, SR, opts)
    many = Separator(random_pack, device="cpu", batch_size=5).separate_array(mix, SR, opts)
    for stem in one:
        assert np.abs(one[stem] - many[stem]).max() < TOL


def test_progress_and_cancel(vocals_pack, tmp_path):
    sep = Separator(vocals_pack, device="cpu")
    src = tmp_path / "in.wav"
    sf.write(src, noise(3 * SR), SR)
    seen = []
    res = sep.separate_file(src, tmp_path / "a", Options(only_vocals=True),
                            progress=lambda f, s: seen.append((f, s)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] < 0.1
    stages = {s for _, s in seen}
    assert {"decode", "demucs vocals", "mdx Kim_Vocal_2", "mdx Kim_Inst", "encode"} <= stages
    assert set(res.timings) >= {"decode", "demucs vocals", "encode"}

    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 6

    with pytest.raises(Cancelled):
        sep.separate_file(src, tmp_path / "b", Options(only_vocals=True), cancel=cancel)
    assert not any((tmp_path / "b").iterdir())  # nothing half-written


def test_stems_have_the_input_rate_and_exact_length(vocals_pack, tmp_path):
    sep = Separator(vocals_pack, device="cpu")
    x = noise(12345, seed=2)[:, :1]
    src = tmp_path / "mono22k.flac"
    sf.write(src, x, 22050, subtype="PCM_24")
    res = sep.separate_file(src, tmp_path, Options(only_vocals=True, output_format="wav16", mono=True))
    for path in res.stems.values():
        info = sf.info(path)
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (22050, 12345, 1, "PCM_16")
    res = sep.separate_file(src, tmp_path / "44k", Options(only_vocals=True, sample_rate=44100))
    assert sf.info(res.stems["vocals"]).samplerate == 44100
    assert sf.info(res.stems["vocals"]).frames == round(12345 * 2)


def test_manifest_is_checked(tmp_path):
    pack = toypack.build_pack(tmp_path / "pack", kind="random", stems="vocals")
    sep = Separator(pack, device="cpu")
    sep.warm()
    with open(pack / "Kim_Inst.onnx", "ab") as f:
        f.write(b"x")
    with pytest.raises(ModelPackError, match="Kim_Inst.onnx does not match"):
        Separator(pack, device="cpu").warm()
    (pack / "Kim_Inst.onnx").unlink()
    with pytest.raises(ModelPackError) as err:
        Separator(pack, device="cpu").warm()
    assert err.value.missing == ["Kim_Inst.onnx"]


def test_four_stems_on_a_vocals_pack_is_not_in_pack(vocals_pack):
    sep = Separator(vocals_pack, device="cpu")
    with pytest.raises(NotInPackError, match="4-stem"):
        sep.separate_array(noise(SR), SR, Options(only_vocals=False))
    assert sep.missing(Options(only_vocals=True)) == []


def test_model_budget_evicts_and_large_gpu_keeps(random_pack):
    small = Separator(random_pack, device="cpu", memory_budget_mb=1)
    small.warm(Options(only_vocals=False))
    assert len(small.pack.resident()) == 1
    big = Separator(random_pack, device="cpu", large_gpu=True)
    big.warm(Options(only_vocals=False))
    assert len(big.pack.resident()) == 7  # vocals demucs, 2 ONNX, 4 bags


@pytest.mark.parametrize("field,value", [("chunk_size", 10), ("shifts", 11), ("output_format", "ogg"),
                                         ("sample_rate", 48000)])
def test_bad_options_name_the_field(field, value):
    with pytest.raises(OptionError) as err:
        Options(**{field: value}).validate()
    assert err.value.field == field


def test_overlaps_are_clamped():
    opts = Options(overlap_large=1.5, overlap_small=-1).validate()
    assert (opts.overlap_large, opts.overlap_small) == (0.99, 0.0)


def cli(*args, **kw):
    return subprocess.run([sys.executable, str(ROOT / "mvsep" / "inference_demucs.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600, **kw)


def test_cli_writes_the_original_names(random_pack, tmp_path):
    src = tmp_path / "song.wav"
    sf.write(src, noise(int(1.5 * SR)), SR)
    shutil.copy(src, tmp_path / "song2.wav")
    r = cli("--input_audio", src, tmp_path / "song2.wav", "--output_folder", tmp_path / "out", "--cpu",
            "--model_dir", random_pack, "--shifts", "0", "--output_format", "flac", "-ol", "0.3")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"{s}_{k}.flac" for s in ("song", "song2")
                           for k in ("vocals", "instrum", "bass", "drums", "other", "instrum2"))


@pytest.mark.parametrize("make,code,text", [
    (lambda d: d / "missing.wav", 1, "not found"),
    (lambda d: (d / "text.wav").write_text("hello") or d / "text.wav", 1, "error: "),
])
def test_cli_bad_input_is_one_line(vocals_pack, tmp_path, make, code, text):
    r = cli("-i", make(tmp_path), "-r", tmp_path / "o", "--cpu", "--only_vocals", "--model_dir", vocals_pack)
    assert r.returncode == code
    assert text in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")


def test_cli_missing_models_names_them(tmp_path):
    src = tmp_path / "a.wav"
    sf.write(src, noise(SR), SR)
    r = cli("-i", src, "-r", tmp_path / "o", "--cpu", "--only_vocals", "--model_dir", tmp_path / "empty")
    assert r.returncode == 2
    assert "Kim_Vocal_2.onnx" in r.stderr and "Traceback" not in r.stderr
