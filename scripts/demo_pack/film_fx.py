"""Film effect kinds for the cinematic model, across nature, vehicles, machines, impacts, alarms, crowds,
household and interface sounds (families.TRAIN_FX / EXCLUDED_FX say which kind is which), with Doppler on moving
sources and a room on some events. effects.py's kinds (rain, wind, engine, crowd murmur, footsteps, impacts,
whooshes, doors, freedesktop theme sounds, General MIDI effects) are reused; the others are made here.

A kind is a bed (fills the clip: fn(rng, n) -> mono or stereo) or an event (fn(rng) -> mono or stereo).
"""
from __future__ import annotations

import numpy as np

import effects as fx
import scenes

SR = 44100
_band, _norm, _pan = fx._band, fx._norm, fx._pan


def _t(n):
    return np.arange(n) / SR


def _tone(f, n, rng):
    """A sinusoid following the frequency track f (scalar or [n])."""
    return np.sin(2 * np.pi * np.cumsum(np.broadcast_to(f, (n,))) / SR + rng.uniform(0, 6.28))


def _modes(rng, f0, ratios, decays, n):
    t = _t(n)
    return sum(np.sin(2 * np.pi * f0 * r * t + rng.uniform(0, 6.28)) * np.exp(-t / d) / (1 + i)
               for i, (r, d) in enumerate(zip(ratios, decays)) if f0 * r < SR * 0.45)


