"""The cinematic demo model's data generators (scripts/demo_pack): the train / excluded split holds whole families
out, every generator makes real stereo audio from the tools on the machine (espeak-ng, sox, fluidsynth), the sets
resume without changing what they made, and training stops cleanly at a checkpoint and resumes from it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from testkit import load_module

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "demo_pack"
# The demo-pack scripts import each other by plain name: load them by path, dependencies first (no sys.path insert).
make_data, _, sentences, families, scenes, film_fx, synth_music = (
    load_module(SCRIPTS / f"{name}.py") for name in
    ("make_data", "effects", "sentences", "families", "scenes", "film_fx", "synth_music"))

SR = 44100
pytestmark = pytest.mark.skipif(not all(Path(p).exists() for p in ("/usr/bin/espeak-ng", "/usr/bin/sox")),
                                reason="needs espeak-ng and sox")


def test_no_family_is_both_trained_and_excluded():
    families.check_disjoint()
    train, ex = families.for_set("train"), families.for_set("excluded")
    for key in ("langs", "variants", "music", "metres", "fx"):
        assert not set(map(str, train[key])) & set(map(str, ex[key])), key
    assert families.for_set("seen") == train
    with pytest.raises(ValueError, match="unknown set"):
        families.for_set("test")
    for cat in families.TRAIN_FX:       # every category has kinds on both sides
        assert families.TRAIN_FX[cat] and families.EXCLUDED_FX[cat], cat


def test_every_voice_name_is_a_real_espeak_variant(tmp_path):
    """espeak-ng falls back to its default voice, silently, for a name it does not know."""
    def render(v):
        out = tmp_path / "v.wav"
        subprocess.run(["espeak-ng", "-v", f"en+{v}", "-w", str(out), "hello there"], check=True)
        return out.read_bytes()
    default = render("no_such_voice")
    for v in families.TRAIN_VARIANTS + families.EXCLUDED_VARIANTS:
        assert render(v) != default, v


def test_every_language_has_hundreds_of_sentences():
    rng = np.random.default_rng(0)
    for lang in families.TRAIN_LANGS + families.EXCLUDED_LANGS:
        assert sentences.count(lang) >= 300, lang
        said = {sentences.sentence(rng, lang) for _ in range(200)}
        assert len(said) > 100, lang


def test_a_scene_places_its_speakers_apart_in_stereo():
    cfg = dict(families.for_set("excluded"))
    y = scenes.scene(np.random.default_rng(3), cfg, 6.0)
    assert y.shape == (6 * SR, 2) and np.isfinite(y).all()
    assert abs(np.abs(y).max() - 0.5) < 1e-3
    corr = np.corrcoef(y[:, 0], y[:, 1])[0, 1]
    assert corr < 0.999, "both channels identical: nobody was panned"


def test_image_room_decays():
    ir = scenes.image_room(np.random.default_rng(0), 0.8)
    e = np.sum(ir ** 2, 1)
    n = len(e) // 4
    assert e[:n].sum() > 10 * e[-n:].sum()


@pytest.mark.parametrize("family", ["fm", "subtractive", "additive", "pluck", "modal"])
def test_each_music_family_makes_a_bed(family):
    y = synth_music.bed(np.random.default_rng(1), family, families.TRAIN_METRES + families.EXCLUDED_METRES, 4.0)
    assert y.shape == (4 * SR, 2) and np.isfinite(y).all()
    assert np.sqrt(np.mean(y ** 2)) > 0.01


@pytest.mark.parametrize("kind", sorted(film_fx.EVENTS))
def test_each_effect_event_is_finite_sound(kind):
    x = film_fx.event(np.random.default_rng(2), kind, "train")
    assert len(x) > 0.05 * SR and np.isfinite(x).all() and np.abs(x).max() > 0


def test_doppler_lowers_the_pitch_as_the_source_passes():
    n = 4 * SR
    y = film_fx.doppler(np.random.default_rng(5), np.sin(2 * np.pi * 1000 * np.arange(n) / SR)).sum(1)

    def freq(seg):
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
        return np.argmax(spec) * SR / len(seg)
    assert freq(y[int(0.2 * SR):int(0.7 * SR)]) > 1000 > freq(y[n - int(0.7 * SR):n - int(0.2 * SR)])


def test_the_excluded_effects_use_only_excluded_kinds(monkeypatch):
    used = []
    real = film_fx.event
    monkeypatch.setattr(film_fx, "event", lambda r, k, s: used.append(k) or real(r, k, s))
    for i in range(3):
        film_fx.clip(np.random.default_rng(i), families.for_set("excluded"), 8.0)
    excluded = {k for v in families.EXCLUDED_FX.values() for k in v}
    assert used and set(used) <= excluded


def test_sets_resume_and_keep_what_they_made(tmp_path):
    cmd = [sys.executable, str(SCRIPTS / "make_cine_data.py"), "--work", str(tmp_path), "--sets", "excluded",
           "--heldout", "1", "--seconds", "3"]
    subprocess.run(cmd, check=True, capture_output=True)
    files = sorted((tmp_path / "excluded").rglob("*.flac"))
    assert [p.parent.name for p in files] == ["effects", "music", "speech"]
    before = {p: p.read_bytes() for p in files}
    (files[0]).unlink()                                  # a stopped run: one clip missing
    subprocess.run(cmd, check=True, capture_output=True)
    assert {p: p.read_bytes() for p in files} == before  # remade the same, the others untouched
    x, sr = sf.read(files[2])
    assert sr == SR and x.shape == (3 * SR, 2)
    # the evaluations mix the stereo scenes as they are, at the asked ratio
    load_module(SCRIPTS / "train.py")
    load_module(SCRIPTS / "train_cinematic.py")
    evaluate_cinematic = load_module(SCRIPTS / "evaluate_cinematic.py")
    (d, m, e), = evaluate_cinematic.heldout3(tmp_path, 5.0, 1, split="excluded")
    assert abs(10 * np.log10(np.sum(d ** 2) / np.sum((m + e) ** 2)) - 5.0) < 1e-3
    assert np.corrcoef(d[:, 0], x[:, 0])[0, 1] > 0.99
    (v, b), = make_data.heldout_mixtures(tmp_path, -3.0, 1, split="excluded")
    assert abs(10 * np.log10(np.sum(v ** 2) / np.sum(b ** 2)) + 3.0) < 1e-3


def test_training_stops_at_a_checkpoint_on_sigterm_and_resumes(tmp_path):
    data = tmp_path / "data"
    subprocess.run([sys.executable, str(SCRIPTS / "make_cine_data.py"), "--work", str(data), "--sets", "train",
                    "--train", "2", "--seconds", "3"], check=True, capture_output=True)
    cmd = [sys.executable, str(SCRIPTS / "train_cinematic.py"), "--work", str(data), "--ckpt", str(tmp_path / "ck"),
           "--out", str(tmp_path / "out"), "--steps", "400", "--batch", "1", "--seconds", "0.5", "--channels", "8"]
    (tmp_path / "out").mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log = ""
    while "step 25/" not in log:                       # logged every 25 steps
        line = p.stdout.readline()
        assert line, log
        log += line
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 1 and "stopped at step" in out and "the same command resumes" in out
    import torch
    step = torch.load(tmp_path / "ck" / "cinematic.pt", weights_only=False)["step"]
    assert step >= 25
    p = subprocess.run(cmd + ["--stop", str(step + 2)], capture_output=True, text=True, env=env, timeout=300)
    assert f"resumed at step {step}" in p.stdout, p.stdout + p.stderr
    assert (tmp_path / "out" / "97d170e1-dbb4db15.th").exists()
