"""The RoFormer recipes and the vocals ensemble end to end, on small random-weight packs under the real names:
the engine against the whole-file demix, the ensemble's weighted mean, the CLI and the real service on stereo,
mono and 48 kHz inputs (vocals + instrumental == input), and what a pack lacking or damaging a file answers."""
from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mvsep.engine import Options, Separator
from mvsep.errors import ModelPackError, NotInPackError, OptionError
from mvsep.roformer import FILES
from mvsep.roformer.loader import load_model
from testkit.service import ROOT, Server, make_wav
from testkit import roformer as kit
from testkit import roformer_reference as reference

CHUNK = kit.SIZES["small"]["chunk"]


def write_sums(d: Path) -> Path:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in sorted(d.iterdir()) if p.is_file()
             and p.name != "SHA256SUMS"]
    (d / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture(scope="module")
def rof_pack(tmp_path_factory):
    d = tmp_path_factory.mktemp("rof_pack")
    for kind, seed in (("mel", 1), ("bs", 2)):
        kit.write(d, kind, seed=seed)
    return write_sums(d)


@pytest.fixture(scope="module")
def sep(rof_pack):
    return Separator(rof_pack, device="cpu")


def models(pack: Path):
    return {k: load_model(pack / FILES[k][0], pack / FILES[k][1], k) for k in ("mel", "bs")}


def whole_file(model, mix: np.ndarray) -> np.ndarray:
    return reference.demix(model, torch.from_numpy(np.ascontiguousarray(mix.T)), CHUNK).numpy().T


def noise(n, seed=0):
    return (np.random.default_rng(seed).standard_normal((n, 2)) * 0.1 + 0.02).astype(np.float32)


def test_the_pack_runs_the_three_recipes(sep):
    assert {"mel-roformer", "bs-roformer", "ensemble"} <= set(sep.recipes())
    assert "mdx23" not in sep.recipes()


@pytest.mark.parametrize("recipe,kind", [("mel-roformer", "mel"), ("bs-roformer", "bs")])
def test_engine_equals_the_whole_file_demix(sep, rof_pack, recipe, kind):
    mix = noise(5 * CHUNK // 2 + 311, 7)
    stems = sep.separate_array(mix, 44100, Options(recipe=recipe))
    want = whole_file(models(rof_pack)[kind], mix)
    assert stems["vocals"].shape == mix.shape
    assert np.abs(stems["vocals"] - want).max() <= 1e-6
    assert np.abs(stems["vocals"] + stems["instrumental"] - mix).max() <= 1e-6


def test_ensemble_is_the_weighted_mean_of_the_members(sep, rof_pack):
    mix = noise(3 * CHUNK + 5, 3)
    m = models(rof_pack)
    mel, bs = whole_file(m["mel"], mix), whole_file(m["bs"], mix)
    stems = sep.separate_array(mix, 44100, Options(recipe="ensemble"))
    assert np.abs(stems["vocals"] - (mel + bs) / 2).max() <= 1e-6
    stems = sep.separate_array(mix, 44100, Options(recipe="ensemble", weight_mel_roformer=1.0,
                                                   weight_bs_roformer=3.0))
    assert np.abs(stems["vocals"] - (mel + 3 * bs) / 4).max() <= 1e-6
    assert np.abs(stems["vocals"] + stems["instrumental"] - mix).max() <= 1e-6
    stems = sep.separate_array(mix, 44100, Options(recipe="ensemble", weight_bs_roformer=0.0))
    assert np.abs(stems["vocals"] - mel).max() <= 1e-6


def test_ensemble_refuses_no_member_and_names_a_lacking_one(sep, rof_pack):
    with pytest.raises(OptionError, match="weight_"):
        sep.check(Options(recipe="ensemble", weight_mel_roformer=0.0, weight_bs_roformer=0.0).validate())
    with pytest.raises(NotInPackError) as err:   # mdx23 as a member: its files are not in this pack
        sep.check(Options(recipe="ensemble", weight_mdx23=1.0).validate())
    assert "Kim_Vocal_2.onnx" in err.value.missing


def test_a_pack_lacking_or_damaging_a_file(tmp_path):
    ckpt, _ = kit.write(tmp_path, "mel")
    write_sums(tmp_path)
    sep = Separator(tmp_path, device="cpu")
    assert "mel-roformer" in sep.recipes() and "bs-roformer" not in sep.recipes()
    with pytest.raises(NotInPackError) as err:
        sep.check(Options(recipe="bs-roformer"))
    assert set(err.value.missing) == set(FILES["bs"])
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelPackError, match=ckpt.name):
        sep.warm(Options(recipe="mel-roformer"))


def read(path):
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return x, sr


@pytest.mark.parametrize("recipe,rate,channels", [("mel-roformer", 44100, 2), ("bs-roformer", 44100, 1),
                                                  ("ensemble", 48000, 2)])
def test_cli(rof_pack, tmp_path, recipe, rate, channels):
    src = make_wav(tmp_path / "song.wav", 0.4, sr=rate, channels=channels, extra_frames=17, subtype="FLOAT")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "mvsep/inference_demucs.py", "--input_audio", str(src),
                          "--output_folder", str(out), "--recipe", recipe, "--model_dir", str(rof_pack), "--cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    x, sr = read(src)
    v, sr_v = read(out / "song_vocals.wav")
    i, _ = read(out / "song_instrum.wav")
    assert sr_v == rate and len(v) == len(x) and v.shape[1] == 2   # a mono input gives dual-mono stems
    assert np.abs(v).max() > 1e-4   # the model did something
    assert np.abs(v + i - x).max() <= 1e-4


@pytest.fixture(scope="module")
def server(tmp_path_factory, rof_pack):
    srv = Server(tmp_path_factory.mktemp("svc") / "data", rof_pack).start()
    yield srv
    srv.stop()


def test_service(client, tmp_path):
    r = client.get("/ready")
    assert r.status_code == 200 and {"mel-roformer", "bs-roformer", "ensemble"} <= set(r.json()["recipes"])
    cat = {c["name"]: c for c in client.get("/recipes").json()["recipes"]}
    assert cat["mel-roformer"]["available"] and cat["bs-roformer"]["available"] and cat["ensemble"]["available"]
    assert not cat["mdx23"]["available"]
    assert cat["mel-roformer"]["default_stems"] == ["vocals", "instrumental"]
    weights = {o["name"]: o for o in cat["ensemble"]["options"]}
    assert weights["weight_mel_roformer"]["default"] == 1.0 and weights["weight_mdx23"]["default"] == 0.0
    assert weights["weight_bs_roformer"]["type"] == "float" and weights["weight_bs_roformer"]["max"] == 100.0
    for recipe, rate, channels, extra in (("mel-roformer", 48000, 1, {}), ("bs-roformer", 44100, 2, {}),
                                          ("ensemble", 44100, 2, {"weight_mel_roformer": "2"})):
        src = make_wav(tmp_path / "take.wav", 0.3, sr=rate, channels=channels, extra_frames=5, subtype="FLOAT")
        with open(src, "rb") as f:
            r = client.post("/separate", files={"file": ("take.wav", f)}, data={"recipe": recipe, **extra})
        assert r.status_code == 200, r.text
        with zipfile.ZipFile(io.BytesIO(r.content)) as z:
            assert sorted(z.namelist()) == ["take_instrumental.wav", "take_vocals.wav"]
            v, sr = sf.read(io.BytesIO(z.read("take_vocals.wav")), dtype="float32", always_2d=True)
            i, _ = sf.read(io.BytesIO(z.read("take_instrumental.wav")), dtype="float32", always_2d=True)
        x, _ = read(src)
        assert sr == rate and len(v) == len(x) and v.shape[1] == 2
        assert np.abs(v + i - x).max() <= 1e-4
    with open(src, "rb") as f:
        r = client.post("/separate", files={"file": ("take.wav", f)}, data={"recipe": "mdx23"})
    assert r.status_code == 422 and r.json()["error"] == "not_in_pack"
    with open(src, "rb") as f:   # mdx23 as an ensemble member: 422 naming its files
        r = client.post("/separate", files={"file": ("take.wav", f)}, data={"recipe": "ensemble", "weight_mdx23": "1"})
    assert r.status_code == 422 and r.json()["error"] == "not_in_pack" and "Kim_Inst.onnx" in r.json()["missing"]
    with open(src, "rb") as f:
        r = client.post("/separate", files={"file": ("take.wav", f)},
                        data={"recipe": "ensemble", "weight_mel_roformer": "0", "weight_bs_roformer": "0"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_option"
    with open(src, "rb") as f:
        r = client.post("/separate", files={"file": ("take.wav", f)}, data={"recipe": "ensemble", "weight_mdx23": "-1"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_option"


def test_a_51_input_keeps_its_layout_and_nulls(sep, tmp_path):
    from mvsep import surround
    n = 9000
    x = (np.random.default_rng(4).standard_normal((n, 6)) * 0.05).astype(np.float32)
    src = tmp_path / "film.wav"
    w = surround.LayoutWriter(src, 48000, "wav", "5.1")
    w.write(x)
    w.close()
    res = sep.separate_file(src, tmp_path / "out", Options(recipe="mel-roformer"))
    v, _ = read(res.stems["vocals"])
    i, _ = read(res.stems["instrumental"])
    assert v.shape == (n, 6) and i.shape == (n, 6)
    assert not v[:, 3].any()   # the LFE holds no vocals: it goes to the instrumental as it is
    assert np.abs(v + i - x).max() <= 1e-4


def test_progress_and_cancel(sep, tmp_path):
    src = make_wav(tmp_path / "p.wav", 0.5, subtype="FLOAT")
    seen = []
    sep.separate_file(src, tmp_path / "out", Options(recipe="bs-roformer"), progress=lambda f, s: seen.append((f, s)))
    fractions = [f for f, _ in seen]
    assert "bs-roformer" in {s for _, s in seen}
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    from mvsep.errors import Cancelled
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3   # a few windows in

    with pytest.raises(Cancelled):
        sep.separate_file(src, tmp_path / "out2", Options(recipe="ensemble"), cancel=cancel)
    assert not any((tmp_path / "out2").glob("*.wav"))   # no half-written stems


def test_mdx23_as_an_ensemble_member(tmp_path):
    from testkit import toypack
    pack = toypack.build_pack(tmp_path / "pack", kind="random", stems="vocals", manifest=False)
    kit.write(pack, "bs", seed=2)
    sep = Separator(write_sums(pack), device="cpu")
    # the ensemble's default members are the two RoFormers: not listed, yet it runs with other weights
    assert {"mdx23", "bs-roformer"} <= set(sep.recipes()) and "ensemble" not in sep.recipes()
    mix = noise(20000, 8)
    opts = dict(shifts=0, overlap_large=0.3)
    mdx = sep.separate_array(mix, 44100, Options(recipe="mdx23", only_vocals=True, **opts))["vocals"]
    bs = sep.separate_array(mix, 44100, Options(recipe="bs-roformer"))["vocals"]
    both = sep.separate_array(mix, 44100, Options(recipe="ensemble", weight_mel_roformer=0.0, weight_mdx23=3.0,
                                                  **opts))
    assert np.abs(both["vocals"] - (3 * mdx + bs) / 4).max() <= 1e-5
    assert np.abs(both["vocals"] + both["instrumental"] - mix).max() <= 1e-6
