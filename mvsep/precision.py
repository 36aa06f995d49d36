"""Which reduced precisions are offered, and on what: fp32 always; fp16 and bf16 only on a CUDA GPU (bf16 on one
that has it: Ampere, Hopper) and only while their SDR against fp32 on the demo pack's held-out clips, measured on
a GPU by `bench/bench_precision.py --record`, is at least `MIN_SDR_DB` (`precision_sdr.json`, read here).

Under fp16 the MDX models run a float16 ONNX graph (`onnx_io.fp16_model`) and demucs runs under float16
autocast; under bf16 demucs runs under bfloat16 autocast (no overflow: float32's exponent range) while the MDX
models stay float32 (ONNX Runtime's CUDA provider has few bfloat16 kernels).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import OptionError

TABLE = Path(__file__).with_name("precision_sdr.json")
MIN_SDR_DB = 40.0
AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def table(path: Path = TABLE) -> dict:
    """{precision: {"sdr_db": float, ...}} as last recorded; {} when there is no table."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def refusal(precision: str, device: str, bf16_supported: bool, measured: dict) -> str | None:
    """Why `precision` cannot run on `device` (None: it can)."""
    if precision == "fp32":
        return None
    if device != "cuda":
        return f"{precision} needs a CUDA GPU; this engine runs on the CPU (use fp32)"
    if precision == "bf16" and not bf16_supported:
        return "bf16 needs a GPU with bfloat16 (Ampere or newer); this one has none (use fp16 or fp32)"
    sdr = (measured.get(precision) or {}).get("sdr_db")
    if sdr is None:
        return f"{precision} is not offered yet: its SDR against fp32 has not been measured (use fp32)"
    if sdr < MIN_SDR_DB:
        return (f"{precision} is not offered: its SDR against fp32 on the demo clips is {sdr:.1f} dB, under "
                f"{MIN_SDR_DB:.0f} dB (use fp32)")
    return None


def check(precision: str, device: str) -> None:
    """Raise OptionError("precision", why) when this engine cannot offer `precision`."""
    bf16 = device == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    why = refusal(precision, device, bf16, table())
    if why:
        raise OptionError("precision", why)


def offered(device: str) -> list[str]:
    """The precisions this device offers now (for catalogues)."""
    out = []
    for p in ("fp32", *AUTOCAST):
        try:
            check(p, device)
            out.append(p)
        except OptionError:
            pass
    return out
