"""RoFormer model pieces, band tables, the full-size layouts and strict loading (../shared/docs/roformer-recipes.md).
Full-size models are only built on the meta device; everything that runs uses the small configs of
`testkit.roformer`."""
import math
import zipfile

import numpy as np
import pytest
import torch
import yaml

from mvsep.errors import ModelPackError
from mvsep.roformer import FILES
from mvsep.roformer import bands as bandlib
from mvsep.roformer.config import read_config
from mvsep.roformer.loader import load_model
from mvsep.roformer.model import Attention, RMSNorm, Rotary
from testkit import roformer as kit

# The spec's Mel band table: (first, last) bin of each of the 60 bands at sr 44100, n_fft 2048.
MEL_TABLE = [
    (0, 6), (4, 9), (7, 12), (10, 15), (13, 18), (16, 21), (19, 24), (22, 27), (25, 30), (28, 33), (31, 36),
    (34, 39), (37, 42), (40, 45), (43, 48), (46, 52), (49, 55), (53, 59), (56, 64), (60, 68), (65, 73), (69, 78),
    (74, 83), (79, 89), (84, 96), (90, 102), (97, 109), (103, 117), (110, 125), (118, 134), (126, 144),
    (135, 154), (145, 164), (155, 176), (165, 188), (177, 202), (189, 216), (203, 231), (217, 247), (232, 264),
    (248, 283), (265, 303), (284, 324), (304, 347), (325, 371), (348, 397), (372, 425), (398, 454), (426, 486),
    (455, 520), (487, 557), (521, 596), (558, 637), (597, 682), (638, 730), (683, 781), (731, 835), (782, 894),
    (836, 957), (895, 1024)]
# Keys, values (all), rotary values of the full-size models.
FULL_COUNTS = {"mel": (684, 228_203_172, 12 * 32), "bs": (699, 159_758_796, 24 * 32)}


def test_mel_bands_are_the_spec_table():
    bands = bandlib.mel_bands(44100, 2048, 60)
    assert bands == MEL_TABLE
    count = bandlib.bins_per_band(bands, 1025)
    assert (count == 1).sum() == 71 and (count == 2).sum() == 954
    assert sum(last - first + 1 for first, last in bands) == 1979
    sizes = [last - first + 1 for first, last in bands]
    assert sizes[:16] == [7] + [6] * 14 + [7] and sizes[-2:] == [122, 130]


def test_mel_filterbank_edges_are_slaney():
    # 1 kHz is 15 mels on Slaney's scale, 6.4 kHz 42 (27 log steps of 6.4^(1/27)); the weights are triangles
    assert bandlib.hz_to_mel(1000.0) == pytest.approx(15.0)
    assert bandlib.hz_to_mel(6400.0) == pytest.approx(42.0)
    assert bandlib.mel_to_hz(bandlib.hz_to_mel(np.array([50.0, 999.0, 5000.0]))) == pytest.approx([50, 999, 5000])
    w = bandlib.mel_filter_weights(44100, 2048, 60)
    assert w.shape == (60, 1025) and w.min() >= 0 and w[0, 0] == 0


def test_bs_bands_cover_1025_bins_in_62_runs():
    cfg = read_config(_yaml("bs", "full"), "bs")
    sizes = [last - first + 1 for first, last in cfg.bands]
    assert len(sizes) == 62 and sum(sizes) == 1025 and cfg.bands[0] == (0, 1) and cfg.bands[-1] == (896, 1024)
    assert sorted({4 * n for n in sizes}) == [8, 16, 48, 96, 192, 512, 516]
    assert (bandlib.bins_per_band(list(cfg.bands), 1025) == 1).all()


def _yaml(kind, size, tmp=None):
    import tempfile
    from pathlib import Path
    path = Path(tmp or tempfile.mkdtemp()) / FILES[kind][1]
    path.write_text(kit.yaml_text(kind, size), encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["mel", "bs"])
