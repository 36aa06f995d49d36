"""Dialog scenes for the cinematic model: two to four speakers of real sentences (sentences.py) or pseudo-words,
espeak-ng voices with their own pitch, speed, word gap and vocal-tract length (formants), each panned to their own
place and standing at their own distance (level, air absorption, more room the further away), turns that now and
then overlap, sometimes a speaker who walks closer or away, in a room or dry.

The dialog stem is stereo [T, 2] and includes its room: a film's dialog stem is the dialog as recorded.
"""
from __future__ import annotations

import subprocess
import tempfile

import numpy as np
import soundfile as sf
import soxr

import make_data
import sentences

SR = 44100


def sox(x: np.ndarray, *effects: str) -> np.ndarray:
    """Run float32 audio [T] or [T, C] through sox effects, in memory."""
    ch = 1 if x.ndim == 1 else x.shape[1]
    raw = ["-t", "raw", "-r", str(SR), "-e", "floating-point", "-b", "32", "-c", str(ch)]
    out = subprocess.run(["sox", "-V1", *raw, "-", *raw, "-", *effects], input=np.ascontiguousarray(x, "<f4").tobytes(),
                         capture_output=True, check=True).stdout
    y = np.frombuffer(out, "<f4")
    return y.reshape(-1, ch) if x.ndim == 2 else y.copy()


def espeak(text: str, voice: str, pitch: int, speed: int, gap: int) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-g", str(gap), "-w", f.name,
                        text], check=True, capture_output=True)
        x, sr = sf.read(f.name, dtype="float32")
    return soxr.resample(x, sr, SR).astype(np.float32)


def _lowpass(x: np.ndarray, cutoff: float) -> np.ndarray:
    """A gentle (one-pole-like magnitude) low-pass along axis 0, zero-phase via FFT: air absorption."""
    spec = np.fft.rfft(x, axis=0)
    f = np.fft.rfftfreq(x.shape[0], 1 / SR)
    h = 1 / np.sqrt(1 + (f / cutoff) ** 2)
    return np.fft.irfft(spec * (h[:, None] if x.ndim == 2 else h), n=x.shape[0], axis=0).astype(np.float32)


