"""Golden bytes: the sha256 of every output file of every recipe, format and mode runnable here, on fixed
generated inputs and seeded toy packs. Recorded on the engine before the recipe registry (issue 20) and kept
byte-identical since: a refactor that changes one sample of one stem fails here.

The bits depend on the CPU kind (torch, MKL and ONNX Runtime pick their float kernels by instruction set), so
golden.json holds one set per kind: this machine's kind is compared exactly; on another, the set that matches
is used, and a kind with no recorded set skips (nothing to compare to). To record this kind's set, from an
unchanged checkout (or for an intended change of the numbers, and say why in the commit), with the default
threads:
    GOLDEN_RECORD=1 .venv/bin/python -m pytest tests/test_golden.py -q
"""
import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mvsep import surround
from testkit import toypack
from mvsep.engine import Options, Separator

GOLDEN = Path(__file__).parent / "data" / "golden.json"
RECORD = os.environ.get("GOLDEN_RECORD") == "1"
SR = 44100

# case -> (input, Options kwargs). Inputs are made below; every case writes every stem its options make.
CASES = {
    "mdx23 vocals": ("stereo44", dict(only_vocals=True)),
    "mdx23 vocals shifts0": ("stereo44", dict(only_vocals=True, shifts=0)),
    "mdx23 4-stem": ("stereo44", dict(shifts=0)),
    "mdx23 single_onnx kim1": ("stereo44", dict(only_vocals=True, single_onnx=True, use_kim_model_1=True)),
    "mdx23 overlap": ("stereo44", dict(only_vocals=True, shifts=0, overlap_large=0.3, chunk_size=44100)),
    "cinematic": ("stereo44", dict(recipe="cinematic")),
    "cinematic high_quality": ("stereo44", dict(recipe="cinematic", high_quality=True, shifts=0)),
    "wav16": ("stereo44", dict(only_vocals=True, shifts=0, output_format="wav16")),
    "wav24": ("stereo44", dict(only_vocals=True, shifts=0, output_format="wav24")),
    "flac": ("stereo44", dict(only_vocals=True, shifts=0, output_format="flac")),
    "mp3": ("stereo44", dict(only_vocals=True, shifts=0, output_format="mp3")),
    "mono": ("stereo44", dict(only_vocals=True, shifts=0, mono=True)),
    "mono input": ("mono44", dict(only_vocals=True, shifts=0)),
    "48k native": ("stereo48", dict(only_vocals=True, shifts=0)),
    "48k to 44100": ("stereo48", dict(only_vocals=True, shifts=0, sample_rate=44100)),
    "48k cinematic": ("stereo48", dict(recipe="cinematic", shifts=0, output_format="flac")),
    "5.1 keep": ("surround48", dict(only_vocals=True, shifts=0)),
    "5.1 center": ("surround48", dict(only_vocals=True, shifts=0, layout="center", output_format="wav24")),
    "5.1 stereo": ("surround48", dict(only_vocals=True, shifts=0, layout="stereo")),
    "5.1 cinematic keep flac": ("surround48", dict(recipe="cinematic", shifts=0, output_format="flac")),
}


def noise(frames, channels, seed):
    return (np.random.default_rng(seed).standard_normal((frames, channels)) * 0.1).astype(np.float32)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden_in")
    files = {"stereo44": d / "stereo44.wav", "mono44": d / "mono44.wav", "stereo48": d / "stereo48.flac",
             "surround48": d / "surround48.wav"}
    sf.write(files["stereo44"], noise(int(2.3 * SR), 2, 1), SR, subtype="PCM_16")
    sf.write(files["mono44"], noise(int(1.7 * SR), 1, 2)[:, 0], SR, subtype="FLOAT")
    sf.write(files["stereo48"], noise(int(1.9 * 48000), 2, 3), 48000, subtype="PCM_24")
    w = surround.LayoutWriter(files["surround48"], 48000, "wav", "5.1")
    w.write(noise(int(1.2 * 48000), 6, 4))
    w.close()
    return files


@pytest.fixture(scope="module")
def sep(tmp_path_factory):
    pack = toypack.build_pack(tmp_path_factory.mktemp("golden_pack"), kind="random", stems="all")
    toypack.build_cinematic(pack, kind="random")
    return Separator(pack, device="cpu")


def cpu_kind() -> str:
    vendor = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("vendor_id")), "unknown vendor")
    return f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()} {vendor}"


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_golden_bytes(sep, inputs, tmp_path):
    got = {}
    for case, (src, kwargs) in CASES.items():
        res = sep.separate_file(inputs[src], tmp_path / case.replace(" ", "_"), Options(**kwargs), name="g")
        got[case] = {stem: digest(path) for stem, path in sorted(res.stems.items())}
    mix = noise(int(1.4 * SR), 2, 5)
    arrays = sep.separate_array(mix, SR, Options(only_vocals=True, shifts=0))
    got["array vocals"] = {s: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
                           for s, a in sorted(arrays.items())}
    sets, here = json.loads(GOLDEN.read_text()), cpu_kind()   # sets: {cpu kind: {case: {stem: sha256}}}
    if RECORD:
        GOLDEN.write_text(json.dumps({**sets, here: got}, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"recorded {GOLDEN} for {here}")
    matching = {k: sum(got.get(c) == w for c, w in cases.items()) for k, cases in sets.items()}
    kind = here if here in sets else max(matching, key=matching.get)
    want = sets[kind]
    if kind != here and not matching[kind]:
        pytest.skip(f"no golden bytes for this CPU kind ({here}; recorded: {', '.join(sorted(sets))})")
    assert set(got) == set(want)
    for case in want:
        assert got[case] == want[case], f"{case} (the golden bytes of {kind})"
