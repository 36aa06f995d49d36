"""Synthesise the demo pack's training and held-out audio, reproducibly from a seed.

Speech: espeak-ng (many languages, voice variants, pitch and speed) and festival, as short two-voice dialogs.
Background: music rendered by fluidsynth with the Debian General MIDI soundfont from MIDI files written here
(melody, chords, bass, drums; random tempo, key and instruments), plus a little noise.
The held-out split uses languages, voice variants and instruments that the training split never uses.

    python scripts/demo_pack/make_data.py --work /tmp/spark_demo_pack --seed 0

writes <work>/<split>/speech/NNNN.flac (44.1 kHz mono) and <work>/<split>/music/NNNN.flac (44.1 kHz stereo).
Mixing (`mix_pair`) happens later, in training and evaluation, at a chosen speech-to-background ratio.
Needs: espeak-ng, festival (optional), fluidsynth, fluid-soundfont-gm.
"""
from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 44100
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"

# Latin-script languages, so the random pseudo-words below are read as words of that language.
TRAIN_LANGS = ["en-us", "en-gb", "de", "fr-fr", "es", "it", "pt", "ro", "cs", "sv", "da", "id", "eo",
               "la", "ms", "af", "hr", "sk", "et", "lv", "nb", "ca", "sq", "sw"]
HELDOUT_LANGS = ["pl", "hu", "fi", "tr", "nl", "cy"]
TRAIN_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4", "klatt", "klatt2", "Adam",
                  "Alex", "Andrea", "Andy", "Annie", "Antonio", "Belinda", "Benjamin", "Caleb", "David", "Ed",
                  "Edward", "Gene", "Henrique", "Hugo", "Jacky", "John", "Lee", "Linda", "Marco", "Max",
                  "Michael", "Mike", "Paul", "Pedro", "Quincy", "Rob", "Robert", "Steph", "Storm", "Zac",
                  "anika", "norbert", "sandro", "shelby", "travis", "victor", "grandma", "grandpa"]
HELDOUT_VARIANTS = ["m7", "f5", "klatt3", "Alicia", "Diogo", "Iven", "Kaukovalta", "Marcelo", "Mario",
                    "Miguel", "Pablo", "Steph2", "male8"]

# General MIDI programs (0-based). Voice-like and sound-effect programs are left out of the music.
_EXCLUDED = {52, 53, 54, 85, 91} | set(range(119, 128))
_MELODIC = [p for p in range(0, 112) if p not in _EXCLUDED and not 32 <= p <= 39]
HELDOUT_PROGRAMS = {p for p in _MELODIC if p % 5 == 2} | {36, 37}     # every 5th instrument, slap basses
TRAIN_BASS = [32, 33, 34, 35, 38, 39]
HELDOUT_BASS = [36, 37]
TRAIN_KITS = [0, 16, 24, 40]
HELDOUT_KITS = [8, 25, 32]


def split_config(split: str) -> dict:
    held = split != "train"
    melodic = [p for p in _MELODIC if (p in HELDOUT_PROGRAMS) == held]
    return dict(langs=HELDOUT_LANGS if held else TRAIN_LANGS,
                variants=HELDOUT_VARIANTS if held else TRAIN_VARIANTS,
                melodic=melodic, bass=HELDOUT_BASS if held else TRAIN_BASS,
                kits=HELDOUT_KITS if held else TRAIN_KITS,
                festival=held and shutil.which("text2wave") is not None)   # festival is optional


# ---------------------------------------------------------------- speech

_CONS = "b c d f g h j k l m n p r s t v w z ch sh st tr pl br gr kr".split()
_VOW = "a e i o u a e i o ei ou ai".split()


def pseudo_text(rng: np.random.Generator, words: int) -> str:
    out = []
    for i in range(words):
        w = "".join(rng.choice(_CONS) + rng.choice(_VOW) for _ in range(rng.integers(1, 4)))
        if rng.random() < 0.3:
            w += rng.choice(list("nrstlm"))
        out.append(w)
        if i < words - 1 and rng.random() < 0.12:
            out[-1] += ","
    return " ".join(out) + rng.choice([".", ".", "?", "!"])


def espeak(text: str, voice: str, pitch: int, speed: int) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", f.name, text],
                       check=True, capture_output=True)
        x, sr = sf.read(f.name, dtype="float32")
    return soxr.resample(x, sr, SR)


