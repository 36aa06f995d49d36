"""Train the demo model pack on the CPU from the audio that make_data.py synthesised, export it, write SHA256SUMS.

    python scripts/demo_pack/train.py --work /tmp/spark_demo_pack --out mvsep/demo_pack

Three files, in the real formats and names (see ../../../shared/docs/mdx23-algorithm.md):
- Kim_Vocal_2.onnx / Kim_Inst.onnx: MDX signature, input [N,4,3072,256] (L_re, L_im, R_re, R_im of the mix's
  STFT, n_fft 7680, hop 1024) -> the same for vocals / instrumental. Both are a small magnitude-mask network
  (MaskNet): a per-frame bottleneck over frequency, dilated convolutions over time, 2-D refinements of the low
  bins, a sigmoid mask per bin. A shared trunk (phases 1-4, `--only mdx`) is finished into two heads (phase 5,
  `--only vocals` / `--only instrumental`), each with a U-Net over the bins below 2.9 kHz trained from its own
  seed: Kim_Vocal_2 applies its mask, Kim_Inst the complement of its own. A magnitude mask is the same for x
  and -x, which the engine's `mix - (-M(Kim_Inst, -mix))` relies on.
- 04573f0d-f3cf25b2.th: a small HTDemucs (no transformer), sources drums, bass, other, vocals; speech is
  "vocals", the background "other", drums and bass are trained towards silence.
Training is seeded, on one thread; checkpoints go to <work>/ckpt so a stopped run resumes.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from make_data import SR, load_split, reverb  # this script's own dir

N_FFT, HOP, DIM_F, DIM_T = 7680, 1024, 3072, 256
LOW = 1024          # bins kept at full resolution in the mask; above, groups of POOL bins share a value
POOL = 4
LOCAL = 768         # bins (up to 4.4 kHz) that the local 2-D path refines
LOWEST = 256        # bins (up to 1.5 kHz) that the phase-3 path refines again
FINE = 512          # bins (up to 2.9 kHz) that the phase-5 U-Net refines, with inter-channel cues
MDX_NAMES = {"vocals": "Kim_Vocal_2.onnx", "instrumental": "Kim_Inst.onnx"}
DEMUCS_NAME = "04573f0d-f3cf25b2.th"


# ---------------------------------------------------------------- models

def _zero(layer: nn.Module) -> None:
    """A new path's last layer starts at zero, so the path begins as a no-op on the mask it refines."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(4, cout), nn.GELU(),
                         nn.Conv2d(cout, cout, 3, 1, 1), nn.GroupNorm(4, cout), nn.GELU())


