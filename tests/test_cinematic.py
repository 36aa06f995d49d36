"""The cinematic recipe (dialog / music / effects) against the whole-file reference, packs holding either recipe,
and the residual stems at the input's own rate."""
import numpy as np
import pytest
import soundfile as sf

from conftest import BAND_CUTOFF_HZ, SR
from testkit import toypack
from mvsep.engine import Options, Separator
from mvsep.errors import NotInPackError, OptionError
from testkit.reference import reference_cinematic

TOL = 1e-4


def noise(frames, seed=0):
    return (np.random.default_rng(seed).standard_normal((frames, 2)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def cine_pack(tmp_path_factory):
    """Cinematic checkpoints only (random small HTDemucs, the real names); segment 2 s."""
    return toypack.build_cinematic(tmp_path_factory.mktemp("cine_pack"), kind="random")


@pytest.fixture(scope="module")
def cine_sep(cine_pack):
    return Separator(cine_pack, device="cpu")


# Shorter than one segment, exactly one segment, a multiple of the stride, and a long odd length.
SEG = 2 * SR
CASES = {"0.7 s": (int(0.7 * SR), False), "one segment": (SEG, False), "stride multiple": (5 * int(0.2 * SEG), False),
         "4.3 s, high_quality": (int(4.3 * SR) + 7, True)}


@pytest.mark.parametrize("case", CASES)
def test_cinematic_equals_whole_file_reference(cine_pack, cine_sep, case):
    frames, hq = CASES[case]
    mix = noise(frames, seed=len(case))
    ref = reference_cinematic(cine_pack, mix, high_quality=hq)
    out = cine_sep.separate_array(mix, SR, Options(recipe="cinematic", high_quality=hq, shifts=0))
    assert set(out) == {"dialog", "music", "effects", "background", "background2"}
    for stem in ref:
        assert out[stem].shape == (frames, 2)
        assert np.abs(out[stem]).max() > 1e-3, f"{stem} is silent: the comparison would prove nothing"
        assert np.abs(out[stem] - ref[stem]).max() < TOL, stem


def test_cinematic_shifts_are_seeded_per_checkpoint(cine_sep):
    mix = noise(int(1.5 * SR), seed=3)
    a = cine_sep.separate_array(mix, SR, Options(recipe="cinematic", shifts=1, seed=5), stems=["dialog"])
    b = cine_sep.separate_array(mix, SR, Options(recipe="cinematic", shifts=1, seed=5), stems=["dialog"])
    c = cine_sep.separate_array(mix, SR, Options(recipe="cinematic", shifts=1, seed=6), stems=["dialog"])
    assert np.array_equal(a["dialog"], b["dialog"])
    assert not np.allclose(a["dialog"], c["dialog"], atol=1e-4)


def test_pack_says_which_recipes_it_runs(cine_pack, vocals_pack, tmp_path):
    cine = Separator(cine_pack, device="cpu")
    assert cine.recipes() == ["cinematic"]
    with pytest.raises(NotInPackError) as e:   # mdx23 asked of a cinematic-only pack: 422, files named
        cine.separate_array(noise(SR), SR, Options(only_vocals=True))
    assert "Kim_Vocal_2.onnx" in e.value.missing and "recipe=cinematic" in str(e.value)
    mdx = Separator(vocals_pack, device="cpu")
    assert mdx.recipes() == ["mdx23"]
    with pytest.raises(NotInPackError) as e:
        mdx.separate_array(noise(SR), SR, Options(recipe="cinematic"))
    assert e.value.missing == ["97d170e1-dbb4db15.th"]
    # one checkpoint of three: the default runs, high_quality names the two it lacks
    one = toypack.build_cinematic(tmp_path / "one", files=("97d170e1-dbb4db15.th",))
    sep = Separator(one, device="cpu")
    assert sep.recipes() == ["cinematic"]
    with pytest.raises(NotInPackError) as e:
        sep.warm(Options(recipe="cinematic", high_quality=True))
    assert e.value.missing == ["97d170e1-a778de4a.th", "97d170e1-e41a5468.th"]


def test_both_recipes_in_one_pack(tmp_path):
    pack = toypack.build_pack(tmp_path / "both", kind="random", stems="vocals")
    toypack.build_cinematic(pack)
    assert Separator(pack, device="cpu").recipes() == ["mdx23", "cinematic"]


def test_bad_recipe_and_layout_name_the_field():
    for field, value in (("recipe", "cdx"), ("layout", "5.1")):
        with pytest.raises(OptionError) as e:
            Options(**{field: value}).validate()
        assert e.value.field == field


def test_bandsplit_cinematic_stems_and_sums_at_48k(tmp_path, two_band_sources):
    """dialog = low band, music = high band, effects silent; at 48 kHz dialog + background == mix exactly and
    the content above the models' band (the 22-24 kHz of a 48 kHz file) stays in the background."""
    pack = toypack.build_cinematic(tmp_path / "band", kind="bandsplit", cutoff_hz=BAND_CUTOFF_HZ)
    sep = Separator(pack, device="cpu")
    low, high = two_band_sources(3.0, seed=2)
    rate = 48000
    n = int(3.0 * rate)
    t = np.arange(n) / rate
    x48 = np.stack([np.interp(t, np.arange(len(low)) / SR, (low + high)[:, c]) for c in range(2)], 1)
    ultra = (0.02 * np.sin(2 * np.pi * 23000 * t))[:, None].astype(np.float32)   # above 22.05 kHz
    mix = (x48 + ultra).astype(np.float32)
    src = tmp_path / "in.wav"
    sf.write(src, mix, rate, subtype="FLOAT")
    res = sep.separate_file(src, tmp_path / "out", Options(recipe="cinematic", shifts=0))
    got = {s: sf.read(p, dtype="float32")[0] for s, p in res.stems.items()}
    assert all(v.shape == (n, 2) for v in got.values())
    assert np.abs(got["dialog"] + got["background"] - mix).max() < 1e-4
    assert np.abs(got["effects"]).max() < 1e-4
    spec = np.abs(np.fft.rfft(got["background"][:, 0]))
    f = np.fft.rfftfreq(n, 1 / rate)
    assert spec[np.argmin(np.abs(f - 23000))] > 0.5 * np.abs(np.fft.rfft(ultra[:, 0]))[np.argmin(np.abs(f - 23000))]
    edge = rate // 10
    d = got["dialog"][edge:-edge]
    assert np.sum(d ** 2) > 0.3 * np.sum(x48[edge:-edge] ** 2) * np.sum(low ** 2) / np.sum((low + high) ** 2)


def test_runpod_worker_takes_recipe_layout_and_high_quality():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "deploy" / "runpod" / "handler.py"
    spec = importlib.util.spec_from_file_location("runpod_handler", path)
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    opts, stems = handler.parse_options({"url": "http://x/a.wav", "recipe": "cinematic", "layout": "center",
                                         "high_quality": True})
    assert (opts.recipe, opts.layout, opts.high_quality) == ("cinematic", "center", True)
    assert stems == ["dialog", "music", "effects", "background", "background2"]
    opts, stems = handler.parse_options({"url": "http://x/a.wav", "recipe": "cinematic", "stems": "dialog,background"})
    assert stems == ["dialog", "background"]
    with pytest.raises(handler.JobError):
        handler.parse_options({"url": "http://x/a.wav", "recipe": "cinematic", "stems": "vocals"})
    with pytest.raises(handler.JobError):
        handler.parse_options({"url": "http://x/a.wav", "layout": "5.1"})
