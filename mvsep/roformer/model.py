"""Mel-Band RoFormer and BS-RoFormer (arXiv 2310.01809, 2309.02612), written from the facts of
../shared/docs/roformer-recipes.md. Module names and order give exactly the state-dict keys of the public
checkpoints (`layers.i.j.layers.0.0.to_qkv.weight`, ...), so they load with a strict `load_state_dict`.

Shapes: audio `[B, 2, n]`; spectrum `[B, T, F, 2 channels, 2 (re, im)]`; features `[B, T, bands, dim]`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import RoformerConfig


class RMSNorm(nn.Module):
    """x / max(||x||, 1e-12) * sqrt(d) * gamma: silence stays exact zeros."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = math.sqrt(dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class Rotary(nn.Module):
    """Rotary position embedding over adjacent pairs (x[2i], x[2i+1]) of each head, angle = position x freqs[i].
    `freqs` is stored in the checkpoints (persistent buffer)."""

    def __init__(self, dim_head: int, theta: float = 10000.0):
        super().__init__()
        self.register_buffer("freqs", theta ** (-torch.arange(0, dim_head, 2).float() / dim_head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., n, dim_head]
        n = x.shape[-2]
        angle = torch.arange(n, device=x.device, dtype=torch.float32)[:, None] * self.freqs.float()
        cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), -1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = heads * dim_head
        self.rotary_embed = Rotary(dim_head)
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_gates = nn.Linear(dim, heads)
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False), nn.Identity())  # .1 was a dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [b, n, dim]
        b, n, _ = x.shape
        h = self.norm(x)
        q, k, v = self.to_qkv(h).view(b, n, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        q, k = self.rotary_embed(q), self.rotary_embed(k)
        out = F.scaled_dot_product_attention(q, k, v)  # [b, heads, n, dim_head], scale 1/sqrt(dim_head)
        out = out * self.to_gates(h).sigmoid().transpose(1, 2)[..., None]
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(RMSNorm(dim), nn.Linear(dim, dim * mult), nn.GELU(), nn.Identity(),
                                 nn.Linear(dim * mult, dim), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Transformer(nn.Module):
    def __init__(self, cfg: RoformerConfig, depth: int, norm_output: bool):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(cfg.dim, cfg.heads, cfg.dim_head), FeedForward(cfg.dim)]) for _ in range(depth))
        self.norm = RMSNorm(cfg.dim) if norm_output else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = x + attn(x)
            x = x + ff(x)
        return self.norm(x)


class BandSplit(nn.Module):
    def __init__(self, features: list[int], dim: int):
        super().__init__()
        self.to_features = nn.ModuleList(nn.Sequential(RMSNorm(n), nn.Linear(n, dim)) for n in features)

    def forward(self, bands: list[torch.Tensor]) -> torch.Tensor:  # each [B, T, 4 n_b] -> [B, T, bands, dim]
        return torch.stack([f(x) for f, x in zip(self.to_features, bands)], -2)


def _mlp(dim_in: int, hidden: int, dim_out: int, layers: int) -> nn.Sequential:
    dims = [dim_in] + [hidden] * (layers - 1) + [dim_out]
    mods: list[nn.Module] = []
    for i in range(layers):
        mods.append(nn.Linear(dims[i], dims[i + 1]))
        if i < layers - 1:
            mods.append(nn.Tanh())
    return nn.Sequential(*mods)


class MaskEstimator(nn.Module):
    def __init__(self, features: list[int], dim: int, layers: int):
        super().__init__()
        self.to_freqs = nn.ModuleList(
            nn.Sequential(_mlp(dim, 4 * dim, 2 * n, layers), nn.GLU(-1)) for n in features)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # [B, T, bands, dim] -> each [B, T, 4 n_b]
        return [f(x[..., b, :]) for b, f in enumerate(self.to_freqs)]


