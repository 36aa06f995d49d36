"""The demo pack's small Mel-Band RoFormer (`MelBandRoformer.ckpt` + `config_vocals_mel_band_roformer_kj.yaml`,
scripts/demo_pack/train_roformer.py) really separates: `recipe=mel-roformer` out of the box, through the engine
and through the service, on the held-out clips of tests/data/demo_pack (0 dB). Floors sit under the measured
figures (mvsep/demo_pack/README.md) and far above the mixture baseline (0 dB).
"""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

from mvsep import Options, Separator
from mvsep.roformer import FILES
from mvsep.roformer.config import read_config
from mvsep.roformer.loader import load_model, read_state_dict
from testkit.demo_clips import PACK, clips
from test_demo_pack import demo_server, lag, sdr  # noqa: E402, F401, F811 (the fixture)

SR = 44100
CKPT, YAML = FILES["mel"]
# the three clips measure 6.46 / 9.05 / 9.60 dB (vocals and instrumental alike: their errors are the same samples);
# floors 0.7 dB under each, several dB over the mixture (0 dB): a seam, a wrong window or fade, wrong weights fail
FLOORS = (5.7, 8.3, 8.9)


@pytest.fixture(scope="module")
def sep():
    return Separator(PACK, device="cpu", threads=1)


def test_demo_pack_holds_a_mel_roformer_in_the_real_format():
    cfg = read_config(PACK / YAML, "mel")
    state = read_state_dict(PACK / CKPT)
    assert cfg.kind == "mel" and cfg.sample_rate == SR and cfg.hop == 441
    # the public model's key layout (model.py's module names), smaller dimensions
    assert "layers.0.0.layers.0.0.to_qkv.weight" in state and "mask_estimators.0.to_freqs.0.0.0.weight" in state
    assert len([k for k in state if k.startswith("band_split.to_features.")]) == 3 * len(cfg.bands)
    halves = [k for k, v in state.items() if v.dtype == torch.float16]
    assert len(halves) > len(state) // 2   # float16 weights keep the repo small ...
    assert all(state[k].dtype == torch.float32 for k in state if k.endswith("rotary_embed.freqs"))  # ... not these
    model = load_model(PACK / CKPT, PACK / YAML, "mel")
    assert sum(p.numel() for p in model.parameters()) < 4_000_000
    assert (PACK / CKPT).stat().st_size < 8 * 2 ** 20


def test_demo_pack_runs_mel_roformer(sep):
    assert "mel-roformer" in sep.recipes() and "bs-roformer" not in sep.recipes()


def test_mel_roformer_separates_held_out_clips_through_files(sep, tmp_path):
    for k, (v, b) in enumerate(clips()):
        src = tmp_path / f"clip{k}.flac"
        sf.write(src, v + b, SR, subtype="PCM_24")
        mix = sf.read(src, dtype="float32")[0]
        res = sep.separate_file(src, tmp_path / "out", Options(recipe="mel-roformer"))
        got = {s: sf.read(p, dtype="float32")[0] for s, p in res.stems.items()}
        assert sorted(got) == ["instrumental", "vocals"] and all(x.shape == mix.shape for x in got.values())
        assert np.abs(got["vocals"] + got["instrumental"] - mix).max() < 1e-4
        sv, si = sdr(v, got["vocals"]), sdr(b, got["instrumental"])
        print(f"mel-roformer clip{k}: vocals {sv:.2f} dB, instrumental {si:.2f} dB")
        assert sv >= FLOORS[k], f"clip{k}: vocals SDR {sv:.2f} dB"
        assert si >= FLOORS[k], f"clip{k}: instrumental SDR {si:.2f} dB"
        assert lag(v, got["vocals"]) == 0 and lag(b, got["instrumental"]) == 0


def test_ensemble_of_the_demo_roformer_and_mdx23(sep):
    """The ensemble recipe over what the demo pack has: the Mel-RoFormer and mdx23 (no BS-RoFormer)."""
    v, b = clips()[0]
    opts = Options(recipe="ensemble", weight_bs_roformer=0.0, weight_mdx23=1.0, shifts=0)
    got = sep.separate_array(v + b, SR, opts)
    alone = sep.separate_array(v + b, SR, Options(recipe="mel-roformer"))
    mdx = sep.separate_array(v + b, SR, Options(only_vocals=True, shifts=0))
    np.testing.assert_allclose(got["vocals"], (alone["vocals"] + mdx["vocals"]) / 2, atol=1e-5)
    assert sdr(v, got["vocals"]) >= FLOORS[0]


def test_service_separates_with_the_demo_roformer_at_48k(demo_server, tmp_path):  # noqa: F811
    import httpx
    import soxr
    ready = httpx.get(demo_server + "/ready", timeout=10).json()
    assert "mel-roformer" in ready["recipes"]
    v, b = clips()[1]
    v48, b48 = soxr.resample(v, SR, 48000), soxr.resample(b, SR, 48000)
    path = tmp_path / "clip.wav"
    sf.write(path, v48 + b48, 48000, subtype="FLOAT")
    with open(path, "rb") as f:
        r = httpx.post(demo_server + "/separate", files={"file": (path.name, f, "audio/wav")},
                       data={"recipe": "mel-roformer"}, timeout=600)
    assert r.status_code == 200, r.text[:500]
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        got = {n.rsplit("_", 1)[1].split(".")[0]: sf.read(io.BytesIO(z.read(n)), dtype="float32")[0]
               for n in z.namelist()}
    assert sorted(got) == ["instrumental", "vocals"]
    assert sdr(v48, got["vocals"]) >= FLOORS[1] - 0.5 and sdr(b48, got["instrumental"]) >= FLOORS[1] - 0.5
    assert lag(v48, got["vocals"]) == 0
