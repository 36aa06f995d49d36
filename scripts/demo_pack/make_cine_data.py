"""Make the cinematic model's training set and its two held-out sets from the generators in families.py.

    python scripts/demo_pack/make_cine_data.py --work /work/cache/cinedata/data --train 600 --heldout 24

writes <work>/<set>/{speech,music,effects}/NNNN.flac (44.1 kHz stereo, 12 s) for the sets
- `train`    : the training families (families.TRAIN_*), seed tag 1;
- `seen`     : the same families, other seeds (tag 2): held out, never trained on;
- `excluded` : only families that training never uses (families.EXCLUDED_*), tag 3.
Every clip has its own seed ([seed, set tag, kind, index]), so a stopped run resumes where it stopped and a larger
--train adds clips without changing the ones already made. Needs espeak-ng, sox, fluidsynth, fluid-soundfont-gm,
sound-theme-freedesktop.
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

import families  # the script's own dir is on sys.path
import film_fx
import make_data
import scenes
import synth_music

SR = 44100
KINDS = {"speech": 0, "music": 1, "effects": 2}


def make_one(work: Path, name: str, kind: str, i: int, seed: int, seconds: float) -> None:
    p = work / name / kind / f"{i:04d}.flac"
    if p.exists():
        return
    cfg = families.for_set(name)
    rng = np.random.default_rng([seed, families.SET_TAGS[name], KINDS[kind], i])
    if kind == "speech":
        y = scenes.scene(rng, cfg, seconds)
    elif kind == "music":
        family = cfg["music"][i % len(cfg["music"])]          # the families in turn, equally many clips
        y = synth_music.bed(rng, family, cfg["metres"], seconds, make_data.split_config(cfg["gm_split"]))
    else:
        y = film_fx.clip(rng, cfg, seconds)
    tmp = p.with_suffix(".tmp.flac")
    sf.write(tmp, y, SR, subtype="PCM_16")
    tmp.replace(p)                                            # no half-written clip survives a stop


def make_set(work: Path, name: str, counts: dict, seed: int, seconds: float, jobs: int) -> None:
    t0 = time.time()
    todo = []
    for kind, n in counts.items():
        (work / name / kind).mkdir(parents=True, exist_ok=True)
        todo += [(kind, i) for i in range(n)]
    with ProcessPoolExecutor(jobs) as ex:
        list(ex.map(make_one, *zip(*[(work, name, k, i, seed, seconds) for k, i in todo])))
    print(f"{name}: {counts} in {time.time() - t0:.0f} s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/work/cache/cinedata/data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=600, help="training clips of each kind")
    ap.add_argument("--heldout", type=int, default=24, help="clips of each kind in each held-out set")
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--sets", nargs="+", default=["seen", "excluded", "train"])
    a = ap.parse_args()
    families.check_disjoint()
    for name in a.sets:
        n = a.train if name == "train" else a.heldout
        make_set(a.work, name, {"speech": n, "music": n, "effects": n}, a.seed, a.seconds, a.jobs)


if __name__ == "__main__":
    main()
