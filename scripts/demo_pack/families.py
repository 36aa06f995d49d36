"""The one place that says which generator families train the cinematic demo model and which are held out.

Three sets are made from these generators (make_cine_data.py):
- `train`: the TRAIN families, seeds of set tag 1;
- `seen`: the same TRAIN families with other seeds (set tag 2): the held-out set of the generators we train on;
- `excluded`: only the EXCLUDED families (set tag 3): languages, voices, music methods, metres, rooms and effect
  kinds that training never hears. A family listed under EXCLUDED must never appear under TRAIN.

The old generators' held-out split (make_data.py / effects.py `heldout`) stays what it was.
"""
from __future__ import annotations

# Languages with written sentences (sentences.py); training also speaks the old pseudo-words in the 24 old
# training languages (make_data.TRAIN_LANGS), the excluded set only real sentences.
TRAIN_LANGS = ["en-us", "en-gb", "de", "fr-fr", "es", "it", "pt", "sv", "ro", "id", "cs"]
EXCLUDED_LANGS = ["pl", "fi", "tr", "hu", "nl"]

# espeak-ng voice variants by FILE name (`espeak-ng --voices=variant`, column File without "!v/"): espeak-ng
# silently falls back to its default voice for an unknown name, and 25 of make_data.py's 64 display names
# ("Adam", "Steph2", ...) are such names. The old training voices plus more speakers, whispers included; the
# excluded ones are the old held-out voices (under their real names) plus a few the old split never used.
TRAIN_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "f1", "f2", "f3", "f4", "klatt", "klatt2", "klatt4",
                  "adam", "Alex", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin", "boris",
                  "david", "Denis", "ed", "edward", "edward2", "Gene", "Gene2", "gustave", "Henrique",
                  "Hugo", "Jacky", "john", "Lee", "linda", "Marco", "max", "Michael", "michel", "Mike", "Nguyen",
                  "paul", "pedro", "quincy", "rob", "robert", "steph", "steph3", "Storm", "zac", "anika",
                  "AnxiousAndy", "norbert", "sandro", "shelby", "travis", "victor", "grandma", "grandpa",
                  "whisper"]
EXCLUDED_VARIANTS = ["m7", "f5", "klatt3", "klatt5", "Alicia", "Diogo", "iven", "iven2", "kaukovalta",
                     "marcelo", "Mario", "miguel", "pablo", "steph2", "m8", "whisperf", "iven3"]

# Rooms on dialog: sox's `reverb` (a Freeverb) in training, convolution with synthetic impulse responses built
# from early reflections and a decaying tail (scenes.image_room) in the excluded set. "dry" is in both.
TRAIN_ROOMS = ["dry", "sox_reverb"]
EXCLUDED_ROOMS = ["dry", "image_room"]

# Music synthesis methods (synth_music.py) and metres (beats per bar, beat unit).
TRAIN_MUSIC = ["gm", "fm", "subtractive", "additive"]
EXCLUDED_MUSIC = ["pluck", "modal"]
TRAIN_METRES = [(4, 4), (3, 4), (6, 8), (2, 4)]
EXCLUDED_METRES = [(5, 4), (7, 8)]

# Effect kinds (film_fx.py), by category. Every category has kinds on both sides.
TRAIN_FX = {
    "nature": ["rain", "wind", "birds", "stream"],
    "vehicles": ["engine", "car_pass", "horn"],
    "machines": ["motor", "clock"],
    "impacts": ["impact", "whoosh", "metal_clang"],
    "alarms": ["beep_alarm", "bell"],
    "crowds": ["crowd", "applause"],
    "household": ["door", "footsteps", "dishes"],
    "interface": ["ui_beeps", "theme", "gm_fx"],
}
EXCLUDED_FX = {
    "nature": ["thunder", "crickets", "fire"],
    "vehicles": ["jet_pass", "train"],
    "machines": ["typewriter", "drill"],
    "impacts": ["glass"],
    "alarms": ["siren_pass"],
    "crowds": ["cheer"],
    "household": ["kettle", "tap"],
    "interface": ["glitch"],
}


def for_set(name: str) -> dict:
    """The families a set draws from: 'train' and 'seen' the TRAIN ones, 'excluded' the EXCLUDED ones."""
    if name not in ("train", "seen", "excluded"):
        raise ValueError(f"unknown set {name!r}: train, seen or excluded")
    ex = name == "excluded"
    return dict(langs=EXCLUDED_LANGS if ex else TRAIN_LANGS,
                variants=EXCLUDED_VARIANTS if ex else TRAIN_VARIANTS,
                pseudo=not ex,    # old-style pseudo-word lines in the old training languages
                rooms=EXCLUDED_ROOMS if ex else TRAIN_ROOMS,
                music=EXCLUDED_MUSIC if ex else TRAIN_MUSIC,
                metres=EXCLUDED_METRES if ex else TRAIN_METRES,
                fx=sorted(k for v in (EXCLUDED_FX if ex else TRAIN_FX).values() for k in v),
                gm_split="heldout" if ex else "train")   # make_data's instrument / GM-effect split


SET_TAGS = {"train": 1, "seen": 2, "excluded": 3}


def check_disjoint() -> None:
    """Raise if any family is on both sides (the tests call this too)."""
    pairs = [(TRAIN_LANGS, EXCLUDED_LANGS), (TRAIN_VARIANTS, EXCLUDED_VARIANTS),
             (TRAIN_ROOMS[1:], EXCLUDED_ROOMS[1:]), (TRAIN_MUSIC, EXCLUDED_MUSIC), (TRAIN_METRES, EXCLUDED_METRES),
             ([k for v in TRAIN_FX.values() for k in v], [k for v in EXCLUDED_FX.values() for k in v])]
    import make_data
    pairs.append((make_data.TRAIN_LANGS, EXCLUDED_LANGS))
    pairs.append((make_data.TRAIN_VARIANTS, EXCLUDED_VARIANTS))
    for a, b in pairs:
        both = set(a) & set(b)
        if both:
            raise AssertionError(f"in training and excluded: {sorted(both)}")