def festival(text: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["text2wave", "-o", f.name], input=text.encode(), check=True, capture_output=True)
        x, sr = sf.read(f.name, dtype="float32")
    return soxr.resample(x, sr, SR)


def dialog(rng: np.random.Generator, cfg: dict, seconds: float) -> np.ndarray:
    """Two or three speakers taking turns, with pauses, about `seconds` long, mono 44.1 kHz."""
    speakers = []
    for _ in range(rng.integers(2, 4)):
        if cfg["festival"] and rng.random() < 0.25:
            speakers.append(None)   # festival's voice
        else:
            speakers.append((f"{rng.choice(cfg['langs'])}+{rng.choice(cfg['variants'])}",
                             int(rng.integers(25, 80)), int(rng.integers(120, 210))))
    parts, total, turn = [np.zeros(int(rng.uniform(0.0, 0.6) * SR), np.float32)], 0.0, 0
    while total < seconds:
        spk = speakers[turn % len(speakers)]
        text = pseudo_text(rng, int(rng.integers(3, 14)))
        x = festival(text) if spk is None else espeak(text, *spk)
        x = x / (np.sqrt(np.mean(x ** 2)) + 1e-6) * 10 ** (rng.uniform(-4, 4) / 20)
        pause = np.zeros(int(rng.uniform(0.1, 0.8) * SR), np.float32)
        parts += [x.astype(np.float32), pause]
        total += (len(x) + len(pause)) / SR
        turn += 1
    y = np.concatenate(parts)[: int(seconds * SR)]
    return y / (np.abs(y).max() + 1e-6) * 0.5


# ---------------------------------------------------------------- music

def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, events: list[tuple[int, bytes]], tpb: int = 480) -> None:
    """A format-0 standard MIDI file from (absolute tick, raw event bytes) pairs."""
    body, last = b"", 0
    for tick, data in sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 != 0x80)):   # note-offs first
        body += _vlq(tick - last) + data
        last = tick
    body += _vlq(0) + b"\xff\x2f\x00"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, tpb) + b"MTrk" + struct.pack(">I", len(body)) + body)


