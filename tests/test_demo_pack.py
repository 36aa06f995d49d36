"""The shipped demo pack really separates dialog from music, through the engine and through the service.

Held-out clips (tests/data/demo_pack, made by scripts/demo_pack/make_data.py from voices, languages and
instruments that training never used; speech and background at 0 dB) are mixed here and separated with the real
demo models. Floors sit a few dB below the measured figures (mvsep/demo_pack/README.md), far above the mixture
baseline (0 dB), so seams, wrong windows, wrong polarity or swapped/wrong weights fail them; the stems' lag
against the truth must be exactly 0 samples, which global SDR alone would not notice.
"""
from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
from testkit.demo_clips import CLIPS, PACK, clips  # noqa: E402, F401 (CLIPS: for the modules importing this one)
FILES = ["Kim_Vocal_2.onnx", "Kim_Inst.onnx", "04573f0d-f3cf25b2.th",
         "97d170e1-dbb4db15.th",                                                  # cinematic
         "MelBandRoformer.ckpt", "config_vocals_mel_band_roformer_kj.yaml"]       # mel-roformer
SR = 44100

# conservative floors (dB): these clips measure 9.7, 11.8 and 12.2 dB (both stems) through engine and service
VOCALS_FLOOR = 8.0
INSTRUMENTAL_FLOOR = 8.0


def sdr(ref: np.ndarray, est: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-20)))


def lag(ref: np.ndarray, est: np.ndarray, max_lag: int = 32) -> int:
    """The shift (samples) that best aligns est with ref; 0 when the pipeline keeps samples in place."""
    r, e = ref.mean(1), est.mean(1)
    n = len(r)
    scores = [np.dot(r[max(0, k):n + min(0, k)], e[max(0, -k):n - max(0, k)]) for k in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag


def check(stems_per_clip, truth, where: str) -> None:
    for k, ((v, b), st) in enumerate(zip(truth, stems_per_clip)):
        sv, si = sdr(v, st["vocals"]), sdr(b, st["instrumental"])
        print(f"{where} clip{k}: vocals {sv:.2f} dB, instrumental {si:.2f} dB (mixture baseline "
              f"{sdr(v, v + b):.2f} / {sdr(b, v + b):.2f})")
        assert sv >= VOCALS_FLOOR, f"{where} clip{k}: vocals SDR {sv:.2f} dB < {VOCALS_FLOOR}"
        assert si >= INSTRUMENTAL_FLOOR, f"{where} clip{k}: instrumental SDR {si:.2f} dB < {INSTRUMENTAL_FLOOR}"
        assert lag(v, st["vocals"]) == 0 and lag(b, st["instrumental"]) == 0, f"{where} clip{k}: stems shifted"


def test_pack_files_manifest_and_formats():
    sums = {}
    for line in (PACK / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name.lstrip("*")] = digest
    assert sorted(sums) == sorted(FILES)
    total = 0
    for name in FILES:
        data = (PACK / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sums[name], f"{name} does not match SHA256SUMS"
        total += len(data)
    assert total < 20 * 2 ** 20   # the repo stays small: 18.5 MB in all (10.8 MB of it the Mel-RoFormer)
    for name in FILES[:2]:
        sess = ort.InferenceSession(str(PACK / name), providers=["CPUExecutionProvider"])
        (inp,), out = sess.get_inputs(), sess.get_outputs()[0]
        assert inp.name == "input" and inp.shape[1:] == [4, 3072, 256] and out.shape[1:] == [4, 3072, 256]
    from demucs.htdemucs import HTDemucs
    from demucs.states import load_model
    model = load_model(PACK / FILES[2])
    assert isinstance(model, HTDemucs) and model.sources == ["drums", "bass", "other", "vocals"]
    assert model.samplerate == SR and model.audio_channels == 2


def test_mdx_heads_split_the_mix_and_ignore_polarity():
    """Kim_Vocal_2 + Kim_Inst give back roughly the input (two heads trained apart: each a mask, and they
    agree), both are odd in x (the engine uses -M(Kim_Inst, -mix)), and on a held-out 0 dB mixture the vocals
    head keeps the speech's share of the energy, roughly."""
    import torch
    v, b = clips()[0]
    piece = torch.from_numpy((v + b)[:261120].T.copy())                                # [2, 261120]
    z = torch.stft(piece, 7680, 1024, window=torch.hann_window(7680), center=True, return_complex=True)
    x = torch.view_as_real(z).permute(0, 3, 1, 2).reshape(1, 4, 3841, 256)[:, :, :3072].numpy()
    voc = ort.InferenceSession(str(PACK / FILES[0])).run(None, {"input": x})[0]
    inst_sess = ort.InferenceSession(str(PACK / FILES[1]))
    inst = inst_sess.run(None, {"input": x})[0]
    assert np.all(np.abs(voc) <= np.abs(x) + 1e-6) and np.all(np.abs(inst) <= np.abs(x) + 1e-6)
    rest = float(((voc + inst - x) ** 2).sum() / (x ** 2).sum())
    assert rest < 0.05, rest   # measured 0.006; a head that returned the other stem gives ~1
    print(f"heads: vocals + instrumental leave {rest:.4f} of the input energy")
    np.testing.assert_allclose(-inst_sess.run(None, {"input": -x})[0], inst, atol=1e-5 * np.abs(x).max())
    share = float((voc ** 2).sum() / (x ** 2).sum())
    assert 0.25 < share < 0.75, share   # speech is half of the energy; all-or-nothing masks fail this


def test_engine_separates_heldout_clips():
    from mvsep import Options, Separator
    sep = Separator(model_dir=PACK, device="cpu")
    assert sep.pack.kind == "demo"
    truth = clips()
    stems = [sep.separate_array(v + b, SR, Options(only_vocals=True, shifts=0)) for v, b in truth]
    check(stems, truth, "engine")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def demo_server(tmp_path):
    port = _free_port()
    env = dict(os.environ, HOST="127.0.0.1", PORT=str(port), SPARK_DATA_DIR=str(tmp_path / "data"),
               SPARK_MODELS_DIR=str(PACK), SPARK_DEVICE="cpu")
    env.pop("SPARK_API_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "server.py"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-3000:]
            try:
                if httpx.get(base + "/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "the service did not get ready in 120 s"
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_service_separates_heldout_clips_at_48k(demo_server, tmp_path):
    """Upload at 48 kHz (decode, resample to 44.1 kHz and back, windows, ensemble, encode as float WAV)."""
    ready = httpx.get(demo_server + "/ready", timeout=10).json()
    assert ready["pack"] == "demo"
    truth, stems = [], []
    for k, (v, b) in enumerate(clips()):
        v48, b48 = soxr.resample(v, SR, 48000), soxr.resample(b, SR, 48000)
        path = tmp_path / f"clip{k}.wav"
        sf.write(path, v48 + b48, 48000, subtype="FLOAT")
        with open(path, "rb") as f:
            r = httpx.post(demo_server + "/separate", files={"file": (path.name, f, "audio/wav")},
                           data={"shifts": "0"}, timeout=600)
        assert r.status_code == 200, r.text[:500]
        assert r.headers.get("x-spark-pack") == "demo"
        got = {}
        with zipfile.ZipFile(io.BytesIO(r.content)) as z:
            for member in z.namelist():
                stem = next(s for s in ("instrumental", "vocals") if s in member)
                got[stem], rate = sf.read(io.BytesIO(z.read(member)), dtype="float32", always_2d=True)
                assert rate == 48000 and len(got[stem]) == len(v48)
        truth.append((v48, b48))
        stems.append(got)
    check(stems, truth, "service")
