"""Small model packs in the real formats and file names, built at run time.

Real weights cannot be fetched by tests, so tests, benchmarks and boot-chain checks use packs made here:
MDX-Net ONNX files with the real signature and demucs checkpoints saved exactly like demucs saves them
(loadable with `demucs.states.load_model`), only tiny and with seeded random (or known) weights.

Command line: python -m testkit.toypack DIR [--kind random|bandsplit|identity] [--stems all|vocals] [--seed N]
"""
from __future__ import annotations

import argparse
import hashlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import torch
from demucs.states import capture_init
from onnx import TensorProto, helper, numpy_helper

PACK_FILES: dict[str, str] = {
    "kim_vocal_2": "Kim_Vocal_2.onnx",
    "kim_vocal_1": "Kim_Vocal_1.onnx",
    "kim_inst": "Kim_Inst.onnx",
    "demucs_vocals": "04573f0d-f3cf25b2.th",
    "htdemucs_ft_drums": "f7e0c4bc-ba3fe64a.th",
    "htdemucs_ft_bass": "d12395a8-e57c48e6.th",
    "htdemucs_ft_other": "92cfc3b6-ef3bcb9c.th",
    "htdemucs": "955717e8-8726e21a.th",
    "htdemucs_6s": "5c90dfd2-34c22ccb.th",
    "hdemucs_mmi": "75fc33f5-1941ce65.th",
}
# The cinematic recipe's checkpoints (MVSEP-CDX23): three sources music, effects, dialog.
CINEMATIC_FILES: tuple[str, ...] = ("97d170e1-a778de4a.th", "97d170e1-dbb4db15.th", "97d170e1-e41a5468.th")
SOURCES_CINEMATIC = ("music", "effects", "dialog")
VOCALS_FILES: tuple[str, ...] = tuple(
    PACK_FILES[r] for r in ("kim_vocal_2", "kim_vocal_1", "kim_inst", "demucs_vocals"))
MANIFEST = "SHA256SUMS"

SAMPLERATE = 44100
SOURCES_4 = ("drums", "bass", "other", "vocals")
SOURCES_6 = SOURCES_4 + ("guitar", "piano")
TOY_SEGMENT = Fraction(2)  # shorter than the real 39/5 s so short test inputs cross several windows

# MDX-Net signature (Kim models): complex spectrogram as 4 channels, 3072 bins x 256 frames.
MDX_N_FFT, MDX_DIM_F, MDX_DIM_T = 7680, 3072, 256

# Small demucs configs: same classes and code paths as the real models, a few thousand times cheaper.
SMALL_HTDEMUCS = dict(channels=4, growth=2, depth=4, t_layers=1, t_heads=2, dconv_comp=2)
SMALL_HDEMUCS = dict(channels=4, growth=2, depth=6, dconv_comp=2)
OUTPUT_GAIN = 10.0
# Full-size configurations (the classes' own defaults, the size of the released models) for benchmarks.
FULL_HTDEMUCS = dict(channels=48, growth=2, depth=4, t_layers=5, t_heads=8, dconv_comp=8)
FULL_HDEMUCS = dict(channels=48, growth=2, depth=6, dconv_comp=4)
FULL_SEGMENT = Fraction(39, 5)


# ---------------------------------------------------------------- MDX ONNX

def _band_bin(cutoff_hz: float) -> int:
    return int(round(cutoff_hz * MDX_N_FFT / SAMPLERATE))


