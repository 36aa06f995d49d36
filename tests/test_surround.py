"""Surround inputs keep their layout: real encoders (ffmpeg: AAC in MP4, FLAC; WAV extensible), exact frames,
per-channel sums, untouched LFE, and a model of known behaviour finding dialog in the centre."""
import shutil
import subprocess

import av
import numpy as np
import pytest
import soundfile as sf

from conftest import BAND_CUTOFF_HZ
from mvsep import audio, surround
from testkit import toypack
from mvsep.engine import Options, Separator
from mvsep.errors import OptionError

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
RATE = 48000


def decode_all(path):
    """Every channel of the first audio stream, as the engine decodes it: ([T, C], layout name)."""
    x = np.concatenate(list(audio.iter_decode_channels(path)))
    return x, surround.layout_of(path)[0]


def stream_facts(path):
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        return s.codec_context.layout.name, s.codec_context.channels, s.codec_context.sample_rate


def tone_noise(n, rate, lo, hi, seed):
    """Band-limited noise in [lo, hi) Hz, rms 0.1, faded in/out."""
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    x = np.fft.irfft(spec * ((f >= lo) & (f < hi)), n=n)
    fade = np.minimum(1, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.05 * rate))
    x = x * fade
    return (x / np.sqrt(np.mean(x ** 2)) * 0.1).astype(np.float32)


def surround_mix(layout, seconds=2.2, dialog_in_centre=True):
    """[T, C] at 48 kHz: low-band "dialog" (below the bandsplit cutoff) in FC only, high-band "music" in every
    other full-range channel, a 50 Hz rumble in LFE."""
    names = [c.name for c in av.AudioLayout(layout).channels]
    n = int(seconds * RATE)
    x = np.zeros((n, len(names)), np.float32)
    for i, name in enumerate(names):
        if name == "FC":
            x[:, i] = tone_noise(n, RATE, 150, 2500, 1) if dialog_in_centre else 0
        elif name == "LFE":
            x[:, i] = 0.3 * np.sin(2 * np.pi * 50 * np.arange(n) / RATE)
        else:
            x[:, i] = tone_noise(n, RATE, 6000, 15000, 10 + i)
    return x, names


def encode(x, layout, path, codec_args):
    raw = path.with_suffix(".raw.wav")
    w = surround.LayoutWriter(raw, RATE, "wav", layout)
    w.write(x)
    w.close()
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(raw), *codec_args, str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def band_sep(bandsplit_pack):
    return Separator(bandsplit_pack, device="cpu")


CONTAINERS = {
    "5.1 AAC in MP4": ("5.1", "in.mp4", ["-c:a", "aac", "-b:a", "384k"]),
    "5.1 FLAC": ("5.1", "in.flac", ["-c:a", "flac"]),
    "7.1 WAV": ("7.1", "in.wav", ["-c:a", "pcm_s24le"]),
}


@pytest.mark.parametrize("case", CONTAINERS)
def test_surround_keeps_layout_frames_sums_and_lfe(band_sep, tmp_path, case):
    layout, name, args = CONTAINERS[case]
    x, names = surround_mix(layout)
    src = encode(x, layout, tmp_path / name, args)
    decoded, in_layout = decode_all(src)
    assert in_layout == layout
    res = band_sep.separate_file(src, tmp_path / "out", Options(only_vocals=True, shifts=0))
    lfe = names.index("LFE")
    got = {}
    for stem, path in res.stems.items():
        assert stream_facts(path) == (layout, len(names), RATE), stem
        got[stem], _ = decode_all(path)
        assert got[stem].shape == decoded.shape, stem     # exactly the input's frames, every channel
    assert np.abs(got["vocals"] + got["instrumental"] - decoded).max() < 1e-4
    assert np.abs(got["vocals"][:, lfe]).max() == 0
    assert np.abs(got["instrumental"][:, lfe] - decoded[:, lfe]).max() < 1e-6
    # the dialog was in the centre only: it comes back there
    fc = names.index("FC")
    edge = RATE // 10
    v, d = got["vocals"][edge:-edge], decoded[edge:-edge]
    assert np.sum(v[:, fc] ** 2) > 0.9 * np.sum(d[:, fc] ** 2)
    others = [i for i in range(len(names)) if i not in (fc, lfe)]
    assert np.sum(v[:, others] ** 2) < 0.01 * np.sum(d[:, others] ** 2)


