"""One GPU stack: the pins, the Dockerfile's base, the templates and the docs name the same CUDA line, Python and
driver floor. `stack_problems` reads the repo's files (or altered copies of them) and lists every disagreement."""
import json
import re
from importlib import metadata
from pathlib import Path

from testkit import load_module

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
wheel_target = load_module(REPO / "scripts" / "wheel_target.py")  # scripts/ is not a package

# Facts from the wheels' metadata on PyPI (`pip install --dry-run --report`); a new pin needs its line here.
TORCH_CUDA = {"2.13.0": "13.0"}          # torch 2.13.0 (Linux x86_64) requires cuda-toolkit==13.0.3
ORT_GPU_CUDA = {"1.31.1": "13"}          # onnxruntime-gpu 1.31.1 [cuda] requires nvidia-cuda-runtime~=13.0
MIN_DRIVER = {"12": 525, "13": 580}      # NVIDIA's driver floor for a CUDA major (minor-version compatibility)
UBUNTU_PYTHON = {"22.04": "3.10", "24.04": "3.12"}
FILES = ["requirements-gpu.txt", "requirements-common.txt", "Dockerfile", "deploy/vastai/template.json",
         "deploy/runpod/pod-template.json", "docs/deploy.md", "README.md", "deploy/vastai/README.md",
         "scripts/build_wheel_bundles.sh"]
