"""Synthetic film sound effects for the cinematic demo model: numpy synthesis (impacts, whooshes, engines, rain,
wind, footsteps, doors, crowds) plus sound files that Debian packages ship (the freedesktop sound theme, the
General MIDI sound-effect programs of FluidR3_GM rendered by fluidsynth).

    python scripts/demo_pack/effects.py --work /tmp/spark_cine --train 160 --heldout 16

writes <work>/<split>/effects/NNNN.flac (44.1 kHz stereo, 12 s). The held-out split draws other theme files
and other GM programs than the training split.
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 44100
THEME = Path("/usr/share/sounds/freedesktop/stereo")
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
# General MIDI (0-based): 120 guitar fret noise, 122 seashore, 123 bird tweet, 124 telephone ring,
# 125 helicopter, 126 applause, 127 gunshot; 115-118 percussive (woodblock, taiko, melodic tom, synth drum)
GM_TRAIN = [120, 122, 124, 125, 126, 127, 116]
GM_HELDOUT = [123, 115, 117, 118]


def _band(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Zero-phase brick band-pass along axis 0 (FFT); good enough for noise shaping."""
    n = x.shape[0]
    spec = np.fft.rfft(x, axis=0)
    f = np.fft.rfftfreq(n, 1 / SR)
    shape = ((f >= lo) & (f <= hi)).astype(np.float32)
    return np.fft.irfft(spec * (shape if x.ndim == 1 else shape[:, None]), n=n, axis=0).astype(np.float32)


def _norm(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-9)


def _pan(x: np.ndarray, p: float) -> np.ndarray:
    return np.stack([x * np.sqrt(0.5 - p / 2), x * np.sqrt(0.5 + p / 2)], 1)


def impact(r: np.random.Generator) -> np.ndarray:
    n = int(r.uniform(0.4, 1.5) * SR)
    t = np.arange(n) / SR
    f0 = r.uniform(35, 110)
    thump = np.sin(2 * np.pi * f0 * t * (1 + 0.5 * np.exp(-t * 20))) * np.exp(-t * r.uniform(4, 12))
    crack = _band(r.standard_normal(n), r.uniform(200, 1500), r.uniform(4000, 14000)) * np.exp(-t * r.uniform(15, 60))
    y = thump * r.uniform(0.5, 1.5) + _norm(crack) * np.exp(-t * 8) * r.uniform(0.2, 1.0)
    if r.random() < 0.5:   # debris: scattered small clicks
        for _ in range(r.integers(5, 30)):
            k = int(r.uniform(0.05, 0.9) * n)
            m = min(n - k, 600)
            y[k:k + m] += r.standard_normal(m) * np.exp(-np.arange(m) / 80) * r.uniform(0.05, 0.3)
    return y.astype(np.float32)


def whoosh(r: np.random.Generator) -> np.ndarray:
    n = int(r.uniform(0.4, 1.6) * SR)
    frames = 64
    hop = n // frames + 1
    noise = r.standard_normal(hop * frames)
    out = np.zeros(hop * frames)
    c0, c1 = r.uniform(200, 1500), r.uniform(1500, 8000)
    if r.random() < 0.5:
        c0, c1 = c1, c0
    for k in range(frames):   # a band-pass whose centre sweeps, frame by frame
        c = c0 + (c1 - c0) * k / frames
        seg = noise[k * hop:(k + 1) * hop]
        out[k * hop:(k + 1) * hop] = _band(seg, c * 0.6, c * 1.6)
    env = np.sin(np.pi * np.linspace(0, 1, len(out))) ** r.uniform(1.5, 4)
    return (_norm(out) * env)[:n].astype(np.float32)


