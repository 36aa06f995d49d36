"""pip for another Python version than the one running it, for scripts/build_wheel_bundles.sh.

`pip download --python-version` picks wheels for the target version but evaluates environment markers
(`python_version`, ...) against the running interpreter, both in the requirements file and in every wheel's
dependencies, so a bundle for 3.12 built on 3.11 misses `setuptools; python_version >= "3.12"`. Here the markers
are evaluated for the target version everywhere, and the result is checked against the wheels' own metadata.

usage: wheel_target.py resolve VER FILE          FILE (and its -r includes) with markers evaluated for VER
       wheel_target.py download VER -- PIP_ARGS  pip download with markers evaluated for VER
       wheel_target.py check VER FILE DIR        every requirement of FILE and of each wheel in DIR, for VER,
                                                 is met by a wheel in DIR; wheels nothing needs are removed;
                                                 prints the pins (name==version)
       wheel_target.py cuda-facts BUNDLE...      the CUDA line of the torch and onnxruntime-gpu wheels in the
                                                 bundle (dirs of wheels or packages_*.zip), as JSON, read from
                                                 their own Requires-Dist (deploy/cuda-facts.json is this output)
"""
import json
import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # a bare interpreter with pip: use pip's own copy
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version


def target_env(ver: str) -> dict:
    """The marker environment of CPython VER on Linux x86_64."""
    return {**default_environment(), "python_version": ver, "python_full_version": f"{ver}.0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64"}


def read_requirements(path: Path) -> list[Requirement]:
    """Requirement lines of a pip requirements file, following -r; pip options lines are skipped."""
    out = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            out += read_requirements(path.parent / line.split(None, 1)[1])
        elif not line.startswith("-"):
            out.append(Requirement(line))
    return out


def resolve(ver: str, path: Path) -> list[Requirement]:
    env = target_env(ver)
    reqs = [r for r in read_requirements(path) if r.marker is None or r.marker.evaluate({**env, "extra": ""})]
    for r in reqs:
        r.marker = None
    return reqs


def wheel_metadata(whl: Path):
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        return HeaderParser().parsestr(z.read(name).decode("utf-8"))


def check(ver: str, path: Path, wheel_dir: Path) -> list[str]:
    """Walk the requirements from FILE through the wheels' Requires-Dist for VER; raise on anything unmet."""
    env = target_env(ver)
    wheels = {}
    for whl in sorted(wheel_dir.glob("*.whl")):
        meta = wheel_metadata(whl)
        wheels[canonicalize_name(meta["Name"])] = (whl, meta)
    needed, missing = {}, []
    todo = [(r, "the requirements file") for r in resolve(ver, path)]
    while todo:
        req, by = todo.pop()
        key = canonicalize_name(req.name)
        if key not in wheels:
            missing.append(f"{req} (needed by {by}) has no wheel")
            continue
        whl, meta = wheels[key]
        if not req.specifier.contains(Version(meta["Version"]), prereleases=True):
            missing.append(f"{req} (needed by {by}) but the wheel is {whl.name}")
        extras = set(req.extras) - needed.get(key, set())
        if key in needed and not extras:
            continue
        needed.setdefault(key, set()).update(extras)
        for line in meta.get_all("Requires-Dist") or []:
            dep = Requirement(line)
            wanted = dep.marker is None or any(dep.marker.evaluate({**env, "extra": e}) for e in {"", *extras})
            if wanted:
                todo.append((dep, f"{meta['Name']} {meta['Version']}"))
    if missing:
        raise SystemExit(f"Python {ver}: " + "; ".join(sorted(set(missing))))
    for key, (whl, _) in wheels.items():
        if key not in needed:  # pulled in by a marker that holds for the build machine only
            whl.unlink()
    return sorted(f"{wheels[k][1]['Name']}=={wheels[k][1]['Version']}" for k in needed)


def download(ver: str, pip_args: list[str]) -> int:
    import pip._vendor.packaging.markers as pip_markers
    from pip._internal.cli.main import main as pip_main

    env = target_env(ver)
    pip_markers.default_environment = lambda: dict(env)
    return pip_main(["download", "--python-version", ver, *pip_args])