def test_full_size_layout(kind):
    layout = kit.layout(kind)
    keys, values, rotary = FULL_COUNTS[kind]
    assert len(layout) == keys
    assert sum(math.prod(s) for s in layout.values()) == values
    assert sum(math.prod(s) for k, s in layout.items() if k.endswith("rotary_embed.freqs")) == rotary
    dim = 384 if kind == "mel" else 512
    a = "layers.0.1.layers.0.0."
    assert layout[a + "to_qkv.weight"] == (1536, dim)
    assert layout[a + "to_gates.weight"] == (8, dim) and layout[a + "to_gates.bias"] == (8,)
    assert layout[a + "to_out.0.weight"] == (dim, 512)
    assert layout["layers.0.1.layers.0.1.net.1.weight"] == (4 * dim, dim)
    assert layout["layers.0.1.layers.0.1.net.4.weight"] == (dim, 4 * dim)
    first_band = 4 * (7 if kind == "mel" else 2)
    assert layout["band_split.to_features.0.0.gamma"] == (first_band,)
    assert layout["band_split.to_features.0.1.weight"] == (dim, first_band)
    last = "mask_estimators.0.to_freqs.0.0."
    if kind == "mel":
        assert layout[last + "2.weight"] == (4 * dim, 4 * dim) and layout[last + "4.weight"] == (8 * 7, 4 * dim)
        assert "layers.5.0.norm.gamma" in layout and "final_norm.gamma" not in layout
    else:
        assert layout[last + "2.weight"] == (8 * 2, 4 * dim) and last + "4.weight" not in layout
        assert "final_norm.gamma" in layout and "layers.11.0.norm.gamma" not in layout
    # the order of the published files: layers, (BS) final_norm, band_split, mask_estimators
    order = [k.split(".")[0] for k in layout]
    groups = [g for i, g in enumerate(order) if i == 0 or order[i - 1] != g]
    assert groups == (["layers", "band_split", "mask_estimators"] if kind == "mel"
                      else ["layers", "final_norm", "band_split", "mask_estimators"])


@pytest.fixture(scope="module", params=["mel", "bs"])
def small_pack(request, tmp_path_factory):
    kind = request.param
    ckpt, cfg = kit.write(tmp_path_factory.mktemp(f"roformer_{kind}"), kind)
    return kind, ckpt, cfg


def test_strict_load_of_the_real_format_under_the_real_names(small_pack):
    kind, ckpt, cfg_path = small_pack
    assert (ckpt.name, cfg_path.name) == FILES[kind]
    assert zipfile.is_zipfile(ckpt)  # torch.save's zip format
    assert "!!python/tuple" in cfg_path.read_text()
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load(cfg_path.read_text())  # the tag is real: a plain safe load refuses it
    saved = torch.load(ckpt, weights_only=True)
    assert all(v.dtype == torch.float32 for v in saved.values())
    model = load_model(ckpt, cfg_path, kind)
    assert list(model.state_dict()) == list(saved)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert torch.equal(model.window, torch.hann_window(model.cfg.win))
    assert not model.training


def _broken(tmp_path, small_pack, edit):
    kind, ckpt, cfg_path = small_pack
    state = torch.load(ckpt, weights_only=True)
    out = tmp_path / ckpt.name
    torch.save(edit(state), out)
    (tmp_path / cfg_path.name).write_text(cfg_path.read_text())
    return kind, out, tmp_path / cfg_path.name


def _load_error(kind, ckpt, cfg) -> str:
    with pytest.raises(ModelPackError) as err:
        load_model(ckpt, cfg, kind)
    return str(err.value)


def test_a_missing_key_is_named(tmp_path, small_pack):
    key = "layers.1.0.layers.0.0.to_qkv.weight"
    kind, ckpt, cfg = _broken(tmp_path, small_pack, lambda s: {k: v for k, v in s.items() if k != key})
    msg = _load_error(kind, ckpt, cfg)
    assert ckpt.name in msg and key in msg and "missing" in msg


def test_an_extra_key_is_named(tmp_path, small_pack):
    kind, ckpt, cfg = _broken(tmp_path, small_pack, lambda s: {**s, "layers.0.2.norm.gamma": torch.ones(3)})
    msg = _load_error(kind, ckpt, cfg)
    assert ckpt.name in msg and "layers.0.2.norm.gamma" in msg


def test_a_wrong_shape_is_named(tmp_path, small_pack):
    key = "band_split.to_features.3.1.weight"
    kind, ckpt, cfg = _broken(tmp_path, small_pack, lambda s: {**s, key: s[key][:, :-4]})
    msg = _load_error(kind, ckpt, cfg)
    assert ckpt.name in msg and key in msg and "shape" in msg


