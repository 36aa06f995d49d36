"""Measure a pack on held-out mixtures: global SDR of vocals and instrumental per speech-to-background ratio.

    python scripts/demo_pack/evaluate.py --pack mvsep/demo_pack --via file       # files in, files out
    python scripts/demo_pack/evaluate.py --pack mvsep/demo_pack --via engine     # mvsep.Separator, arrays
    python scripts/demo_pack/evaluate.py --pack mvsep/demo_pack --via reference  # testkit/reference.py
    python scripts/demo_pack/evaluate.py --pack mvsep/demo_pack --via builtin    # the small ensemble below
    python scripts/demo_pack/evaluate.py --recipe mel-roformer --via file        # another vocals recipe

SDR is the MDX challenge's global SDR, 10*log10(sum s^2 / sum (s - s_hat)^2) over a whole clip (both channels),
averaged over the clips of a condition. The baseline is the plain mixture used as the estimate of each stem.
Held-out clips use voices, languages and instruments that training never saw (make_data.split_config).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
from make_data import SR, heldout_mixtures  # noqa: E402 (the script's own dir is on sys.path)

CONDITIONS = (-5.0, 0.0, 5.0, 10.0)


def sdr(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) /
                               max(np.sum((ref.astype(np.float64) - est) ** 2), 1e-20)))


# A compact ensemble straight from the spec (section M and "the vocals ensemble"), for use before the engine
# exists; --via file / engine / reference are the real measurements.
def builtin_separate(pack: Path, mix: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort
    import torch
    from demucs.apply import apply_model
    from demucs.states import load_model

    n_fft, hop, dim_f, trim = 7680, 1024, 3072, 3840
    chunk, gen = hop * 255, hop * 255 - 2 * trim
    win = torch.hann_window(n_fft, periodic=True)

    def demix_base(sess, p):
        n = p.shape[1]
        pad = gen - n % gen
        q = np.concatenate([np.zeros((2, trim)), p, np.zeros((2, pad)), np.zeros((2, trim))], 1)
        pieces = np.stack([q[:, i:i + chunk] for i in range(0, n + pad, gen)]).astype(np.float32)
        P = len(pieces)
        z = torch.stft(torch.from_numpy(pieces).reshape(P * 2, chunk), n_fft, hop, window=win, center=True,
                       return_complex=True)
        z = torch.view_as_real(z).permute(0, 3, 1, 2).reshape(P, 4, n_fft // 2 + 1, -1)[:, :, :dim_f]
        y = torch.from_numpy(sess.run(None, {"input": z.numpy()})[0])
        y = torch.cat([y, torch.zeros(P, 4, n_fft // 2 + 1 - dim_f, y.shape[-1])], 2)
        y = y.reshape(P * 2, 2, n_fft // 2 + 1, -1).permute(0, 2, 3, 1).contiguous()
        w = torch.istft(torch.view_as_complex(y), n_fft, hop, window=win, center=True).reshape(P, 2, chunk)
        w = w[:, :, trim:-trim].permute(1, 0, 2).reshape(2, -1).numpy()
        return w[:, :n]

    def demix_full(sess, x, c=1_000_000, o=0.6):
        out, cnt = np.zeros_like(x), np.zeros_like(x)
        for start in range(0, x.shape[1], int(c * (1 - o))):
            end = min(start + c, x.shape[1])
            out[:, start:end] += demix_base(sess, x[:, start:end])
            cnt[:, start:end] += 1
        return out / cnt

    x = mix.T.astype(np.float64)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    v1 = demix_full(ort.InferenceSession(str(pack / "Kim_Vocal_2.onnx"), so), x)
    v2 = x + demix_full(ort.InferenceSession(str(pack / "Kim_Inst.onnx"), so), -x)
    model = load_model(pack / "04573f0d-f3cf25b2.th").eval()
    t = torch.from_numpy(mix.T.astype(np.float32))[None]
    with torch.no_grad():
        a = apply_model(model, t, shifts=0, split=True, overlap=0.6)[0, 3]
        b = apply_model(model, -t, shifts=0, split=True, overlap=0.6)[0, 3]
    vd = (0.5 * a - 0.5 * b).numpy()
    voc = (12 * v1 + 8 * v2 + 3 * vd) / 23
    return {"vocals": voc.T.astype(np.float32), "instrumental": (x - voc).T.astype(np.float32),
            "_mdx": v1.T, "_demucs": vd.T}


def separator(via: str, pack: Path, recipe: str = "mdx23"):
    if recipe != "mdx23" and via in ("builtin", "reference"):
        raise SystemExit(f"--via {via} is the mdx23 ensemble only; use --via file or engine for {recipe}")
    if via == "builtin":
        return lambda mix: builtin_separate(pack, mix)
    if via == "reference":
        from testkit.reference import reference_separate
        return lambda mix: reference_separate(pack, mix, only_vocals=True)
    from mvsep import Options, Separator
    sep = Separator(model_dir=pack, device="cpu")
    opts = Options(only_vocals=True, shifts=0) if recipe == "mdx23" else Options(recipe=recipe)
    if via == "engine":
        return lambda mix: sep.separate_array(mix, SR, opts)

    def through_files(mix):   # what the service does: decode a FLAC, separate, encode float WAV stems
        import tempfile
        import soundfile as sf
        with tempfile.TemporaryDirectory() as tmp:
            sf.write(f"{tmp}/mix.flac", mix, SR, subtype="PCM_24")
            res = sep.separate_file(f"{tmp}/mix.flac", tmp, opts)
            return {stem: sf.read(path, dtype="float32")[0] for stem, path in res.stems.items()}
    return through_files


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("DEMO_WORK", "/tmp/spark_demo_pack")))
    ap.add_argument("--pack", type=Path, default=ROOT / "mvsep" / "demo_pack")
    ap.add_argument("--split", default="heldout", help="heldout (make_data.py) or a make_cine_data.py set: "
                    "seen / excluded (their dialog scenes over their music)")
    ap.add_argument("--via", choices=["file", "engine", "reference", "builtin"], default="file")
    ap.add_argument("--recipe", default="mdx23", help="a recipe with stems vocals and instrumental")
    ap.add_argument("--clips", type=int, default=8, help="clips per condition")
    ap.add_argument("--seconds", type=float, default=None, help="cut clips to this length")
    ap.add_argument("--conditions", type=float, nargs="+", default=list(CONDITIONS), help="SBRs in dB")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    run = separator(a.via, a.pack, a.recipe)
    print(f"pack {a.pack}, recipe {a.recipe} via {a.via}, {a.clips} held-out clips per condition")
    print("| SBR dB | vocals SDR | instrumental SDR | mixture baseline (voc / inst) | MDX alone | demucs alone |")
    print("|---|---|---|---|---|---|")
    for cond in a.conditions:
        rows = []
        for v, b in heldout_mixtures(a.work, cond, a.clips, seconds=a.seconds, split=a.split):
            mix = v + b
            st = run(mix)
            extra = [sdr(v, st[k]) if k in st else np.nan for k in ("_mdx", "_demucs")]
            rows.append([sdr(v, st["vocals"]), sdr(b, st["instrumental"]), sdr(v, mix), sdr(b, mix), *extra])
        r = np.mean(rows, 0)
        print(f"| {cond:+.0f} | {r[0]:.2f} | {r[1]:.2f} | {r[2]:.2f} / {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