# ---- the CUDA line the GPU wheels were built for ------------------------------------------------------------
def bundle_metadata(paths, names=("torch", "onnxruntime-gpu")) -> dict:
    """name -> METADATA of the wheels called `names` in the bundle: wheel files, dirs of them, or bundle zips
    (packages_*.zip, which hold the wheels)."""
    wanted = {canonicalize_name(n) for n in names}
    out = {}

    def consider(filename: str, opener):
        if filename.endswith(".whl") and canonicalize_name(filename.split("-")[0]) in wanted:
            with opener() as f, zipfile.ZipFile(f) as z:
                meta_name = next(n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
                meta = HeaderParser().parsestr(z.read(meta_name).decode("utf-8"))
            out[canonicalize_name(meta["Name"])] = meta

    for path in map(Path, paths):
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            if f.suffix == ".whl":
                consider(f.name, lambda f=f: open(f, "rb"))
            elif f.suffix == ".zip":
                with zipfile.ZipFile(f) as bundle:
                    for member in bundle.namelist():
                        consider(member.rsplit("/", 1)[-1], lambda m=member: bundle.open(m))
    return out


def _version_in(requires: list[str], dist: str, extra: str | None = None) -> tuple[str, str] | None:
    """(requirement text, its version) of the first Requires-Dist on `dist` (with `extra`, when given)."""
    for line in requires:
        req = Requirement(line)
        if canonicalize_name(req.name) != canonicalize_name(dist):
            continue
        in_extra = req.marker is not None and req.marker.evaluate({**target_env("3.12"), "extra": extra or ""})
        if extra is not None and not in_extra:
            continue
        (spec,) = req.specifier
        return f"{req.name}{spec}", spec.version
    return None


def cuda_facts(metadata: dict) -> dict:
    """The CUDA and cuDNN lines of the torch and onnxruntime-gpu wheels, from their Requires-Dist: torch pins
    cuda-toolkit==X.Y.Z (or nvidia-cuda-runtime[-cuXX]==X.Y.Z), onnxruntime-gpu's [cuda] extra asks for
    nvidia-cuda-runtime~=X.Y and its [cudnn] extra for nvidia-cudnn-cuXX~=N."""
    facts = {}
    torch = metadata.get("torch")
    if torch is not None:
        req = torch.get_all("Requires-Dist") or []
        cuda = _version_in(req, "cuda-toolkit") or _version_in(req, "nvidia-cuda-runtime") \
            or _version_in(req, "nvidia-cuda-runtime-cu12")
        cudnn = next((hit for hit in (_version_in(req, f"nvidia-cudnn-cu{m}") for m in (12, 13)) if hit), None)
        facts["torch"] = {"version": torch["Version"], "cuda": ".".join(cuda[1].split(".")[:2]) if cuda else None,
                          "cudnn": cudnn[1].split(".")[0] if cudnn else None,
                          "from": [hit[0] for hit in (cuda, cudnn) if hit]}
    ort = metadata.get("onnxruntime-gpu")
    if ort is not None:
        req = ort.get_all("Requires-Dist") or []
        cuda = _version_in(req, "nvidia-cuda-runtime", "cuda") or _version_in(req, "nvidia-cuda-runtime-cu12", "cuda")
        cudnn = next((hit for hit in (_version_in(req, f"nvidia-cudnn-cu{m}", "cudnn") for m in (12, 13)) if hit),
                     None)
        facts["onnxruntime-gpu"] = {"version": ort["Version"], "cuda": cuda[1].split(".")[0] if cuda else None,
                                    "cudnn": cudnn[1].split(".")[0] if cudnn else None,
                                    "from": [hit[0] for hit in (cuda, cudnn) if hit]}
    return facts


def main(argv: list[str]) -> int:
    if argv[:1] == ["cuda-facts"]:
        print(json.dumps(cuda_facts(bundle_metadata(argv[1:])), indent=2))
        return 0
    cmd, ver, *rest = argv
    if cmd == "resolve":
        print("\n".join(str(r) for r in resolve(ver, Path(rest[0]))))
    elif cmd == "download":
        return download(ver, rest[1:] if rest[:1] == ["--"] else rest)
    elif cmd == "check":
        print("\n".join(check(ver, Path(rest[0]), Path(rest[1]))))
    else:
        raise SystemExit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
