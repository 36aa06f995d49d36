"""Acceptance check of the RoFormer recipes against MSST's own code (ZFTurbo's Music-Source-Separation-Training,
packaged on PyPI as `msst`): the same random-weight checkpoint, in the real format and under the real name,
loaded strictly into MSST's `MelBandRoformer` / `BSRoformer` (zero_dc false) and run through MSST's `demix`
(batch 1, no autocast), against this project's model and windowed demix. Prints the max abs difference of
vocals and instrumental (the spec's bar: 1e-4) and the CPU seconds per chunk of each.

MSST pins an older torch and pulls in librosa, so it is not a project dependency; install it beside the venv:

    .venv/bin/pip install --no-deps --target /work/cache/msst_site msst==0.1.0 beartype rotary-embedding-torch \
        ml-collections absl-py librosa audioread decorator joblib lazy_loader msgpack numba llvmlite pooch scipy \
        scikit-learn threadpoolctl platformdirs requests cloudpickle
    PYTHONPATH=/work/cache/msst_site .venv/bin/python bench/check_roformer_msst.py --size small
    PYTHONPATH=/work/cache/msst_site nice -n 19 .venv/bin/python bench/check_roformer_msst.py --size full --seconds 6
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml


from mvsep.roformer.demix import RoformerRunner  # noqa: E402
from mvsep.roformer.loader import load_model  # noqa: E402
from mvsep.signals import ArraySignal  # noqa: E402
from testkit import roformer as kit  # noqa: E402


def msst_model(kind: str, ckpt: Path, cfg_path: Path):
    from ml_collections import ConfigDict
    from msst.models.bs_roformer.bs_roformer import BSRoformer
    from msst.models.bs_roformer.mel_band_roformer import MelBandRoformer
    config = ConfigDict(yaml.load(cfg_path.read_text(), Loader=yaml.FullLoader))
    cls = MelBandRoformer if kind == "mel" else BSRoformer
    params = dict(config.model)
    params.setdefault("zero_dc", False)  # the published checkpoints were trained without zeroing DC
    model = cls(**params)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True), strict=True)
    config.inference.batch_size = 1
    return model.eval(), config


def ours(model, mix: np.ndarray) -> np.ndarray:
    out = np.zeros((2, len(mix)), np.float32)

    def emit(start, block):
        out[:, start:start + block.shape[1]] = block

    RoformerRunner(torch.device("cpu"), 1).run(model, ArraySignal(mix).read, len(mix), emit)
    return out


def check(kind: str, size: str, seconds: float, work: Path, seed: int, zero_dc: bool = False) -> dict:
    from msst.utils.model_utils import demix
    chunk = kit.SIZES[size]["chunk"]
    ckpt, cfg_path = kit.write(work / kind, kind, size, seed)
    if zero_dc:  # a yaml that asks for it (MSST's newer default), on both sides
        cfg_path.write_text(cfg_path.read_text().replace("\nmodel:\n", "\nmodel:\n  zero_dc: true\n"))
    n = int(seconds * 44100) if seconds else 5 * chunk // 2 + 77
    rng = np.random.default_rng(seed)
    mix = (rng.standard_normal((n, 2)) * 0.1 + np.array([0.05, -0.03])).astype(np.float32)  # DC shows zero_dc
    chunks = RoformerRunner.chunk_count(n, chunk, chunk // 2)
    model = load_model(ckpt, cfg_path, kind)
    t0 = time.process_time()
    vocals = ours(model, mix)
    t_ours = time.process_time() - t0
    del model
    theirs, config = msst_model(kind, ckpt, cfg_path)
    t0 = time.process_time()
    want = demix(config, theirs, mix.T.copy(), torch.device("cpu"), "mel_band_roformer" if kind == "mel"
                 else "bs_roformer")["vocals"]
    t_msst = time.process_time() - t0
    want = np.asarray(want, np.float32).reshape(2, n)
    inst, want_inst = mix.T - vocals, mix.T - want
    return {"kind": kind, "size": size, "zero_dc": zero_dc, "frames": n, "chunks": chunks,
            "vocals_max_abs": float(np.abs(vocals - want).max()),
            "instrumental_max_abs": float(np.abs(inst - want_inst).max()),
            "vocals_peak": float(np.abs(want).max()),
            "cpu_s_per_chunk_ours": round(t_ours / chunks, 2), "cpu_s_per_chunk_msst": round(t_msst / chunks, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=tuple(kit.SIZES), default="small")
    ap.add_argument("--kind", choices=("mel", "bs"), action="append")
    ap.add_argument("--seconds", type=float, default=0.0, help="input length (default: 2.5 chunks + 77 samples)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--zero-dc", action="store_true", help="both yaml files set model.zero_dc: true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kind or ("mel", "bs"):
            res = check(kind, args.size, args.seconds, Path(tmp), args.seed, args.zero_dc)
            print(res, flush=True)
            worst = max(worst, res["vocals_max_abs"], res["instrumental_max_abs"])
    print(f"worst max abs difference {worst:.3g} (bar 1e-4): {'ok' if worst <= 1e-4 else 'FAIL'}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
