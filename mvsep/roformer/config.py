"""The model and demix settings of a RoFormer checkpoint, read from the yaml shipped beside it.

The published yaml files carry `!!python/tuple` tags (read here as lists by a safe loader: no object is ever
built from the file). Every setting the code does not implement is refused with the file and key named,
rather than run with different numerics.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import ModelPackError
from . import bands as bandlib

KINDS = ("mel", "bs")


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))


@dataclass(frozen=True)
class RoformerConfig:
    kind: str                       # "mel" (Mel-Band RoFormer) | "bs" (BS-RoFormer)
    dim: int
    depth: int
    bands: tuple[tuple[int, int], ...]  # (first, last) bin of each band
    time_depth: int = 1
    freq_depth: int = 1
    heads: int = 8
    dim_head: int = 64
    mask_layers: int = 2            # Linear layers per mask estimator (Mel: mask_estimator_depth + 1)
    n_fft: int = 2048
    hop: int = 441
    win: int = 2048
    chunk: int = 352800             # samples per model call
    overlap: int = 2                # inference.num_overlap: step = chunk // overlap
    batch: int = 4                  # inference.batch_size (the yaml's; the runner picks its own)
    sample_rate: int = 44100
    zero_dc: bool = False           # zero the DC bin before the iSTFT: only when the yaml says so (not the
                                    # published ones: their checkpoints were trained and scored keeping DC)

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def step(self) -> int:
        return self.chunk // self.overlap


def _get(tree: dict, path: str, default=None, *, where: str):
    node = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is _REQUIRED:
                raise ModelPackError(f"{where}: key {path} is missing", [])
            return default
        node = node[part]
    return node


_REQUIRED = object()


def read_config(path, kind: str) -> RoformerConfig:
    """The settings of a `kind` ("mel" | "bs") RoFormer from its yaml; a missing, unreadable or unsupported
    file is a `ModelPackError` naming the file and the key."""
    path = Path(path)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except FileNotFoundError:
        raise ModelPackError(f"{path.name}: the model config is missing ({path})", [path.name]) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelPackError(f"{path.name}: not a readable yaml config ({str(exc).splitlines()[0]})",
                             [path.name]) from None
    if not isinstance(tree, dict) or not isinstance(tree.get("model"), dict):
        raise ModelPackError(f"{path.name}: key model is missing", [path.name])
    try:
        return _parse(tree, kind, path.name)
    except ModelPackError as exc:
        raise ModelPackError(str(exc), [path.name]) from None
    except (TypeError, ValueError) as exc:
        raise ModelPackError(f"{path.name}: {exc}", [path.name]) from None


def _parse(tree: dict, kind: str, name: str) -> RoformerConfig:
    def get(key, default=_REQUIRED):
        return _get(tree, key, default, where=name)

    def want(key, expected, default):
        value = get(key, default)
        if value != expected:
            raise ModelPackError(f"{name}: key {key} is {value!r}; only {expected!r} is supported")

    want("model.stereo", True, False)
    want("model.num_stems", 1, 1)
    want("model.linear_transformer_depth", 0, 0)
    want("model.mlp_expansion_factor", 4, 4)
    want("model.skip_connection", False, False)
    want("model.use_pope", False, False)
    want("model.stft_normalized", False, False)
    n_fft = int(get("model.stft_n_fft", 2048))
    win = int(get("model.stft_win_length", n_fft))
    if win != n_fft:
        raise ModelPackError(f"{name}: key model.stft_win_length is {win}; only stft_n_fft ({n_fft}) is supported")
    n_bins = n_fft // 2 + 1
    if kind == "mel":
        sample_rate = int(get("model.sample_rate", 44100))
        try:
            bands = bandlib.mel_bands(sample_rate, n_fft, int(get("model.num_bands")))
        except ValueError as exc:
            raise ModelPackError(f"{name}: key model.num_bands: {exc}") from None
        mask_layers = int(get("model.mask_estimator_depth", 2)) + 1
    else:
        sizes = get("model.freqs_per_bands")
        if not isinstance(sizes, list) or not sizes:
            raise ModelPackError(f"{name}: key model.freqs_per_bands must be a list of band sizes")
        bands = bandlib.fixed_bands(sizes)
        mask_layers = int(get("model.mask_estimator_depth", 2))
        sample_rate = int(get("audio.sample_rate", 44100))
    try:
        bandlib.bins_per_band(bands, n_bins)
    except ValueError as exc:
        raise ModelPackError(f"{name}: the bands do not cover the {n_bins} bins of stft_n_fft {n_fft}: {exc}") from None
    if bands[-1][1] != n_bins - 1:
        raise ModelPackError(f"{name}: the bands end at bin {bands[-1][1]}, not at {n_bins - 1}")
    chunk = int(get("inference.chunk_size", None) or get("audio.chunk_size"))
    cfg = RoformerConfig(
        kind=kind, dim=int(get("model.dim")), depth=int(get("model.depth")), bands=tuple(bands),
        time_depth=int(get("model.time_transformer_depth", 1)), freq_depth=int(get("model.freq_transformer_depth", 1)),
        heads=int(get("model.heads", 8)), dim_head=int(get("model.dim_head", 64)), mask_layers=mask_layers,
        n_fft=n_fft, hop=int(get("model.stft_hop_length", 512)), win=win, chunk=chunk,
        overlap=int(get("inference.num_overlap", 2)), batch=int(get("inference.batch_size", 1)),
        sample_rate=sample_rate, zero_dc=bool(get("model.zero_dc", False)))
    for key, value in (("model.dim", cfg.dim), ("model.depth", cfg.depth), ("model.heads", cfg.heads),
                       ("model.dim_head", cfg.dim_head), ("model.stft_hop_length", cfg.hop),
                       ("model.mask_estimator_depth", cfg.mask_layers)):
        if value < 1:
            raise ModelPackError(f"{name}: key {key} must be >= 1, not {value}")
    if cfg.overlap < 2:  # with one, a lone chunk's fade-out would leave its last samples unweighted
        raise ModelPackError(f"{name}: key inference.num_overlap must be >= 2, not {cfg.overlap}")
    if cfg.dim_head % 2:
        raise ModelPackError(f"{name}: key model.dim_head must be even for the rotary embedding")
    if cfg.sample_rate != 44100:
        raise ModelPackError(f"{name}: the model runs at {cfg.sample_rate} Hz; only 44100 is supported")
    if cfg.chunk < 10 * cfg.overlap or cfg.chunk < n_fft:
        raise ModelPackError(f"{name}: key audio.chunk_size {cfg.chunk} is too short")
    return cfg
