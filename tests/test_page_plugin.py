"""A recipe that exists only in a test (tests/test_recipe_plugin.py's `gain`, registered through SPARK_RECIPES) in
the operator page and the `spark` client, with no edit to either: its stems, its option, a run."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from browser_support import By, Select, chromium, drawn_pixels, login, needs_chromium, shot, wait
from testkit import toypack
from test_recipe_plugin import PACK_GAIN, PLUGIN, env_with_plugin, gain_of
from testkit.service import TOKEN, Server

pytestmark = needs_chromium
SR = 44100


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    plugin = tmp_path_factory.mktemp("plugin")
    (plugin / "spark_test_gain.py").write_text(PLUGIN)
    pack = tmp_path_factory.mktemp("gain_pack")
    np.save(pack / "gain.npy", np.float64(PACK_GAIN))
    toypack.write_manifest(pack)
    srv = Server(tmp_path_factory.mktemp("plugin_page") / "data", pack, **env_with_plugin(plugin)).start()
    srv.plugin_env = env_with_plugin(plugin)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    yield from chromium(tmp_path_factory.mktemp("downloads"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    x = (np.random.default_rng(3).standard_normal((int(1.5 * SR), 2)) * 0.1).astype(np.float32)
    path = tmp_path_factory.mktemp("clip") / "tone.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    return path, x


def test_a_plugin_recipe_in_the_page(server, browser, clip):
    d = browser
    login(d, server)
    recipe = Select(d.find_element(By.ID, "recipe"))
    offered = {o.get_attribute("value"): o.is_enabled() for o in recipe.options}
    assert offered["gain"] and not offered["mdx23"] and not offered["cinematic"], offered  # what the pack can run
    assert recipe.first_selected_option.get_attribute("value") == "gain"
    boxes = d.find_elements(By.CSS_SELECTOR, "#stems input")
    assert [(b.get_attribute("value"), b.is_selected()) for b in boxes] == [("scaled", True), ("rest", True)]
    d.find_element(By.CSS_SELECTOR, "#more-box summary").click()
    gain = d.find_element(By.ID, "opt-gain_db")
    assert gain.get_attribute("type") == "number" and gain.get_attribute("min") == "-60"
    gain.clear()
    gain.send_keys("-3")
    d.find_element(By.CSS_SELECTOR, '#stems input[value="rest"]').click()
    d.find_element(By.ID, "file").send_keys(str(clip[0]))
    d.find_element(By.ID, "send").click()
    wait(d, lambda d: d.find_element(By.CSS_SELECTOR, "#job-list li.selected .state").text == "succeeded", 120,
         "the gain job done")
    wait(d, lambda d: drawn_pixels(d, "scaled") > 300, what="scaled waveform")
    shot(d, "20-plugin-recipe")
    job_id = d.find_element(By.CSS_SELECTOR, "#job-list li.selected").get_attribute("id")[4:]
    with server.client() as c:
        job = c.get(f"/jobs/{job_id}").json()
        scaled, _ = sf.read(io.BytesIO(c.get(f"/jobs/{job_id}/stems/scaled").content), dtype="float32")
    assert job["options"]["recipe"] == "gain" and job["options"]["stems"] == ["scaled"]
    assert np.abs(scaled - clip[1] * gain_of(-3)).max() < 1e-6  # the option the page sent reached the recipe


def test_a_plugin_recipe_in_the_client(server, clip, tmp_path):
    env = {**os.environ, "SPARK_SERVER": server.base, "SPARK_API_TOKEN": TOKEN}
    run = [sys.executable, "-m", "spark_client"]
    help_text = subprocess.run([*run, "separate", "--help"], env=env, capture_output=True, text=True,
                               timeout=60).stdout
    assert "gain: scaled, rest" in help_text, help_text
    listed = subprocess.run([*run, "recipes"], env=env, capture_output=True, text=True, timeout=60).stdout
    assert "option gain_db=-6.0" in listed
    r = subprocess.run([*run, "separate", str(clip[0]), "--out", str(tmp_path), "--recipe", "gain", "--set",
                        "gain_db=-20", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    (res,) = json.loads(r.stdout)
    scaled, _ = sf.read(res["files"]["scaled"], dtype="float32")
    assert np.abs(scaled - clip[1] * gain_of(-20)).max() < 1e-6
    assert res["files"]["scaled"] == str(tmp_path / "tone" / "scaled.wav")
