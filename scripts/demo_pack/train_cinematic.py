"""Train the demo pack's cinematic model (dialog / music / effects) on the CPU and export it as
`97d170e1-dbb4db15.th`, the real file name of the MVSEP-CDX23 default checkpoint.

    python scripts/demo_pack/train_cinematic.py --work /tmp/spark_cine --out mvsep/demo_pack

The model is a small HTDemucs (24 channels by default, depth 3, no transformer, segment 1.5 s: about 600 k
parameters, 1.3 MB in float16) with three sources in the reference program's order: music, effects, dialog,
trained from scratch. With `--channels 12` (the 4-stem demo model's width) it starts from the committed
`04573f0d-f3cf25b2.th` instead: every shared weight is copied and the last layers' outputs are mapped
music <- other, effects <- other, dialog <- vocals.
Mixtures: a dialog (make_data.py), a music bed (make_data.py) and an effects track (effects.py), dialog to
background (music + effects) at -6..+11 dB, music to effects at -10..+10 dB, random pan, gain and polarity.
Loss: negative SDR of music, effects, dialog (x `--dialog-weight`) and music + effects. Seeded, resumable
checkpoints in <work>/ckpt.
"""
from __future__ import annotations

import argparse
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

HERE = Path(__file__).resolve().parent
from make_data import SR, load_split  # noqa: E402 (the script's own dir is on sys.path)
from train import sdr_loss, train_loop, write_manifest  # noqa: E402 (the script's own dir is on sys.path)

NAME = "97d170e1-dbb4db15.th"
SOURCES = ["music", "effects", "dialog"]     # o[0] music, o[1] effects, o[2] dialog (the spec's order)
OLD = "04573f0d-f3cf25b2.th"
OLD_MAP = [2, 2, 3]                           # old sources drums, bass, other, vocals -> new index's source


def small_htdemucs(channels: int):
    from demucs.htdemucs import HTDemucs
    return HTDemucs(sources=SOURCES, audio_channels=2, samplerate=SR, channels=channels, growth=2, depth=3,
                    nfft=2048, t_layers=0, dconv_comp=4, segment=3, norm_starts=4, freq_emb=0.2)


def warm_start(model, old_path: Path) -> None:
    """Copy the 4-stem demo model's weights; the per-source output channels of the last layers are mapped."""
    old = torch.load(old_path, weights_only=False)["state"]
    new = model.state_dict()
    for k, v in new.items():
        w = old[k].float()
        if w.shape == v.shape:
            new[k] = w
            continue
        # decoder.2.conv_tr (freq, 4 values per source: 2 channels x re/im) or tdecoder.2.conv_tr (time, 2)
        per = w.shape[1 if w.dim() > 1 else 0] // 4
        parts = [w.narrow(1 if w.dim() > 1 else 0, s * per, per) for s in OLD_MAP]
        new[k] = torch.cat(parts, 1 if w.dim() > 1 else 0)
    model.load_state_dict(new)


def load_effects(work: Path, split: str) -> list[np.ndarray]:
    return [sf.read(p, dtype="float32")[0] for p in sorted((work / split / "effects").glob("*.flac"))]