def engine(r: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SR
    f = r.uniform(25, 90) * (1 + 0.25 * np.sin(2 * np.pi * r.uniform(0.05, 0.4) * t + r.uniform(0, 6)))
    ph = 2 * np.pi * np.cumsum(f) / SR
    y = sum(np.sin(k * ph) / k ** r.uniform(0.6, 1.2) for k in range(1, 25))
    y = y * (1 + 0.3 * np.sin(ph / 2))                     # firing irregularity
    y = y + _norm(_band(r.standard_normal(n), 50, 1200)) * r.uniform(0.2, 0.8)
    return _norm(y).astype(np.float32)


def rain(r: np.random.Generator, n: int) -> np.ndarray:
    y = _norm(_band(r.standard_normal((n, 2)), r.uniform(400, 1500), 16000)) * 0.5
    for _ in range(int(r.uniform(20, 80) * n / SR)):       # droplets: short decaying tones
        k, m = int(r.integers(0, n - 2000)), int(r.integers(300, 1500))
        tt = np.arange(m) / SR
        drop = np.sin(2 * np.pi * r.uniform(1500, 7000) * tt) * np.exp(-tt * r.uniform(200, 800))
        y[k:k + m] += _pan(drop, r.uniform(-0.9, 0.9)) * r.uniform(0.5, 3)
    return y.astype(np.float32)


def wind(r: np.random.Generator, n: int) -> np.ndarray:
    y = _band(r.standard_normal((n, 2)), 40, r.uniform(400, 2500))
    env = np.interp(np.arange(n), np.linspace(0, n, 12), r.uniform(0.2, 1.0, 12))
    return (_norm(y) * env[:, None]).astype(np.float32)


def footsteps(r: np.random.Generator, n: int) -> np.ndarray:
    y = np.zeros(n, np.float32)
    period, lo, hi = r.uniform(0.35, 0.8), r.uniform(60, 300), r.uniform(1500, 8000)
    t = r.uniform(0, period)
    while t < n / SR - 0.2:
        k, m = int(t * SR), int(0.12 * SR)
        tt = np.arange(m) / SR
        step = _norm(_band(r.standard_normal(m), lo, hi)) * np.exp(-tt * r.uniform(30, 70))
        step += np.sin(2 * np.pi * r.uniform(50, 120) * tt) * np.exp(-tt * 40)
        y[k:k + m] += step * r.uniform(0.6, 1.2)
        t += period * r.uniform(0.9, 1.1)
    return y


def door(r: np.random.Generator) -> np.ndarray:
    creak_s = r.uniform(0.3, 1.2)
    m = int(creak_s * SR)
    rate = np.linspace(r.uniform(15, 60), r.uniform(30, 120), m)       # stick-slip pulses, gliding rate
    pulses = np.zeros(m)
    pulses[np.flatnonzero(np.diff(np.floor(np.cumsum(rate) / SR)) > 0)] = 1
    creak = np.zeros(m)
    for fr in r.uniform(400, 3000, 3):                                  # through the door's resonances
        tt = np.arange(400) / SR
        creak += np.convolve(pulses, np.sin(2 * np.pi * fr * tt) * np.exp(-tt * 300))[:m]
    slam = impact(r) if r.random() < 0.7 else np.zeros(1, np.float32)
    return np.concatenate([_norm(creak) * 0.5, slam]).astype(np.float32)


def crowd(r: np.random.Generator, n: int) -> np.ndarray:
    """A murmur: many band-limited noise voices with slow random swells (no speech in it)."""
    y = np.zeros((n, 2), np.float32)
    for _ in range(r.integers(6, 16)):
        v = _band(r.standard_normal(n), r.uniform(200, 500), r.uniform(1500, 4000))
        env = np.interp(np.arange(n), np.linspace(0, n, 40), r.uniform(0, 1, 40) ** 2)
        y += _pan(_norm(v) * env, r.uniform(-0.8, 0.8))
    return _norm(y).astype(np.float32)


def theme_files(held: bool) -> list[np.ndarray]:
    """freedesktop theme sounds (the spoken channel names and the test signal left out)."""
    files = sorted(p for p in THEME.glob("*.oga") if not p.name.startswith("audio-"))
    out = []
    for i, p in enumerate(files):
        if (i % 5 == 0) == held:
            x, sr = sf.read(p, dtype="float32", always_2d=True)
            out.append(soxr.resample(x.mean(1), sr, SR).astype(np.float32))
    return out


def gm_effect(r: np.random.Generator, programs: list[int]) -> np.ndarray:
    """One General MIDI sound-effect program played for a few notes, rendered by fluidsynth."""
    import make_data as md
    prog, tpb = int(r.choice(programs)), 480
    ev = [(0, b"\xff\x51\x03" + (500_000).to_bytes(3, "big")), (0, bytes([0xC0, prog]))]
    t = 0
    for _ in range(r.integers(1, 4)):
        d = int(r.integers(200, 1500))
        p = int(r.integers(40, 80))
        ev += [(t, bytes([0x90, p, int(r.integers(70, 127))])), (t + d, bytes([0x80, p, 0]))]
        t += d + int(r.integers(0, 500))
    with tempfile.TemporaryDirectory() as d:
        mid, wav = Path(d) / "e.mid", Path(d) / "e.wav"
        md.write_midi(mid, ev, tpb)
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", str(SR), "-F", str(wav), SOUNDFONT, str(mid)],
                       check=True, capture_output=True)
        x, _ = sf.read(wav, dtype="float32", always_2d=True)
    return x.mean(1)[: int(4 * SR)]


