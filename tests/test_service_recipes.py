"""The recipe and layout options through the real service: which recipes the pack runs, the cinematic stems,
a recipe the pack lacks (422 naming the files), a 5.1 input kept 5.1."""
from __future__ import annotations

import io
import zipfile

import av
import numpy as np
import pytest
import soundfile as sf

from mvsep import surround
from testkit import toypack
from testkit.service import Server, make_wav


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pack = toypack.build_cinematic(tmp_path_factory.mktemp("cine_pack"), kind="bandsplit",
                                   files=("97d170e1-dbb4db15.th",))   # the default only: no high_quality
    srv = Server(tmp_path_factory.mktemp("svc") / "data", pack).start()
    yield srv
    srv.stop()


def test_ready_and_status_list_the_recipes(client):
    r = client.get("/ready")
    assert r.status_code == 200 and r.json()["recipes"] == ["cinematic"]
    assert client.get("/status").json()["pack"]["recipes"] == ["cinematic"]


def test_recipes_catalogue_of_the_installed_pack(client, server):
    """GET /recipes: the contract of docs/recipes.md, filled in for this cinematic-only pack."""
    cat = client.get("/recipes").json()
    by_name = {r["name"]: r for r in cat["recipes"]}
    assert list(by_name) == ["mdx23", "cinematic"] and cat["default_recipe"] == "mdx23"
    cine, mdx = by_name["cinematic"], by_name["mdx23"]
    assert cine["available"] and cine["missing"] == []
    assert [s["name"] for s in cine["stems"]] == ["dialog", "music", "effects", "background", "background2"]
    assert all(s["available"] and s["reason"] is None for s in cine["stems"])
    assert {o["name"]: o["default"] for o in cine["options"]}["high_quality"] is False
    assert not mdx["available"] and "Kim_Vocal_2.onnx" in mdx["missing"]
    drums = next(s for s in mdx["stems"] if s["name"] == "drums")
    assert not drums["available"] and drums["reason"].startswith("the installed pack lacks")
    assert mdx["default_stems"] == ["vocals", "instrumental"]
    shifts = next(o for o in mdx["options"] if o["name"] == "shifts")
    assert (shifts["type"], shifts["min"], shifts["max"], shifts["default"]) == ("int", 0, 10, 1)
    for o in cat["options"] + [o for r in cat["recipes"] for o in r["options"]]:
        assert set(o) == {"name", "type", "default", "min", "max", "choices", "help"}, o
        assert o["type"] in ("bool", "int", "float", "choice") and o["help"]
    fmt = next(o for o in cat["options"] if o["name"] == "format")
    assert fmt["choices"] == ["wav", "wav16", "wav24", "flac", "mp3"] and fmt["default"] == "wav"
    assert [o["name"] for o in cat["options"]] == ["format", "sample_rate", "mono", "precision", "layout"]
    assert cat["limits"]["max_duration_s"] > 0 and cat["limits"]["max_upload_bytes"] > 0
    import httpx
    assert httpx.get(server.base + "/recipes").status_code == 401   # token-protected like /status


def test_cinematic_stems_and_a_recipe_the_pack_lacks(client, tmp_path):
    src = make_wav(tmp_path / "scene.wav", 1.2, sr=48000, channels=2, extra_frames=3)
    with open(src, "rb") as f:
        r = client.post("/separate", files={"file": ("scene.wav", f)}, data={"recipe": "cinematic"})
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        names = sorted(z.namelist())
    assert names == sorted(f"scene_{s}.wav" for s in ("dialog", "music", "effects", "background", "background2"))
    with open(src, "rb") as f:
        r = client.post("/separate", files={"file": ("scene.wav", f)}, data={"stems": "vocals"})
    assert r.status_code == 422 and r.json()["error"] == "not_in_pack"
    assert "Kim_Vocal_2.onnx" in r.json()["missing"]
    with open(src, "rb") as f:
        r = client.post("/separate", files={"file": ("scene.wav", f)},
                        data={"recipe": "cinematic", "high_quality": "true"})
    assert r.status_code == 422 and r.json()["error"] == "not_in_pack"
    assert r.json()["missing"] == ["97d170e1-a778de4a.th", "97d170e1-e41a5468.th"]
    with open(src, "rb") as f:
        r = client.post("/separate", files={"file": ("scene.wav", f)}, data={"recipe": "cinematic", "stems": "vocals"})
    assert r.status_code == 422 and r.json()["error"] == "invalid_option"


def test_a_51_input_comes_back_51(client, tmp_path):
    n = 48000
    x = (np.random.default_rng(0).standard_normal((n, 6)) * 0.05).astype(np.float32)
    src = tmp_path / "film.wav"
    w = surround.LayoutWriter(src, 48000, "wav", "5.1")
    w.write(x)
    w.close()
    with open(src, "rb") as f:
        r = client.post("/separate", files={"file": ("film.wav", f)},
                        data={"recipe": "cinematic", "stems": "dialog,background", "format": "flac"})
    assert r.status_code == 200, r.text
    got = {}
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        for name in z.namelist():
            path = tmp_path / name
            path.write_bytes(z.read(name))
            with av.open(str(path)) as c:
                s = c.streams.audio[0]
                assert s.codec_context.layout.name == "5.1"
            got[name] = sf.read(path, dtype="float32")[0]
    assert got["film_dialog.flac"].shape == (n, 6)
    assert np.abs(got["film_dialog.flac"] + got["film_background.flac"] - x).max() < 1e-4