class Mixer3:
    """Random crops of a dialog, a music bed and an effects track, levelled and augmented."""

    def __init__(self, work: Path, split: str, seed: int, voice_shift: float = 0.0, also: tuple = ()):
        """Mono dialogs (make_data.py) are panned here; stereo ones (make_cine_data.py's scenes) come placed.
        `also`: more work folders whose `train` split joins the pool (the old generators' data, say)."""
        self.speech, self.music = load_split(work, split)
        self.effects = load_effects(work, split)
        for w in also:
            sp, mu = load_split(w, "train")
            self.speech, self.music = self.speech + sp, self.music + mu
            self.effects = self.effects + load_effects(w, "train")
        print(f"[data] {len(self.speech)} dialogs, {len(self.music)} music beds, {len(self.effects)} effects tracks",
              flush=True)
        self.rng = np.random.default_rng(seed)
        self.voice_shift = voice_shift

    def _voice(self, r, x, length):
        """A dialog crop, played faster or slower by up to +-voice_shift (pitch and formants move together:
        voices the synthesiser never made, so the model does not learn the training voices by heart)."""
        if not self.voice_shift or x.ndim == 2:
            return self._crop(r, x, length)
        f = np.exp(r.uniform(np.log(1 - self.voice_shift), np.log(1 + self.voice_shift)))
        y = self._crop(r, x, int(np.ceil(length * f)) + 1)
        return np.interp(np.arange(length) * f, np.arange(len(y)), y).astype(np.float32)

    @staticmethod
    def _crop(r, x, length):
        a = r.integers(0, len(x) - length)
        return x[a:a + length] / (np.sqrt(np.mean(x ** 2)) + 1e-6)   # levelled by the whole clip's RMS

    def batch(self, n: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(dialog [n,2,L], background [n,2,2,L] = music, effects)."""
        r = self.rng
        ds, bs = np.zeros((n, 2, length), np.float32), np.zeros((n, 2, 2, length), np.float32)
        for k in range(n):
            s = self._voice(r, self.speech[r.integers(len(self.speech))], length)
            if s.ndim == 2:
                d = s.T[::-1] if r.random() < 0.5 else s.T
            else:
                pan = r.uniform(-0.35, 0.35)
                d = np.stack([s * np.sqrt(0.5 - pan / 2), s * np.sqrt(0.5 + pan / 2)])
            m = self._crop(r, self.music[r.integers(len(self.music))], length).T
            e = self._crop(r, self.effects[r.integers(len(self.effects))], length).T
            m, e = (m[::-1] if r.random() < 0.5 else m), (e[::-1] if r.random() < 0.5 else e)
            me = r.uniform(-10, 10)                       # music to effects, dB
            m, e = m * 10 ** (me / 40), e * 10 ** (-me / 40)
            u = r.random()                                # now and then one source is silent
            m, e, d = m * (u >= 0.05), e * (not 0.05 <= u < 0.10), d * (not 0.10 <= u < 0.13)
            g_bg = 10 ** (-r.uniform(-6, 11) / 20)        # dialog to background (music + effects), dB
            g = 10 ** (r.uniform(-24, 0) / 20) * 0.25 * (1 if r.random() < 0.5 else -1)
            ds[k], bs[k, 0], bs[k, 1] = d * g, m * g_bg * g, e * g_bg * g
        return torch.from_numpy(ds), torch.from_numpy(bs)


def make_loss3(dialog_weight: float):
    """Negative SDR of music, effects, dialog (weighted: the dialog is what a dub needs first) and M&E."""
    def loss3(model, d: torch.Tensor, me: torch.Tensor) -> torch.Tensor:
        m, e = me[:, 0], me[:, 1]
        mix = d + m + e
        out = model(mix)                                               # [N,3,2,L]
        floor = 1e-3 * (mix ** 2).sum((1, 2)) + 1e-8
        return (sdr_loss(out[:, 0], m, floor) + sdr_loss(out[:, 1], e, floor)
                + dialog_weight * sdr_loss(out[:, 2], d, floor) + sdr_loss(out[:, 0] + out[:, 1], m + e, floor))
    return loss3


def export(model, out: Path, seconds: float, args: dict) -> None:
    model.segment = Fraction(seconds).limit_denominator(100)
    args_, kwargs = model._init_args_kwargs
    pkg = {"klass": type(model), "args": args_, "kwargs": dict(kwargs, segment=model.segment),
           "state": {k: v.detach().half() if v.is_floating_point() else v for k, v in model.state_dict().items()},
           "training_args": {"demo_pack": True, "recipe": "cinematic", **args}}
    torch.save(pkg, out / NAME)
    from demucs.states import load_model
    back = load_model(out / NAME)
    assert back.sources == SOURCES
    print(f"exported {NAME} ({(out / NAME).stat().st_size} bytes, segment {back.segment})", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/spark_cine"))
    ap.add_argument("--out", type=Path, default=HERE.parents[1] / "mvsep" / "demo_pack")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4500)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--channels", type=int, default=24, help="HTDemucs width; 12 warm-starts from the 4-stem model")
    ap.add_argument("--dialog-weight", type=float, default=2.0)
    ap.add_argument("--stop", type=int, help="end at this step (the schedule still spans --steps)")
    ap.add_argument("--voice-shift", type=float, default=0.0, help="dialog speed/pitch change, e.g. 0.12")
    ap.add_argument("--init", type=Path, help="a training checkpoint or a pack's .th to fine-tune (new optimiser "
                    "and schedule)")
    ap.add_argument("--split", default="train", help="the training set under --work")
    ap.add_argument("--also", type=Path, nargs="*", default=[], help="more work folders whose train split joins")
    ap.add_argument("--ckpt", type=Path, help="checkpoint folder (default <work>/ckpt); the same command resumes")
    ap.add_argument("--keep-every", type=int, default=0, help="also keep the model of every N-th step")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    ckpt = a.ckpt or a.work / "ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    mixer = Mixer3(a.work, a.split, a.seed, a.voice_shift, tuple(a.also))
    model = small_htdemucs(a.channels)
    warm = a.channels == 12 and not a.init       # the 4-stem demo model is 12 wide: a wider one starts fresh
    if warm:
        warm_start(model, a.out / OLD)
    if a.init:   # a training checkpoint, or a pack's exported file (float16 "state")
        st = torch.load(a.init, weights_only=False, map_location="cpu")
        model.load_state_dict({k: v.float() for k, v in st.get("model", st.get("state")).items()})
    model.to(a.device)
    t0 = time.time()
    name = "cinematic-finetune" if a.init else "cinematic"
    train_loop(name, model, make_loss3(a.dialog_weight), mixer, a.steps, a.batch, int(a.seconds * SR), a.lr, ckpt,
               stop=a.stop, keep_every=a.keep_every, device=a.device)
    print(f"[cinematic] trained in {time.time() - t0:.0f} s", flush=True)
    model.cpu().eval()
    export(model, a.out, a.seconds, {"steps": a.stop or a.steps, "schedule": a.steps, "batch": a.batch,
                                     "seed": a.seed, "channels": a.channels, "dialog_weight": a.dialog_weight,
                                     "voice_shift": a.voice_shift, "init": a.init and a.init.name,
                                     "warm_start": OLD if warm else None})
    write_manifest(a.out)


if __name__ == "__main__":
    main()