def effects_clip(r: np.random.Generator, seconds: float, held: bool, theme: list[np.ndarray]) -> np.ndarray:
    """An effects track: 0-2 ambience beds and a sequence of events, each placed, panned and levelled."""
    n = int(seconds * SR)
    y = np.zeros((n, 2), np.float32)
    beds = [lambda: rain(r, n), lambda: wind(r, n), lambda: _pan(engine(r, n), r.uniform(-0.6, 0.6)),
            lambda: crowd(r, n), lambda: _pan(footsteps(r, n), r.uniform(-0.7, 0.7))]
    for k in r.choice(len(beds), int(r.choice([0, 1, 1, 2])), replace=False):
        y += beds[k]() * 10 ** (r.uniform(-12, 0) / 20)
    events = [lambda: impact(r), lambda: whoosh(r), lambda: door(r),
              lambda: theme[int(r.integers(len(theme)))],
              lambda: gm_effect(r, GM_HELDOUT if held else GM_TRAIN)]
    t = r.uniform(0, 1.5)
    while t < seconds - 0.3:
        x = events[int(r.integers(len(events)))]()
        x = _norm(x[: n - int(t * SR)]) * 10 ** (r.uniform(-8, 4) / 20)
        k = int(t * SR)
        y[k:k + len(x)] += _pan(x, r.uniform(-0.9, 0.9))
        t += len(x) / SR * r.uniform(0.3, 1.2) + r.uniform(0.1, 2.5)
    return (y / (np.abs(y).max() + 1e-6) * 0.5).astype(np.float32)


def make_effects(work: Path, split: str, count: int, seconds: float, seed: int, jobs: int) -> None:
    held = split != "train"
    theme = theme_files(held)
    d = work / split / "effects"
    d.mkdir(parents=True, exist_ok=True)

    def one(i):
        p = d / f"{i:04d}.flac"
        if not p.exists():
            r = np.random.default_rng([seed, 3 if held else 4, i])
            sf.write(p, effects_clip(r, seconds, held, theme), SR, subtype="PCM_16")
    with ThreadPoolExecutor(jobs) as ex:
        list(ex.map(one, range(count)))
    print(f"{split}/effects: {count} clips", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/spark_cine"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=160)
    ap.add_argument("--heldout", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    make_effects(a.work, "heldout", a.heldout, a.seconds, a.seed, a.jobs)
    make_effects(a.work, "train", a.train, a.seconds, a.seed, a.jobs)


if __name__ == "__main__":
    main()
