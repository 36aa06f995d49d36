"""The proof of the recipe registry (issue 20): a recipe that exists only in this test - a module written to a
temporary dir, registered through SPARK_RECIPES - shows up in the catalogue and runs in the engine, the CLI
(its flags in --help, a run), the HTTP service (GET /recipes, POST /separate with its stems and option) and the
RunPod worker, with no edit anywhere else."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mvsep import recipes
from testkit import toypack
from mvsep.catalog import catalogue, translate
from mvsep.engine import Options, Separator
from mvsep.errors import OptionError
from testkit.service import Server

REPO = Path(__file__).resolve().parents[1]
SR = 44100

PLUGIN = '''
"""A test-only recipe: `scaled` = the input times the pack's gain (gain.npy) and the gain_db option;
`rest` = the input minus `scaled` (a residual, made by the engine)."""
import numpy as np

from mvsep import recipes
from mvsep.recipes import Option, Recipe, Stem
from mvsep.signals import blocks


class Gain(Recipe):
    name = "gain"
    summary = "test recipe: a scaled copy of the input, and the rest"
    stems = (Stem("scaled", "the input times the gain"), Stem("rest", "the input minus scaled"))
    residuals = {"rest": "scaled"}
    default_stems = ("scaled", "rest")
    options = (Option("gain_db", "float", -6.0, "gain on top of the pack's, in dB", min=-60.0, max=0.0),)
    FILE = "gain.npy"

    def files(self, opts, stems):
        return [self.FILE]

    def gain(self, ctx, opts):
        pack_gain = ctx.pack.cached(self.FILE, lambda: float(np.load(ctx.pack.file(self.FILE))), 8)
        return pack_gain * 10 ** (opts.gain_db / 20)

    def warm(self, ctx, opts, stems):
        self.gain(ctx, opts)

    def work_units(self, ctx, length, opts, stems):
        return length / 261120

    def work_channels(self, opts, stems):
        return 4

    def separate(self, ctx, mix, new_signal, opts, stems, job):
        g = self.gain(ctx, opts)
        out = new_signal(mix.frames, 2, "scaled")
        job.start("gain")
        for a, b in blocks(mix.frames):     # one "window" at a time, as a model would run
            out.write(a, (mix.read(a, b) * g).astype(np.float32))
            job.step((b - a) / 261120)
        return {"mix": mix, "scaled": out}

    def stem_blocks(self, signals, stems, blocks):
        for a, b in blocks:
            yield {"scaled": signals["scaled"].read(a, b)}


recipes.register(Gain())
'''
PACK_GAIN = 0.5


def gain_of(db: float) -> float:
    return PACK_GAIN * 10 ** (db / 20)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("plugin")
    (d / "spark_test_gain.py").write_text(PLUGIN)
    return d


@pytest.fixture(scope="module")
def gain_pack(tmp_path_factory):
    d = tmp_path_factory.mktemp("gain_pack")
    np.save(d / "gain.npy", np.float64(PACK_GAIN))
    toypack.write_manifest(d)
    return d


@pytest.fixture(scope="module")
def registered(plugin_dir):
    with pytest.MonkeyPatch.context() as mp:   # the plug-in as if installed: importable by name
        mp.syspath_prepend(str(plugin_dir))
        try:
            recipes.load_plugins(recipes.plugin_modules("spark_test_gain"))
            yield recipes.get("gain")
        finally:
            recipes.unregister("gain")
            sys.modules.pop("spark_test_gain", None)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    x = (np.random.default_rng(7).standard_normal((int(1.3 * SR), 2)) * 0.1).astype(np.float32)
    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    return path, x


def env_with_plugin(plugin_dir: Path) -> dict:
    return {"SPARK_RECIPES": "spark_test_gain",
            "PYTHONPATH": os.pathsep.join([str(plugin_dir), *filter(None, [os.environ.get("PYTHONPATH")])])}


def test_catalogue_translator_and_engine(registered, gain_pack, clip):
    cat = catalogue(Separator(gain_pack, device="cpu").pack)
    gain = next(r for r in cat["recipes"] if r["name"] == "gain")
    assert gain["available"] and [s["name"] for s in gain["stems"]] == ["scaled", "rest"]
    assert gain["options"] == [{"name": "gain_db", "type": "float", "default": -6.0, "min": -60.0, "max": 0.0,
                                "choices": None, "help": "gain on top of the pack's, in dB"}]
    mdx = next(r for r in cat["recipes"] if r["name"] == "mdx23")
    assert not mdx["available"] and "Kim_Vocal_2.onnx" in mdx["missing"]
    assert mdx["stems"][0]["reason"].startswith("the installed pack lacks")
    opts, stems = translate({"recipe": "gain", "stems": "scaled", "gain_db": "-12"})
    assert (opts.recipe, opts.gain_db, stems) == ("gain", -12.0, ["scaled"])
    with pytest.raises(OptionError) as e:
        translate({"recipe": "gain", "gain_db": 3})
    assert e.value.field == "gain_db"
    sep = Separator(gain_pack, device="cpu")
    assert sep.recipes() == ["gain"]
    _, x = clip
    out = sep.separate_array(x, SR, Options(recipe="gain", gain_db=-12.0))
    assert np.abs(out["scaled"] - x * gain_of(-12)).max() < 1e-6
    assert np.abs(out["scaled"] + out["rest"] - x).max() < 1e-6
    # through files at 48 kHz: the engine resamples, and takes the residual from the input itself
    src = clip[0].parent / "clip48.wav"
    x48 = (np.random.default_rng(8).standard_normal((int(0.9 * 48000), 2)) * 0.1).astype(np.float32)
    sf.write(src, x48, 48000, subtype="FLOAT")
    res = sep.separate_file(src, clip[0].parent / "out48", Options(recipe="gain"))
    got = {s: sf.read(p, dtype="float32") for s, p in res.stems.items()}
    assert sorted(got) == ["rest", "scaled"] and got["scaled"][1] == 48000
    assert np.abs(got["scaled"][0] + got["rest"][0] - x48).max() < 1e-6


def test_cli_lists_and_runs_the_plugin(plugin_dir, gain_pack, clip, tmp_path):
    env = {**os.environ, **env_with_plugin(plugin_dir)}
    cli = [sys.executable, str(REPO / "mvsep" / "inference_demucs.py")]
    text = subprocess.run([*cli, "--help"], env=env, capture_output=True, text=True, timeout=120).stdout
    assert "--gain_db" in text and "gain: scaled, rest" in text
    r = subprocess.run([*cli, "-i", str(clip[0]), "-r", str(tmp_path), "--recipe", "gain", "--gain_db", "-20",
                        "--model_dir", str(gain_pack), "--cpu"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    scaled, _ = sf.read(tmp_path / "clip_scaled.wav", dtype="float32")
    assert np.abs(scaled - clip[1] * gain_of(-20)).max() < 1e-6
    assert (tmp_path / "clip_rest.wav").is_file()
    r = subprocess.run([*cli, "-i", str(clip[0]), "-r", str(tmp_path), "--recipe", "gain", "--gain_db", "9",
                        "--model_dir", str(gain_pack), "--cpu"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1 and "gain_db" in r.stderr


def test_http_api_serves_the_plugin(plugin_dir, gain_pack, clip, tmp_path):
    srv = Server(tmp_path / "data", gain_pack, **env_with_plugin(plugin_dir)).start()
    try:
        with srv.client() as c:
            assert c.get("/status").json()["pack"]["recipes"] == ["gain"]
            cat = c.get("/recipes").json()
            gain = next(r for r in cat["recipes"] if r["name"] == "gain")
            assert gain["available"] and gain["options"][0]["name"] == "gain_db"
            assert cat["limits"]["max_upload_bytes"] > 0
            body = c.get("/openapi.json").json()["paths"]["/separate"]["post"]["requestBody"]["content"]
            for schema in (body["multipart/form-data"]["schema"], body["application/json"]["schema"]):
                assert "gain_db" in schema["properties"] and "gain" in schema["properties"]["recipe"]["enum"]
            with open(clip[0], "rb") as f:
                r = c.post("/separate", files={"file": ("clip.wav", f)},
                           data={"recipe": "gain", "stems": "scaled", "gain_db": "-3"})
            assert r.status_code == 200, r.text
            scaled, _ = sf.read(io.BytesIO(r.content), dtype="float32")
            assert np.abs(scaled - clip[1] * gain_of(-3)).max() < 1e-6
            with open(clip[0], "rb") as f:
                r = c.post("/separate", files={"file": ("clip.wav", f)}, data={"recipe": "gain", "gain_db": "4"})
            assert r.status_code == 422 and r.json()["field"] == "gain_db"
            assert c.get("/recipes", headers={"Authorization": "Bearer wrong"}).status_code == 401
    finally:
        srv.stop()


def test_runpod_worker_runs_the_plugin(plugin_dir, gain_pack, clip, tmp_path):
    from test_bootchain import Server as FileServer
    from test_runpod_handler import run_handler
    files = tmp_path / "files"
    files.mkdir()
    (files / "clip.wav").write_bytes(clip[0].read_bytes())
    fs = FileServer(files, tmp_path / "srv")
    try:
        job = {"input": {"url": f"{fs.url}/clip.wav", "recipe": "gain", "stems": "scaled", "gain_db": -9.0,
                         "upload": {"scaled": f"{fs.url}/uploads/scaled.wav"}}}
        r = run_handler(tmp_path, gain_pack, "--test_input", json.dumps(job), **env_with_plugin(plugin_dir))
    finally:
        fs.stop()
    assert r.returncode == 0 and "completed successfully" in r.stdout, r.stdout
    scaled, _ = sf.read(files / "uploads" / "scaled.wav", dtype="float32")
    assert np.abs(scaled - clip[1] * gain_of(-9)).max() < 1e-6
