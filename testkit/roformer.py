"""RoFormer packs with random weights, in the real formats and under the real file names.

`write(dir, kind, size)` writes the checkpoint (`torch.save` of a plain state dict of float32 tensors, as the
published files are) and its yaml (laid out like the published configs, `!!python/tuple` included).
size "full": the published dimensions (Mel 913 MB, BS 639 MB: benchmarks, not unit tests); "small": the same
architecture, a few thousand times cheaper, with a short chunk so short inputs cross several chunks; "bench":
the real STFT, bands and 8-s chunk with small dimensions.
`layout(kind)` builds the full-size model on the meta device: keys and shapes with no memory spent.

Command line: python -m testkit.roformer DIR [--kind mel|bs] [--size small|full] [--seed N]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mvsep.roformer import FILES
from mvsep.roformer.config import read_config
from mvsep.roformer.model import Roformer

BS_FULL_BANDS = [2] * 24 + [4] * 12 + [12] * 8 + [24] * 8 + [48] * 8 + [128, 129]
BS_SMALL_BANDS = [4, 4, 8, 8, 16, 32, 57]  # 129 bins of a 256-point FFT
SIZES = {
    "full": dict(dim={"mel": 384, "bs": 512}, depth={"mel": 6, "bs": 12}, heads=8, dim_head=64, num_bands=60,
                 bands=BS_FULL_BANDS, n_fft=2048, hop=441, chunk=352800),
    # the real STFT, bands and chunk with small dimensions: benchmarks of everything around the model
    "bench": dict(dim={"mel": 32, "bs": 32}, depth={"mel": 1, "bs": 1}, heads=2, dim_head=16, num_bands=60,
                  bands=BS_FULL_BANDS, n_fft=2048, hop=441, chunk=352800),
    "small": dict(dim={"mel": 32, "bs": 24}, depth={"mel": 2, "bs": 2}, heads=2, dim_head=16, num_bands=8,
                  bands=BS_SMALL_BANDS, n_fft=256, hop=64, chunk=2560),
}


def yaml_text(kind: str, size: str = "small", chunk: int | None = None) -> str:
    s = SIZES[size]
    chunk = chunk or s["chunk"]
    if kind == "mel":
        bands = f"  num_bands: {s['num_bands']}\n  sample_rate: 44100\n"
    else:
        bands = "  freqs_per_bands: !!python/tuple\n" + "".join(f"  - {n}\n" for n in s["bands"])
    return (
        "audio:\n"
        f"  chunk_size: {chunk}\n  dim_f: 1024\n  dim_t: 801\n  hop_length: 441\n  n_fft: 2048\n"
        "  num_channels: 2\n  sample_rate: 44100\n  min_mean_abs: 0.000\n"
        "model:\n"
        f"  dim: {s['dim'][kind]}\n  depth: {s['depth'][kind]}\n  stereo: true\n  num_stems: 1\n"
        "  time_transformer_depth: 1\n  freq_transformer_depth: 1\n"
        + ("  linear_transformer_depth: 0\n" if kind == "bs" else "")
        + bands
        + f"  dim_head: {s['dim_head']}\n  heads: {s['heads']}\n  attn_dropout: 0.1\n  ff_dropout: 0.1\n"
        "  flash_attn: true\n  dim_freqs_in: 1025\n"
        f"  stft_n_fft: {s['n_fft']}\n  stft_hop_length: {s['hop']}\n  stft_win_length: {s['n_fft']}\n"
        "  stft_normalized: false\n  mask_estimator_depth: 2\n  multi_stft_resolution_loss_weight: 1.0\n"
        "  multi_stft_resolutions_window_sizes: !!python/tuple\n  - 4096\n  - 2048\n  - 1024\n  - 512\n  - 256\n"
        "  multi_stft_hop_size: 147\n  multi_stft_normalized: false\n"
        "training:\n  batch_size: 1\n  instruments:\n  - vocals\n  - other\n  target_instrument: vocals\n"
        "  use_amp: true\n"
        "inference:\n  batch_size: 4\n  dim_t: 801\n  num_overlap: 2\n")


def random_model(cfg, seed: int = 0) -> Roformer:
    """A model of `cfg` with seeded random weights (norm gains too, so every parameter matters)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Roformer(cfg)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("gamma"):
                    p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def write(directory, kind: str, size: str = "small", seed: int = 0, chunk: int | None = None) -> tuple[Path, Path]:
    """(checkpoint, yaml) of a random-weight `kind` model under the real names in `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ckpt_name, yaml_name = FILES[kind]
    yaml_path = directory / yaml_name
    yaml_path.write_text(yaml_text(kind, size, chunk), encoding="utf-8")
    model = random_model(read_config(yaml_path, kind), seed)
    torch.save(model.state_dict(), directory / ckpt_name)
    return directory / ckpt_name, yaml_path


def layout(kind: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the full-size model, built on the meta device (no weights allocated)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / FILES[kind][1]
        path.write_text(yaml_text(kind, "full"), encoding="utf-8")
        cfg = read_config(path, kind)
    with torch.device("meta"):
        model = Roformer(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--kind", choices=("mel", "bs"), action="append")
    ap.add_argument("--size", choices=tuple(SIZES), default="small")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for kind in args.kind or ("mel", "bs"):
        for path in write(args.dir, kind, args.size, args.seed):
            print(path)


if __name__ == "__main__":
    main()
