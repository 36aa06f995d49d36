"""One GPU stack: the pins, the Dockerfile's base, the templates and the docs name the same CUDA line, Python and
driver floor. `stack_problems` reads the repo's files (or altered copies of them) and lists every disagreement.

The CUDA line of the GPU wheels is not a constant here: it is read from the wheels' own Requires-Dist, in the
bundle named by SPARK_WHEEL_BUNDLE (a publish dir of scripts/build_wheel_bundles.sh, or a dir of wheels) when set,
else from deploy/cuda-facts.json, which `scripts/wheel_target.py cuda-facts <bundle>` wrote from such a bundle."""
import copy
import functools
import json
import os
import re
import zipfile
from importlib import metadata
from pathlib import Path

from testkit import load_module

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
wheel_target = load_module(REPO / "scripts" / "wheel_target.py")  # scripts/ is not a package

FACTS_FILE = REPO / "deploy" / "cuda-facts.json"
MIN_DRIVER = {"12": 525, "13": 580}      # NVIDIA's driver floor for a CUDA major (minor-version compatibility)
UBUNTU_PYTHON = {"22.04": "3.10", "24.04": "3.12"}
FILES = ["requirements-gpu.txt", "requirements-common.txt", "Dockerfile", "deploy/vastai/template.json",
         "deploy/runpod/pod-template.json", "docs/deploy.md", "README.md", "deploy/vastai/README.md",
         "scripts/build_wheel_bundles.sh"]
BASE_RE = re.compile(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-base-ubuntu(\d+\.\d+)\s*$", re.M)


def repo_files() -> dict[str, str]:
    return {f: (REPO / f).read_text() for f in FILES}


def recorded_facts() -> dict:
    return {k: v for k, v in json.loads(FACTS_FILE.read_text()).items() if not k.startswith("_")}


def wheel_facts() -> dict:
    """The CUDA facts of the GPU wheels: from the bundle itself when SPARK_WHEEL_BUNDLE names one."""
    bundle = os.environ.get("SPARK_WHEEL_BUNDLE")
    return copy.deepcopy(_bundle_facts(bundle)) if bundle else recorded_facts()


@functools.lru_cache
def _bundle_facts(bundle: str) -> dict:  # reading the wheels out of a 3 GB bundle takes about 40 s: once
    return wheel_target.cuda_facts(wheel_target.bundle_metadata([bundle]))


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


def stack_problems(files: dict[str, str], facts: dict | None = None) -> list[str]:
    facts = wheel_facts() if facts is None else facts
    problems = []
    m = BASE_RE.search(files["Dockerfile"])
    if not m:
        return ["Dockerfile: the base is not nvidia/cuda:X.Y.Z-base-ubuntuNN.NN (the wheels bring CUDA and cuDNN)"]
    base_cuda, ubuntu = f"{m[1]}.{m[2]}", m[3]
    py = UBUNTU_PYTHON.get(ubuntu)
    if py is None:
        return [f"Dockerfile: Ubuntu {ubuntu} is not in UBUNTU_PYTHON"]

    p = pins(files, py)
    torch_v, ort = p.get("torch", ("?", set()))[0], p.get("onnxruntime-gpu")
    torch_facts, ort_facts = facts.get("torch", {}), facts.get("onnxruntime-gpu", {})
    if torch_facts.get("version") != torch_v or not torch_facts.get("cuda"):
        return [f"requirements-gpu.txt pins torch {torch_v}, but the wheel facts are for torch "
                f"{torch_facts.get('version')}: regenerate {FACTS_FILE.name} from the new bundle"]
    cuda = torch_facts["cuda"]
    major = cuda.split(".")[0]
    if ort is None:
        problems.append(f"requirements-gpu.txt: no onnxruntime-gpu for Python {py}")
    else:
        if ort_facts.get("version") != ort[0]:
            problems.append(f"requirements-gpu.txt pins onnxruntime-gpu {ort[0]}, but the wheel facts are for "
                            f"{ort_facts.get('version')}: regenerate {FACTS_FILE.name} from the new bundle")
        elif ort_facts.get("cuda") != major:
            problems.append(f"onnxruntime-gpu {ort[0]} is a CUDA {ort_facts.get('cuda')} build, not CUDA {major} "
                            f"(torch {torch_v} is CUDA {cuda})")
        elif ort_facts.get("cudnn") != torch_facts.get("cudnn"):
            problems.append(f"onnxruntime-gpu {ort[0]} wants cuDNN {ort_facts.get('cudnn')}, torch {torch_v} "
                            f"brings cuDNN {torch_facts.get('cudnn')}")
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
    ({"Dockerfile": ("cuda:13.0.2-base-ubuntu24.04", "cuda:12.4.1-base-ubuntu24.04")},
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
    ({"Dockerfile": ("-base-ubuntu24.04", "-cudnn-runtime-ubuntu24.04")}, "the wheels bring CUDA and cuDNN"),
    ({"requirements-gpu.txt": ("torch==2.13.0", "torch==2.14.0")},
     "pins torch 2.14.0, but the wheel facts are for torch 2.13.0: regenerate cuda-facts.json"),
])
def test_a_disagreement_is_named(changes, expected):
    problems = stack_problems(_with(changes))
    assert any(expected in p for p in problems), problems