class Roformer(nn.Module):
    """One stem (vocals) of a stereo mix: `forward([B, 2, n]) -> [B, 2, n]`."""

    def __init__(self, cfg: RoformerConfig):
        super().__init__()
        self.cfg = cfg
        mel = cfg.kind == "mel"
        features = [4 * (last - first + 1) for first, last in cfg.bands]
        self.layers = nn.ModuleList(
            nn.ModuleList([Transformer(cfg, cfg.time_depth, mel), Transformer(cfg, cfg.freq_depth, mel)])
            for _ in range(cfg.depth))
        self.final_norm = nn.Identity() if mel else RMSNorm(cfg.dim)
        self.band_split = BandSplit(features, cfg.dim)
        self.mask_estimators = nn.ModuleList([MaskEstimator(features, cfg.dim, cfg.mask_layers)])
        self.register_buffer("bands_per_bin", torch.zeros(cfg.n_bins), persistent=False)
        self.register_buffer("window", torch.zeros(cfg.win), persistent=False)
        self.init_buffers()

    def init_buffers(self) -> None:
        """The computed (not stored) tables: how many bands hold each bin, the STFT window; also after
        `to_empty`. Rotary `freqs` are stored in the checkpoints and come from there."""
        if self.window.is_meta:
            return
        with torch.no_grad():
            self.bands_per_bin.zero_()
            for first, last in self.cfg.bands:
                self.bands_per_bin[first:last + 1] += 1
            self.window.copy_(torch.hann_window(self.cfg.win))

    def stft(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, 2, n] -> [B, T, F, 2, 2] (bin-major, then channel, then re/im), float32."""
        b, c, n = audio.shape
        z = torch.stft(audio.reshape(b * c, n).float(), self.cfg.n_fft, self.cfg.hop, self.cfg.win,
                       window=self.window, center=True, pad_mode="reflect", normalized=False, return_complex=True)
        z = torch.view_as_real(z)  # [B*2, F, T, 2]
        return z.view(b, c, *z.shape[1:]).permute(0, 3, 2, 1, 4)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """[B, T, F, 2, 2] -> [B, 2, length]."""
        b, t, f, c, _ = spec.shape
        z = torch.view_as_complex(spec.permute(0, 3, 2, 1, 4).reshape(b * c, f, t, 2).contiguous())
        y = torch.istft(z, self.cfg.n_fft, self.cfg.hop, self.cfg.win, window=self.window, center=True,
                        normalized=False, length=length)
        return y.view(b, c, length)

    def masks(self, spec: torch.Tensor) -> torch.Tensor:
        """The network: spectrum [B, T, F, 2, 2] -> complex mask of the same shape (re, im last)."""
        b, t = spec.shape[:2]
        x = self.band_split([spec[:, :, first:last + 1].reshape(b, t, -1) for first, last in self.cfg.bands])
        n_bands = x.shape[2]
        for time_tf, freq_tf in self.layers:
            x = time_tf(x.transpose(1, 2).reshape(b * n_bands, t, -1)).view(b, n_bands, t, -1).transpose(1, 2)
            x = freq_tf(x.reshape(b * t, n_bands, -1)).view(b, t, n_bands, -1)
        x = self.final_norm(x)
        band_masks = self.mask_estimators[0](x)
        mask = spec.new_zeros(spec.shape)
        for (first, last), m in zip(self.cfg.bands, band_masks):
            mask[:, :, first:last + 1] += m.float().view(b, t, last - first + 1, 2, 2)
        return mask / self.bands_per_bin.view(1, 1, -1, 1, 1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = self.stft(audio)
        m = self.masks(spec)
        re = spec[..., 0] * m[..., 0] - spec[..., 1] * m[..., 1]
        im = spec[..., 0] * m[..., 1] + spec[..., 1] * m[..., 0]
        out = torch.stack((re, im), -1)
        if self.cfg.zero_dc:
            out[:, :, 0] = 0
        return self.istft(out, audio.shape[-1])
