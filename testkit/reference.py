"""Plain, slow reference of the MDX23 ensemble, written straight from docs/mdx23-algorithm.md.

Whole file at once, like the original program: no streaming, no batching tricks, no caching beyond one call.
The engine's stems must equal these within 1e-4 (demucs shifts = 0 on both sides).
"""
from __future__ import annotations

import contextlib
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import yaml

import demucs
import demucs.apply
from demucs.apply import BagOfModels, apply_model
from demucs.states import load_model

# section M constants
N_FFT = 7680
HOP = 1024
DIM_F = 3072
DIM_T = 256
N_BINS = N_FFT // 2 + 1             # 3841
CHUNK = HOP * (DIM_T - 1)           # 261120
TRIM = N_FFT // 2                   # 3840
GEN = CHUNK - 2 * TRIM              # 253440

VOCALS_DEMUCS = "04573f0d-f3cf25b2.th"

# four-stem step: (bag name, which overlap, weights drums, bass, other, vocals)
FOUR_STEM_MODELS = [
    ("htdemucs_ft", "small", (18, 19, 14, 10)),
    ("htdemucs", "large", (2, 4, 2, 1)),
    ("htdemucs_6s", "large", (4, 5, 5, 8)),
    ("hdemucs_mmi", "large", (9, 8, 10, 9)),
]


# ---------------------------------------------------------------- MDX (demix_full / demix_base)

