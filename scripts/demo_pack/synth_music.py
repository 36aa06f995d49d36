"""Music beds from several synthesis families, in several metres and tempi, for the cinematic model.

A random score (key, mode, metre, tempo, chord progression; pad or chords, bass, melody, arpeggio, drums that
follow the metre) is played by the instruments of one family:
- `gm`: General MIDI through fluidsynth (make_data.song, 4/4, its own instrument split);
- `fm`: two-operator FM (electric pianos, bells, brass, FM bass): sharp attacks with bright decaying spectra;
- `subtractive`: saw / square / pulse spectra through a resonant low-pass with its own envelope (pads, leads,
  plucky synths, bass);
- `additive`: harmonic partials with slow envelopes and vibrato (organs, strings, flutes);
- `pluck` (excluded from training): Karplus-Strong strings (guitar, harp, plucked bass);
- `modal` (excluded from training): struck bars and bells with inharmonic modes (marimba, vibraphone,
  glockenspiel, kalimba, steel drum).
Drums are numpy-synthesised (kick, snare, hats, toms, claps) for every family but `gm`.
"""
from __future__ import annotations

import numpy as np

import make_data

SR = 44100
SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10], "dorian": [0, 2, 3, 5, 7, 9, 10],
          "mixolydian": [0, 2, 4, 5, 7, 9, 10], "harmonic": [0, 2, 3, 5, 7, 8, 11]}


def hz(m: float) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def _env(n: int, a: float, d: float, s: float, r: float, dur: int) -> np.ndarray:
    """ADSR over n samples, the note held `dur` samples; times in seconds."""
    t = np.arange(n) / SR
    held = dur / SR
    e = np.where(t < a, t / max(a, 1e-4), s + (1 - s) * np.exp(-(t - a) / max(d, 1e-4)))
    e_end = e[min(dur, n - 1)] if n else 0
    return np.where(t < held, e, e_end * np.exp(-(t - held) / max(r, 1e-4))).astype(np.float32)


def _partials(f0: float, amps: np.ndarray, n: int, rng, vib: float = 0.0, ratios=None) -> np.ndarray:
    """Sum of sinusoids at f0 x ratios (harmonic by default), amps [K] or [K, n], with optional vibrato."""
    k = np.arange(1, len(amps) + 1) if ratios is None else np.asarray(ratios)
    keep = k * f0 < SR / 2 * 0.9
    t = np.arange(n) / SR
    ph = 2 * np.pi * f0 * t
    if vib:
        ph = ph + vib * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t) / rng.uniform(4.5, 6.5)
    out = np.zeros(n, np.float32)
    for kk, a, ok in zip(k, amps, keep):
        if ok:
            out += (a * np.sin(kk * ph + rng.uniform(0, 6.28))).astype(np.float32)
    return out


# ---------------------------------------------------------------- instruments: (f0, held seconds, vel, rng) -> mono

def fm_voice(kind: str):
    def play(f0, dur, vel, rng):
        rel = {"epiano": 0.6, "bell": 2.5, "brass": 0.15, "bass": 0.2}[kind]
        n = int((dur + rel) * SR)
        t = np.arange(n) / SR
        held = int(dur * SR)
        if kind == "epiano":
            idx = 3.0 * vel * np.exp(-t * 6) + 0.4
            y = np.sin(2 * np.pi * f0 * t + idx * np.sin(2 * np.pi * f0 * t))
            y += 0.3 * vel * np.sin(2 * np.pi * f0 * t + 2 * np.exp(-t * 40) * np.sin(2 * np.pi * 14 * f0 * t))
            env = _env(n, 0.002, 1.2, 0.0, 0.3, held)
        elif kind == "bell":
            idx = 4 * vel * np.exp(-t * 1.5)
            y = np.sin(2 * np.pi * f0 * t + idx * np.sin(2 * np.pi * 3.5 * f0 * t))
            env = _env(n, 0.001, 2.0, 0.0, 1.5, held)
        elif kind == "brass":
            env = _env(n, 0.06, 0.3, 0.7, 0.15, held)
            y = np.sin(2 * np.pi * f0 * t + 3.5 * env * np.sin(2 * np.pi * f0 * t))
        else:
            idx = 2.5 * np.exp(-t * 8) + 0.5
            y = np.sin(2 * np.pi * f0 * t + idx * np.sin(2 * np.pi * f0 * t))
            env = _env(n, 0.003, 0.4, 0.4, 0.1, held)
        return (y * env * vel).astype(np.float32)
    return play


