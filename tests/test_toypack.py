"""Toy packs have the real formats and names; the reference computes what the spec says on them."""
import shutil
import subprocess
import sys
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from demucs.apply import apply_model
from demucs.hdemucs import HDemucs
from demucs.htdemucs import HTDemucs
from demucs.states import load_model

from conftest import BAND_CUTOFF_HZ, SR
from testkit import toypack
from testkit.toypack import PACK_FILES, VOCALS_FILES, BandSplitDemucs
from testkit.reference import load_bag, reference_demucs, reference_mdx, reference_separate

ROOT = Path(__file__).resolve().parents[1]
FOUR = ["drums", "bass", "other", "vocals"]
SIX = FOUR + ["guitar", "piano"]
MDX_SHAPE = [4, 3072, 256]


def sdr(ref, est):
    ref, est = np.asarray(ref, np.float64), np.asarray(est, np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - est) ** 2))


def load_quietly(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(path)
    # demucs drops (with a warning) kwargs the class does not take: a checkpoint must not need that
    assert not [w for w in caught if "Dropping" in str(w.message)], path
    return model


# ---------------------------------------------------------------- files and formats

def test_pack_files_have_the_real_names(random_pack, vocals_pack):
    assert PACK_FILES["kim_vocal_2"] == "Kim_Vocal_2.onnx"
    assert PACK_FILES["hdemucs_mmi"] == "75fc33f5-1941ce65.th"
    assert sorted(p.name for p in random_pack.iterdir()) == sorted([*PACK_FILES.values(), "SHA256SUMS"])
    assert set(VOCALS_FILES) == {"Kim_Vocal_2.onnx", "Kim_Vocal_1.onnx", "Kim_Inst.onnx", "04573f0d-f3cf25b2.th"}
    assert sorted(p.name for p in vocals_pack.iterdir()) == sorted([*VOCALS_FILES, "SHA256SUMS"])


@pytest.mark.parametrize("name,klass,sources", [
    ("04573f0d-f3cf25b2.th", HTDemucs, FOUR),
    ("f7e0c4bc-ba3fe64a.th", HTDemucs, FOUR),
    ("d12395a8-e57c48e6.th", HTDemucs, FOUR),
    ("92cfc3b6-ef3bcb9c.th", HTDemucs, FOUR),
    ("955717e8-8726e21a.th", HTDemucs, FOUR),
    ("5c90dfd2-34c22ccb.th", HTDemucs, SIX),
    ("75fc33f5-1941ce65.th", HDemucs, FOUR),
])
def test_demucs_checkpoints_load_like_real_ones(random_pack, name, klass, sources):
    package = torch.load(random_pack / name, "cpu", weights_only=False)
    assert set(package) == {"klass", "args", "kwargs", "state", "training_args"}
    assert package["klass"] is klass
    model = load_quietly(random_pack / name)
    assert type(model) is klass
    assert model.sources == sources
    assert model.samplerate == SR and model.audio_channels == 2
    if klass is HTDemucs:
        assert isinstance(model.segment, Fraction) and model.segment < Fraction(39, 5)
    x = torch.randn(1, 2, SR // 2) * 0.1
    with torch.no_grad():
        out = apply_model(model, x, shifts=0, split=True, overlap=0.25)
    assert out.shape == (1, len(sources), 2, SR // 2)
    assert torch.isfinite(out).all() and out.std() > 1e-3


def test_demucs_files_have_their_own_weights(random_pack):
    a = torch.load(random_pack / "f7e0c4bc-ba3fe64a.th", weights_only=False)["state"]
    b = torch.load(random_pack / "d12395a8-e57c48e6.th", weights_only=False)["state"]
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_bags_from_the_demucs_yaml_use_pack_files(random_pack):
    ft = load_bag(random_pack, "htdemucs_ft")
    assert len(ft.models) == 4 and ft.weights == [[1., 0., 0., 0.], [0., 1., 0., 0.],
                                                  [0., 0., 1., 0.], [0., 0., 0., 1.]]
    mmi = load_bag(random_pack, "hdemucs_mmi")
    assert isinstance(mmi.models[0], HDemucs) and mmi.models[0].segment == 44


def test_bandsplit_demucs_checkpoint_and_behaviour(bandsplit_pack):
    package = torch.load(bandsplit_pack / "04573f0d-f3cf25b2.th", weights_only=False)
    assert package["klass"] is BandSplitDemucs
    assert package["kwargs"]["cutoff_hz"] == BAND_CUTOFF_HZ
    model = load_quietly(bandsplit_pack / "04573f0d-f3cf25b2.th")
    assert type(model) is BandSplitDemucs
    assert model.sources == FOUR and model.samplerate == SR and model.audio_channels == 2
    assert isinstance(model.segment, Fraction)
    assert not hasattr(model, "valid_length")
    assert "cutoff" in dict(model.named_buffers()) and len(list(model.parameters())) >= 1

    n = SR  # one second: whole number of cycles, so the FFT split is exact up to rounding
    t = torch.arange(n, dtype=torch.float64) / SR
    low = torch.sin(2 * np.pi * 1000 * t).float()
    high = 0.5 * torch.sin(2 * np.pi * 9000 * t).float()
    mix = torch.stack([low + high, low - high])[None]
    with torch.no_grad():
        out = model(mix)
    assert out.shape == (1, 4, 2, n)
    assert torch.equal(out[0, 0], torch.zeros(2, n)) and torch.equal(out[0, 1], torch.zeros(2, n))
    assert torch.allclose(out[0, 3], torch.stack([low, low]), atol=1e-5)
    assert torch.allclose(out[0, 2], torch.stack([high, -high]), atol=1e-5)


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("pack", ["random_pack", "bandsplit_pack", "identity_pack"])
def test_mdx_onnx_signature(request, pack):
    pack_dir = request.getfixturevalue(pack)
    for name in ("Kim_Vocal_2.onnx", "Kim_Vocal_1.onnx", "Kim_Inst.onnx"):
        sess = _session(pack_dir / name)
        (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
        assert inp.name == "input" and inp.type == "tensor(float)" and out.type == "tensor(float)"
        assert not isinstance(inp.shape[0], int)  # batch dimension is dynamic
        assert inp.shape[1:] == MDX_SHAPE and out.shape[1:] == MDX_SHAPE
        x = np.random.default_rng(0).standard_normal((2, *MDX_SHAPE)).astype(np.float32)
        y = sess.run(None, {"input": x})[0]
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()


def test_mdx_onnx_kinds_compute_what_they_say(random_pack, bandsplit_pack, identity_pack):
    x = np.random.default_rng(1).standard_normal((1, *MDX_SHAPE)).astype(np.float32) * 50
    run = lambda path, a: _session(path).run(None, {"input": a})[0]  # noqa: E731

    assert np.array_equal(run(identity_pack / "Kim_Inst.onnx", x), x)

    cut = round(BAND_CUTOFF_HZ * 7680 / SR)  # bin 697
    low = run(bandsplit_pack / "Kim_Vocal_2.onnx", x)
    high = run(bandsplit_pack / "Kim_Inst.onnx", x)
    assert np.array_equal(low[:, :, :cut], x[:, :, :cut]) and not low[:, :, cut:].any()
    assert np.array_equal(high[:, :, cut:], x[:, :, cut:]) and not high[:, :, :cut].any()

    y2, y1 = run(random_pack / "Kim_Vocal_2.onnx", x), run(random_pack / "Kim_Vocal_1.onnx", x)
    assert not np.allclose(y2, x, atol=1e-3) and not np.allclose(y2, y1, atol=1e-3)
    # not an odd function: the polarity trick of the ensemble does something
    assert not np.allclose(run(random_pack / "Kim_Inst.onnx", -x), -run(random_pack / "Kim_Inst.onnx", x),
                           atol=1e-3)


def test_manifest_verifies_with_sha256sum(random_pack, tmp_path):
    lines = (random_pack / "SHA256SUMS").read_text().splitlines()
    assert sorted(line.split("  ", 1)[1] for line in lines) == sorted(PACK_FILES.values())
    ok = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=random_pack,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    copy = tmp_path / "pack"
    shutil.copytree(random_pack, copy)
    with open(copy / "Kim_Inst.onnx", "ab") as f:
        f.write(b"\0")
    bad = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=copy, capture_output=True, text=True)
    assert bad.returncode != 0 and "Kim_Inst.onnx: FAILED" in bad.stdout


def test_packs_are_reproducible_and_seeded(tmp_path):
    a = toypack.build_pack(tmp_path / "a", stems="vocals", seed=0)
    b = toypack.build_pack(tmp_path / "b", stems="vocals", seed=0)
    c = toypack.build_pack(tmp_path / "c", stems="vocals", seed=1)
    assert (a / "SHA256SUMS").read_text() == (b / "SHA256SUMS").read_text()
    assert (a / "SHA256SUMS").read_text() != (c / "SHA256SUMS").read_text()
    assert toypack.build_pack(tmp_path / "d", stems="vocals", manifest=False) and \
        not (tmp_path / "d" / "SHA256SUMS").exists()


def test_command_line_builds_a_pack(tmp_path):
    out = tmp_path / "cli_pack"
    proc = subprocess.run([sys.executable, "-m", "testkit.toypack", str(out), "--kind", "bandsplit",
                           "--stems", "vocals", "--seed", "3"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([*VOCALS_FILES, "SHA256SUMS"])
    # pickled as testkit.toypack.BandSplitDemucs (not __main__), so other processes can load it
    assert type(load_quietly(out / "04573f0d-f3cf25b2.th")) is BandSplitDemucs
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True).returncode == 0


# ---------------------------------------------------------------- the reference on known packs

def _spectrum(x):
    """Hann-windowed power spectrum of a [2, T] signal (the window hides the edges of the excerpt)."""
    w = np.hanning(x.shape[1])
    return np.abs(np.fft.rfft(np.asarray(x, np.float64) * w, axis=1)) ** 2


def test_reference_mdx_identity_is_a_17640_hz_lowpass(identity_pack, noise_mix):
    x = np.ascontiguousarray(noise_mix(6.0, seed=2).T)  # 6 s > one 253,440-sample piece: pieces get joined
    f = np.fft.rfftfreq(x.shape[1], 1 / SR)
    px = _spectrum(x)
    below, above = f < 17_500, f >= 17_700
    # one chunk: exact up to float32; small chunks: their zero-padded edges leak a little
    for chunk_size, overlap, err_db, above_ratio in ((1_000_000, 0.6, -100.0, 1e-9), (100_000, 0.5, -45.0, 1e-4)):
        y = reference_mdx(identity_pack / "Kim_Vocal_2.onnx", x, chunk_size, overlap)
        assert y.shape == x.shape and y.dtype == np.float32
        err = _spectrum(y - x)
        assert 10 * np.log10(err[:, below].sum() / px[:, below].sum()) < err_db
        # nothing above the 3072 kept bins (17,640 Hz), though white noise has as much there as anywhere
        assert _spectrum(y)[:, above].sum() < above_ratio * px[:, above].sum()


def test_reference_vocals_ensemble_on_identity_pack(identity_pack, noise_mix):
    mix = noise_mix(1.5, seed=3)
    x = np.ascontiguousarray(mix.T)
    low = reference_mdx(identity_pack / "Kim_Vocal_2.onnx", x, 1_000_000, 0.6)
    v_demucs = reference_demucs(load_model(identity_pack / "04573f0d-f3cf25b2.th"), x, 0.6)[3]
    # identity MDX: v1 = lowpass(mix); v2 = mix - (-lowpass(-mix)) = mix - lowpass(mix)
    out = reference_separate(identity_pack, mix, only_vocals=True)
    assert set(out) == {"vocals", "instrumental"}
    want = (12 * low + 8 * (x - low) + 3 * v_demucs) / 23
    np.testing.assert_allclose(out["vocals"], want.T, atol=1e-5)
    np.testing.assert_allclose(out["instrumental"], mix - out["vocals"], atol=1e-6)
    single = reference_separate(identity_pack, mix, only_vocals=True, single_onnx=True)
    np.testing.assert_allclose(single["vocals"], ((6 * low + v_demucs) / 7).T, atol=1e-5)


def test_reference_separates_two_bands_on_bandsplit_pack(bandsplit_pack, two_band_sources):
    low, high = two_band_sources(4.0, seed=5)
    out = reference_separate(bandsplit_pack, low + high, only_vocals=True)
    assert sdr(low, out["vocals"]) >= 30
    assert sdr(high, out["instrumental"]) >= 30


# ---------------------------------------------------------------- the reference on the random pack

@pytest.fixture(scope="module")
def short_mix(noise_mix):
    return noise_mix(1.5, seed=7)  # crosses the 2 s toy segment windows at overlap 0.5 / 0.6


@pytest.fixture(scope="module")
def vocals_default(random_pack, short_mix):
    return reference_separate(random_pack, short_mix, only_vocals=True)


def _check_stems(out, mix, names):
    assert set(out) == set(names)
    for name, stem in out.items():
        assert stem.shape == mix.shape and stem.dtype == np.float32, name
        assert np.isfinite(stem).all() and np.abs(stem).max() > 1e-4, name
    np.testing.assert_allclose(out["vocals"] + out["instrumental"], mix, atol=1e-6)


def test_reference_vocals_modes_on_random_pack(random_pack, short_mix, vocals_default):
    _check_stems(vocals_default, short_mix, ["vocals", "instrumental"])
    for options in (dict(single_onnx=True), dict(use_kim_model_1=True),
                    dict(chunk_size=50_000, overlap_large=0.5)):
        out = reference_separate(random_pack, short_mix, only_vocals=True, **options)
        _check_stems(out, short_mix, ["vocals", "instrumental"])
        assert not np.allclose(out["vocals"], vocals_default["vocals"], atol=1e-4), options


def test_reference_vocals_only_needs_only_the_vocals_files(vocals_pack, short_mix):
    out = reference_separate(vocals_pack, short_mix, only_vocals=True)
    _check_stems(out, short_mix, ["vocals", "instrumental"])


@pytest.mark.parametrize("options", [dict(), dict(single_onnx=True, use_kim_model_1=True)])
def test_reference_four_stems_on_random_pack(random_pack, short_mix, vocals_default, options):
    out = reference_separate(random_pack, short_mix, **options)
    _check_stems(out, short_mix, ["vocals", "instrumental", "drums", "bass", "other", "instrumental2"])
    np.testing.assert_allclose(out["instrumental2"], out["drums"] + out["bass"] + out["other"], atol=1e-6)
    # vocals do not depend on whether the four stems are asked for
    same = np.array_equal(out["vocals"], vocals_default["vocals"])
    assert same == (not options)