def test_dialog_only_in_the_centre_comes_back_in_the_centre_of_the_dialog_stem(tmp_path):
    pack = toypack.build_cinematic(tmp_path / "pack", kind="bandsplit", cutoff_hz=BAND_CUTOFF_HZ)
    sep = Separator(pack, device="cpu")
    x, names = surround_mix("5.1")
    src = tmp_path / "in.wav"
    w = surround.LayoutWriter(src, RATE, "wav", "5.1")
    w.write(x)
    w.close()
    res = sep.separate_file(src, tmp_path / "out", Options(recipe="cinematic", shifts=0, output_format="flac"))
    got = {s: sf.read(p, dtype="float32")[0] for s, p in res.stems.items()}
    fc, lfe = names.index("FC"), names.index("LFE")
    edge = RATE // 10
    dialog, ref = got["dialog"][edge:-edge], x[edge:-edge]
    err = np.sum((dialog[:, fc] - ref[:, fc]) ** 2) / np.sum(ref[:, fc] ** 2)
    assert err < 0.01                                            # the centre's dialog, >= 20 dB SDR
    assert np.abs(got["dialog"][:, [i for i in range(6) if i != fc]]).max() < 0.02
    assert np.abs(got["dialog"] + got["background"] - x).max() < 1e-4   # 24-bit FLAC: within its step
    assert np.abs(got["effects"][:, lfe] - x[:, lfe]).max() < 1e-4     # LFE to effects and background
    assert np.abs(got["background"][:, lfe] - x[:, lfe]).max() < 1e-4
    assert np.abs(got["music"][:, lfe]).max() == 0


def test_center_mode_separates_the_centre_only(band_sep, tmp_path):
    x, names = surround_mix("5.1")
    src = tmp_path / "in.wav"
    w = surround.LayoutWriter(src, RATE, "wav", "5.1")
    w.write(x)
    w.close()
    res = band_sep.separate_file(src, tmp_path / "out", Options(only_vocals=True, shifts=0, layout="center"))
    v, i = (sf.read(res.stems[s], dtype="float32")[0] for s in ("vocals", "instrumental"))
    fc = names.index("FC")
    rest = [k for k in range(6) if k != fc]
    assert np.abs(v[:, rest]).max() == 0
    assert np.array_equal(i[:, rest], x[:, rest])
    assert np.abs(v + i - x).max() < 1e-4
    assert np.sum(v[:, fc] ** 2) > 0.9 * np.sum(x[:, fc] ** 2)


@pytest.mark.parametrize("opts", [dict(layout="stereo"), dict(output_format="mp3"), dict(mono=True)])
def test_stereo_layout_and_formats_without_surround_downmix(band_sep, tmp_path, opts):
    x, _ = surround_mix("5.1", seconds=1.0)
    src = tmp_path / "in.wav"
    w = surround.LayoutWriter(src, RATE, "wav", "5.1")
    w.write(x)
    w.close()
    res = band_sep.separate_file(src, tmp_path / "out", Options(only_vocals=True, shifts=0, **opts))
    info = audio.probe(res.stems["vocals"])
    assert info.channels == (1 if opts.get("mono") else 2)


def test_passes_per_minute():
    assert surround.passes_per_minute(6, "keep") == 3
    assert surround.passes_per_minute(8, "keep") == 4
    assert surround.passes_per_minute(6, "center") == 1
    assert surround.passes_per_minute(6, "stereo") == 1
    assert surround.passes_per_minute(2, "keep") == 1
    assert surround.plan(["FL", "FR", "FC", "LFE", "SL", "SR"], "keep") == ([(0, 1), (2, 2), (4, 5)], [3], [])


def test_unnamed_channels_read_as_the_default_layout_and_center_needs_a_centre(tmp_path):
    src = tmp_path / "six.wav"
    sf.write(src, np.zeros((100, 6), np.float32), RATE, subtype="FLOAT")   # libsndfile: no channel mask
    assert surround.layout_of(src) == ("5.1", ["FL", "FR", "FC", "LFE", "BL", "BR"])
    assert surround.plan(["FL", "FR", "LFE"], "keep") == ([(0, 1)], [2], [])
    with pytest.raises(OptionError) as e:
        surround.plan(["FL", "FR", "LFE"], "center")
    assert e.value.field == "layout"