def sub_voice(kind: str):
    def play(f0, dur, vel, rng):
        rel = {"pad": 0.8, "lead": 0.15, "pluck": 0.3, "bass": 0.1}[kind]
        n = int((dur + rel) * SR)
        held = int(dur * SR)
        kmax = int(min(24, SR * 0.45 / f0))
        k = np.arange(1, kmax + 1)
        wave = str(rng.choice(["saw", "square", "pulse"]))
        base = 1 / k if wave == "saw" else np.where(k % 2 == 1, 1 / k, 0) if wave == "square" else \
            np.abs(np.sin(np.pi * k * 0.25)) / k
        fenv = _env(n, *{"pad": (0.6, 1.0, 0.6, 0.8), "lead": (0.01, 0.3, 0.5, 0.1),
                         "pluck": (0.001, 0.12, 0.05, 0.2), "bass": (0.002, 0.15, 0.2, 0.1)}[kind], held)
        step = 256   # the filter moves every 256 samples; partial gains interpolated in between
        fc = f0 * (1.5 + rng.uniform(3, 20) * fenv[::step])
        q = rng.uniform(1, 5)
        ratio = (k[:, None] * f0) / fc[None]
        h = 1 / np.sqrt((1 - ratio ** 2) ** 2 + (ratio / q) ** 2) / np.sqrt(1 + ratio ** 4)
        amps = np.array([np.interp(np.arange(n), np.arange(0, n, step)[: h.shape[1]], hk) for hk in h]) * base[:, None]
        t = np.arange(n) / SR
        y = np.zeros(n, np.float32)
        detune = [1.0] + ([1.006, 0.994] if kind == "pad" else [])
        for dt in detune:
            ph = 2 * np.pi * f0 * dt * t + rng.uniform(0, 6.28)
            for i, kk in enumerate(k):
                y += (amps[i] * np.sin(kk * ph)).astype(np.float32)
        aenv = _env(n, *{"pad": (0.5, 1.0, 0.8, 0.8), "lead": (0.01, 0.2, 0.7, 0.15),
                         "pluck": (0.001, 0.25, 0.0, 0.2), "bass": (0.003, 0.3, 0.6, 0.08)}[kind], held)
        return (y * aenv * vel / len(detune)).astype(np.float32)
    return play


def add_voice(kind: str):
    def play(f0, dur, vel, rng):
        if kind == "organ":
            draw = np.array([1, 0.8, 0.6, 0.5, 0, 0.3, 0, 0.25]) * rng.uniform(0.2, 1, 8)
            n, env, vib = int((dur + 0.05) * SR), (0.01, 0.1, 1.0, 0.04), 0.0
            amps = draw
        elif kind == "strings":
            amps = 1 / np.arange(1, 17) ** rng.uniform(0.8, 1.4)
            n, env, vib = int((dur + 0.6) * SR), (rng.uniform(0.15, 0.6), 0.5, 0.8, 0.5), 0.006
        else:   # flute
            amps = np.array([1, 0.3, 0.12, 0.05])
            n, env, vib = int((dur + 0.15) * SR), (0.06, 0.2, 0.8, 0.12), 0.004
        y = _partials(f0, amps, n, rng, vib=vib * 2 * np.pi * f0)
        if kind == "flute":   # breath
            y += np.convolve(rng.standard_normal(n), np.ones(8) / 8, "same").astype(np.float32) * 0.05
        return (y * _env(n, *env, int(dur * SR)) * vel / np.sqrt(np.sum(amps ** 2))).astype(np.float32)
    return play


def pluck_voice(kind: str):
    """Karplus-Strong: a noise burst in a delay line with a damped averaging loop, block by block."""
    def play(f0, dur, vel, rng):
        n = int((dur + {"guitar": 1.5, "harp": 2.5, "bass": 0.8}[kind]) * SR)
        p = max(2, int(round(SR / f0)))
        g = {"guitar": 0.996, "harp": 0.998, "bass": 0.993}[kind]
        y = np.zeros(n + p + 1)
        burst = rng.uniform(-1, 1, p)
        if kind != "harp":
            burst = np.convolve(burst, np.ones(3) / 3, "same")
        y[1:p + 1] = burst
        for a in range(p + 1, len(y), p):
            b = min(a + p, len(y))
            y[a:b] = g * 0.5 * (y[a - p:b - p] + y[a - p - 1:b - p - 1])
        y = y[1:n + 1]
        held = int(dur * SR)
        y[held:] *= np.exp(-np.arange(n - held) / SR / 0.15)    # damped when the note ends
        return (y * vel).astype(np.float32)
    return play