def write_mdx_onnx(path, kind: str = "random", seed: int = 0, cutoff_hz: float | None = None,
                   keep: str = "low") -> Path:
    """ONNX model with the MDX signature: input "input" float32 [N, 4, 3072, 256] -> same shape.

    kind "random": out = input * sigmoid(conv3x3(conv1x1(input))), seeded weights (nonlinear and not
    odd, so the polarity of the input matters); "identity": out = input; "band": out = input * mask[f],
    mask 1 below (keep="low") / at-or-above (keep="high") bin round(cutoff_hz * 7680 / 44100).
    """
    path = Path(path)
    shape = ["N", 4, MDX_DIM_F, MDX_DIM_T]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)
    inits, nodes = [], []
    if kind == "identity":
        nodes.append(helper.make_node("Identity", ["input"], ["output"]))
    elif kind == "band":
        if cutoff_hz is None or keep not in ("low", "high"):
            raise ValueError("band needs cutoff_hz and keep='low'|'high'")
        low = np.arange(MDX_DIM_F) < _band_bin(cutoff_hz)
        mask = (low if keep == "low" else ~low).astype(np.float32).reshape(1, 1, MDX_DIM_F, 1)
        inits.append(numpy_helper.from_array(mask, "mask"))
        nodes.append(helper.make_node("Mul", ["input", "mask"], ["output"]))
    elif kind == "heavy":  # cost of the order of a real MDX-Net: a 32-channel conv stack at full resolution
        rng = np.random.default_rng(seed)
        chans, prev = [32, 32, 32, 32, 4], "input"
        cin = 4
        for i, cout in enumerate(chans):
            k = 1 if i == len(chans) - 1 else 3
            w = (rng.standard_normal((cout, cin, k, k)) * (0.02 if i == 0 else 0.1)).astype(np.float32)
            inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")]
            out = "pre" if i == len(chans) - 1 else f"h{i}"
            nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [out], kernel_shape=[k, k],
                                          pads=[k // 2] * 4))
            if out != "pre":
                nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
                out = f"r{i}"
            prev, cin = out, cout
        nodes += [helper.make_node("Sigmoid", ["pre"], ["mask"]),
                  helper.make_node("Mul", ["input", "mask"], ["output"])]
    elif kind == "random":
        rng = np.random.default_rng(seed)
        # 1x1 conv scaled down: spectrogram values reach the hundreds, keep the sigmoid out of saturation
        w1 = (rng.standard_normal((4, 4, 1, 1)) * 0.02).astype(np.float32)
        b1 = (rng.standard_normal(4) * 0.5).astype(np.float32)
        w2 = (rng.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32)
        b2 = (rng.standard_normal(4) * 0.5).astype(np.float32)
        for name, arr in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
            inits.append(numpy_helper.from_array(arr, name))
        nodes += [
            helper.make_node("Conv", ["input", "w1", "b1"], ["h1"], kernel_shape=[1, 1]),
            helper.make_node("Conv", ["h1", "w2", "b2"], ["h2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Sigmoid", ["h2"], ["mask"]),
            helper.make_node("Mul", ["input", "mask"], ["output"]),
        ]
    else:
        raise ValueError(f"unknown MDX kind {kind!r}")
    graph = helper.make_graph(nodes, f"toy_mdx_{kind}", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="testkit.toypack")
    model.ir_version = 8  # opset 17 era; loads with any recent onnxruntime
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


# ---------------------------------------------------------------- demucs checkpoints

def _save_demucs(path, model: torch.nn.Module, training_args: dict, half: bool = True) -> Path:
    """Save like demucs.states.serialize_model: {klass, args, kwargs, state, training_args}."""
    path = Path(path)
    args, kwargs = model._init_args_kwargs
    state = {k: v.detach().to("cpu", dtype=torch.half if half and v.is_floating_point() else None)
             for k, v in model.state_dict().items()}
    package = {"klass": model.__class__, "args": args, "kwargs": kwargs, "state": state,
               "training_args": training_args}
    torch.save(package, path)
    return path


def _seeded(klass, seed: int, **kwargs):
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG alone
        torch.manual_seed(seed)
        model = klass(**kwargs)
    # At init the stems come out ~100x quieter than the mix (mostly a DC offset); louder last layers
    # make them vary with the input, so engine-vs-reference checks at 1e-4 mean something.
    with torch.no_grad():
        for layer in (model.decoder[-1].conv_tr, model.tdecoder[-1].conv_tr):
            layer.weight.mul_(OUTPUT_GAIN)
    return model


def write_htdemucs(path, sources=SOURCES_4, seed: int = 0, segment=TOY_SEGMENT, **small_config) -> Path:
    """Small HTDemucs checkpoint with seeded random weights (segment kept a Fraction, like demucs)."""
    from demucs.htdemucs import HTDemucs
    config = {**SMALL_HTDEMUCS, **small_config}
    model = _seeded(HTDemucs, seed, sources=list(sources), audio_channels=2, samplerate=SAMPLERATE,
                    segment=Fraction(segment), **config)
    return _save_demucs(path, model, {"toy": True, "model": "htdemucs", "seed": seed})


def write_hdemucs(path, sources=SOURCES_4, seed: int = 0, **small_config) -> Path:
    """Small HDemucs checkpoint (hdemucs_mmi's class) with seeded random weights."""
    from demucs.hdemucs import HDemucs
    config = {**SMALL_HDEMUCS, **small_config}
    model = _seeded(HDemucs, seed, sources=list(sources), audio_channels=2, samplerate=SAMPLERATE,
                    segment=44, **config)
    return _save_demucs(path, model, {"toy": True, "model": "hdemucs", "seed": seed})


class BandSplitDemucs(torch.nn.Module):
    """Demucs-format model with known output: vocals = the mix below cutoff_hz, other = the rest (with the
    cinematic sources: dialog = below, music = the rest, effects = silence).

    The split is an FFT brick wall over each window it is given. No `valid_length` method, so
    demucs.apply feeds windows unpadded. Has one parameter (demucs' bag code asks for one) and one buffer.
    """

    @capture_init  # records (args, kwargs) for the checkpoint, like demucs models
    def __init__(self, cutoff_hz: float = 4000.0, sources=SOURCES_4, segment=TOY_SEGMENT,
                 samplerate: int = SAMPLERATE, audio_channels: int = 2, tag: int = 0):
        super().__init__()
        self.sources = list(sources)
        self.samplerate = samplerate
        self.audio_channels = audio_channels
        self.segment = Fraction(segment)
        self.gain = torch.nn.Parameter(torch.ones(()))
        self.register_buffer("cutoff", torch.tensor(float(cutoff_hz), dtype=torch.float64))
        self.register_buffer("tag", torch.tensor(int(tag)))  # the seed, so packs differ by seed

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        length = mix.shape[-1]
        freqs = torch.fft.rfftfreq(length, 1.0 / self.samplerate, dtype=torch.float64, device=mix.device)
        spec = torch.fft.rfft(mix.double(), dim=-1)
        low = torch.fft.irfft(spec * (freqs < self.cutoff), n=length, dim=-1).to(mix.dtype)
        high = mix - low
        out = torch.zeros(mix.shape[0], len(self.sources), *mix.shape[1:], dtype=mix.dtype,
                          device=mix.device)
        low_src, high_src = ("dialog", "music") if "dialog" in self.sources else ("vocals", "other")
        out[:, self.sources.index(low_src)] = low
        out[:, self.sources.index(high_src)] = high
        return out * self.gain


def write_bandsplit_demucs(path, cutoff_hz: float, seed: int = 0, segment=TOY_SEGMENT, sources=SOURCES_4) -> Path:
    model = BandSplitDemucs(cutoff_hz=float(cutoff_hz), sources=list(sources), segment=Fraction(segment),
                            samplerate=SAMPLERATE, audio_channels=2, tag=seed)
    return _save_demucs(path, model, {"toy": True, "model": "bandsplit", "seed": seed}, half=False)


class FaultyDemucs(BandSplitDemucs):
    """BandSplitDemucs that fails on a marked input: a window whose peak passes `crest` times its RMS (a
    click in near-silence; music and test tones stay far below) makes it sleep `sleep_s` seconds (a hung
    model) or raise the CUDA error text of an illegal memory access (a fatal device error). Service tests
    put it in a pack to inject these faults into the real worker."""

    def __init__(self, fault: str = "sleep", crest: float = 30.0, sleep_s: float = 3600.0, cutoff_hz: float = 4000.0,
                 sources=SOURCES_4, segment=TOY_SEGMENT, samplerate: int = SAMPLERATE, audio_channels: int = 2,
                 tag: int = 0):
        kwargs = dict(cutoff_hz=cutoff_hz, sources=sources, segment=segment, samplerate=samplerate,
                      audio_channels=audio_channels, tag=tag)
        super().__init__(**kwargs)
        self.fault, self.crest, self.sleep_s = fault, float(crest), float(sleep_s)
        # what the checkpoint re-creates it from (the parent's capture_init recorded only its own arguments)
        self._init_args_kwargs = ((), dict(kwargs, fault=fault, crest=crest, sleep_s=sleep_s))

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        rms = mix.double().pow(2).mean().sqrt()
        if mix.abs().max() > self.crest * rms + 1e-12:
            if self.fault == "sleep":
                import time
                time.sleep(self.sleep_s)
            else:
                raise RuntimeError("CUDA error: an illegal memory access was encountered\n"
                                   "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.")
        return super().forward(mix)


def write_faulty_demucs(path, fault: str = "sleep", sleep_s: float = 3600.0, cutoff_hz: float = 4000.0) -> Path:
    model = FaultyDemucs(fault=fault, sleep_s=sleep_s, cutoff_hz=float(cutoff_hz), sources=list(SOURCES_4),
                         segment=TOY_SEGMENT, samplerate=SAMPLERATE, audio_channels=2)
    return _save_demucs(path, model, {"toy": True, "model": f"faulty-{fault}"}, half=False)


# ---------------------------------------------------------------- packs

def write_manifest(pack_dir) -> Path:
    """SHA256SUMS in `sha256sum` format, every file of the pack listed."""
    pack_dir = Path(pack_dir)
    lines = []
    for f in sorted(p for p in pack_dir.iterdir() if p.is_file() and p.name != MANIFEST):
        lines.append(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n")
    out = pack_dir / MANIFEST
    out.write_text("".join(lines))
    return out


def build_pack(pack_dir, kind: str = "random", stems: str = "all", seed: int = 0,
               cutoff_hz: float = 4000.0, manifest: bool = True, size: str = "small") -> Path:
    """Write a pack. kind: random | bandsplit | identity; stems: all | vocals (VOCALS_FILES only);
    size: small (tests) | full (random weights in the released models' sizes, for benchmarks)."""
    if size not in ("small", "full"):
        raise ValueError(f"unknown size {size!r}")
    full = size == "full"
    ht = dict(FULL_HTDEMUCS, segment=FULL_SEGMENT) if full else {}
    hd = FULL_HDEMUCS if full else {}
    if kind not in ("random", "bandsplit", "identity"):
        raise ValueError(f"unknown pack kind {kind!r}")
    if stems not in ("all", "vocals"):
        raise ValueError(f"unknown stems {stems!r}")
    pack_dir = Path(pack_dir)
    pack_dir.mkdir(parents=True, exist_ok=True)
    roles = list(PACK_FILES) if stems == "all" else [r for r in PACK_FILES if PACK_FILES[r] in VOCALS_FILES]
    for i, role in enumerate(roles):
        path = pack_dir / PACK_FILES[role]
        s = seed * 1000 + i  # every file its own weights
        if role.startswith("kim_"):
            if kind == "identity":
                write_mdx_onnx(path, "identity")
            elif kind == "bandsplit":
                # vocals models keep the low band; Kim_Inst keeps the high band, so
                # mix - (-M(Kim_Inst, -mix)) is the low band too
                write_mdx_onnx(path, "band", cutoff_hz=cutoff_hz, keep="high" if role == "kim_inst" else "low")
            else:
                write_mdx_onnx(path, "heavy" if full else "random", seed=s)
        elif role == "demucs_vocals" and kind == "bandsplit":
            write_bandsplit_demucs(path, cutoff_hz, seed=s)
        elif role == "htdemucs_6s":
            write_htdemucs(path, SOURCES_6, seed=s, **ht)
        elif role == "hdemucs_mmi":
            write_hdemucs(path, SOURCES_4, seed=s, **hd)
        else:
            write_htdemucs(path, SOURCES_4, seed=s, **ht)
    if manifest:
        write_manifest(pack_dir)
    return pack_dir


def build_cinematic(pack_dir, kind: str = "random", seed: int = 0, cutoff_hz: float = 4000.0,
                    files: tuple[str, ...] = CINEMATIC_FILES, manifest: bool = True) -> Path:
    """Add the cinematic recipe's checkpoints (real names) to a pack dir (new or existing) and rewrite its
    manifest. kind "random": small HTDemucs with seeded weights; "bandsplit": dialog = below cutoff_hz,
    music = the rest, effects = silence."""
    if kind not in ("random", "bandsplit"):
        raise ValueError(f"unknown cinematic kind {kind!r}")
    pack_dir = Path(pack_dir)
    pack_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        path, s = pack_dir / name, seed * 1000 + 500 + CINEMATIC_FILES.index(name)
        if kind == "bandsplit":
            write_bandsplit_demucs(path, cutoff_hz, seed=s, sources=SOURCES_CINEMATIC)
        else:
            write_htdemucs(path, SOURCES_CINEMATIC, seed=s)
    if manifest:
        write_manifest(pack_dir)
    return pack_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testkit.toypack", description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--kind", choices=("random", "bandsplit", "identity"), default="random")
    ap.add_argument("--stems", choices=("all", "vocals"), default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cutoff-hz", type=float, default=4000.0)
    ap.add_argument("--size", choices=("small", "full"), default="small")
    ap.add_argument("--recipe", choices=("mdx23", "cinematic", "both"), default="mdx23",
                    help="which recipe's files: the MDX23 ensemble, the cinematic checkpoints, or both")
    a = ap.parse_args(argv)
    out = Path(a.dir)
    if a.recipe != "cinematic":
        out = build_pack(a.dir, kind=a.kind, stems=a.stems, seed=a.seed, cutoff_hz=a.cutoff_hz, size=a.size)
    if a.recipe != "mdx23":
        out = build_cinematic(a.dir, kind="bandsplit" if a.kind == "bandsplit" else "random", seed=a.seed,
                              cutoff_hz=a.cutoff_hz)
    print(out)
    return 0


if __name__ == "__main__":
    # re-import under the package name so pickled classes read testkit.toypack, not __main__
    from testkit.toypack import main as _main
    raise SystemExit(_main())
