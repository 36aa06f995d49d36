"""The model pack: where it is, what a request needs from it, integrity, loading, and the resident cache."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import ModelPackError

log = logging.getLogger("mvsep.pack")

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_DIRS = (Path("/models-cache"), PACKAGE_DIR / "models")
DEMO_DIR = PACKAGE_DIR / "demo_pack"
MANIFEST = "SHA256SUMS"

KIM_VOCAL_2, KIM_VOCAL_1, KIM_INST = "Kim_Vocal_2.onnx", "Kim_Vocal_1.onnx", "Kim_Inst.onnx"
# Real file names by signature, so a missing file is reported by its full name.
DEMUCS_FILES = {
    "04573f0d": "04573f0d-f3cf25b2.th", "f7e0c4bc": "f7e0c4bc-ba3fe64a.th", "d12395a8": "d12395a8-e57c48e6.th",
    "92cfc3b6": "92cfc3b6-ef3bcb9c.th", "955717e8": "955717e8-8726e21a.th", "5c90dfd2": "5c90dfd2-34c22ccb.th",
    "75fc33f5": "75fc33f5-1941ce65.th",
}


def bag_definition(name: str) -> dict:
    """The bag yaml that ships in the demucs package: models (signatures), weights, segment."""
    import demucs
    path = Path(demucs.__file__).parent / "remote" / f"{name}.yaml"
    with open(path) as f:
        return yaml.safe_load(f)


def _has_pack_files(d: Path) -> bool:
    """The dir holds a file some registered recipe runs with its default options."""
    from .recipes import all_recipes
    from .options import Options
    if not d.is_dir():
        return False
    markers = {f for r in all_recipes() for f in r.files(Options(recipe=r.name), r.default_stems) if "*" not in f}
    return any((d / f).is_file() for f in markers)


def settings_from_env(env=None) -> dict:
    """The pack's environment, parsed here only: SPARK_MODELS_DIR (an explicit pack dir) and SPARK_DEMO_PACK
    (0/false/no/off: never fall back to the demo pack). -> {"models_dir": str | None, "allow_demo": bool}; the
    service's Config, the CLI and the RunPod worker pass these to `Separator`."""
    env = os.environ if env is None else env
    demo = (env.get("SPARK_DEMO_PACK") or "").strip().lower()
    return {"models_dir": env.get("SPARK_MODELS_DIR") or None,
            "allow_demo": demo not in ("0", "false", "no", "off")}


def locate(model_dir: str | os.PathLike | None = None, allow_demo: bool | None = None) -> tuple[Path, str]:
    """The pack dir and its kind ("real" or "demo").

    An explicit dir is used as given, even empty: the operator asked for it. Otherwise the first default dir
    holding model files; otherwise the demo pack shipped in the repo, unless `allow_demo` is False (production
    boxes should not silently serve demo quality: SPARK_DEMO_PACK=0, see `settings_from_env`).
    """
    if model_dir:
        d = Path(model_dir)
        return d, "demo" if d.resolve() == DEMO_DIR else "real"
    for d in DEFAULT_DIRS:
        if _has_pack_files(d):
            return d, "real"
    if allow_demo is not False and _has_pack_files(DEMO_DIR):
        log.warning("no model pack found in %s: using the DEMO pack %s (small models, demo quality; "
                    "SPARK_DEMO_PACK=0 disables this)", ", ".join(map(str, DEFAULT_DIRS)), DEMO_DIR)
        return DEMO_DIR, "demo"
    return DEFAULT_DIRS[0], "real"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Unit:
    """One loadable thing: an ONNX session or a demucs model/bag, with its resident size."""
    key: str
    obj: object
    nbytes: int