MODES = {"marimba": [1, 3.99, 10.65], "vibraphone": [1, 4.0, 10.2], "glockenspiel": [1, 2.76, 5.40, 8.93],
         "kalimba": [1, 5.9, 13.1], "steeldrum": [1, 2.0, 3.0, 4.1, 5.2]}


def modal_voice(kind: str):
    def play(f0, dur, vel, rng):
        ratios = MODES[kind]
        decay = {"marimba": 0.5, "vibraphone": 2.5, "glockenspiel": 1.8, "kalimba": 0.9, "steeldrum": 1.0}[kind]
        n = int(min(decay * 3, 4.0) * SR)
        t = np.arange(n) / SR
        y = np.zeros(n, np.float32)
        for i, r in enumerate(ratios):
            if f0 * r < SR * 0.45:
                a = vel ** (1 + i) / (1 + i)                      # harder strikes: brighter
                y += (a * np.sin(2 * np.pi * f0 * r * t + rng.uniform(0, 6.28)) *
                      np.exp(-t / (decay / (1 + 2 * i)))).astype(np.float32)
        if kind == "vibraphone":
            y *= 1 + 0.3 * np.sin(2 * np.pi * 5.5 * t).astype(np.float32)
        y[: int(0.002 * SR)] *= np.linspace(0, 1, int(0.002 * SR))
        return y
    return play


FAMILIES = {   # family -> (pad/chords, bass, melody, arpeggio) instrument choices
    "fm": ([fm_voice("epiano"), fm_voice("brass"), fm_voice("bell")], [fm_voice("bass")],
           [fm_voice("epiano"), fm_voice("bell"), fm_voice("brass")], [fm_voice("epiano"), fm_voice("bell")]),
    "subtractive": ([sub_voice("pad")], [sub_voice("bass")], [sub_voice("lead"), sub_voice("pluck")],
                    [sub_voice("pluck")]),
    "additive": ([add_voice("organ"), add_voice("strings")], [add_voice("organ")],
                 [add_voice("flute"), add_voice("strings"), add_voice("organ")], [add_voice("flute")]),
    "pluck": ([pluck_voice("guitar"), pluck_voice("harp")], [pluck_voice("bass")],
              [pluck_voice("guitar"), pluck_voice("harp")], [pluck_voice("harp"), pluck_voice("guitar")]),
    "modal": ([modal_voice("vibraphone"), modal_voice("marimba")], [modal_voice("marimba")],
              [modal_voice(k) for k in MODES], [modal_voice(k) for k in MODES]),
}


# ---------------------------------------------------------------- drums

def drum(kind: str, rng) -> np.ndarray:
    n = int(0.5 * SR)
    t = np.arange(n) / SR
    if kind == "kick":
        f = rng.uniform(45, 65) * (1 + 2.5 * np.exp(-t * 30))
        return (np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t * rng.uniform(6, 14))).astype(np.float32)
    if kind == "tom":
        f = rng.uniform(90, 220) * (1 + 0.5 * np.exp(-t * 20))
        return (np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t * 9)).astype(np.float32)
    noise = rng.standard_normal(n)
    if kind == "snare":
        tone = np.sin(2 * np.pi * rng.uniform(170, 240) * t) * np.exp(-t * 25)
        return (0.6 * tone + 0.5 * noise * np.exp(-t * rng.uniform(12, 25))).astype(np.float32)
    if kind == "clap":
        env = sum(np.exp(-np.maximum(t - d, 0) * 60) * (t >= d) for d in (0, 0.01, 0.022))
        return (np.diff(noise, prepend=0) * env * 0.3).astype(np.float32)
    hp = np.diff(np.diff(noise, prepend=0), prepend=0)   # hats: high-passed noise
    return (hp * np.exp(-t * (rng.uniform(30, 60) if kind == "hat" else 8)) * 0.15).astype(np.float32)