def test_a_yaml_of_other_dimensions_is_a_mismatch(tmp_path, small_pack):
    kind, ckpt, cfg = _broken(tmp_path, small_pack, lambda s: s)
    cfg.write_text(cfg.read_text().replace("\n  depth: 2\n", "\n  depth: 3\n"))
    msg = _load_error(kind, ckpt, cfg)
    assert ckpt.name in msg and "layers.2.0" in msg


def test_a_truncated_or_foreign_file_is_a_clear_error(tmp_path, small_pack):
    kind, ckpt, cfg = _broken(tmp_path, small_pack, lambda s: s)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[:len(data) // 2])
    assert ckpt.name in _load_error(kind, ckpt, cfg)
    ckpt.write_bytes(b"")
    assert ckpt.name in _load_error(kind, ckpt, cfg)
    torch.save([torch.zeros(1)], ckpt)
    assert "not a state dict" in _load_error(kind, ckpt, cfg)
    torch.save({"layers.0.0.layers.0.0.norm.gamma": 3}, ckpt)
    assert "not a tensor" in _load_error(kind, ckpt, cfg)
    ckpt.unlink()
    msg = _load_error(kind, ckpt, cfg)
    assert ckpt.name in msg and "missing" in msg


def test_a_bad_yaml_names_the_file_and_key(tmp_path, small_pack):
    kind, ckpt, cfg = _broken(tmp_path, small_pack, lambda s: s)
    text = cfg.read_text()
    cfg.write_text(text.replace("num_stems: 1", "num_stems: 2"))
    msg = _load_error(kind, ckpt, cfg)
    assert cfg.name in msg and "model.num_stems" in msg
    cfg.write_text(text.replace("  dim_head:", "  dim_head: [\n"))
    assert cfg.name in _load_error(kind, ckpt, cfg)
    cfg.write_text(text.replace("  dim:", "  width:"))
    msg = _load_error(kind, ckpt, cfg)
    assert cfg.name in msg and "model.dim" in msg
    cfg.unlink()
    assert cfg.name in _load_error(kind, ckpt, cfg)


def test_too_many_mel_bands_for_the_fft_is_refused(tmp_path):
    cfg = _yaml("mel", "small", tmp_path)
    cfg.write_text(cfg.read_text().replace("num_bands: 8", "num_bands: 60"))
    with pytest.raises(ModelPackError, match="model.num_bands"):
        read_config(cfg, "mel")


def test_rmsnorm_of_silence_is_silence_and_scales_to_sqrt_dim():
    norm = RMSNorm(6)
    assert torch.equal(norm(torch.zeros(2, 6)), torch.zeros(2, 6))
    y = norm(torch.randn(3, 6))
    assert torch.allclose(y.norm(dim=-1), torch.full((3,), math.sqrt(6)), atol=1e-5)


def test_rotary_is_identity_at_position_zero_and_rotates_pairs():
    rot = Rotary(8)
    assert torch.allclose(rot.freqs, 10000 ** (-torch.arange(0, 8, 2) / 8))
    x = torch.randn(2, 5, 8)
    y = rot(x)
    assert torch.equal(y[:, 0], x[:, 0])
    pos, i = 3, 1
    angle = torch.tensor(pos * rot.freqs[i].item())
    x0, x1 = x[:, pos, 2 * i], x[:, pos, 2 * i + 1]
    assert torch.allclose(y[:, pos, 2 * i], x0 * angle.cos() - x1 * angle.sin(), atol=1e-6)
    assert torch.allclose(y[:, pos, 2 * i + 1], x1 * angle.cos() + x0 * angle.sin(), atol=1e-6)


def test_attention_equals_a_plain_softmax_with_head_gates():
    torch.manual_seed(0)
    attn = Attention(12, heads=2, dim_head=8).eval()
    x = torch.randn(3, 7, 12)
    h = attn.norm(x)
    q, k, v = attn.to_qkv(h).view(3, 7, 3, 2, 8).permute(2, 0, 3, 1, 4)
    q, k = attn.rotary_embed(q), attn.rotary_embed(k)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(8)).softmax(-1)
    out = (scores @ v) * torch.sigmoid(h @ attn.to_gates.weight.T + attn.to_gates.bias).transpose(1, 2)[..., None]
    want = out.transpose(1, 2).reshape(3, 7, 16) @ attn.to_out[0].weight.T
    with torch.no_grad():
        assert torch.allclose(attn(x), want, atol=1e-6)