def image_room(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """A stereo impulse response [N, 2]: a few early reflections, then a diffuse tail whose highs die faster."""
    n = int(rt60 * SR)
    ir = np.zeros((n, 2), np.float32)
    for _ in range(int(rng.integers(6, 14))):        # early reflections, 2-45 ms, each side its own
        k = int(rng.uniform(0.002, 0.045) * SR)
        ir[k, int(rng.integers(2))] += rng.uniform(0.2, 0.8) * rng.choice([-1, 1])
    t = np.arange(n) / SR
    tail = np.zeros((n, 2))
    for lo, hi, fac in ((0, 800, 1.0), (800, 4000, 0.7), (4000, 20000, 0.4)):   # per band RT60 x fac
        band = np.fft.irfft(np.fft.rfft(rng.standard_normal((n, 2)), axis=0) *
                            ((np.fft.rfftfreq(n, 1 / SR) >= lo) & (np.fft.rfftfreq(n, 1 / SR) < hi))[:, None],
                            n=n, axis=0)
        tail += band * np.exp(-6.9 * t / (rt60 * fac))[:, None]
    onset = int(rng.uniform(0.01, 0.03) * SR)
    tail[:onset] = 0
    ir += (tail / (np.sqrt(np.sum(tail ** 2) / 2) + 1e-9) * 0.6).astype(np.float32)
    return ir


def _convolve(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    n = len(x) + len(ir)
    return np.fft.irfft(np.fft.rfft(x, n, axis=0) * np.fft.rfft(ir, n, axis=0), n, axis=0)[: len(x)]


def room_wet(rng: np.random.Generator, kind: str, params: dict, x: np.ndarray) -> np.ndarray:
    """The room's reverberant part (wet only) of a stereo track, same level scale as x."""
    if kind == "sox_reverb":
        p = params
        return sox(x, "reverb", "-w", str(p["reverberance"]), str(p["damping"]), str(p["scale"]), "100",
                   str(p["predelay"]), "0")[: len(x)]
    if kind == "image_room":
        return _convolve(x, params["ir"]).astype(np.float32)
    raise ValueError(kind)


def new_room(rng: np.random.Generator, rooms: list[str]) -> tuple[str, dict]:
    kind = str(rng.choice(rooms, p=None if len(rooms) == 1 else [0.35] + [0.65 / (len(rooms) - 1)] * (len(rooms) - 1)))
    if kind == "sox_reverb":
        return kind, dict(reverberance=int(rng.integers(20, 95)), damping=int(rng.integers(10, 90)),
                          scale=int(rng.integers(20, 100)), predelay=int(rng.integers(0, 40)))
    if kind == "image_room":
        return kind, dict(ir=image_room(rng, rng.uniform(0.25, 1.4)))
    return kind, {}


def speaker(rng: np.random.Generator, cfg: dict, lang: str) -> dict:
    pseudo = cfg["pseudo"] and rng.random() < 0.25
    return dict(lang=str(rng.choice(make_data.TRAIN_LANGS)) if pseudo else lang, pseudo=pseudo,
                variant=str(rng.choice(cfg["variants"])), pitch=int(rng.integers(5, 95)),
                speed=int(rng.integers(110, 230)), gap=int(rng.choice([0, 0, 1, 2, 4, 8])),
                formant=float(np.exp(rng.uniform(np.log(0.86), np.log(1.16)))) if rng.random() < 0.6 else 1.0,
                pan=float(rng.uniform(-0.9, 0.9)), distance=float(np.exp(rng.uniform(0, np.log(6)))))


def say(rng: np.random.Generator, spk: dict) -> np.ndarray:
    text = make_data.pseudo_text(rng, int(rng.integers(3, 14))) if spk["pseudo"] else \
        sentences.utterance(rng, spk["lang"])
    x = espeak(text, f"{spk['lang']}+{spk['variant']}", spk["pitch"], spk["speed"], spk["gap"])
    if spk["formant"] != 1.0:   # vocal-tract length: resample (pitch and formants move), tempo back (WSOLA)
        x = sox(x, "speed", f"{spk['formant']:.4f}", "rate", "-q", str(SR), "tempo", "-s", f"{1 / spk['formant']:.4f}")
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-6)


def scene(rng: np.random.Generator, cfg: dict, seconds: float) -> np.ndarray:
    """A stereo dialog stem [T, 2], about `seconds` long, peak 0.5."""
    n = int(seconds * SR)
    lang = str(rng.choice(cfg["langs"]))
    spread = rng.uniform(0.3, 1.0)                     # how far apart the speakers stand
    spks = [speaker(rng, cfg, lang) for _ in range(int(rng.choice([2, 2, 3, 3, 4])))]
    for s in spks:
        s["pan"] *= spread
    room, params = new_room(rng, cfg["rooms"])
    tracks = np.zeros((len(spks), n + SR, 2), np.float32)
    t, turn = int(rng.uniform(0.0, 0.8) * SR), 0
    while t < n:
        k = turn % len(spks) if rng.random() < 0.8 else int(rng.integers(len(spks)))
        s = spks[k]
        x = say(rng, s) * 10 ** (rng.uniform(-4, 4) / 20)
        if rng.random() < 0.15:                        # shouted or murmured
            x = x * 10 ** (rng.choice([-8, 7]) / 20)
        x = x[: n + SR - t]
        g = np.full(len(x), 1 / s["distance"], np.float32)
        if rng.random() < 0.15:                        # walks closer or away while talking
            g *= np.exp(np.linspace(0, np.log(rng.uniform(0.35, 2.8)), len(x))).astype(np.float32)
        p = np.clip(s["pan"] + (rng.uniform(-0.3, 0.3) if rng.random() < 0.2 else 0), -1, 1)
        tracks[k, t:t + len(x)] += np.stack([x * g * np.sqrt(0.5 - p / 2), x * g * np.sqrt(0.5 + p / 2)], 1)
        gap = rng.uniform(-0.4, 0.9) if rng.random() < 0.25 else rng.uniform(0.1, 0.9)   # < 0: overlap
        t += max(int(len(x) + gap * SR), int(0.3 * SR))
        turn += 1
    out = np.zeros((n + SR, 2), np.float32)
    for s, tr in zip(spks, tracks):
        if not tr.any():
            continue
        tr = _lowpass(tr, 16000 / s["distance"] ** 0.7) if s["distance"] > 1.5 else tr
        if room != "dry":                              # the further away, the more of the room one hears
            wet = room_wet(rng, room, params, tr)
            tr = tr + wet * np.sqrt(np.sum(tr ** 2) / (np.sum(wet ** 2) + 1e-12)) * 0.25 * s["distance"] ** 0.8
        out += tr
    out = out[:n]
    return (out / (np.abs(out).max() + 1e-6) * 0.5).astype(np.float32)