def _drum_pattern(beats: int, unit: int, rng) -> list[tuple[float, str]]:
    """(position in beats, drum) for one bar; accents follow the metre's grouping."""
    plain = [beats] if beats <= 3 else [2] * (beats // 2)
    groups = {(5, 4): [3, 2], (7, 8): [2, 2, 3], (6, 8): [3, 3]}.get((beats, unit), plain)
    pat, pos = [], 0
    for gi, g in enumerate(groups):
        pat.append((pos, "kick" if gi == 0 or rng.random() < 0.5 else "tom"))
        if gi % 2 == 1 or (len(groups) == 1 and beats > 1):
            pat.append((pos + (g - 1 if len(groups) > 1 else 1), "snare" if rng.random() < 0.8 else "clap"))
        pos += g
    for b in range(beats):
        pat.append((b, "hat"))
        if unit == 4 and rng.random() < 0.6:
            pat.append((b + 0.5, "hat"))
    if rng.random() < 0.3:
        pat.append((0, "open"))
    return pat


# ---------------------------------------------------------------- score and rendering

def bed(rng: np.random.Generator, family: str, metres: list, seconds: float, gm_cfg: dict | None = None) -> np.ndarray:
    """A stereo music bed [T, 2] of one family, peak 0.5."""
    n = int(seconds * SR)
    if family == "gm":
        return make_data.background(rng, gm_cfg, seconds)[:n]
    beats, unit = metres[int(rng.integers(len(metres)))]
    bpm = rng.uniform(60, 180) * (1.6 if unit == 8 else 1.0)
    beat_s = 60 / bpm
    key, scale = int(rng.integers(0, 12)), SCALES[str(rng.choice(list(SCALES)))]
    prog = [int(rng.choice([0, 3, 4, 5, 1, 2])) for _ in range(4)]
    pads, basses, melodies, arps = FAMILIES[family]
    y = np.zeros((n + 5 * SR, 2), np.float32)

    def deg(d, octave):
        return 12 * octave + key + scale[d % 7] + 12 * (d // 7)

    def put(inst, t, dur, midi, vel, pan, gain):
        x = inst(hz(midi), dur, vel, rng) * gain
        k = int(t * SR)
        x = x[: len(y) - k]
        y[k:k + len(x)] += np.stack([x * np.sqrt(0.5 - pan / 2), x * np.sqrt(0.5 + pan / 2)], 1)

    parts = dict(pad=rng.random() < 0.8, bass=rng.random() < 0.85, mel=rng.random() < 0.85, arp=rng.random() < 0.5,
                 drums=rng.random() < 0.7)
    pad_i, bass_i = pads[int(rng.integers(len(pads)))], basses[int(rng.integers(len(basses)))]
    mel_i, arp_i = melodies[int(rng.integers(len(melodies)))], arps[int(rng.integers(len(arps)))]
    pans = rng.uniform(-0.7, 0.7, 4)
    gains = 10 ** (rng.uniform(-8, 0, 5) / 20)
    bar_s = beats * beat_s
    pattern = _drum_pattern(beats, unit, rng)
    kit = {k: drum(k, rng) for k in ("kick", "snare", "hat", "tom", "clap", "open")}
    d = int(rng.integers(7, 12))
    for bar in range(int(seconds / bar_s) + 1):
        t0, root = bar * bar_s, prog[bar % 4]
        if parts["pad"]:
            for k in (0, 2, 4):
                put(pad_i, t0, bar_s * 0.95, deg(root + k, 4), 0.5, pans[0], gains[0] * 0.5)
        if parts["bass"]:
            for b in range(0, beats, 2 if beats > 3 else 1):
                put(bass_i, t0 + b * beat_s, beat_s * 0.9, deg(root, 2), 0.8, 0.0, gains[1])
        if parts["mel"]:
            t = t0
            while t < t0 + bar_s - 1e-6:
                dur = beat_s * float(rng.choice([0.5, 1, 1, 1.5, 2]))
                d = int(np.clip(d + rng.integers(-2, 3), 3, 16))
                if rng.random() < 0.85:
                    put(mel_i, t, dur * 0.9, deg(d, 4), rng.uniform(0.5, 1.0), pans[2], gains[2])
                t += dur
        if parts["arp"]:
            for i in range(beats * 2):
                put(arp_i, t0 + i * beat_s / 2, beat_s / 2, deg(root + [0, 2, 4, 7][i % 4], 5), rng.uniform(0.4, 0.9),
                    pans[3], gains[3] * 0.7)
        if parts["drums"]:
            for pos, name in pattern:
                x = kit[name] * gains[4] * rng.uniform(0.6, 1.0)
                k = int((t0 + pos * beat_s) * SR)
                x = x[: len(y) - k]
                p = {"hat": 0.3, "open": 0.3, "tom": -0.3}.get(name, 0.0)
                y[k:k + len(x)] += np.stack([x * np.sqrt(0.5 - p / 2), x * np.sqrt(0.5 + p / 2)], 1)
    y = y[:n]
    if rng.random() < 0.5:   # a room on the whole bed
        import scenes
        wet = scenes.sox(y, "reverb", "-w", str(int(rng.integers(20, 90))), "50", str(int(rng.integers(30, 100))))
        y = y + wet[:n] * rng.uniform(0.1, 0.5)
    return (y / (np.abs(y).max() + 1e-6) * 0.5).astype(np.float32)
