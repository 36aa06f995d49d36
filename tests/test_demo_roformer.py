"""The demo pack's small Mel-Band RoFormer (`MelBandRoformer.ckpt` + `config_vocals_mel_band_roformer_kj.yaml`,
scripts/demo_pack/train_roformer.py) really separates: `recipe=mel-roformer` out of the box, through the engine
and through the service, on the held-out clips of tests/data/demo_pack (0 dB). Floors sit under the measured
figures (mvsep/demo_pack/README.md) and far above the mixture baseline (0 dB).
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from mvsep import Options, Separator
from mvsep.roformer import FILES
from mvsep.roformer.config import read_config
from mvsep.roformer.loader import load_model, read_state_dict
from testkit import load_module
from testkit.demo_clips import PACK, clips
from test_demo_pack import demo_server, lag, sdr  # noqa: E402, F401, F811 (the fixture)

SR = 44100
CKPT, YAML = FILES["mel"]
# the three clips measure 6.99 / 10.32 / 10.17 dB (vocals and instrumental alike: their errors are the same samples);
# floors 0.7 dB under each, several dB over the mixture (0 dB): a seam, a wrong window or fade, wrong weights fail
FLOORS = (6.2, 9.6, 9.4)


@pytest.fixture(scope="module")
def sep():
    return Separator(PACK, device="cpu", threads=1)


@pytest.fixture(scope="module")
def tr():
    """scripts/demo_pack/train_roformer.py (the scripts import each other by plain name: dependencies first)."""
    scripts = Path(__file__).resolve().parents[1] / "scripts" / "demo_pack"
    *_, module = (load_module(scripts / f"{n}.py") for n in ("make_data", "train", "train_roformer"))
    return module


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
    assert sum(p.numel() for p in model.parameters()) < 6_000_000   # 5.33 M (dim 96)
    assert (PACK / CKPT).stat().st_size < 12 * 2 ** 20


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


def grown_from_pack(tr, tmp_path: Path, **model):
    """A model of the pack's yaml with `model` keys changed, started from the pack's file by --init's code."""
    t = yaml.safe_load((PACK / YAML).read_text())
    t["model"].update(model)
    (tmp_path / YAML).write_text(yaml.safe_dump(t))
    grown = tr.Roformer(read_config(tmp_path / YAML, "mel"))
    tr.load_init(grown, PACK / CKPT)
    return grown


def test_a_deeper_model_starts_from_the_pack_model_as_an_identity(tr, tmp_path):
    """train_roformer.py --init: a model with more time/freq layers per block (--inner-depth) starts from the pack's
    file with its new layers as identities (the same output, to the last bit), and their weights still train; a
    checkpoint of another shape is refused with the keys that differ."""
    tree = read_config(PACK / YAML, "mel")
    grown = grown_from_pack(tr, tmp_path, time_transformer_depth=tree.time_depth + 1,
                            freq_transformer_depth=tree.time_depth + 1)
    x = torch.randn(1, 2, SR) * 0.1
    with torch.no_grad():
        assert torch.equal(grown.eval()(x), load_model(PACK / CKPT, PACK / YAML, "mel")(x))
    grown.train()
    tr.vocals_loss(grown, x, torch.randn(1, 2, SR) * 0.1).backward()
    new = grown.layers[0][0].layers[tree.time_depth][0]   # the first block's new time-attention layer
    assert float(new.to_out[0].weight.detach().abs().max()) == 0 and float(new.to_out[0].weight.grad.abs().max()) > 0
    saved = tmp_path / "grown.pt"   # the other way round: a deeper checkpoint into the pack's model
    torch.save({"model": grown.state_dict(), "step": 0}, saved)
    with pytest.raises(SystemExit, match="does not fit this model: unexpected .'layers.0.0.layers."):
        tr.load_init(tr.Roformer(tree), saved)


def test_a_wider_model_starts_from_the_pack_model(tr, tmp_path):
    """train_roformer.py --init with a larger --dim: the pack's weights fill the leading slices, the new residual
    dims start at zero and the new hidden units unread, so the wider model gives the file's output (to float
    rounding: the RMSNorm gains are rescaled); what writes the new dims still trains."""
    tree = read_config(PACK / YAML, "mel")
    grown = grown_from_pack(tr, tmp_path, dim=tree.dim + 16)
    x = torch.randn(1, 2, SR) * 0.1
    with torch.no_grad():
        ref = load_model(PACK / CKPT, PACK / YAML, "mel")(x)
        assert float((grown.eval()(x) - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
    grown.train()
    tr.vocals_loss(grown, x, torch.randn(1, 2, SR) * 0.1).backward()
    out = grown.layers[0][0].layers[0][0].to_out[0].weight   # the first time attention's output projection
    assert out.shape[0] == tree.dim + 16
    assert float(out[tree.dim:].detach().abs().max()) == 0 and float(out.grad[tree.dim:].abs().max()) > 0


def test_export_from_several_checkpoints_averages_their_weights(tr, tmp_path):
    """train_roformer.py --export-from A B: the mean of the weights; the shared rotary freqs stay bit for bit."""
    one = {k: v.float() for k, v in read_state_dict(PACK / CKPT).items()}
    two = {k: v if k.endswith("rotary_embed.freqs") else v + 1 for k, v in one.items()}
    for step, state in ((100, one), (200, two)):
        torch.save({"model": state, "step": step}, tmp_path / f"m{step}.pt")
    mean = tr.mean_checkpoint([tmp_path / "m100.pt", tmp_path / "m200.pt"])
    assert mean["step"] == 200
    key = "layers.0.0.layers.0.0.to_qkv.weight"
    assert torch.allclose(mean["model"][key], one[key] + 0.5)
    freqs = [k for k in one if k.endswith("rotary_embed.freqs")]
    assert freqs and all(torch.equal(mean["model"][k], one[k]) for k in freqs)


def test_training_mixtures_put_a_share_of_dialogs_in_a_room(tr, tmp_path):
    """train_roformer.py --reverb: that share of training dialogs gets make_data's room (a tail fills the pauses;
    one room for both channels, then the pan); 0 is the default and takes no draws of its own."""
    for kind, shape in (("speech", (6 * SR,)), ("music", (6 * SR, 2))):
        (tmp_path / "train" / kind).mkdir(parents=True)
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32) * 0.1
        if kind == "speech":   # 50-ms bursts every 250 ms, silence between
            x[(np.arange(x.size) % (SR // 4)) >= SR // 20] = 0
        sf.write(tmp_path / "train" / kind / "a.flac", x, SR, subtype="PCM_24")
    dry = tr.Mixer(tmp_path, "train", 0).batch(8, SR)[0]
    assert torch.equal(tr.Mixer(tmp_path, "train", 0, 0.0).batch(8, SR)[0], dry)
    wet = tr.Mixer(tmp_path, "train", 0, 1.0).batch(8, SR)[0]

    def quiet(v):   # per crop that is not silenced (a 4% augmentation): the share of samples 80 dB under its peak
        a = v[:, 0].abs()
        peak = a.amax(1, keepdim=True)
        return (a < 1e-4 * peak).float().mean(1)[peak[:, 0] > 0]
    q_dry, q_wet = quiet(dry), quiet(wet)
    assert len(q_dry) >= 6 and len(q_wet) >= 6
    assert bool((q_dry > 0.7).all()) and bool((q_wet < 0.5).all()), (q_dry, q_wet)
    for v in wet[wet.abs().amax((1, 2)) > 0]:
        assert abs(float(np.corrcoef(v[0].numpy(), v[1].numpy())[0, 1])) > 0.9999