def song(rng: np.random.Generator, cfg: dict, seconds: float) -> list[tuple[int, bytes]]:
    """Random tonal music: chords, bass, a melody or two, drums (most of the time)."""
    tpb, bpm = 480, int(rng.integers(70, 170))
    ev = [(0, b"\xff\x51\x03" + (60_000_000 // bpm).to_bytes(3, "big"))]
    key = int(rng.integers(0, 12))
    scale = [0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.6 else [0, 2, 3, 5, 7, 8, 10]
    beats = int(seconds * bpm / 60) + 2
    bars = beats // 4 + 1
    prog = [int(rng.choice([0, 3, 4, 5, 1, 2])) for _ in range(4)]

    def note(ch, tick, dur, pitch, vel):
        pitch = int(np.clip(pitch, 0, 127))
        ev.append((tick, bytes([0x90 | ch, pitch, int(vel)])))
        ev.append((tick + max(1, dur), bytes([0x80 | ch, pitch, 0])))

    def deg(d, octave):   # scale degree -> MIDI pitch
        return 12 * octave + key + scale[d % 7] + 12 * (d // 7)

    chans = []
    for ch, pool in [(0, cfg["melodic"]), (1, cfg["melodic"]), (2, cfg["bass"]), (3, cfg["melodic"])]:
        p = int(rng.choice(pool))
        chans.append(p)
        ev.append((0, bytes([0xC0 | ch, p])))
        ev.append((0, bytes([0xB0 | ch, 10, int(rng.integers(20, 108))])))   # pan
        ev.append((0, bytes([0xB0 | ch, 7, int(rng.integers(80, 120))])))    # volume
    lead2 = rng.random() < 0.5
    for bar in range(bars):
        root = prog[bar % 4]
        t0 = bar * 4 * tpb
        style = bar % 2
        for k in (0, 2, 4):   # chord, held or struck on each beat
            if style == 0:
                note(1, t0, 4 * tpb - 20, deg(root + k, 5), rng.integers(50, 80))
            else:
                for b in range(4):
                    note(1, t0 + b * tpb, tpb - 20, deg(root + k, 5), rng.integers(45, 75))
        for b in range(4):    # bass
            note(2, t0 + b * tpb, tpb - 30, deg(root + (4 if b == 2 else 0), 3), rng.integers(70, 100))
        t, d = t0, root + 7
        while t < t0 + 4 * tpb:   # melody: a random walk on the scale
            dur = int(rng.choice([tpb // 2, tpb, tpb, 2 * tpb, tpb // 4]))
            d = int(np.clip(d + rng.integers(-2, 3), 3, 16))
            if rng.random() < 0.85:
                note(0, t, dur - 10, deg(d, 5), rng.integers(60, 110))
                if lead2 and rng.random() < 0.5:
                    note(3, t, dur - 10, deg(d - 2, 5), rng.integers(40, 80))
            t += dur
    if rng.random() < 0.8:    # drums on channel 10
        ev.append((0, bytes([0xC9, int(rng.choice(cfg["kits"]))])))
        hat = 42 if rng.random() < 0.7 else 51
        for beat in range(bars * 4):
            t = beat * tpb
            if beat % 2 == 0 or rng.random() < 0.15:
                note(9, t, tpb // 4, 36, rng.integers(80, 120))
            if beat % 2 == 1:
                note(9, t, tpb // 4, 38 if rng.random() < 0.9 else 40, rng.integers(70, 115))
            for h in (0, tpb // 2):
                note(9, t + h, tpb // 8, hat, rng.integers(40, 90))
            if beat % 16 == 0:
                note(9, t, tpb, 49, rng.integers(60, 100))
    return ev


def render(events, seconds: float, rng: np.random.Generator) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        mid, wav = Path(d) / "s.mid", Path(d) / "s.wav"
        write_midi(mid, events)
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", str(SR), "-F", str(wav),
                        "-R", str(int(rng.integers(0, 2))), "-C", str(int(rng.integers(0, 2))),
                        SOUNDFONT, str(mid)], check=True, capture_output=True)
        x, sr = sf.read(wav, dtype="float32", always_2d=True)
    assert sr == SR
    x = x[: int(seconds * SR)]
    if len(x) < int(seconds * SR):
        x = np.pad(x, ((0, int(seconds * SR) - len(x)), (0, 0)))
    return x / (np.abs(x).max() + 1e-6) * 0.5


def colored_noise(rng: np.random.Generator, n: int, slope: float) -> np.ndarray:
    """Stereo noise with a 1/f^slope power spectrum."""
    spec = np.fft.rfft(rng.standard_normal((2, n)), axis=1)
    f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    y = np.fft.irfft(spec / f ** (slope / 2), n=n, axis=1).T
    return (y / (np.sqrt(np.mean(y ** 2)) + 1e-9)).astype(np.float32)


def background(rng: np.random.Generator, cfg: dict, seconds: float) -> np.ndarray:
    x = render(song(rng, cfg, seconds), seconds, rng)
    if rng.random() < 0.5:   # room tone / hiss under the music
        noise = colored_noise(rng, len(x), rng.uniform(0.0, 2.0))
        x = x + noise * np.sqrt(np.mean(x ** 2)) * 10 ** (rng.uniform(-35, -15) / 20)
    return x.astype(np.float32)


# ---------------------------------------------------------------- mixing (shared with train/evaluate)

def reverb(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """A small synthetic room: exponentially decaying noise as impulse response."""
    n = int(rng.uniform(0.15, 0.5) * SR)
    ir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    ir[0] = 0
    wet = np.fft.irfft(np.fft.rfft(x, len(x) + n) * np.fft.rfft(ir, len(x) + n))[: len(x)]
    wet *= np.sqrt(np.mean(x ** 2) / (np.mean(wet ** 2) + 1e-12)) * rng.uniform(0.1, 0.4)
    return (x + wet).astype(np.float32)


def mix_pair(rng: np.random.Generator, speech: np.ndarray, music: np.ndarray, sbr_db: float,
             effects: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Stereo (vocals, background) [T, 2] with 10*log10(sum v^2 / sum b^2) == sbr_db; mix = v + b. A stereo
    speech (a make_cine_data.py scene: placed and in its room already) is used as it is."""
    if speech.ndim == 2:
        v = speech
    else:
        v = reverb(rng, speech) if effects and rng.random() < 0.3 else speech
        pan = rng.uniform(-0.3, 0.3)
        v = np.stack([v * np.sqrt(0.5 - pan / 2), v * np.sqrt(0.5 + pan / 2)], 1)
    b = music[: len(v)]
    b = b * np.sqrt(np.sum(v ** 2) / (np.sum(b ** 2) + 1e-12) / 10 ** (sbr_db / 10))
    peak = max(np.abs(v + b).max(), 1e-6)
    g = rng.uniform(0.3, 0.9) / peak if effects else 0.7 / peak
    return (v * g).astype(np.float32), (b * g).astype(np.float32)


def load_split(work: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    sp = [sf.read(p, dtype="float32")[0] for p in sorted((work / split / "speech").glob("*.flac"))]
    mu = [sf.read(p, dtype="float32")[0] for p in sorted((work / split / "music").glob("*.flac"))]
    return sp, mu


def heldout_mixtures(work: Path, sbr_db: float, n: int, seed: int = 1234, seconds: float | None = None,
                     split: str = "heldout"):
    """n (vocals, background) pairs [T, 2] from a held-out split at the given SBR, reproducible."""
    speech, music = load_split(work, split)
    rng = np.random.default_rng([seed, int(sbr_db * 10) + 1000])
    out = []
    for k in range(n):
        s, m = speech[k % len(speech)], music[(k * 7 + 3) % len(music)]
        if seconds:
            s, m = s[: int(seconds * SR)], m[: int(seconds * SR)]
        out.append(mix_pair(rng, s, m, sbr_db))
    return out


def write_clips(work: Path, example: Path | None, test_dir: Path | None) -> None:
    """The bundled example (a held-out mixture) and the quality test's held-out clips (stems, 0 dB SBR)."""
    if example:
        example.parent.mkdir(parents=True, exist_ok=True)
        v, b = heldout_mixtures(work, 3.0, 1, seed=77, seconds=8.0)[0]
        sf.write(example, v + b, SR, subtype="PCM_16")
        print(f"wrote {example}")
    if test_dir:
        test_dir.mkdir(parents=True, exist_ok=True)
        for k, (v, b) in enumerate(heldout_mixtures(work, 0.0, 3, seed=4321, seconds=6.0)):
            # Ogg Vorbis keeps them small; the decoded stems are the truth and their sum the mixture
            sf.write(test_dir / f"clip{k}_vocals.ogg", v, SR, format="OGG", subtype="VORBIS")
            sf.write(test_dir / f"clip{k}_background.ogg", b, SR, format="OGG", subtype="VORBIS")
        print(f"wrote test clips to {test_dir}")


# ---------------------------------------------------------------- main

def make_split(work: Path, split: str, n_speech: int, n_music: int, seconds: float, seed: int, jobs: int):
    cfg = split_config(split)
    tag = {"train": 1, "heldout": 2}[split]
    for kind, n, fn in [("speech", n_speech, lambda r: dialog(r, cfg, seconds)),
                        ("music", n_music, lambda r: background(r, cfg, seconds))]:
        d = work / split / kind
        d.mkdir(parents=True, exist_ok=True)

        def one(i, kind=kind, d=d, fn=fn):
            p = d / f"{i:04d}.flac"
            if not p.exists():   # resumable; each item has its own seed, so order does not matter
                rng = np.random.default_rng([seed, tag, kind == "music", i])
                sf.write(p, fn(rng), SR, subtype="PCM_16")
        with ThreadPoolExecutor(jobs) as ex:
            list(ex.map(one, range(n)))
        print(f"{split}/{kind}: {n} clips", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("DEMO_WORK", "/tmp/spark_demo_pack")))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-speech", type=int, default=360)
    ap.add_argument("--train-music", type=int, default=160)
    ap.add_argument("--heldout-speech", type=int, default=24)
    ap.add_argument("--heldout-music", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--example", type=Path, default=None, help="also write the bundled example clip here")
    ap.add_argument("--test-clips", type=Path, default=None, help="also write the quality test's clips here")
    a = ap.parse_args()
    make_split(a.work, "heldout", a.heldout_speech, a.heldout_music, a.seconds, a.seed, a.jobs)
    make_split(a.work, "train", a.train_speech, a.train_music, a.seconds, a.seed, a.jobs)
    write_clips(a.work, a.example, a.test_clips)


if __name__ == "__main__":
    main()
