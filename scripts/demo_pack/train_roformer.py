"""Train the demo pack's small Mel-Band RoFormer and write it under the real file names:
`MelBandRoformer.ckpt` (a plain state dict, float16 weights) and `config_vocals_mel_band_roformer_kj.yaml` (the
same architecture as the public model, smaller dimensions), so `recipe=mel-roformer` separates out of the box.

    python scripts/demo_pack/train_roformer.py --work /tmp/spark_demo_pack --out mvsep/demo_pack

The model is built from the yaml it is shipped with (`mvsep.roformer.config.read_config`), so what trains is
what the engine loads. Data: make_data.py's dialogs and music beds (the same `train` split and mixtures as the
MDX models: vocals to background -6..+11 dB, random pan, gain and polarity). Loss: negative SDR of the vocals
and of the instrumental (mix - vocals). Seeded, resumable checkpoints in <work>/ckpt (SIGTERM saves and stops;
the same command resumes); `--init` starts a new run from an earlier checkpoint or an exported file.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
from make_data import SR  # noqa: E402 (the script's own dir is on sys.path)
from train import Mixer, sdr_loss, train_loop, write_manifest  # noqa: E402

from mvsep.roformer import FILES  # noqa: E402
from mvsep.roformer.config import read_config  # noqa: E402
from mvsep.roformer.loader import load_model  # noqa: E402
from mvsep.roformer.model import Roformer  # noqa: E402

CKPT_NAME, YAML_NAME = FILES["mel"]


def config_tree(a) -> dict:
    """The yaml: the public file's keys (audio / model / inference), the demo's dimensions."""
    return {
        "audio": {"chunk_size": a.chunk, "num_channels": 2, "sample_rate": SR},
        "model": {"dim": a.dim, "depth": a.depth, "stereo": True, "num_stems": 1,
                  "time_transformer_depth": a.inner_depth, "freq_transformer_depth": a.inner_depth,
                  "linear_transformer_depth": 0, "num_bands": a.bands,
                  "dim_head": a.dim_head, "heads": a.heads, "attn_dropout": 0.0, "ff_dropout": 0.0,
                  "flash_attn": True, "dim_freqs_in": a.n_fft // 2 + 1, "sample_rate": SR, "stft_n_fft": a.n_fft,
                  "stft_hop_length": a.hop, "stft_win_length": a.n_fft, "stft_normalized": False,
                  "mask_estimator_depth": a.mask_depth, "multi_stft_resolution_loss_weight": 1.0,
                  "mlp_expansion_factor": 4, "skip_connection": False, "use_pope": False},
        "training": {"instruments": ["vocals", "other"], "target_instrument": "vocals", "demo_pack": True,
                     "steps": a.steps, "batch": a.batch, "seconds": a.seconds, "lr": a.lr, "seed": a.seed,
                     **({"reverb": a.reverb} if a.reverb else {}), **({"init": a.init.name} if a.init else {})},
        "inference": {"batch_size": 1, "dim_t": a.chunk // a.hop + 1, "num_overlap": 2},
    }


def vocals_loss(model, v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mix = v + b
    est = model(mix)
    floor = 1e-3 * (mix ** 2).sum((1, 2)) + 1e-8   # keeps a silent stem's loss finite
    return sdr_loss(est, v, floor) + sdr_loss(mix - est, b, floor)


# A residual layer whose last projection is zero adds nothing: a new layer starts as the identity.
_LAYER_OUT = r"\.to_out\.0\.weight|\.net\.4\.(weight|bias)"
_LAST_PROJECTION = re.compile(f"({_LAYER_OUT})$")
_INNER_LAYER = re.compile(r"^layers\.\d+\.\d\.layers\.(\d+)\.")
# Widening (a larger `dim`): what writes the residual stream (the layers' last projections and the band split)
# gets zero rows for the new dims, so they stay zero; what reads a hidden layer gets zero columns for the new
# hidden units, so they add nothing.
_WRITES_RESIDUAL = re.compile(f"({_LAYER_OUT}|" r"^band_split\.to_features\.\d+\.1\.\w+)$")
_READS_HIDDEN = re.compile(r"(\.net\.4\.weight|^mask_estimators\.0\.to_freqs\.\d+\.0\.2\.weight)$")


def _widen(name: str, new: torch.Tensor, old: torch.Tensor) -> None:
    """Put `old` into the leading slice of the larger, freshly initialised `new` so the model computes what it
    did: the new residual dims stay zero, the new hidden units are not read, and the RMSNorms over the residual
    scale their old gains by sqrt(old dim / new dim) (the norm multiplies by sqrt of the dim)."""
    if name.endswith(".gamma"):   # the new entries keep their initial 1
        new[: old.shape[0]] = old * (old.shape[0] / new.shape[0]) ** 0.5
        return
    if _WRITES_RESIDUAL.search(name):
        new[old.shape[0]:] = 0
    if _READS_HIDDEN.search(name):
        new[:, old.shape[1]:] = 0
    new[tuple(slice(0, n) for n in old.shape)] = old


def load_init(model: Roformer, path: Path) -> None:
    """Start from `path`: a training checkpoint or an exported pack file (float16). The model may have more
    time/freq layers per block than the checkpoint (`--inner-depth`): those start as identities; and a larger
    `--dim` (the new dims start at zero, `_widen`). Either way the grown model computes what the checkpoint did
    (to float rounding) and learns from there. Any other difference is an error."""
    st = torch.load(path, map_location="cpu", weights_only=False)
    st = {k: v.float() for k, v in st.get("model", st).items()}
    own = model.state_dict()
    wider = {k for k, v in st.items() if k in own and own[k].shape != v.shape
             and v.dim() == own[k].dim() and all(a <= b for a, b in zip(v.shape, own[k].shape))}
    missing, unexpected = model.load_state_dict({k: v for k, v in st.items() if k not in wider}, strict=False)
    missing = [k for k in missing if k not in wider]
    grown = [k for k in missing if (m := _INNER_LAYER.match(k)) and int(m.group(1)) > 0]
    if unexpected or set(missing) - set(grown):
        raise SystemExit(f"{path} does not fit this model: unexpected {unexpected[:3]}, "
                         f"missing {sorted(set(missing) - set(grown))[:3]}")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in grown and _LAST_PROJECTION.search(name):
                p.zero_()
            elif name in wider:
                _widen(name, p, st[name])
    if grown:
        print(f"grown from {path}: {len(grown)} new tensors, starting as identities", flush=True)
    if wider:
        print(f"widened from {path}: {len(wider)} tensors", flush=True)


def mean_checkpoint(paths: list[Path]) -> dict:
    """One checkpoint, or the mean of several of one run's kept ones (weight averaging: the mean of a noisy
    small-batch run's last few points is often better than any one of them; evaluate it, it was not for the demo)."""
    ckpts = [torch.load(p, map_location="cpu", weights_only=False) for p in paths]
    kept = [c["model"] for c in ckpts]
    model = {k: v if all(torch.equal(v, c[k]) for c in kept) else torch.stack([c[k].float() for c in kept]).mean(0)
             for k, v in kept[0].items()}   # a tensor they share (the rotary freqs) stays bit for bit
    return {"model": model, "step": max(c["step"] for c in ckpts)}


