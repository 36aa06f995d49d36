"""Measure the cinematic recipe of a pack on held-out mixtures of dialog, music and effects.

    python scripts/demo_pack/evaluate_cinematic.py --work /tmp/spark_cine --pack mvsep/demo_pack --clips 8
    python scripts/demo_pack/evaluate_cinematic.py --work /tmp/spark_cine --test-clips tests/data/demo_pack
    python scripts/demo_pack/evaluate_cinematic.py --service http://127.0.0.1:8185 --conditions 0 --clips 6

Through files: each mixture is written as a 24-bit FLAC, separated by `mvsep.Separator.separate_file` with
recipe=cinematic (default options: one checkpoint, shifts 1 seeded), float WAV stems read back. Global SDR
(10*log10(sum s^2 / sum (s - s_hat)^2) over a clip, both channels), mean over the clips of a condition; the
baseline is the mixture used as the estimate. With `--service URL` the same FLAC goes to a running service's
`POST /separate` (recipe=cinematic, default options) and the stems come back in its zip. Conditions: dialog to
background (music + effects) ratio; music and effects at equal loudness. Held-out: voices, languages,
instruments, theme sounds and GM effects that training never used.
"""
from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
from make_data import SR, load_split  # noqa: E402 (the script's own dir is on sys.path)
from train_cinematic import load_effects  # noqa: E402 (the script's own dir is on sys.path)

CONDITIONS = (-5.0, 0.0, 5.0, 10.0)
STEMS = ("dialog", "music", "effects", "background")


def sdr(ref: np.ndarray, est: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-20)))


def heldout3(work: Path, dbr: float, n: int, seed: int = 1234, seconds: float | None = None,
             split: str = "heldout"):
    """n (dialog, music, effects) triples [T, 2] at the given dialog-to-background ratio, reproducible. A mono
    dialog (make_data.py) is panned here; a stereo one (make_cine_data.py's scenes) is used as it is."""
    speech, music = load_split(work, split)
    effects = load_effects(work, split)
    rng = np.random.default_rng([seed, int(dbr * 10) + 1000])
    out = []
    for k in range(n):
        s, m, e = speech[k % len(speech)], music[(k * 7 + 3) % len(music)], effects[(k * 5 + 1) % len(effects)]
        t = min(len(s), len(m), len(e), int((seconds or 1e9) * SR))
        s, m, e = s[:t], m[:t], e[:t]
        pan = rng.uniform(-0.3, 0.3)
        d = s if s.ndim == 2 else np.stack([s * np.sqrt(0.5 - pan / 2), s * np.sqrt(0.5 + pan / 2)], 1)
        m = m / np.sqrt(np.mean(m ** 2) + 1e-12)
        e = e / np.sqrt(np.mean(e ** 2) + 1e-12)
        bg = m + e
        g = np.sqrt(np.sum(d ** 2) / (np.sum(bg ** 2) + 1e-12) / 10 ** (dbr / 10))
        m, e = m * g, e * g
        peak = np.abs(d + m + e).max()
        out.append(tuple((x * (0.7 / peak)).astype(np.float32) for x in (d, m, e)))
    return out


def separate_through_file(sep, mix: np.ndarray, opts) -> tuple[dict[str, np.ndarray], np.ndarray]:
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "mix.flac"
        sf.write(src, mix, SR, subtype="PCM_24")
        mix = sf.read(src, dtype="float32")[0]
        res = sep.separate_file(src, Path(d) / "out", opts, stems=STEMS)
        return {s: sf.read(p, dtype="float32")[0] for s, p in res.stems.items()}, mix


