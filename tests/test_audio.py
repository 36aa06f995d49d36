"""mvsep.audio against real media made by the ffmpeg CLI and read back by real decoders (no mocks)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from mvsep import audio
from mvsep.audio import (
    MODEL_RATE, StemWriter, StreamResampler, extension, iter_decode, out_frames, probe, resample_blocks, write_stem,
)
from mvsep.errors import InputError, OptionError, UnsupportedMediaError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg CLI is needed to make test media")

SR = 48000  # every codec under test (opus included) stores 48 kHz as is
N = 3 * SR
VIDEO = ["-f", "lavfi", "-i", "testsrc=d=3:s=64x48:r=5"]


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *map(str, args)], check=True)


def source_signal(n=N, sr=SR):
    """L: a 200 -> 3000 Hz chirp (no period, so the lag of a decoded copy is unambiguous); R: a 660 Hz sine."""
    t = np.arange(n) / sr
    chirp = np.sin(2 * np.pi * (200 * t + 2800 * t**2 / (2 * n / sr)))
    return np.stack([0.4 * chirp, 0.3 * np.sin(2 * np.pi * 660 * t)], 1).astype(np.float32)


def decode_all(path, **kw):
    blocks = list(iter_decode(path, **kw))
    return np.concatenate(blocks) if blocks else np.zeros((0, 2), np.float32)


def corr(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def quantized(x, bits):
    """What an integer format of `bits` holds for float x, back as float (FFmpeg's rounding)."""
    s = 2.0 ** (bits - 1)
    return (np.clip(np.rint(x.astype(np.float64) * s), -s, s - 1) / s).astype(np.float32)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    src = source_signal()
    sf.write(d / "src.wav", src, SR, subtype="FLOAT")
    return d, src


# (file, ffmpeg output args, codec, lossless bits or None, extra decoded frames, lag of the content in samples)
FORMATS = [
    ("f32.wav", ["-c:a", "pcm_f32le"], "pcm_f32le", 32, 0, 0),
    ("s16.wav", ["-c:a", "pcm_s16le"], "pcm_s16le", 16, 0, 0),
    ("s16.flac", ["-c:a", "flac", "-sample_fmt", "s16"], "flac", 16, 0, 0),
    ("s24.flac", ["-c:a", "flac", "-sample_fmt", "s32"], "flac", 24, 0, 0),
    # Lossy: the count is whatever the decoder yields. libmp3lame writes a LAME/Xing header and Ogg/WebM store the
    # Opus pre-skip and end trim, so those give the exact source length. FFmpeg's mp4 muxer stores AAC's 1024
    # priming samples in an edit list but not the end padding: the count rounds up to whole 1024-sample frames.
    # Raw ADTS .aac has nowhere to store either: 1024 priming samples come first, then the padded frames.
    ("a.mp3", ["-c:a", "libmp3lame", "-b:a", "192k"], "mp3", None, 0, 0),
    ("a.ogg", ["-c:a", "libvorbis"], "vorbis", None, 0, 0),
    ("a.opus", ["-c:a", "libopus"], "opus", None, 0, 0),
    ("a.m4a", ["-c:a", "aac"], "aac", None, -N % 1024, 0),
    ("a.aac", ["-c:a", "aac"], "aac", None, 1024 + -N % 1024, 1024),
    ("v.mp4", [*VIDEO, "-map", "1:v", "-map", "0:a", "-c:v", "mpeg4", "-c:a", "aac"], "aac", None, -N % 1024, 0),
    ("h264.mp4", [*VIDEO, "-map", "1:v", "-map", "0:a", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
     "aac", None, -N % 1024, 0),
    ("v.mkv", [*VIDEO, "-map", "1:v", "-map", "0:a", "-c:v", "mpeg4", "-c:a", "flac", "-sample_fmt", "s16"],
     "flac", 16, 0, 0),
    ("v.mov", [*VIDEO, "-map", "1:v", "-map", "0:a", "-c:v", "mpeg4", "-c:a", "pcm_s16le"], "pcm_s16le", 16, 0, 0),
    ("v.webm", [*VIDEO, "-map", "1:v", "-map", "0:a", "-c:v", "libvpx", "-deadline", "realtime", "-c:a", "libopus"],
     "opus", None, 0, 0),
]


@pytest.mark.parametrize("name,args,codec,bits,extra,lag", FORMATS, ids=[f[0] for f in FORMATS])
def test_decode_formats(media, name, args, codec, bits, extra, lag):
    d, src = media
    path = d / name
    ffmpeg("-i", d / "src.wav", *args, path)
    info = probe(path)
    assert (info.sample_rate, info.channels, info.codec) == (SR, 2, codec)
    assert info.frames == N + extra
    assert info.duration == pytest.approx(info.frames / SR)
    x = decode_all(path, block_frames=10000)
    assert x.dtype == np.float32 and x.shape == (info.frames, 2)
    if bits == 32:
        assert np.array_equal(x, src)
    elif bits == 16:
        assert np.array_equal(x, quantized(src, bits))
    elif bits == 24:
        # FFmpeg's encoder truncates its float -> s32 samples to 24 bits: within one 24-bit step of the source,
        # and bit-identical to what libsndfile decodes from the same file
        assert np.abs(x - src).max() <= 2.0**-23
        assert np.array_equal(x, sf.read(path, dtype="float32")[0])
    else:
        # Lossy: the content sits at `lag`, channels not swapped; the edges (codec transients) are left out.
        seg = src[24000:120000, 0]
        found = int(np.argmax([x[24000 + k:120000 + k, 0] @ seg for k in range(-2048, 2049)])) - 2048
        assert found == lag
        y = x[lag + 4800:lag + N - 4800]
        ref = src[4800:N - 4800]
        assert corr(y[:, 0], ref[:, 0]) > 0.99 and corr(y[:, 1], ref[:, 1]) > 0.99
        assert abs(corr(y[:, 0], ref[:, 1])) < 0.05


def test_container_names(media):
    d, _ = media
    ffmpeg("-i", d / "src.wav", "-t", "0.5", "-c:a", "libvorbis", d / "names.ogg")
    assert probe(d / "names.ogg").container == "ogg"
    ffmpeg("-i", d / "src.wav", "-t", "0.5", "-c:a", "pcm_s16le", d / "names.wav")
    assert probe(d / "names.wav").container == "wav"


def test_blocks_have_the_asked_size(media):
    d, src = media
    blocks = list(iter_decode(d / "src.wav", block_frames=50000))
    assert [len(b) for b in blocks] == [50000, 50000, N - 100000]
    assert all(b.shape[1] == 2 and b.dtype == np.float32 for b in blocks)
    assert np.array_equal(np.concatenate(blocks), src)
    with pytest.raises(ValueError):
        list(iter_decode(d / "src.wav", block_frames=0))


def test_mono_is_duplicated_exactly(tmp_path):
    mono = source_signal(SR)[:, 0]
    sf.write(tmp_path / "m.wav", mono, SR, subtype="FLOAT")
    ffmpeg("-i", tmp_path / "m.wav", "-c:a", "flac", "-sample_fmt", "s16", tmp_path / "m.flac")
    for name, expected in (("m.wav", mono), ("m.flac", quantized(mono, 16))):
        info = probe(tmp_path / name)
        assert info.channels == 1
        x = decode_all(tmp_path / name)
        assert np.array_equal(x[:, 0], expected) and np.array_equal(x[:, 1], expected)


# 5.1 is FL FR FC LFE BL BR. libswresample's default stereo downmix, unnormalized for float output:
# L = FL + 0.7071 FC + 0.7071 BL, R = FR + 0.7071 FC + 0.7071 BR, LFE dropped.
DOWNMIX_5_1 = np.array([[1, 0, 0.70710678, 0, 0.70710678, 0], [0, 1, 0.70710678, 0, 0, 0.70710678]])


def _downmix_matrix(decoded, channels):
    m, *_ = np.linalg.lstsq(channels.astype(np.float64), decoded.astype(np.float64), rcond=None)
    return m.T


def test_5_1_is_downmixed_with_ffmpegs_matrix(tmp_path):
    freqs = [200, 300, 500, 700, 1100, 1300]  # a different sine per channel, so each channel's share is measurable
    inputs = [a for f in freqs for a in ("-f", "lavfi", "-i", f"sine=f={f}:d=1:sample_rate=44100")]
    join = "".join(f"[{i}]" for i in range(6)) + "join=inputs=6:channel_layout=5.1[a]"
    ffmpeg(*inputs, "-filter_complex", join, "-map", "[a]", "-c:a", "pcm_s16le", tmp_path / "51.wav")
    info = probe(tmp_path / "51.wav")
    assert (info.channels, info.frames) == (6, 44100)
    channels, _ = sf.read(tmp_path / "51.wav", dtype="float32")
    x = decode_all(tmp_path / "51.wav")
    assert x.shape == (44100, 2)
    np.testing.assert_allclose(_downmix_matrix(x, channels), DOWNMIX_5_1, atol=1e-4)
    # the centre channel alone lands in both sides at -3 dB
    assert np.abs(x[:, 0] - channels[:, 0] - 0.70710678 * channels[:, 2] - 0.70710678 * channels[:, 4]).max() < 1e-4


def test_six_channels_without_layout_are_read_as_5_1(tmp_path):
    rng = np.random.default_rng(0)
    channels = (0.1 * rng.standard_normal((4000, 6))).astype(np.float32)
    sf.write(tmp_path / "six.wav", channels, 44100, subtype="FLOAT")  # libsndfile writes no channel mask
    x = decode_all(tmp_path / "six.wav")
    np.testing.assert_allclose(_downmix_matrix(x, channels), DOWNMIX_5_1, atol=1e-4)


# ---------------------------------------------------------------------------------------------------- bad inputs


@pytest.fixture(scope="module")
def bad(tmp_path_factory, media):
    d = tmp_path_factory.mktemp("bad")
    src_dir, _ = media
    rng = np.random.default_rng(1)
    (d / "empty.wav").write_bytes(b"")
    (d / "random.bin").write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (d / "notes.txt").write_text("this is not audio\n" * 100)
    (d / "notes.dat").write_text("this is not audio\n" * 100)
    ffmpeg("-i", src_dir / "src.wav", "-t", "2", "-c:a", "libmp3lame", d / "good.mp3")
    mp3 = bytearray((d / "good.mp3").read_bytes())
    (d / "truncated.mp3").write_bytes(mp3[:300])
    mp3[::7] = rng.integers(0, 256, len(mp3[::7]), dtype=np.uint8).tobytes()
    (d / "garbled.mp3").write_bytes(mp3)
    wav = (src_dir / "src.wav").read_bytes()
    (d / "badheader.wav").write_bytes(rng.integers(0, 256, 44, dtype=np.uint8).tobytes() + wav[44:])
    ffmpeg(*VIDEO, "-t", "1", "-c:v", "mpeg4", d / "silent.mp4")
    ffmpeg("-f", "lavfi", "-i", "anullsrc=d=0", "-t", "0", "-c:a", "pcm_s16le", d / "zero.wav")
    # a WAV whose format tag (0x1234) names no codec FFmpeg knows
    data = bytes(8000)
    fmt = (0x1234).to_bytes(2, "little") + (2).to_bytes(2, "little") + (44100).to_bytes(4, "little") \
        + (176400).to_bytes(4, "little") + (4).to_bytes(2, "little") + (16).to_bytes(2, "little")
    riff = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + len(data).to_bytes(4, "little") + data
    (d / "unknown_codec.wav").write_bytes(b"RIFF" + len(riff).to_bytes(4, "little") + riff)
    # an HLS playlist: playing it would read other files; refused even though its segments are right there
    ffmpeg("-i", src_dir / "src.wav", "-c:a", "aac", "-f", "hls", "-hls_time", "1", d / "list.m3u8")
    return d


BAD = [
    ("missing.wav", InputError, "input file not found"),
    ("empty.wav", InputError, r"input is empty \(0 bytes\)"),
    ("random.bin", UnsupportedMediaError, "not a recognized audio/video format"),
    ("notes.txt", InputError, "no audio stream in input|not a recognized"),  # FFmpeg may read .txt as ANSI art
    ("notes.dat", UnsupportedMediaError, "not a recognized audio/video format"),
    ("truncated.mp3", UnsupportedMediaError, "not a recognized audio/video format"),
    ("garbled.mp3", InputError, r"cannot decode input: \d+ of \d+ packets are corrupt"),
    ("badheader.wav", UnsupportedMediaError, "not a recognized audio/video format"),
    ("silent.mp4", InputError, r"no audio stream in input \(streams: video\)"),
    ("zero.wav", InputError, r"input is empty \(0 samples\)"),
    ("unknown_codec.wav", UnsupportedMediaError, "audio codec is unknown"),
    ("list.m3u8", InputError, "refers to other files"),
    (".", InputError, "not a regular file"),
]


@pytest.mark.parametrize("name,error,message", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_get_clear_errors(bad, name, error, message):
    path = bad / name
    for call in (lambda: probe(path), lambda: list(iter_decode(path))):
        with pytest.raises(error, match=message) as e:
            call()
        text = str(e.value)
        assert "\n" not in text and str(bad) not in text  # one line, no server paths
        if error is InputError:  # the narrower class is kept for formats FFmpeg does not know
            assert not isinstance(e.value, UnsupportedMediaError) or name == "notes.txt"


def test_a_few_corrupt_packets_are_skipped(media, tmp_path, caplog):
    d, _ = media
    ffmpeg("-i", d / "src.wav", "-t", "2", "-c:a", "aac", tmp_path / "good.m4a")
    good = probe(tmp_path / "good.m4a")
    data = bytearray((tmp_path / "good.m4a").read_bytes())
    middle = len(data) // 2  # inside the mdat (ffmpeg puts moov at the end): one AAC frame damaged
    data[middle:middle + 40] = b"\xff" * 40
    (tmp_path / "scratched.m4a").write_bytes(data)
    with caplog.at_level("WARNING", logger="mvsep.audio"):
        info = probe(tmp_path / "scratched.m4a")
    assert "skipped 1 corrupt packet(s)" in caplog.text
    assert good.frames - 2048 <= info.frames < good.frames  # that packet's samples are gone, the rest decoded
    assert len(decode_all(tmp_path / "scratched.m4a")) == info.frames


def test_truncated_files_decode_what_is_there(media, tmp_path, caplog):
    d, src = media
    # WAV cut in half: FFmpeg clamps the header's data size to the file, so this is simply a shorter input
    ffmpeg("-i", d / "src.wav", "-c:a", "pcm_s16le", tmp_path / "full.wav")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:len(data) // 2])
    info = probe(tmp_path / "cut.wav")
    assert N // 2 - 1000 < info.frames < N // 2
    assert np.array_equal(decode_all(tmp_path / "cut.wav"), quantized(src[:info.frames], 16))
    # mp4 with its index first (an upload cut off): the index still claims 3 s, decoding stops early -> warning
    ffmpeg("-i", d / "src.wav", "-c:a", "aac", "-movflags", "+faststart", tmp_path / "full.m4a")
    data = (tmp_path / "full.m4a").read_bytes()
    (tmp_path / "cut.m4a").write_bytes(data[:len(data) // 2])
    with caplog.at_level("WARNING", logger="mvsep.audio"):
        info = probe(tmp_path / "cut.m4a")
    assert "may be truncated or damaged" in caplog.text
    assert N // 4 < info.frames < 3 * N // 4
    assert len(decode_all(tmp_path / "cut.m4a")) == info.frames


# ---------------------------------------------------------------------------------------------------- resampling


def test_out_frames_rule():
    assert out_frames(44100, 44100, 48000) == 48000
    assert out_frames(1, 48000, 44100) == 1  # 0.91875 -> 1
    assert out_frames(2, 88200, 44100) == 1 and out_frames(3, 88200, 44100) == 2  # halves round up
    assert out_frames(10**12 + 1, 44100, 48000) == (10**12 + 1) * 48000 // 44100 + 1  # exact for huge n
    for rate in (8000, 22050, 32000, 44100):  # up first: the default rule always comes back to n
        assert all(out_frames(out_frames(n, rate, MODEL_RATE), MODEL_RATE, rate) == n for n in range(3000))
    # down first can not always: 2 and 3 frames at 96 kHz both become 1 frame at 44.1 kHz
    assert out_frames(2, 96000, 44100) == out_frames(3, 96000, 44100) == 1


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 96000])
def test_resample_round_trip(tmp_path, rate):
    n = int(2.3 * rate) + 7
    t = np.arange(n) / rate
    x = np.stack([0.5 * np.sin(2 * np.pi * 1000 * t), 0.5 * np.cos(2 * np.pi * 3500 * t)], 1).astype(np.float32)
    sf.write(tmp_path / "in.wav", x, rate, subtype="FLOAT")
    info = probe(tmp_path / "in.wav")
    assert (info.sample_rate, info.frames) == (rate, n)

    m = out_frames(n, rate, MODEL_RATE)
    up = np.concatenate(list(resample_blocks(iter_decode(tmp_path / "in.wav", 10007), rate, MODEL_RATE, n)))
    assert up.shape == (m, 2) and up.dtype == np.float32
    tm = np.arange(m) / MODEL_RATE
    edge = MODEL_RATE // 20  # 50 ms at each end: the filter's own transients
    assert np.abs(up[edge:-edge, 0] - 0.5 * np.sin(2 * np.pi * 1000 * tm[edge:-edge])).max() < 1e-3  # no delay

    blocks = (up[i:i + 8191] for i in range(0, m, 8191))
    back = np.concatenate(list(resample_blocks(blocks, MODEL_RATE, rate, m, total_out_frames=n)))
    assert back.shape == (n, 2)
    if rate <= MODEL_RATE:
        assert out_frames(m, MODEL_RATE, rate) == n  # the default rule is enough when going up first
    e = rate // 20
    assert np.abs(back[e:-e] - x[e:-e]).max() < 1e-3
    if rate == MODEL_RATE:
        assert np.array_equal(up, x) and np.array_equal(back, x)  # identity


def test_stream_resampler_counts_are_exact_for_any_blocks():
    rng = np.random.default_rng(3)
    for in_rate, out_rate in ((44100, 48000), (48000, 44100), (8000, 44100), (44100, 44100)):
        for total in (0, 1, 999, 48001):
            r = StreamResampler(in_rate, out_rate, total)
            got, fed = 0, 0
            while fed < total:
                k = int(rng.integers(0, 3000))
                y = r.process(rng.standard_normal((min(k, total - fed), 2)).astype(np.float32))
                assert y.ndim == 2 and y.shape[1] == 2 and y.dtype == np.float32
                got += len(y)
                fed += min(k, total - fed)
            got += len(r.flush())
            assert got == out_frames(total, in_rate, out_rate)
    # fewer frames than announced: padded with zeros; more: trimmed
    r = StreamResampler(44100, 48000, 44100)
    y = np.concatenate([r.process(np.ones((1000, 2), np.float32)), r.flush()])
    assert len(y) == 48000 and not y[2000:].any()
    r = StreamResampler(44100, 44100, 10)
    assert len(r.process(np.ones((25, 2), np.float32))) == 10 and len(r.flush()) == 0


# ---------------------------------------------------------------------------------------------------- encoding

SUBTYPES = {"wav": "FLOAT", "wav16": "PCM_16", "wav24": "PCM_24", "flac": "PCM_24", "mp3": "MPEG_LAYER_III"}


@pytest.mark.parametrize("mono", [False, True], ids=["stereo", "mono"])
@pytest.mark.parametrize("fmt", audio.OUTPUT_FORMATS)
def test_stem_writer_formats(tmp_path, fmt, mono):
    sr = 44100
    x = source_signal(2 * sr + 123, sr)
    x[100] = [1.7, -1.5]  # out of range: clipped by the integer formats, kept by float WAV
    path = tmp_path / f"stem{extension(fmt)}"
    with StemWriter(path, sr, fmt, mono=mono) as w:
        for i in range(0, len(x), 30000):
            w.write(x[i:i + 30000])
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (sr, 1 if mono else 2, SUBTYPES[fmt])
    assert info.format == {"flac": "FLAC", "mp3": "MP3"}.get(fmt, "WAV")
    # mp3: libsndfile writes a LAME/Xing header with the encoder delay and padding, so libsndfile and FFmpeg
    # both give back exactly the written length.
    assert info.frames == len(x)
    got = probe(path)
    assert (got.sample_rate, got.channels, got.frames) == (sr, 1 if mono else 2, len(x))
    y, _ = sf.read(path, dtype="float32", always_2d=True)
    ref = x.mean(1, keepdims=True) if mono else x
    if fmt == "wav":
        assert np.array_equal(y, ref)
    elif fmt == "mp3":
        assert av.open(str(path)).streams.audio[0].bit_rate == 320000
        for c in range(y.shape[1]):
            assert corr(y[2000:-2000, c], ref[2000:-2000, c]) > 0.999
    else:
        bits = 16 if fmt == "wav16" else 24
        assert np.array_equal(y, quantized(ref, bits))  # round(x * 2**(bits-1)), clipped; read back exactly
        if not mono:
            assert y[100, 0] == pytest.approx(1 - 2.0 ** (1 - bits)) and y[100, 1] == -1.0


def test_mp3_at_a_rate_mpeg_lacks(tmp_path):
    x = source_signal(96000, 96000)
    write_stem(tmp_path / "s.mp3", x, 96000, "mp3")
    info = probe(tmp_path / "s.mp3")
    assert (info.sample_rate, info.frames) == (48000, 48000)
    assert audio.mp3_rate(88200) == 44100 and audio.mp3_rate(37800) == 44100 and audio.mp3_rate(7000) == 8000


def test_abort_and_exceptions_leave_nothing(tmp_path):
    x = source_signal(10000, 44100)
    w = StemWriter(tmp_path / "a.wav", 44100)
    w.write(x)
    w.abort()
    with pytest.raises(RuntimeError, match="boom"):
        with StemWriter(tmp_path / "b.flac", 44100, "flac") as w:
            w.write(x)
            assert len(os.listdir(tmp_path)) == 1  # the temporary file, under another name
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    # an existing complete stem is replaced only by a complete one
    write_stem(tmp_path / "c.wav", x, 44100)
    w = StemWriter(tmp_path / "c.wav", 44100)
    w.write(x[:10])
    assert sf.info(tmp_path / "c.wav").frames == 10000
    w.abort()
    assert sf.info(tmp_path / "c.wav").frames == 10000 and os.listdir(tmp_path) == ["c.wav"]


def test_options_are_checked(tmp_path):
    assert [extension(f) for f in audio.OUTPUT_FORMATS] == [".wav", ".wav", ".wav", ".flac", ".mp3"]
    with pytest.raises(OptionError, match="output_format") as e:
        StemWriter(tmp_path / "x.ogg", 44100, "ogg")
    assert e.value.field == "output_format"
    with pytest.raises(OptionError, match="sample_rate"):
        StemWriter(tmp_path / "x.wav", 0)
    with pytest.raises(OSError, match="cannot create"):
        StemWriter(tmp_path / "no" / "such" / "dir.wav", 44100)
    assert os.listdir(tmp_path) == []


def test_large_wav_becomes_rf64(tmp_path, monkeypatch):
    monkeypatch.setattr(audio.encode, "_WAV_LIMIT", 1000)  # stands in for 4 GiB
    x = source_signal(1000, 44100)
    write_stem(tmp_path / "big.wav", x, 44100)
    assert sf.info(tmp_path / "big.wav").format == "RF64"
    assert np.array_equal(decode_all(tmp_path / "big.wav"), x)
    write_stem(tmp_path / "small.wav", x[:100], 44100)
    assert sf.info(tmp_path / "small.wav").format == "WAV"


def test_write_stem_mono_input_and_empty(tmp_path):
    x = source_signal(5000, 22050)[:, 0]
    write_stem(tmp_path / "m.wav", x, 22050, mono=True)
    y, sr = sf.read(tmp_path / "m.wav", dtype="float32")
    assert sr == 22050 and np.array_equal(y, x)
    write_stem(tmp_path / "e.wav", np.zeros((0, 2), np.float32), 22050)
    assert sf.info(tmp_path / "e.wav").frames == 0


# ---------------------------------------------------------------------------------------------------- streaming

_MEASURE = """
import json, sys
import numpy as np
from mvsep.audio import iter_decode, probe

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

list(iter_decode(sys.argv[2]))  # warm-up on a short file: lazy imports and first allocations
base_hwm, base_rss = status("VmHWM"), status("VmRSS")
info = probe(sys.argv[1])
sizes, peak_rss = [], 0
for block in iter_decode(sys.argv[1]):
    sizes.append(len(block))
    peak_rss = max(peak_rss, status("VmRSS"))
print(json.dumps({"frames": info.frames, "sizes": sizes, "hwm_growth": status("VmHWM") - base_hwm,
                  "rss_growth": peak_rss - base_rss}))
"""


def test_ten_minute_wav_is_streamed(tmp_path):
    path = tmp_path / "long.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=600:sample_rate=44100", "-ac", "2", "-c:a", "pcm_s16le", path)
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=1", "-ac", "2", tmp_path / "short.wav")
    frames = 600 * 44100
    decoded_bytes = frames * 2 * 4  # what a whole-file float32 array would take: 212 MB
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(tmp_path / "short.wav")], check=True,
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    r = json.loads(out.stdout)
    assert r["frames"] == frames and sum(r["sizes"]) == frames
    assert max(r["sizes"]) == 262144 and all(s == 262144 for s in r["sizes"][:-1])
    print(f"\n10-min wav ({path.stat().st_size >> 20} MiB): peak RSS growth {r['hwm_growth'] >> 20} MiB, "
          f"VmRSS growth {r['rss_growth'] >> 20} MiB")
    assert r["hwm_growth"] < decoded_bytes / 8 and r["rss_growth"] < decoded_bytes / 8  # < 26 MB