def _session(onnx_path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def _demix_base(session, p: np.ndarray) -> np.ndarray:
    """p [2, n] -> [2, n]."""
    n = p.shape[1]
    pad = GEN - n % GEN  # a whole extra GEN when n % GEN == 0
    q = np.concatenate([np.zeros((2, TRIM), np.float32), p, np.zeros((2, pad), np.float32),
                        np.zeros((2, TRIM), np.float32)], axis=1)
    pieces = [q[:, i:i + CHUNK] for i in range(0, n + pad, GEN)]
    waves = torch.tensor(np.stack(pieces), dtype=torch.float32)  # [P, 2, CHUNK]
    n_pieces = waves.shape[0]
    window = torch.hann_window(N_FFT, periodic=True)

    spec = torch.stft(waves.reshape(-1, CHUNK), n_fft=N_FFT, hop_length=HOP, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    spec = torch.view_as_real(spec)                              # [P*2, 3841, 256, 2]
    spec = spec.permute(0, 3, 1, 2).reshape(n_pieces, 4, N_BINS, DIM_T)[:, :, :DIM_F]

    out = session.run(None, {"input": spec.numpy()})[0]
    out = torch.tensor(out, dtype=torch.float32)                 # [P, 4, 3072, 256]

    out = torch.cat([out, torch.zeros(n_pieces, 4, N_BINS - DIM_F, DIM_T)], dim=2)
    out = out.reshape(n_pieces, 2, 2, N_BINS, DIM_T).reshape(n_pieces * 2, 2, N_BINS, DIM_T)
    out = torch.view_as_complex(out.permute(0, 2, 3, 1).contiguous())
    wave = torch.istft(out, n_fft=N_FFT, hop_length=HOP, window=window, center=True)
    wave = wave.reshape(n_pieces, 2, CHUNK)[:, :, TRIM:-TRIM]   # [P, 2, GEN]
    wave = wave.permute(1, 0, 2).reshape(2, n_pieces * GEN)     # pieces end to end per channel
    return wave[:, :-pad].numpy()


def _demix_full(session, x: np.ndarray, chunk_size: int, overlap: float) -> np.ndarray:
    """x [2, T] -> [2, T]: box average of demix_base over chunks."""
    total = x.shape[1]
    step = int(chunk_size * (1 - overlap))
    out = np.zeros(x.shape, np.float32)
    count = np.zeros(x.shape, np.float32)
    for start in range(0, total, step):
        end = min(start + chunk_size, total)
        out[:, start:end] += _demix_base(session, x[:, start:end])
        count[:, start:end] += 1
    return out / count


def reference_mdx(onnx_path, x, chunk_size, overlap) -> np.ndarray:
    """M(session, x, C, o): x [2, T] -> [2, T]."""
    return _demix_full(_session(onnx_path), np.asarray(x, np.float32), chunk_size, overlap)


# ---------------------------------------------------------------- demucs

def reference_demucs(model, x, overlap, draws=None) -> np.ndarray:
    """P(model, x, overlap) = 0.5 * A(x) + 0.5 * (-A(-x)): x [2, T] -> [S, 2, T].

    shifts = 0, or with `draws` = {"+": offsets, "-": offsets}: the original's two apply_model calls with
    shifts = len(offsets) per (sub-)model, each drawing its own offsets (here given instead of random)."""
    mix = torch.tensor(np.asarray(x, np.float32))

    def a(sig, offsets):
        shifts = 0
        if offsets is not None:
            shifts = len(offsets) // (len(model.models) if isinstance(model, BagOfModels) else 1)
        with torch.no_grad(), _given_draws(offsets):
            return apply_model(model, sig[None], shifts=shifts, split=True, overlap=overlap)[0]

    draws = draws or {}
    return (0.5 * a(mix, draws.get("+")) + 0.5 * (-a(-mix, draws.get("-")))).numpy()


@contextlib.contextmanager
def _given_draws(offsets):
    """apply_model's random.randint answers `offsets` in order (sub-model by sub-model, shift by shift)."""
    if offsets is None:
        yield
        return
    queue = list(offsets)
    original = demucs.apply.random
    demucs.apply.random = types.SimpleNamespace(randint=lambda a, b: queue.pop(0))
    try:
        yield
    finally:
        demucs.apply.random = original
    assert not queue, "apply_model drew fewer offsets than given"


def _pack_file(pack_dir: Path, signature: str) -> Path:
    found = sorted(pack_dir.glob(f"{signature}-*.th"))
    if not found:
        raise FileNotFoundError(f"no {signature}-*.th in {pack_dir}")
    return found[0]


def load_bag(pack_dir, name: str) -> BagOfModels:
    """A bag from the yaml shipped in the demucs package, its models taken from the pack."""
    pack_dir = Path(pack_dir)
    spec = yaml.safe_load((Path(demucs.__file__).parent / "remote" / f"{name}.yaml").read_text())
    models = [load_model(_pack_file(pack_dir, sig)) for sig in spec["models"]]
    return BagOfModels(models, spec.get("weights"), spec.get("segment"))


# ---------------------------------------------------------------- the ensemble

def reference_separate(pack_dir, mix, *, only_vocals=False, single_onnx=False, use_kim_model_1=False,
                       overlap_large=0.6, overlap_small=0.5, chunk_size=1_000_000) -> dict[str, np.ndarray]:
    """mix float32 [T, 2] at 44100 -> {stem: float32 [T, 2]}."""
    pack_dir = Path(pack_dir)
    overlap_large = min(max(overlap_large, 0.0), 0.99)
    overlap_small = min(max(overlap_small, 0.0), 0.99)
    mix = np.asarray(mix, np.float32)
    if mix.ndim == 1:
        mix = np.stack([mix, mix], axis=1)
    x = np.ascontiguousarray(mix.T)  # [2, T]

    # vocals ensemble
    vocals_model = load_model(pack_dir / VOCALS_DEMUCS)
    v_demucs = reference_demucs(vocals_model, x, overlap_large)[vocals_model.sources.index("vocals")]
    vocal_onnx = "Kim_Vocal_1.onnx" if use_kim_model_1 else "Kim_Vocal_2.onnx"
    v1 = reference_mdx(pack_dir / vocal_onnx, x, chunk_size, overlap_large)
    if single_onnx:
        vocals = (6 * v1 + 1 * v_demucs) / 7
    else:
        v2 = x - (-reference_mdx(pack_dir / "Kim_Inst.onnx", -x, chunk_size, overlap_large))
        vocals = (12 * v1 + 8 * v2 + 3 * v_demucs) / 23
    instrum = x - vocals
    result = {"vocals": vocals, "instrumental": instrum}

    if not only_vocals:
        overlaps = {"small": overlap_small, "large": overlap_large}
        sums = np.zeros((3,) + x.shape, np.float32)  # drums, bass, other
        total = np.zeros(3, np.float32)
        for name, which, weights in FOUR_STEM_MODELS:
            out = reference_demucs(load_bag(pack_dir, name), instrum, overlaps[which])
            if name == "htdemucs_6s":  # drums, bass, other, vocals, guitar, piano
                out[2] += out[4] + out[5]
                out = out[:4]
            for s in range(3):
                sums[s] += weights[s] * out[s]
                total[s] += weights[s]
        d, b, o = (sums[s] / total[s] for s in range(3))
        v = vocals
        o1 = (2 * np.clip(x - v - d - b, -1, 1) + o) / 3
        d1 = (np.clip(x - v - b - o, -1, 1) + 2 * d) / 3
        b1 = (np.clip(x - v - d - o, -1, 1) + 2 * b) / 3
        other = x - v - b1 - d1
        drums = x - v - b1 - o1
        bass = x - v - d1 - o1
        result.update(drums=drums, bass=bass, other=other, instrumental2=bass + drums + other)

    return {k: np.ascontiguousarray(val.T, dtype=np.float32) for k, val in result.items()}


# ---------------------------------------------------------------- the cinematic recipe (dubbing-stems.md)

CINEMATIC_SET = ("97d170e1-a778de4a.th", "97d170e1-dbb4db15.th", "97d170e1-e41a5468.th")
CINEMATIC_DEFAULT = "97d170e1-dbb4db15.th"


def reference_cinematic(pack_dir, mix, *, high_quality=False) -> dict[str, np.ndarray]:
    """mix float32 [T, 2] at 44100 -> {dialog, music, effects, background, background2: float32 [T, 2]}.
    o = mean over the checkpoints of apply_model(m, mix, shifts=0, split=True, overlap=0.8) (one polarity)."""
    pack_dir = Path(pack_dir)
    x = torch.tensor(np.ascontiguousarray(np.asarray(mix, np.float32).T))
    names = CINEMATIC_SET if high_quality else (CINEMATIC_DEFAULT,)
    outs = []
    for name in names:
        with torch.no_grad():
            outs.append(apply_model(load_model(pack_dir / name), x[None], shifts=0, split=True, overlap=0.8)[0])
    o = (sum(outs) / len(outs)).numpy()
    music, effects, dialog = o[0], o[1], o[2]
    result = {"dialog": dialog, "music": music, "effects": effects, "background": x.numpy() - dialog,
              "background2": music + effects}
    return {k: np.ascontiguousarray(v.T, dtype=np.float32) for k, v in result.items()}