def separate_through_service(url: str, mix: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    import zipfile

    import httpx
    buf = io.BytesIO()
    sf.write(buf, mix, SR, subtype="PCM_24", format="FLAC")
    r = httpx.post(url.rstrip("/") + "/separate", files={"file": ("mix.flac", buf.getvalue(), "audio/flac")},
                   data={"recipe": "cinematic", "stems": ",".join(STEMS)}, timeout=3600)
    r.raise_for_status()
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:   # members are <input name>_<stem>.wav
        got = {n.rsplit("_", 1)[1].split(".")[0]: sf.read(io.BytesIO(z.read(n)), dtype="float32")[0]
               for n in z.namelist()}
    return got, sf.read(io.BytesIO(buf.getvalue()), dtype="float32")[0]


def pack_with_checkpoint(pack: Path, ckpt: Path, tmp: Path) -> Path:
    """A copy of the pack (links) whose cinematic model is the checkpoint's, exported as the pack's would be."""
    import torch

    from train_cinematic import NAME, export, small_htdemucs, write_manifest
    for p in pack.iterdir():
        if p.name not in (NAME, "SHA256SUMS"):
            (tmp / p.name).symlink_to(p.resolve())
    model = small_htdemucs(24)
    model.load_state_dict(torch.load(ckpt, weights_only=False, map_location="cpu")["model"])
    export(model.eval(), tmp, 1.5, {"checkpoint": str(ckpt)})
    write_manifest(tmp)      # the engine checks every model file against it
    return tmp


def write_test_clips(work: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for k, (d, m, e) in enumerate(heldout3(work, 0.0, 3, seed=4321, seconds=6.0)):
        for name, x in (("dialog", d), ("music", m), ("effects", e)):
            sf.write(out / f"cine{k}_{name}.ogg", x, SR, format="OGG", subtype="VORBIS")
    print(f"wrote cinematic test clips to {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/spark_cine"))
    ap.add_argument("--split", default="heldout", help="the set under --work: heldout (make_data.py / "
                    "effects.py), or seen / excluded (make_cine_data.py)")
    ap.add_argument("--pack", type=Path, default=ROOT / "mvsep" / "demo_pack")
    ap.add_argument("--ckpt", type=Path, help="measure this training checkpoint (train_cinematic.py) in the pack")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--conditions", type=float, nargs="+", default=list(CONDITIONS))
    ap.add_argument("--test-clips", type=Path, default=None, help="write the quality test's clips here and stop")
    ap.add_argument("--service", help="a running service's base URL: separate through it instead of files")
    a = ap.parse_args()
    if a.test_clips:
        write_test_clips(a.work, a.test_clips)
        return
    if a.service:
        def separate(mix):
            return separate_through_service(a.service, mix)
    else:
        import torch
        torch.set_num_threads(1)
        from mvsep.engine import Options, Separator
        pack = pack_with_checkpoint(a.pack, a.ckpt, Path(tempfile.mkdtemp())) if a.ckpt else a.pack
        sep, opts = Separator(pack, device="cpu", threads=1), Options(recipe="cinematic")

        def separate(mix):
            return separate_through_file(sep, mix, opts)
    print("| dialog to background | dialog | music | effects | background | mixture baseline (dialog / music / "
          "effects / background) |\n|---|---|---|---|---|---|")
    notes = []
    for dbr in a.conditions:
        scores, base, level = {s: [] for s in STEMS}, {s: [] for s in STEMS}, []
        for d, m, e in heldout3(a.work, dbr, a.clips, seconds=a.seconds, split=a.split):
            got, mix = separate(d + m + e)
            truth = {"dialog": d, "music": m, "effects": e, "background": m + e}
            for s in STEMS:
                scores[s].append(sdr(truth[s], got[s]))
                base[s].append(sdr(truth[s], mix))
            level.append(np.sqrt(np.sum(got["dialog"] ** 2) / np.sum(d.astype(np.float64) ** 2)))
        row = " | ".join(f"{np.mean(scores[s]):.2f}" for s in STEMS)
        b = " / ".join(f"{np.mean(base[s]):.2f}" for s in STEMS)
        print(f"| {dbr:+.0f} dB | {row} | {b} |", flush=True)
        lo, hi = np.min(scores["dialog"]), np.max(scores["dialog"])
        gains = {s: np.mean(np.subtract(scores[s], base[s])) for s in ("music", "effects")}
        notes.append(f"{dbr:+.0f} dB: dialog {lo:.2f} to {hi:.2f} per clip; music {gains['music']:+.2f}, effects "
                     f"{gains['effects']:+.2f} dB over the mixture; dialog level {np.min(level):.2f} to "
                     f"{np.max(level):.2f} of the truth's")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