def test_wheels_of_another_cuda_line_are_named():
    facts = recorded_facts()
    facts["onnxruntime-gpu"] = {**facts["onnxruntime-gpu"], "cuda": "12"}
    assert any("onnxruntime-gpu 1.31.1 is a CUDA 12 build, not CUDA 13" in p
               for p in stack_problems(repo_files(), facts))
    facts = recorded_facts()
    facts["onnxruntime-gpu"] = {**facts["onnxruntime-gpu"], "cudnn": "8"}
    assert any("wants cuDNN 8, torch 2.13.0 brings cuDNN 9" in p for p in stack_problems(repo_files(), facts))


# The wheels' own METADATA lines (torch 2.13.0 and onnxruntime-gpu 1.31.1, cp313 manylinux_2_28 x86_64, PyPI).
TORCH_METADATA = """\
Metadata-Version: 2.4
Name: torch
Version: 2.13.0
Requires-Python: >=3.10
Requires-Dist: filelock
Requires-Dist: cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,nvrtc,nvtx]==13.0.3; \
platform_system == "Linux"
Requires-Dist: cuda-bindings<14,>=13.0.3; platform_system == "Linux" and python_version < "3.15"
Requires-Dist: nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"
Requires-Dist: nvidia-nccl-cu13==2.29.7; platform_system == "Linux"
Requires-Dist: triton==3.7.1; platform_system == "Linux" and python_version < "3.15"
"""
ORT_METADATA = """Metadata-Version: 2.1
Name: onnxruntime-gpu
Version: 1.31.1
Requires-Python: >=3.11
Requires-Dist: numpy>=1.21.6
Requires-Dist: sympy; extra == "symbolic"
Requires-Dist: nvidia-cuda-nvrtc~=13.0; extra == "cuda"
Requires-Dist: nvidia-cuda-runtime~=13.0; extra == "cuda"
Requires-Dist: nvidia-cufft~=12.0; extra == "cuda"
Requires-Dist: nvidia-cudnn-cu13~=9.0; extra == "cudnn"
"""


def _wheel(path: Path, name: str, version: str, metadata: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", metadata)
        z.writestr(f"{name}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: cp313-cp313-manylinux_2_28_x86_64\n")
    return path


def test_the_facts_are_read_from_the_wheels_metadata_inside_a_bundle_zip(tmp_path):
    torch_whl = _wheel(tmp_path / "torch-2.13.0-cp313-cp313-manylinux_2_28_x86_64.whl", "torch", "2.13.0",
                       TORCH_METADATA)
    ort_whl = _wheel(tmp_path / "onnxruntime_gpu-1.31.1-cp313-cp313-manylinux_2_28_x86_64.whl", "onnxruntime_gpu",
                     "1.31.1", ORT_METADATA)
    bundle = tmp_path / "publish" / "packages_compatibles.zip"  # the layout build_wheel_bundles.sh writes
    bundle.parent.mkdir()
    with zipfile.ZipFile(bundle, "w") as z:
        z.write(torch_whl, f"temp_packages/compatible/{torch_whl.name}")
        z.write(ort_whl, f"temp_packages/compatible/{ort_whl.name}")
    facts = wheel_target.cuda_facts(wheel_target.bundle_metadata([bundle.parent]))
    assert facts == recorded_facts()
    assert facts["torch"]["cuda"] == "13.0" and facts["onnxruntime-gpu"]["cuda"] == "13"
    # a CUDA 12 build (onnxruntime-gpu 1.22 names its libraries -cu12) reads as one
    old = _wheel(tmp_path / "cu12" / ort_whl.name, "onnxruntime_gpu", "1.22.0",
                 ORT_METADATA.replace("Version: 1.31.1", "Version: 1.22.0")
                 .replace("nvidia-cuda-runtime~=13.0", "nvidia-cuda-runtime-cu12~=12.0"))
    assert wheel_target.cuda_facts(wheel_target.bundle_metadata([old]))["onnxruntime-gpu"]["cuda"] == "12"


@pytest.mark.skipif(not os.environ.get("SPARK_WHEEL_BUNDLE"), reason="by hand: SPARK_WHEEL_BUNDLE=<publish dir>")
def test_the_recorded_facts_are_the_bundles():
    assert _bundle_facts(os.environ["SPARK_WHEEL_BUNDLE"]) == recorded_facts()