class ModelPack:
    def __init__(self, model_dir=None, device: str = "cpu", gpu_id: int = 0, large_gpu: bool = False,
                 memory_budget_mb: int | None = None, allow_demo: bool | None = None, threads: int | None = None):
        self.dir, self.kind = locate(model_dir, allow_demo)
        self.device, self.gpu_id, self.large_gpu = device, gpu_id, large_gpu
        self.threads = threads
        self.budget = None if large_gpu else (memory_budget_mb or _default_budget_mb(device, gpu_id)) << 20
        self._units: OrderedDict[str, Unit] = OrderedDict()
        self._verified: dict[str, tuple] = {}  # name -> (size, mtime_ns) already checked against the manifest
        self._lock = threading.RLock()

    # --- files ----------------------------------------------------------------------------------------------
    def file(self, name: str) -> Path | None:
        if "*" in name:
            hits = sorted(self.dir.glob(name))
            return hits[0] if hits else None
        p = self.dir / name
        return p if p.is_file() else None

    def missing(self, names) -> list[str]:
        """The files of `names` this pack lacks."""
        return [f for f in names if self.file(f) is None]

    def share_verified(self, other: "ModelPack") -> None:
        """Trust what `other` (the same files) verified already: one sha256 pass for several devices' packs."""
        self._verified = other._verified

    def verify(self, names: list[str]) -> None:
        manifest = self.dir / MANIFEST
        if not manifest.is_file():
            return
        sums = {}
        for line in manifest.read_text().splitlines():
            if line.strip():
                digest, _, name = line.strip().partition(" ")
                sums[name.strip().lstrip("*")] = digest.lower()
        for name in names:
            path = self.file(name)
            listed = path.name if path else name
            if listed not in sums:
                raise ModelPackError(f"{listed} is not listed in the pack's {MANIFEST}", [listed])
            stat = path.stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
            if self._verified.get(listed) == stamp:
                continue
            if sha256_file(path) != sums[listed]:
                raise ModelPackError(f"{listed} does not match its sha256 in {MANIFEST} (corrupt or wrong file)",
                                     [listed])
            self._verified[listed] = stamp

    # --- loading ------------------------------------------------------------------------------------------
    def onnx(self, name: str, half: bool = False):
        """The ONNX Runtime session of `name`; `half`: its float16 version (CUDA only)."""
        suffix = ":fp16" if half else ""
        return self._get(f"onnx:{name}{suffix}", lambda: self._load_onnx(name, half))

    def demucs(self, name: str):
        """A single checkpoint by file name, or a bag by its demucs name (htdemucs_ft, hdemucs_mmi, ...)."""
        return self._get(f"demucs:{name}", lambda: self._load_demucs(name))

    def cached(self, key: str, load, nbytes: int = 0):
        """A recipe's own loaded model under `key`, kept in the resident cache (budget, LRU) like the
        others: `load()` -> the model, `nbytes` its resident size."""
        return self._get(f"custom:{key}", lambda: Unit(f"custom:{key}", load(), nbytes))

    def resident(self) -> list[str]:
        return list(self._units)

    def release(self) -> None:
        with self._lock:
            self._units.clear()
        _empty_cuda_cache(self.device)

    def _get(self, key: str, load):
        with self._lock:
            unit = self._units.get(key)
            if unit is not None:
                self._units.move_to_end(key)
                return unit.obj
            unit = load()
            self._units[key] = unit
            self._evict(keep=key)
            return unit.obj

    def _evict(self, keep: str) -> None:
        """Drop least recently used units while over the budget (never the one just loaded)."""
        if self.budget is None:
            return
        while sum(u.nbytes for u in self._units.values()) > self.budget and len(self._units) > 1:
            key = next(k for k in self._units if k != keep)
            log.info("model budget %d MB: unloading %s", self.budget >> 20, key)
            del self._units[key]
        _empty_cuda_cache(self.device)

    def _load_onnx(self, name: str, half: bool = False) -> Unit:
        import onnxruntime as ort

        from .onnx_io import CUDA, fp16_model, providers
        path = self.file(name)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if self.threads:
            opts.intra_op_num_threads = self.threads
        # Same GPU as torch: the original always ran ONNX Runtime on device 0.
        chosen = providers(self.device, self.gpu_id)
        model = fp16_model(path) if half else str(path)
        session = ort.InferenceSession(model, opts, providers=chosen)
        session.mvsep_name = name + (" fp16" if half else "")  # what `mdx.model_key` keys batch sizes by
        if self.device == "cuda" and CUDA not in session.get_providers():
            log.warning("onnxruntime fell back to the CPU for %s (CUDA provider failed to initialise)", name)
        return Unit(f"onnx:{name}{':fp16' if half else ''}", session, path.stat().st_size)

    def _load_demucs(self, name: str) -> Unit:
        from demucs.apply import BagOfModels
        from demucs.states import load_model

        def load(path: Path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = load_model(path)
            return model.eval().to(self.torch_device())

        if name.endswith(".th"):
            path = self.file(name)
            model = load(path)
            size = path.stat().st_size
        else:
            bag = bag_definition(name)
            paths = [self.file(DEMUCS_FILES.get(sig, f"{sig}-*.th")) for sig in bag["models"]]
            model = BagOfModels([load(p) for p in paths], bag.get("weights"), bag.get("segment"))
            size = sum(p.stat().st_size for p in paths)
        return Unit(f"demucs:{name}", model, size)

    def torch_device(self):
        import torch
        return torch.device(f"cuda:{self.gpu_id}" if self.device == "cuda" else "cpu")


def _default_budget_mb(device: str, gpu_id: int) -> int:
    """Resident models may use 40% of the GPU's memory, or a quarter of RAM on the CPU."""
    if device == "cuda":
        import torch
        return int(torch.cuda.get_device_properties(gpu_id).total_memory * 0.4) >> 20
    try:
        return (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4) >> 20
    except (ValueError, OSError):
        return 4096


def _empty_cuda_cache(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.empty_cache()