def export(model: Roformer, yaml_path: Path, out: Path) -> None:
    """Float16 weights (the rotary `freqs` stay float32: an angle of position x freq needs the bits); the file
    is loaded back through the engine's strict loader and must give the float16-rounded model's output."""
    state = {k: (v.detach().half() if v.is_floating_point() and not k.endswith("rotary_embed.freqs") else v.detach())
             for k, v in model.state_dict().items()}
    torch.save(state, out / CKPT_NAME)
    back = load_model(out / CKPT_NAME, out / YAML_NAME, "mel")
    x = torch.randn(1, 2, SR * 2) * 0.1
    with torch.no_grad():
        ref = Roformer(model.cfg)
        ref.load_state_dict({k: v.float() for k, v in state.items()})
        err = float((back(x) - ref.eval()(x)).abs().max())
    assert err < 1e-5, err
    n = sum(p.numel() for p in model.parameters())
    print(f"exported {CKPT_NAME} ({(out / CKPT_NAME).stat().st_size} bytes, {n} parameters; reload err {err:.1e})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("DEMO_WORK", "/tmp/spark_demo_pack")))
    ap.add_argument("--out", type=Path, default=HERE.parents[1] / "mvsep" / "demo_pack")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda (the batches are made on the CPU either way)")
    ap.add_argument("--steps", type=int, default=6200)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.0, help="training crop")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--init", type=Path, default=None,
                    help="start a new run from this model: a checkpoint in <work>/ckpt or an exported .ckpt")
    ap.add_argument("--reverb", type=float, default=0.0, help="share of training dialogs put in a room first")
    ap.add_argument("--keep-every", type=int, default=500, help="also keep the model every N steps")
    ap.add_argument("--name", default="melroformer", help="checkpoint name in <work>/ckpt")
    ap.add_argument("--export-from", type=Path, nargs="+", default=None,
                    help="no training: export this checkpoint's model (e.g. <work>/ckpt/melroformer-step2500.pt), "
                         "or the mean of several")
    g = ap.add_argument_group("model (written to the yaml)")
    g.add_argument("--dim", type=int, default=64)
    g.add_argument("--depth", type=int, default=2)
    g.add_argument("--bands", type=int, default=32)
    g.add_argument("--inner-depth", type=int, default=1, help="time and freq transformer layers per block")
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--dim-head", type=int, default=16)
    g.add_argument("--mask-depth", type=int, default=1)
    g.add_argument("--n-fft", type=int, default=1024)
    g.add_argument("--hop", type=int, default=441)
    g.add_argument("--chunk", type=int, default=SR * 4, help="samples per model call at inference")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    ckpt = a.work / "ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    yaml_path = a.out / YAML_NAME
    exported = mean_checkpoint(a.export_from) if a.export_from else None
    if exported:
        a.steps = exported["step"]   # the yaml records the steps the exported model had
    yaml_path.write_text("# The demo pack's Mel-Band RoFormer (scripts/demo_pack/train_roformer.py): the public\n"
                         "# model's architecture and keys, smaller dimensions.\n"
                         + yaml.safe_dump(config_tree(a), sort_keys=False))
    model = Roformer(read_config(yaml_path, "mel"))
    if a.init and not exported:   # an export names --init only for the yaml's record
        load_init(model, a.init)
    if exported:
        model.load_state_dict(exported["model"])
        export(model.eval(), yaml_path, a.out)
        write_manifest(a.out)
        return
    mixer = Mixer(a.work, "train", a.seed, a.reverb)
    print(f"{len(mixer.speech)} dialogs, {len(mixer.music)} music beds; "
          f"{sum(p.numel() for p in model.parameters())} parameters", flush=True)
    model.to(a.device).train()
    train_loop(a.name, model, vocals_loss, mixer, a.steps, a.batch, int(a.seconds * SR), a.lr, ckpt,
               keep_every=a.keep_every, device=a.device)
    model.cpu().eval()
    export(model, yaml_path, a.out)
    write_manifest(a.out)
    print(f"checkpoint {ckpt / (a.name + '.pt')}; measure with: python scripts/demo_pack/evaluate.py "
          f"--work {a.work} --pack {a.out} --recipe mel-roformer", flush=True)


if __name__ == "__main__":
    main()