class UNet(nn.Module):
    """[N,cin,F,T] -> [N,1,F,T] logit correction; F and T multiples of 8. Three halvings of both axes widen
    the view (several harmonics, ~0.7 s) for little compute; the last layer starts at zero."""

    def __init__(self, cin: int, widths=(16, 32, 64, 128)):
        super().__init__()
        self.down = nn.ModuleList([_block(cin, widths[0])] +
                                  [_block(a, b, 2) for a, b in zip(widths, widths[1:])])
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, 2) for a, b in zip(widths, widths[1:]))
        self.merge = nn.ModuleList(_block(2 * a, a) for a in widths[:-1])
        self.out = nn.Conv2d(widths[0], 1, 1)
        _zero(self.out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        t = z.shape[-1]
        z = nn.functional.pad(z, (0, -t % 8))   # frames to a multiple of 8 (the engine's 256 already is)
        skips = []
        for blk in self.down:
            z = blk(z)
            skips.append(z)
        z = skips.pop()
        for up, merge in zip(reversed(self.up), reversed(self.merge)):
            z = merge(torch.cat([up(z), skips.pop()], 1))
        return self.out(z)[..., :t]


class MaskNet(nn.Module):
    """[N,4,3072,T] complex-as-channels spectrogram -> a vocals mask [N,1,3072,T] in (0, 1).

    Global path: a per-frame bottleneck over all bins, dilated convolutions over time, a logit per bin (a
    low-rank mask: it knows *whether* and roughly *where* speech is). Local path (phase 2): a small 2-D
    convolution over the bins below LOCAL, fed the log-magnitudes and the global logit, adds a correction
    that can follow individual harmonics (moving speech partials vs steady notes). Phase 3 adds a wider one
    below LOWEST, phase 5 a U-Net below FINE that also sees the inter-channel phase (where 87% of the error
    was)."""

    def __init__(self, hidden: int = 128, blocks: int = 6, local: bool = True, low: bool = True,
                 fine: bool = False):
        super().__init__()
        n_feat = LOW + (DIM_F - LOW) // POOL
        self.inp = nn.Conv1d(2 * n_feat, hidden, 1)
        self.blocks = nn.ModuleList()
        for i in range(blocks):
            d = 2 ** (i % 4)
            self.blocks.append(nn.Sequential(
                nn.Conv1d(hidden, hidden, 3, padding=d, dilation=d), nn.GELU(), nn.Conv1d(hidden, hidden, 1)))
        self.norms = nn.ModuleList(nn.GroupNorm(1, hidden) for _ in range(blocks))
        self.out = nn.Conv1d(hidden, n_feat, 1)
        self.local = None
        if local:
            c = 8
            self.local = nn.Sequential(
                nn.Conv2d(3, c, (5, 3), padding=(2, 1)), nn.GELU(),
                nn.Conv2d(c, c, (5, 3), padding=(4, 1), dilation=(2, 1)), nn.GELU(),
                nn.Conv2d(c, c, (5, 3), padding=(8, 1), dilation=(4, 1)), nn.GELU(),
                nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))
            _zero(self.local[-1])   # starts as the global mask
        self.low = None
        if low:   # phase 3: wider and deeper over the lowest bins, where speech and bass/chords collide
            c, layers = 16, [nn.Conv2d(3, 16, (5, 3), padding=(2, 1)), nn.GELU()]
            for d in (2, 4, 8, 16):
                layers += [nn.Conv2d(c, c, (3, 3), padding=(d, 1), dilation=(d, 1)), nn.GELU()]
            layers.append(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))
            self.low = nn.Sequential(*layers)
            _zero(self.low[-1])
        self.fine = UNet(5) if fine else None   # phase 5: a U-Net over the bins below FINE

    @staticmethod
    def pool(z: torch.Tensor) -> torch.Tensor:   # [N,C,3072,T] -> [N,C,n_feat,T]
        n, c, _, t = z.shape
        hi = z[:, :, LOW:].reshape(n, c, (DIM_F - LOW) // POOL, POOL, t).mean(3)
        return torch.cat([z[:, :, :LOW], hi], 2)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        n, _, f, t = x.shape
        mag = torch.sqrt(x[:, 0::2] ** 2 + x[:, 1::2] ** 2 + 1e-10)          # [N,2,F,T]
        feat = torch.log(self.pool(mag) + 1e-4)                                # [N,2,n_feat,T]
        h = self.inp(feat.reshape(n, -1, t))
        for blk, norm in zip(self.blocks, self.norms):
            h = h + blk(norm(h))
        g = self.out(h)                                                        # [N,n_feat,T] logits
        hi = g[:, LOW:, None, :].expand(n, (DIM_F - LOW) // POOL, POOL, t).reshape(n, DIM_F - LOW, t)
        lo = g[:, :LOCAL]
        if self.local is not None:   # bins < LOCAL <= LOW are not pooled, so feat holds their log-magnitudes
            lo = lo + self.local(torch.cat([feat[:, :, :LOCAL], lo[:, None]], 1))[:, 0]
        if self.low is not None:
            ll = lo[:, :LOWEST]
            ll = ll + self.low(torch.cat([feat[:, :, :LOWEST], ll[:, None]], 1))[:, 0]
            lo = torch.cat([ll, lo[:, LOWEST:]], 1)
        if self.fine is not None:
            # Dialog is a panned mono source: in its bins L and R are in phase with a steady level ratio,
            # while instruments and their reverb are not. cos/sin of the inter-channel phase carry that;
            # like the magnitudes they are the same for x and -x, so the exported heads stay odd.
            xl, xr = x[:, 0:2, :FINE], x[:, 2:4, :FINE]
            norm = mag[:, 0, :FINE] * mag[:, 1, :FINE]
            cos = (xl[:, 0] * xr[:, 0] + xl[:, 1] * xr[:, 1]) / norm
            sin = (xl[:, 1] * xr[:, 0] - xl[:, 0] * xr[:, 1]) / norm
            lf = lo[:, :FINE]
            lf = lf + self.fine(torch.stack([feat[:, 0, :FINE], feat[:, 1, :FINE], cos, sin, lf], 1))[:, 0]
            lo = torch.cat([lf, lo[:, FINE:]], 1)
        return torch.sigmoid(torch.cat([lo, g[:, LOCAL:LOW], hi], 1))[:, None]  # [N,1,3072,T]


class Exported(nn.Module):
    """The ONNX graph: the target's spectrogram, mask (vocals) or complement (instrumental) times the input."""

    def __init__(self, net: MaskNet, target: str):
        super().__init__()
        self.net, self.target = net, target

    def forward(self, x):
        m = self.net.mask(x)
        return x * (m if self.target == "vocals" else 1 - m)


def small_htdemucs():
    from demucs.htdemucs import HTDemucs
    return HTDemucs(sources=["drums", "bass", "other", "vocals"], audio_channels=2, samplerate=SR,
                    channels=12, growth=2, depth=3, nfft=2048, t_layers=0, dconv_comp=4, segment=3,
                    norm_starts=4, freq_emb=0.2)


# ---------------------------------------------------------------- data

class Mixer:
    """Random training mixtures: crops of a dialog and of a background at SBR -6..+11 dB, with augmentation.
    `reverb` is the share of dialogs put in a small room first (make_data.reverb, as the held-out mixtures have
    30%); the room stays part of the vocals. 0 keeps the draws of the runs that made the committed models."""

    def __init__(self, work: Path, split: str, seed: int, reverb: float = 0.0):
        self.reverb = reverb
        self.speech, self.music = load_split(work, split)
        self.s_rms = [float(np.sqrt(np.mean(s ** 2))) + 1e-8 for s in self.speech]
        self.m_rms = [float(np.sqrt(np.mean(m ** 2))) + 1e-8 for m in self.music]
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(vocals, background), each [n, 2, length] float32."""
        r = self.rng
        vs, bs = np.zeros((n, 2, length), np.float32), np.zeros((n, 2, length), np.float32)
        for k in range(n):
            i, j = r.integers(len(self.speech)), r.integers(len(self.music))
            s, m = self.speech[i], self.music[j]
            a, b = r.integers(0, len(s) - length), r.integers(0, len(m) - length)
            v = s[a:a + length]
            if self.reverb and r.random() < self.reverb:
                a0 = max(0, a - SR // 2)   # half a second before the crop, so its first words have a tail too
                v = reverb(r, s[a0:a + length])[a - a0:]
            v = v / self.s_rms[i]
            pan = r.uniform(-0.35, 0.35)
            v = np.stack([v * np.sqrt(0.5 - pan / 2), v * np.sqrt(0.5 + pan / 2)])
            bg = m[b:b + length].T / self.m_rms[j] * 10 ** (-r.uniform(-6, 11) / 20)
            if r.random() < 0.5:
                bg = bg[::-1]
            u = r.random()
            if u < 0.04:
                v = v * 0
            elif u < 0.08:
                bg = bg * 0
            g = 10 ** (r.uniform(-24, 0) / 20) * 0.25 * (1 if r.random() < 0.5 else -1)
            vs[k], bs[k] = v * g, bg * g
        return torch.from_numpy(vs), torch.from_numpy(bs)


WINDOW = torch.hann_window(N_FFT, periodic=True)


def spec(x: torch.Tensor) -> torch.Tensor:
    """[N,2,L] -> [N,4,3072,T], exactly as the engine builds MDX input."""
    n = x.shape[0]
    z = torch.stft(x.reshape(n * 2, -1), N_FFT, HOP, window=WINDOW, center=True, return_complex=True)
    z = torch.view_as_real(z).permute(0, 3, 1, 2).reshape(n, 4, N_FFT // 2 + 1, -1)
    return z[:, :, :DIM_F]


def sdr_loss(est: torch.Tensor, ref: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """Mean negative SDR in dB over the batch; `floor` keeps near-silent references from dominating."""
    dims = tuple(range(1, ref.dim()))
    num = (ref ** 2).sum(dims) + floor
    den = ((est - ref) ** 2).sum(dims) + floor
    return -(10 * torch.log10(num / den)).mean()


# ---------------------------------------------------------------- training loops

def _lr(step: int, steps: int, base: float) -> float:
    warm = 50
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, steps - warm))) + base * 0.02


def train_loop(name, model, loss_fn, mixer, steps, batch, length, lr, ckpt_dir: Path, log_every=25,
               stop: int | None = None, keep_every: int = 0, device: str = "cpu"):
    """Generic seeded loop with resumable checkpoints (model, optimiser, mixer rng, step). The learning rate
    follows a warm-up + cosine schedule over `steps`; `stop` ends the loop earlier (phase 1 of the MDX net).
    SIGTERM or SIGINT (Ctrl-C) saves a checkpoint at the current step and exits; the same command resumes.
    `keep_every` also keeps <name>-stepN.pt (the model alone) every N steps, to pick the best afterwards."""
    stop = steps if stop is None else stop
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ck = ckpt_dir / f"{name}.pt"
    step = 0
    if ck.exists():
        st = torch.load(ck, weights_only=False, map_location=device)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        mixer.rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"].cpu())
        step = st["step"]
        print(f"[{name}] resumed at step {step}", flush=True)

    def save():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "rng": mixer.rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, str(ck) + ".tmp")
        os.replace(str(ck) + ".tmp", ck)

    asked = []
    old = {s: signal.signal(s, lambda *_: asked.append(1)) for s in (signal.SIGTERM, signal.SIGINT)}
    t0, hist = time.time(), []
    try:
        while step < stop and not asked:
            for gr in opt.param_groups:
                gr["lr"] = _lr(step, steps, lr)
            v, b = mixer.batch(batch, length)
            loss = loss_fn(model, v.to(device), b.to(device))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            hist.append(loss.item())
            step += 1
            if step % log_every == 0 or step == stop:
                print(f"[{name}] step {step}/{steps} loss {np.mean(hist[-log_every:]):.3f} "
                      f"({(time.time() - t0) / len(hist):.2f} s/step)", flush=True)
            if step % 100 == 0 or step == stop:
                save()
            if keep_every and step % keep_every == 0:
                torch.save({"model": model.state_dict(), "step": step}, ckpt_dir / f"{name}-step{step}.pt")
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if asked:
        save()
        raise SystemExit(f"[{name}] stopped at step {step}, checkpoint {ck}; the same command resumes")
    return model


class SpecMixer:
    """Random training mixtures built directly in the STFT domain (the STFT is linear), from spectrograms
    computed once per clip: far cheaper per step than an STFT of every crop. Stored as float16."""

    def __init__(self, mixer: Mixer):
        self.rng = mixer.rng
        with torch.no_grad():
            self.speech = []                                                         # mono: [2 (re,im), F, T]
            for i in range(0, len(mixer.speech), 2):   # two clips per call, as the "L" and "R" channels
                pair = [mixer.speech[j] / mixer.s_rms[j] for j in range(i, min(i + 2, len(mixer.speech)))]
                z = spec(torch.from_numpy(np.stack([pair[0], pair[-1]]))[None])[0].half()
                self.speech += [z[:2], z[2:]][:len(pair)]
            self.music = [spec(torch.from_numpy(np.ascontiguousarray(m.T / r))[None])[0].half()
                          for m, r in zip(mixer.music, mixer.m_rms)]                 # [4, F, T]

    def batch(self, n: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(V, B) spectrograms [n, 4, 3072, frames] of the vocals and the background."""
        r = self.rng
        V, B = torch.zeros(n, 4, DIM_F, frames), torch.zeros(n, 4, DIM_F, frames)
        for k in range(n):
            s = self.speech[r.integers(len(self.speech))]
            m = self.music[r.integers(len(self.music))]
            a, b = r.integers(0, s.shape[-1] - frames), r.integers(0, m.shape[-1] - frames)
            pan = r.uniform(-0.35, 0.35)
            g = 10 ** (r.uniform(-24, 0) / 20) * 0.25 * (1 if r.random() < 0.5 else -1)
            gb = g * 10 ** (-r.uniform(-6, 11) / 20)
            u = r.random()
            gv = 0.0 if u < 0.04 else g
            gb = 0.0 if 0.04 <= u < 0.08 else gb
            sc = s[:, :, a:a + frames].float()
            V[k, :2] = sc * (gv * np.sqrt(0.5 - pan / 2))
            V[k, 2:] = sc * (gv * np.sqrt(0.5 + pan / 2))
            mc = m[:, :, b:b + frames].float() * gb
            B[k] = mc[[2, 3, 0, 1]] if r.random() < 0.5 else mc
        return V, B


def mdx_loss(net: MaskNet, V: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """-SDR of m*X against V and of (1-m)*X against B, from per-bin sums (m is shared by the 4 channels):
    sum |mX - V|^2 = sum m^2 |X|^2 - 2 m <X, V> + |V|^2, so only [N, F, T] tensors carry gradients."""
    X = V + B
    m = net.mask(X)[:, 0]
    xx, xv, vv = (X * X).sum(1), (X * V).sum(1), (V * V).sum(1)
    xb, bb = xx - xv, (B * B).sum(1)
    floor = 1e-3 * xx.sum((1, 2)) + 1e-8
    err_v = (m * m * xx - 2 * m * xv + vv).sum((1, 2)).clamp_min(0)
    mi = 1 - m
    err_b = (mi * mi * xx - 2 * mi * xb + bb).sum((1, 2)).clamp_min(0)
    sdr_v = 10 * torch.log10((vv.sum((1, 2)) + floor) / (err_v + floor))
    sdr_b = 10 * torch.log10((bb.sum((1, 2)) + floor) / (err_b + floor))
    return -(sdr_v.mean() + sdr_b.mean())


def demucs_loss(model, v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = model(v + b)                                        # [N,4,2,L]
    floor = 1e-3 * ((v + b) ** 2).sum((1, 2)) + 1e-8
    l1 = (out[:, 0].abs().mean() + out[:, 1].abs().mean()) * 10   # drums and bass: silence
    return sdr_loss(out[:, 3], v, floor) + sdr_loss(out[:, 2], b, floor) + l1


# ---------------------------------------------------------------- export

def store_half(path: Path) -> None:
    """Store the float32 weights of an ONNX file as float16, each followed by a Cast back to float32: half the
    size in the repo, and the graph the engine runs is still float32 (ONNX Runtime folds the Casts at load)."""
    import onnx
    from onnx import helper, numpy_helper
    model = onnx.load(str(path))
    g = model.graph
    casts = []
    for init in g.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and init.dims and np.prod(init.dims) > 16:
            name = init.name
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), name + "_f16"))
            casts.append(helper.make_node("Cast", [name + "_f16"], [name], to=onnx.TensorProto.FLOAT))
    nodes = casts + list(g.node)   # the Casts first: nodes must stay in topological order
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_mdx(net: MaskNet, out: Path, target: str) -> None:
    import copy
    import onnxruntime as ort
    net.eval()
    path = out / MDX_NAMES[target]
    torch.onnx.export(Exported(net, target), (torch.randn(1, 4, DIM_F, DIM_T) * 3,), str(path),
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=17, dynamo=False)
    store_half(path)
    half = copy.deepcopy(net)   # what the file holds: the same weights rounded to float16
    with torch.no_grad():
        for p in half.parameters():
            if p.numel() > 16:
                p.copy_(p.half().float())
        xb = torch.randn(2, 4, DIM_F, DIM_T)
        want = Exported(half, target)(xb).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": xb.numpy()})[0]
    err = float(np.abs(got - want).max())
    assert err < 1e-4, (path.name, err)
    print(f"exported {path.name} ({path.stat().st_size} bytes, onnxruntime vs torch max err {err:.2e})")


def export_demucs(model, out: Path, seconds: float, args: dict) -> None:
    model.segment = Fraction(seconds).limit_denominator(100)
    args_, kwargs = model._init_args_kwargs
    kwargs = dict(kwargs, segment=model.segment)
    pkg = {"klass": type(model), "args": args_, "kwargs": kwargs,
           "state": {k: v.detach().half() if v.is_floating_point() else v for k, v in model.state_dict().items()},
           "training_args": {"demo_pack": True, **args}}
    torch.save(pkg, out / DEMUCS_NAME)
    from demucs.states import load_model
    back = load_model(out / DEMUCS_NAME)
    assert back.sources == ["drums", "bass", "other", "vocals"]
    print(f"exported {DEMUCS_NAME} ({(out / DEMUCS_NAME).stat().st_size} bytes, segment {back.segment})")


def write_manifest(out: Path) -> None:
    """Rewrite SHA256SUMS over every model file in the pack (the RoFormer's yaml included: it sets the model)."""
    names = sorted(p.name for p in out.iterdir() if p.suffix in (".onnx", ".th", ".ckpt", ".yaml"))
    (out / "SHA256SUMS").write_text("".join(f"{hashlib.sha256((out / n).read_bytes()).hexdigest()}  {n}\n"
                                            for n in names))
    print(f"wrote SHA256SUMS ({len(names)} files)")


def _complete(ck: Path, steps: int) -> bool:
    return ck.exists() and torch.load(ck, weights_only=False)["step"] >= steps


def train_trunk(a, smix: SpecMixer, ckpt: Path) -> MaskNet:
    """Phases 1-4 of the MDX net, shared by both heads (a complete phase is loaded, not trained again)."""
    net = MaskNet(local=False, low=False)
    # phase 1: the global path alone (its cosine schedule is cut at --mdx-stop); phase 2: both paths
    train_loop("mdx", net, mdx_loss, smix, a.mdx_steps, a.mdx_batch, a.mdx_frames, 2e-3, ckpt, stop=a.mdx_stop)
    torch.manual_seed(a.seed + 2)
    net2 = MaskNet(local=True, low=False)
    net2.load_state_dict(net.state_dict(), strict=False)
    net = train_loop("mdx2", net2, mdx_loss, smix, a.mdx2_steps, a.mdx_batch, a.mdx2_frames, 1e-3, ckpt)
    if a.mdx3_steps:
        torch.manual_seed(a.seed + 3)
        net3 = MaskNet(local=True, low=True)
        net3.load_state_dict(net.state_dict(), strict=False)
        net = train_loop("mdx3", net3, mdx_loss, smix, a.mdx3_steps, a.mdx_batch, a.mdx2_frames, 1e-3, ckpt)
    if a.mdx4_steps:   # phase 4: everything at a low rate on longer crops
        net = train_loop("mdx4", net, mdx_loss, smix, a.mdx4_steps, a.mdx_batch, a.mdx_frames, 3e-4, ckpt)
    return net


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("DEMO_WORK", "/tmp/spark_demo_pack")))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "mvsep" / "demo_pack")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mdx-steps", type=int, default=1400)
    ap.add_argument("--mdx-batch", type=int, default=8)
    ap.add_argument("--mdx-frames", type=int, default=96)
    ap.add_argument("--mdx-stop", type=int, default=1400)
    ap.add_argument("--mdx2-steps", type=int, default=900)
    ap.add_argument("--mdx2-frames", type=int, default=64)
    ap.add_argument("--mdx3-steps", type=int, default=600)
    ap.add_argument("--mdx4-steps", type=int, default=400)
    ap.add_argument("--demucs-steps", type=int, default=500)
    ap.add_argument("--demucs2-steps", type=int, default=400)
    ap.add_argument("--demucs-batch", type=int, default=2)
    ap.add_argument("--demucs-seconds", type=float, default=1.5)
    ap.add_argument("--mdx5-steps", type=int, default=1400)
    ap.add_argument("--mdx5-frames", type=int, default=64)
    ap.add_argument("--only", choices=["mdx", *MDX_NAMES, "demucs"], default=None,
                    help="mdx: the shared trunk (phases 1-4); vocals / instrumental: that head (phase 5, "
                         "needs the trunk), exported; demucs: the demucs model")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    ckpt = a.work / "ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    mixer = Mixer(a.work, "train", a.seed)
    heads = [a.only] if a.only in MDX_NAMES else list(MDX_NAMES) if a.only is None else []
    if a.only in MDX_NAMES and not _complete(ckpt / "mdx4.pt", a.mdx4_steps):
        sys.exit(f"the MDX trunk is not trained yet: run `train.py --only mdx` first ({ckpt}/mdx4.pt)")
    if a.only in (None, "mdx", *MDX_NAMES):
        t0 = time.time()
        smix = SpecMixer(mixer)
        if a.only is not None:
            mixer.speech = mixer.music = None   # the waveforms are only needed by demucs
        print(f"[mdx] spectrograms of the training clips in {time.time() - t0:.0f} s", flush=True)
        trunk = train_trunk(a, smix, ckpt)
        for target in heads:
            # phase 5, once per head: each head gets the fine path from its own seed and its own crops, so
            # Kim_Vocal_2 and Kim_Inst differ as two trained models do and the ensemble averages their errors
            torch.manual_seed(a.seed + 5 + list(MDX_NAMES).index(target))
            smix.rng = np.random.default_rng(torch.initial_seed())
            net = MaskNet(local=True, low=True, fine=True)
            net.load_state_dict(trunk.state_dict(), strict=False)
            net = train_loop(f"mdx5_{target}", net, mdx_loss, smix, a.mdx5_steps, a.mdx_batch, a.mdx5_frames,
                             1e-3, ckpt)
            export_mdx(net, a.out, target)
        del smix   # a few GB of spectrograms
    if a.only in (None, "demucs"):
        torch.manual_seed(a.seed + 1)
        mixer.rng = np.random.default_rng(a.seed + 1)
        model = small_htdemucs()
        length = int(a.demucs_seconds * SR)
        train_loop("demucs", model, demucs_loss, mixer, a.demucs_steps, a.demucs_batch, length, 3e-3, ckpt)
        # phase 2: a warm restart at a lower rate
        train_loop("demucs2", model, demucs_loss, mixer, a.demucs2_steps, a.demucs_batch, length, 1e-3, ckpt)
        model.eval()
        export_demucs(model, a.out, a.demucs_seconds, {"steps": a.demucs_steps, "steps2": a.demucs2_steps,
                                                       "batch": a.demucs_batch, "seed": a.seed})
    write_manifest(a.out)


if __name__ == "__main__":
    main()