def doppler(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """A mono source driving past: delay r/c (pitch falls as it passes), level 1/r, pan from its bearing."""
    n = len(x)
    v, d0, c = rng.uniform(8, 45), rng.uniform(3, 25), 343.0
    tc = rng.uniform(0.35, 0.65) * n / SR                       # when it is closest
    te = _t(n)                                                  # emission times
    p = v * (te - tc) * (1 if rng.random() < 0.5 else -1)
    r = np.sqrt(d0 ** 2 + p ** 2)
    arrive = te + r / c
    out_t = _t(n) + d0 / c
    src = np.interp(out_t, arrive, te)                          # which emission each output sample hears
    y = np.interp(src * SR, np.arange(n), x, left=0, right=0)
    rr = np.interp(src, te, r)
    pan = np.clip(np.interp(src, te, p) / rr, -1, 1)
    y = y * d0 / rr
    return np.stack([y * np.sqrt(0.5 - pan / 2), y * np.sqrt(0.5 + pan / 2)], 1).astype(np.float32)


# ---------------------------------------------------------------- kinds in training

def birds(r, n):
    y = np.zeros(n)
    for _ in range(int(r.uniform(1, 5) * n / SR)):
        m = int(r.uniform(0.04, 0.25) * SR)
        f = np.linspace(r.uniform(2000, 5000), r.uniform(2500, 7000), m) * (1 + 0.1 * np.sin(np.arange(m) / 30))
        k = int(r.integers(0, n - m))
        y[k:k + m] += _tone(f, m, r) * np.hanning(m) * r.uniform(0.2, 1)
    return y


def stream(r, n):
    y = _band(r.standard_normal(n), 300, 6000) * 0.3
    for _ in range(int(r.uniform(40, 120) * n / SR)):          # bubbles: short rising tones
        m = int(r.uniform(0.01, 0.04) * SR)
        f = np.linspace(1, 1.6, m) * r.uniform(400, 2500)
        k = int(r.integers(0, n - m))
        y[k:k + m] += _tone(f, m, r) * np.exp(-np.arange(m) / m * 4) * r.uniform(0.1, 0.6)
    return y


def car_pass(r):
    n = int(r.uniform(3, 6) * SR)
    return doppler(r, fx.engine(r, n) + _norm(_band(r.standard_normal(n), 300, 3000)) * r.uniform(0.3, 1))


def horn(r):
    n = int(r.uniform(0.25, 1.2) * SR)
    f = r.uniform(300, 480)
    y = sum(np.sign(_tone(f * ratio, n, r)) * 0.5 for ratio in ([1, 1.26] if r.random() < 0.6 else [1]))
    return _band(y * fx._norm(np.minimum(1, np.minimum(_t(n) * 50, (n / SR - _t(n)) * 50))), 200, 6000)


def motor(r):
    n = int(r.uniform(1, 4) * SR)
    f = r.uniform(80, 400) * np.interp(_t(n), [0, 0.3, n / SR - 0.3, n / SR], [0.2, 1, 1, 0.3])
    y = sum(_tone(f * k, n, r) / k for k in range(1, 8)) + _norm(_band(r.standard_normal(n), 1000, 8000)) * 0.2
    return y


def clock(r, n):
    y, per = np.zeros(n), r.choice([0.5, 1.0, 0.25])
    for i, t in enumerate(np.arange(r.uniform(0, per), n / SR - 0.1, per)):
        m = 1500
        k = int(t * SR)
        y[k:k + m] += _modes(r, r.uniform(2000, 4000) * (1.1 if i % 2 else 1), [1, 2.3], [0.004, 0.002], m)
    return y


def metal_clang(r):
    n = int(2.5 * SR)
    return _modes(r, r.uniform(150, 900), [1, *np.sort(r.uniform(1.3, 7, 6))], r.uniform(0.2, 1.5, 7), n)


def beep_alarm(r):
    f, on, off = r.uniform(1500, 4200), r.uniform(0.05, 0.3), r.uniform(0.05, 0.3)
    n = int(r.uniform(1, 3.5) * SR)
    gate = ((_t(n) % (on + off)) < on).astype(float)
    return np.sign(_tone(f, n, r)) * 0.3 * np.convolve(gate, np.ones(64) / 64, "same")


def bell(r):
    return _modes(r, r.uniform(200, 900), [0.5, 1, 1.19, 1.5, 2, 2.5, 3], [2.5, 2, 1.5, 1.2, 1, 0.8, 0.6], 4 * SR)


def applause(r, n):
    y = np.zeros((n, 2))
    rate = r.uniform(30, 150)
    env = np.interp(np.arange(n), np.linspace(0, n, 8), r.uniform(0.1, 1, 8))
    for _ in range(int(rate * n / SR)):
        m = 800
        k = int(r.integers(0, n - m))
        c = _band(r.standard_normal(m), 600, 6000) * np.exp(-np.arange(m) / 120) * env[k]
        y[k:k + m] += _pan(c, r.uniform(-0.9, 0.9))
    return y


def dishes(r):
    n = int(r.uniform(0.5, 2) * SR)
    y = np.zeros(n)
    for _ in range(r.integers(2, 9)):
        k = int(r.integers(0, n - 20000))
        y[k:k + 20000] += _modes(r, r.uniform(1500, 5000), [1, 2.3, 3.9], [0.15, 0.08, 0.05], 20000) * r.uniform(0.2, 1)
    return y


def ui_beeps(r):
    y, wave = [], str(r.choice(["sine", "tri"]))
    for _ in range(r.integers(1, 5)):
        m = int(r.uniform(0.05, 0.25) * SR)
        s = _tone(r.uniform(500, 2500), m, r)
        s = s if wave == "sine" else 2 / np.pi * np.arcsin(s)
        y += [s * np.exp(-np.arange(m) / m * r.uniform(0.5, 5)), np.zeros(int(r.uniform(0.02, 0.15) * SR))]
    return np.concatenate(y)


# ---------------------------------------------------------------- kinds excluded from training

def thunder(r):
    n = int(r.uniform(3, 7) * SR)
    t = _t(n)
    rumble = _band(r.standard_normal(n), 20, r.uniform(150, 400)) * np.exp(-t / r.uniform(1, 2.5))
    crack = _band(r.standard_normal(n), 500, 8000) * np.exp(-t * 15)
    return _norm(rumble) + _norm(crack) * r.uniform(0.2, 1)


def crickets(r, n):
    y, f = np.zeros(n), r.uniform(3500, 5500)
    per, pulses = r.uniform(0.3, 1.2), int(r.integers(2, 6))
    for t in np.arange(r.uniform(0, per), n / SR - 0.2, per):
        for p in range(pulses):
            m, k = int(0.015 * SR), int((t + p * 0.025) * SR)
            y[k:k + m] += _tone(f, m, r) * np.hanning(m)
    return y


def fire(r, n):
    y = _band(r.standard_normal(n), 30, 400) * 0.5
    for _ in range(int(r.uniform(10, 40) * n / SR)):
        k, m = int(r.integers(0, n - 300)), int(r.integers(20, 300))
        y[k:k + m] += r.standard_normal(m) * np.exp(-np.arange(m) / (m / 4)) * r.uniform(0.5, 3)
    return y


def jet_pass(r):
    n = int(r.uniform(4, 8) * SR)
    roar = _norm(_band(r.standard_normal(n), 60, 9000))
    whine = _tone(r.uniform(2000, 5000), n, r) * 0.2
    return doppler(r, roar + whine)


def train(r):
    n = int(r.uniform(3, 7) * SR)
    y = _norm(_band(r.standard_normal(n), 30, 600)) * 0.5
    per = r.uniform(0.4, 1.0)
    for t in np.arange(0, n / SR - 0.3, per):
        for dt in (0, r.uniform(0.08, 0.15)):                  # the clack pair of a bogie over a rail joint
            k = int((t + dt) * SR)
            y[k:k + 2000] += _modes(r, r.uniform(200, 500), [1, 2.7], [0.02, 0.01], 2000) * 2
    return doppler(r, y) if r.random() < 0.5 else y


def typewriter(r):
    n = int(r.uniform(1.5, 4) * SR)
    y, t = np.zeros(n), 0.0
    while t < n / SR - 0.1:
        k, m = int(t * SR), 1200
        y[k:k + m] += _band(r.standard_normal(m), 800, 9000) * np.exp(-np.arange(m) / 100)
        t += r.uniform(0.06, 0.2)
    if r.random() < 0.5:
        y[-SR:] += _modes(r, 2100, [1, 2.8], [0.4, 0.2], SR) * 0.5
    return y


def drill(r):
    n = int(r.uniform(1, 3.5) * SR)
    load = np.interp(_t(n), np.linspace(0, n / SR, 6), r.uniform(0.6, 1, 6))
    f = r.uniform(150, 350) * load
    return sum(np.sign(_tone(f * k, n, r)) / k ** 1.5 for k in (1, 2, 3)) * 0.4 + \
        _norm(_band(r.standard_normal(n), 2000, 10000)) * 0.3 * (1 - load + 0.2)


def glass(r):
    n = int(1.5 * SR)
    y = _band(r.standard_normal(n), 3000, 16000) * np.exp(-_t(n) * 20)
    for _ in range(r.integers(10, 40)):
        k = int(r.uniform(0, 0.6) * SR)
        ping = _modes(r, r.uniform(2500, 9000), [1, 2.4, 4.1], [0.08, 0.05, 0.03], 15000)
        y[k:k + 15000] += ping * r.uniform(0.1, 0.6)
    return y


def siren_pass(r):
    n = int(r.uniform(4, 8) * SR)
    f = r.uniform(550, 750) * (1 + 0.45 * (0.5 + 0.5 * np.sin(2 * np.pi * r.uniform(0.2, 2) * _t(n))))
    return doppler(r, sum(_tone(f * k, n, r) / k ** 2 for k in (1, 2, 3)))


def cheer(r, n):
    y = np.zeros((n, 2))
    swell = np.interp(np.arange(n), np.linspace(0, n, 6), r.uniform(0.2, 1, 6))
    for _ in range(r.integers(8, 20)):
        v = _band(r.standard_normal(n), r.uniform(300, 800), r.uniform(2000, 5000))
        y += _pan(_norm(v) * swell * r.uniform(0.3, 1), r.uniform(-0.9, 0.9))
    for _ in range(r.integers(0, 4)):                          # whistles
        m, k = int(r.uniform(0.3, 1) * SR), int(r.integers(0, n - SR))
        w = _tone(np.linspace(r.uniform(1500, 2500), r.uniform(2500, 3500), m), m, r) * np.hanning(m) * 3
        y[k:k + m] += _pan(w, r.uniform(-0.8, 0.8))
    return y


def kettle(r):
    n = int(r.uniform(2, 5) * SR)
    rise = np.minimum(1, _t(n) / (n / SR * 0.6))
    whistle = _tone(r.uniform(1200, 2000) * (1 + 0.3 * rise), n, r) * rise ** 2
    return whistle + _norm(_band(r.standard_normal(n), 100, 1500)) * 0.3


def tap(r):
    n = int(r.uniform(1.5, 5) * SR)
    env = np.minimum(1, np.minimum(_t(n) * 10, (n / SR - _t(n)) * 6))
    return stream(r, n) * env + _norm(_band(r.standard_normal(n), 1000, 10000)) * env * 0.4


def glitch(r):
    y = []
    for _ in range(r.integers(2, 8)):
        m = int(r.uniform(0.01, 0.08) * SR)
        seg = np.sign(_tone(r.uniform(100, 3000), m, r)) if r.random() < 0.5 else r.standard_normal(m)
        y.append(np.tile(np.round(seg * 4) / 4, int(r.integers(1, 6))))
    return np.concatenate(y) * 0.5


# ---------------------------------------------------------------- the registry and the clip

def _theme_event(r, split):
    files = _THEME.setdefault(split, fx.theme_files(split != "train"))
    return files[int(r.integers(len(files)))]


_THEME: dict = {}
BEDS = {"rain": fx.rain, "wind": fx.wind, "engine": fx.engine, "crowd": fx.crowd, "footsteps": fx.footsteps,
        "birds": birds, "stream": stream, "clock": clock, "applause": applause, "crickets": crickets, "fire": fire,
        "cheer": cheer}
EVENTS = {"impact": fx.impact, "whoosh": fx.whoosh, "door": fx.door, "car_pass": car_pass, "horn": horn,
          "motor": motor, "metal_clang": metal_clang, "beep_alarm": beep_alarm, "bell": bell, "dishes": dishes,
          "ui_beeps": ui_beeps, "thunder": thunder, "jet_pass": jet_pass, "train": train, "typewriter": typewriter,
          "drill": drill, "glass": glass, "siren_pass": siren_pass, "kettle": kettle, "tap": tap, "glitch": glitch,
          "birds": lambda r: birds(r, int(r.uniform(1, 3) * SR)), "applause": lambda r: applause(r, int(3 * SR))}


def event(r: np.random.Generator, kind: str, split: str) -> np.ndarray:
    if kind == "theme":
        return _theme_event(r, split)
    if kind == "gm_fx":
        return fx.gm_effect(r, fx.GM_TRAIN if split == "train" else fx.GM_HELDOUT)
    return np.asarray(EVENTS[kind](r), np.float32)


def clip(r: np.random.Generator, cfg: dict, seconds: float) -> np.ndarray:
    """An effects track [T, 2]: 0-2 beds and a sequence of events of the set's kinds, placed, panned, levelled,
    some in a room (sox reverb), peak 0.5."""
    n = int(seconds * SR)
    y = np.zeros((n, 2), np.float32)
    kinds = cfg["fx"]
    beds = [k for k in kinds if k in BEDS]
    events = [k for k in kinds if k in EVENTS or k in ("theme", "gm_fx")]
    for k in r.choice(beds, min(len(beds), int(r.choice([0, 1, 1, 2]))), replace=False):
        b = np.asarray(BEDS[k](r, n), np.float32)
        b = b if b.ndim == 2 else _pan(b, r.uniform(-0.7, 0.7))
        y += _norm(b) * 10 ** (r.uniform(-14, 0) / 20)
    t = r.uniform(0, 1.5)
    while t < seconds - 0.3:
        x = event(r, str(r.choice(events)), cfg["gm_split"])[: n - int(t * SR)]
        x = x if x.ndim == 2 else _pan(x, r.uniform(-0.9, 0.9))
        x = _norm(x) * 10 ** (r.uniform(-8, 4) / 20)
        if r.random() < 0.3:                                  # in a room
            x = x + scenes.sox(np.ascontiguousarray(x, np.float32), "reverb", "-w", str(int(r.integers(30, 95))),
                               "50", str(int(r.integers(30, 100))))[: len(x)] * r.uniform(0.2, 0.7)
        k = int(t * SR)
        y[k:k + len(x)] += x
        t += len(x) / SR * r.uniform(0.3, 1.2) + r.uniform(0.1, 2.5)
    return (y / (np.abs(y).max() + 1e-6) * 0.5).astype(np.float32)