BASE_RE = re.compile(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu(\d+\.\d+)\s*$", re.M)


def repo_files() -> dict[str, str]:
    return {f: (REPO / f).read_text() for f in FILES}


def pins(files: dict[str, str], py: str) -> dict[str, tuple[str, set[str]]]:
    """name -> (version, extras) of requirements-gpu.txt (with its -r includes) for Python `py`."""
    out = {}
    for line in _requirement_lines(files, "requirements-gpu.txt"):
        req = wheel_target.Requirement(line)
        if req.marker is not None and not req.marker.evaluate({**wheel_target.target_env(py), "extra": ""}):
            continue
        (spec,) = req.specifier
        out[req.name.lower()] = (spec.version, set(req.extras))
    return out


def _requirement_lines(files: dict[str, str], name: str) -> list[str]:
    lines = []
    for raw in files[name].splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line.startswith("-r "):
            lines += _requirement_lines(files, line.split(None, 1)[1])
        elif line and not line.startswith("#"):
            lines.append(line)
    return lines


def stack_problems(files: dict[str, str]) -> list[str]:
    problems = []
    m = BASE_RE.search(files["Dockerfile"])
    if not m:
        return ["Dockerfile: the base is not nvidia/cuda:X.Y.Z-cudnn-runtime-ubuntuNN.NN"]
    base_cuda, ubuntu = f"{m[1]}.{m[2]}", m[3]
    py = UBUNTU_PYTHON.get(ubuntu)
    if py is None:
        return [f"Dockerfile: Ubuntu {ubuntu} is not in UBUNTU_PYTHON"]

    p = pins(files, py)
    torch_v, ort = p.get("torch", ("?", set()))[0], p.get("onnxruntime-gpu")
    cuda = TORCH_CUDA.get(torch_v)
    if cuda is None:
        return [f"requirements-gpu.txt: torch {torch_v} for Python {py} is not in TORCH_CUDA (check its wheel)"]
    major = cuda.split(".")[0]
    if ort is None:
        problems.append(f"requirements-gpu.txt: no onnxruntime-gpu for Python {py}")
    else:
        if ORT_GPU_CUDA.get(ort[0]) != major:
            problems.append(f"onnxruntime-gpu {ort[0]} is not a CUDA {major} build (torch {torch_v} is CUDA {cuda})")
        if not {"cuda", "cudnn"} <= ort[1]:
            problems.append("onnxruntime-gpu without [cuda,cudnn]: its CUDA libraries would not be torch's wheels")
    if base_cuda != cuda:
        problems.append(f"Dockerfile: base CUDA {base_cuda}, but torch {torch_v} is a CUDA {cuda} build")

    # Python: the image's and every bundle version must be one every pinned distribution supports
    versions = re.search(r'^versions="([\d. ]+)"', files["scripts/build_wheel_bundles.sh"], re.M)[1].split()
    if py not in versions:
        problems.append(f"build_wheel_bundles.sh: default versions {versions} lack the image's Python {py}")
    for name, (version, _) in sorted(pins(files, py).items()):
        requires = _requires_python(name, version)
        for v in sorted({py, *versions}):
            if requires and Version(v) not in SpecifierSet(requires):
                problems.append(f"{name} {version} requires Python {requires}, not {v}")

    # Driver floor, stated in the docs and the README
    floor = MIN_DRIVER[major]
    for doc in ("docs/deploy.md", "README.md"):
        stated = {int(x) for x in re.findall(r"NVIDIA driver >= (\d+)", files[doc])}
        if stated != {floor}:
            problems.append(f"{doc}: states driver floor {sorted(stated) or 'none'}, CUDA {cuda} needs >= {floor}")

    # Templates select hosts whose driver runs this CUDA line
    vast = json.loads(files["deploy/vastai/template.json"])
    if vast["image"] == "nvidia/cuda" and not vast["tag"].startswith(f"{cuda}."):
        problems.append(f"vastai template: image tag {vast['tag']} is not CUDA {cuda}")
    gte = vast.get("extra_filters", {}).get("cuda_max_good", {}).get("gte")
    if gte is None or Version(str(gte)) != Version(cuda):
        problems.append(f"vastai template: extra_filters cuda_max_good gte {gte}, must be {cuda}")
    allowed = json.loads(files["deploy/runpod/pod-template.json"]).get("allowedCudaVersions") or []
    if not allowed or any(a.split(".")[0] != major or Version(a) < Version(cuda) for a in allowed):
        problems.append(f"runpod template: allowedCudaVersions {allowed} must be CUDA {major}.x >= {cuda}")

    # No other CUDA line named anywhere (a cu124 index, a CUDA 12 image)
    for name, text in files.items():
        for hit in re.finditer(r"\bcu(\d\d)\d\b|\bcuda[- ]?(\d\d)\.\d|\bCUDA (\d\d)\b", text):
            if next(g for g in hit.groups() if g) != major:
                problems.append(f"{name}: names another CUDA line: {hit[0]!r}")
    return problems


def _requires_python(name: str, version: str) -> str | None:
    """Requires-Python of a pinned distribution, from the copy installed here when it is the same release
    (torch's CPU build and onnxruntime stand for their CUDA builds: same release, same Python range)."""
    for candidate in (name, "onnxruntime" if name == "onnxruntime-gpu" else name):
        try:
            meta = metadata.metadata(candidate)
        except metadata.PackageNotFoundError:
            continue
        if Version(meta["Version"]).public == version:
            return meta["Requires-Python"]
    return None


def test_the_repo_has_one_gpu_stack():
    assert stack_problems(repo_files()) == []


def _with(changes: dict[str, tuple[str, str]]) -> dict[str, str]:
    files = repo_files()
    for name, (old, new) in changes.items():
        assert old in files[name], (name, old)
        files[name] = files[name].replace(old, new)
    return files


@pytest.mark.parametrize("changes, expected", [
    ({"Dockerfile": ("cuda:13.0.2-cudnn-runtime-ubuntu24.04", "cuda:12.4.1-cudnn-runtime-ubuntu24.04")},
     "Dockerfile: base CUDA 12.4, but torch 2.13.0 is a CUDA 13.0 build"),
    ({"Dockerfile": ("ubuntu24.04", "ubuntu22.04")}, "fastapi 0.163.2 requires Python >=3.11, not 3.10"),
    ({"requirements-gpu.txt": ("onnxruntime-gpu[cuda,cudnn]==1.31.1", "onnxruntime-gpu==1.31.1")},
     "onnxruntime-gpu without [cuda,cudnn]"),
    ({"docs/deploy.md": ("NVIDIA driver >= 580", "NVIDIA driver >= 550")}, "docs/deploy.md: states driver floor"),
    ({"deploy/vastai/template.json": ('"gte": 13.0', '"gte": 12.4')}, "cuda_max_good gte 12.4"),
    ({"deploy/runpod/pod-template.json": ('"13.0", ', '"12.8", ')}, "allowedCudaVersions ['12.8'"),
    ({"docs/deploy.md": ("## Docker\n", "## Docker\nSee https://download.pytorch.org/whl/cu124\n")},
     "docs/deploy.md: names another CUDA line: 'cu124'"),
    ({"scripts/build_wheel_bundles.sh": ('versions="3.11 3.12 3.13"', 'versions="3.10 3.11 3.12 3.13"')},
     "requires Python >=3.11, not 3.10"),
])
def test_a_disagreement_is_named(changes, expected):
    problems = stack_problems(_with(changes))
    assert any(expected in p for p in problems), problems