def _unit_mask_model(kind, pack_dir):
    """The small model with each band's mask estimator forced to the mask 1 + 0j: GLU(a, b) = a * sigmoid(b)
    with a = 1 on the real parts, 0 on the imaginary ones, sigmoid(100) = 1."""
    ckpt, cfg = kit.write(pack_dir, kind)
    model = load_model(ckpt, cfg, kind)
    with torch.no_grad():
        for head in model.mask_estimators[0].to_freqs:
            last = head[0][-1]
            half = last.out_features // 2
            last.weight.zero_()
            last.bias[:half] = torch.tensor([1.0, 0.0]).repeat(half // 2)
            last.bias[half:] = 100.0
    return model


@pytest.mark.parametrize("kind", ["mel", "bs"])
def test_unit_mask_returns_the_piece_dc_included(kind, tmp_path):
    # the folded layout (bin, channel, re/im), the Mel averaging of overlapping bands (a sum would double
    # their bins), the STFT/iSTFT pair and the kept DC bin all show here
    model = _unit_mask_model(kind, tmp_path)
    x = torch.randn(2, 2, model.cfg.chunk) * 0.1 + torch.tensor([0.3, -0.2])[None, :, None]
    with torch.no_grad():
        assert (model(x) - x).abs().max() <= 1e-5


def test_stft_folds_stereo_per_bin(tmp_path):
    ckpt, cfg = kit.write(tmp_path, "bs")
    model = load_model(ckpt, cfg, "bs")
    x = torch.randn(1, 2, model.cfg.chunk)
    spec = model.stft(x)  # [B, T, F, 2, 2]
    frames = model.cfg.chunk // model.cfg.hop + 1
    assert spec.shape == (1, frames, model.cfg.n_bins, 2, 2)
    right = torch.stft(x[0, 1], model.cfg.n_fft, model.cfg.hop, window=torch.hann_window(model.cfg.n_fft),
                       center=True, return_complex=True)
    assert torch.allclose(spec[0, :, :, 1, 0], right.real.T) and torch.allclose(spec[0, :, :, 1, 1], right.imag.T)
    flat = spec.reshape(1, frames, -1)  # what a band's RMSNorm sees: L.re, L.im, R.re, R.im of bin k
    assert torch.equal(flat[0, 5, 4 * 7:4 * 8], spec[0, 5, 7].reshape(4))


def test_zero_dc_only_when_the_yaml_asks(tmp_path):
    # the published yaml files have no zero_dc: DC is kept (their checkpoints were trained so); a yaml that sets
    # it (MSST's newer default) zeroes the DC bin before the iSTFT
    assert read_config(_yaml("mel", "small", tmp_path), "mel").zero_dc is False
    model = _unit_mask_model("bs", tmp_path)
    cfg = tmp_path / FILES["bs"][1]
    cfg.write_text(cfg.read_text().replace("\nmodel:\n", "\nmodel:\n  zero_dc: true\n"))
    zeroed = load_model(tmp_path / FILES["bs"][0], cfg, "bs")
    zeroed.load_state_dict(model.state_dict())
    x = torch.randn(1, 2, model.cfg.chunk) * 0.1 + 0.3
    with torch.no_grad():
        kept, dropped = model(x), zeroed(x)
    assert (kept - x).abs().max() <= 1e-5
    assert dropped.mean().item() < kept.mean().item() - 0.1   # the offset (DC bin) is gone, mostly (bin 1 leaks)


def test_inference_chunk_size_overrides_the_audio_one(tmp_path):
    cfg = _yaml("bs", "small", tmp_path)
    assert read_config(cfg, "bs").chunk == 2560 and read_config(cfg, "bs").step == 1280
    cfg.write_text(cfg.read_text().replace("inference:\n", "inference:\n  chunk_size: 3840\n"))
    assert read_config(cfg, "bs").chunk == 3840 and read_config(cfg, "bs").step == 1920
