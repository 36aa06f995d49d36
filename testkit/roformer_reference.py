"""The RoFormer demix of the spec ("The demix", steps 1-5) on a whole array, written as plainly as possible
with torch's own padding: the reference the windowed runner (`mvsep/roformer/demix.py`) is checked against."""
import torch
import torch.nn.functional as F


def demix(model, mix: torch.Tensor, chunk: int, num_overlap: int = 2) -> torch.Tensor:
    """mix [2, N] float32 -> vocals [2, N], one chunk per model call (batch 1)."""
    c = chunk
    s_step = c // num_overlap
    fade = c // 10
    border = c - s_step
    n = mix.shape[-1]
    padded = n > 2 * border
    x = F.pad(mix[None], (border, border), mode="reflect")[0] if padded else mix
    p = x.shape[-1]
    ramp = torch.linspace(0, 1, fade)
    acc = torch.zeros_like(x)
    cnt = torch.zeros(p)
    s = 0
    while s < p:
        part = x[:, s:s + c]
        ln = part.shape[-1]
        if ln < c:
            mode = "reflect" if ln > c // 2 else "constant"
            part = F.pad(part[None], (0, c - ln), mode=mode)[0]
        with torch.no_grad():
            y = model(part[None])[0]
        w = torch.ones(c)
        w[:fade] = ramp
        w[c - fade:] = ramp.flip(0)
        if s == 0:
            w[:fade] = 1
        elif s + s_step >= p:
            w[c - fade:] = 1
        acc[:, s:s + ln] += y[:, :ln] * w[:ln]
        cnt[s:s + ln] += w[:ln]
        s += s_step
    out = torch.nan_to_num(acc / cnt)
    return out[:, border:p - border] if padded else out
