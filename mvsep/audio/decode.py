"""Probe and decode any media with PyAV into float32 [n, 2] blocks (streamed; corrupt packets counted)."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..errors import InputError, UnsupportedMediaError

log = logging.getLogger(__name__)

MODEL_RATE = 44100

# A few corrupt packets are skipped, as the ffmpeg CLI does; more than this share means the input is broken.
_MAX_BAD_PACKET_SHARE = 0.01
_MAX_BAD_PACKETS_ALWAYS_OK = 2

# Integer sample formats as PyAV returns them, and the divisor FFmpeg uses to make floats of them.
_INT_SCALE = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31, np.dtype(np.int64): 2.0**63}


@dataclass(frozen=True)
class AudioInfo:
    """Facts about the input's first audio stream, as decoded (not as the container claims)."""

    sample_rate: int
    channels: int
    frames: int  # samples per channel that iter_decode yields
    duration: float  # frames / sample_rate, seconds
    codec: str  # e.g. "aac", "mp3", "pcm_s16le"
    container: str  # FFmpeg demuxer name, e.g. "wav", "mov,mp4,m4a,3gp,3g2,mj2"


MAX_STREAMS = 100  # streams (audio, video, subtitles, ...) an input may hold


class _Input:
    """An opened input: the container and its first audio stream; closes everything it opened.

    The file is opened through `io_open`, which lets FFmpeg read this one file and nothing else: playlists and
    reference formats (HLS, concat, DASH, ...) that would read other files or URLs get an empty stream instead,
    and the input is then refused.
    """

    def __init__(self, path):
        self.name = os.fspath(path)
        p = Path(self.name)
        if not p.exists():
            raise InputError(f"input file not found: {p.name}")
        if not p.is_file():
            raise InputError(f"input is not a regular file: {p.name}")
        try:
            size = p.stat().st_size
        except OSError as e:
            raise InputError(f"cannot read input: {e.strerror}") from None
        if size == 0:
            raise InputError("input is empty (0 bytes)")
        self.refused: list[str] = []
        self._files: list = []
        try:
            # max_streams: FFmpeg opens a decoder per stream to read their parameters (an MP4 with 300 audio
            # streams took ~210 MB); past the cap the demuxer stops with ENOMEM instead
            self.container = av.open(self.name, io_open=self._io_open,
                                     container_options={"max_streams": str(MAX_STREAMS)})
        except PermissionError:
            raise InputError("cannot read input: permission denied") from None
        except av.error.MemoryError:
            self.close()
            raise InputError(f"cannot decode input: it holds more than {MAX_STREAMS} streams (the limit; only "
                             "the first audio stream is used), or reading its header ran out of memory") from None
        except (av.FFmpegError, OSError, EOFError) as e:
            self.close()
            self._check_refused()
            raise UnsupportedMediaError(
                f"cannot decode input: not a recognized audio/video format, or its header is corrupt ({_why(e)})"
            ) from None
        try:
            self._check_refused()
            audio = self.container.streams.audio
            if not audio:
                kinds = sorted({s.type for s in self.container.streams}) or ["none"]
                raise InputError(f"no audio stream in input (streams: {', '.join(kinds)})")
            self.stream = audio[0]
            self.codec = _codec_name(self.stream)
        except BaseException:
            self.close()
            raise

    def _io_open(self, url, flags, options):
        if url == self.name and flags == 1:  # AVIO_FLAG_READ on the input itself
            f = open(self.name, "rb")  # noqa: SIM115 (closed in close())
            self._files.append(f)
            return f
        self.refused.append(url)
        return io.BytesIO(b"")

    def _check_refused(self):
        if self.refused:
            raise InputError(
                "input refers to other files or URLs (a playlist or reference file); send the media itself"
            )

    def close(self):
        c = getattr(self, "container", None)
        if c is not None:
            try:
                c.close()
            except Exception:  # closing a broken input must not hide the real error
                pass
        for f in self._files:
            f.close()
        self._files.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _why(e: BaseException) -> str:
    """The useful part of a PyAV error, one line, without the file path."""
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(msg).split())


def _codec_name(stream) -> str:
    ctx = stream.codec_context
    codec = getattr(ctx, "codec", None) if ctx is not None else None
    if codec is None:
        raise UnsupportedMediaError("cannot decode input: its audio codec is unknown to the decoder")
    return codec.canonical_name or codec.name


def _frame_to_float(frame) -> np.ndarray:
    """A decoded frame with 1 or 2 channels as float32 [n, channels], with FFmpeg's int->float scaling."""
    a = frame.to_ndarray()
    channels = frame.layout.nb_channels
    a = a.T if frame.format.is_planar else a.reshape(-1, channels)
    if a.dtype == np.uint8:
        return ((a.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    scale = _INT_SCALE.get(a.dtype)
    if scale is not None:
        return (a / scale).astype(np.float32)
    return a.astype(np.float32, copy=False)


class _Stereo:
    """Turns decoded frames into float32 [n, 2] arrays: mono is duplicated exactly, stereo is kept as is, and
    more channels go through libswresample's standard downmix (see iter_decode)."""

    def __init__(self):
        self._resampler = None
        self._key = None

    def convert(self, frame) -> Iterator[np.ndarray]:
        if frame.layout.nb_channels <= 2:
            yield from self.flush()
            x = _frame_to_float(frame)
            if x.shape[1] == 1:
                x = np.repeat(x, 2, axis=1)
            yield x
            return
        key = (frame.layout.name, frame.format.name, frame.sample_rate)
        if key != self._key:  # a new downmixer per input layout; the old one is drained first
            yield from self.flush()
            self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=frame.sample_rate)
            self._key = key
        try:
            outs = self._resampler.resample(frame)
        except av.FFmpegError:
            # FFmpeg has no channel order for e.g. 9 or 64 unlabelled channels, so no downmix matrix
            n = frame.layout.nb_channels
            raise InputError(f"cannot decode input: its {n} channels have no standard channel layout "
                             f"({frame.layout.name!r}), so they cannot be mixed down to stereo; send mono, "
                             "stereo, 5.1, 7.1 or another standard layout") from None
        for out in outs:
            yield out.to_ndarray().T.astype(np.float32, copy=False)

    def flush(self) -> Iterator[np.ndarray]:
        if self._resampler is not None:
            for out in self._resampler.resample(None):
                yield out.to_ndarray().T.astype(np.float32, copy=False)
            self._resampler = None
            self._key = None


class _Facts:
    rate: int | None = None
    channels: int | None = None


def _decoded(inp: _Input, facts: _Facts, convert=None) -> Iterator[np.ndarray]:
    """Every decoded sample of the input's first audio stream, as float32 [n, 2] pieces (one per frame).

    Corrupt packets are skipped (counted and logged); too many of them, a read error, or a sample rate change
    raise InputError. probe and iter_decode both use this, so their counts agree by construction.
    """
    stereo = convert or _Stereo()  # surround.py passes one that keeps every channel
    packets = bad = 0
    first_error = None
    try:
        for packet in inp.container.demux(inp.stream):
            if packet.size:
                packets += 1
            try:
                frames = packet.decode()
            except av.FFmpegError as e:
                bad += 1
                first_error = first_error or _why(e)
                continue
            for frame in frames:
                if facts.rate is None:
                    facts.rate, facts.channels = frame.sample_rate, frame.layout.nb_channels
                elif frame.sample_rate != facts.rate:
                    raise InputError(
                        f"cannot decode input: sample rate changes mid-stream ({facts.rate} -> "
                        f"{frame.sample_rate} Hz)"
                    )
                yield from stereo.convert(frame)
        yield from stereo.flush()
    except av.FFmpegError as e:
        raise InputError(f"cannot decode input: {_why(e)}") from None
    except OSError as e:
        raise InputError(f"cannot read input: {e.strerror or e}") from None
    inp._check_refused()
    if bad:
        log.warning("skipped %d corrupt packet(s) of %d in %s: %s", bad, packets, inp.name, first_error)
    if bad > max(_MAX_BAD_PACKETS_ALWAYS_OK, _MAX_BAD_PACKET_SHARE * packets) or (bad and facts.rate is None):
        raise InputError(f"cannot decode input: {bad} of {packets} packets are corrupt ({first_error})")


def _claimed_seconds(inp: _Input) -> float | None:
    """The duration the container states for the audio stream (or the whole file), if any."""
    s = inp.stream
    if s.duration and s.time_base:
        return float(s.duration * s.time_base)
    if inp.container.duration:
        return inp.container.duration / 1_000_000
    return None


def probe(path, max_seconds: float | None = None) -> AudioInfo:
    """Facts about the first audio stream of `path` (any container FFmpeg reads, video files included).

    `frames` is exact: the stream is decoded once, streaming, and its samples counted (container durations are
    estimates for many formats). `sample_rate` and `channels` are those of the decoded audio (e.g. HE-AAC
    decodes at twice the rate its container may announce).
    Raises InputError for a missing, empty, unreadable or corrupt file, no audio stream, or 0 decoded samples;
    UnsupportedMediaError when FFmpeg does not recognize the format or the codec.
    With `max_seconds`, decoding stops as soon as the decoded audio is longer: `frames` is then a lower bound
    just past the cap (a caller refusing long inputs pays for no more than the cap).
    """
    facts = _Facts()
    frames = 0
    cut = False
    with _Input(path) as inp:
        for piece in _decoded(inp, facts):
            frames += len(piece)
            if max_seconds is not None and frames > max_seconds * facts.rate:
                cut = True
                break
        codec, container = inp.codec, inp.container.format.name
        claimed = _claimed_seconds(inp)
    if frames == 0 or facts.rate is None:
        raise InputError("input is empty (0 samples)")
    if claimed and not cut and frames / facts.rate < 0.95 * claimed - 0.05:
        # FFmpeg (like the ffmpeg CLI) stops quietly at some damage, e.g. a bad Ogg page; container durations
        # are only estimates for some formats (VBR mp3 without a header), so this is a warning, not an error.
        log.warning("decoded %.2f s of %s but its container says %.2f s: it may be truncated or damaged",
                    frames / facts.rate, Path(path).name, claimed)
    return AudioInfo(facts.rate, facts.channels, frames, frames / facts.rate, codec, container)


def iter_decode(path, block_frames: int = 262144) -> Iterator[np.ndarray]:
    """Decode the first audio stream of `path` as float32 [n, 2] blocks at the stream's own sample rate.

    Every block has `block_frames` frames except the last; the total equals `probe(path).frames`. Nothing but
    the current block is held in memory.

    Channels: mono is duplicated exactly (L == R == the mono samples); stereo (any 2-channel layout) is kept as
    decoded; more than 2 channels are downmixed by libswresample (av.AudioResampler, layout "stereo") with
    FFmpeg's standard matrix, not normalized for float output: L = FL + 0.7071 * (FC + every other left-side
    channel: BL, SL, ...), R likewise, a back-centre channel at 0.5 to each side, LFE dropped (lfe_mix_level 0).
    So 5.1 (FL FR FC LFE BL BR) gives L = FL + 0.7071 FC + 0.7071 BL, R = FR + 0.7071 FC + 0.7071 BR.
    A layout with unspecified channel order is read as FFmpeg's default layout for its channel count
    (3 -> 2.1, 4 -> 4.0, 6 -> 5.1, 8 -> 7.1).
    Integer samples are scaled as FFmpeg does (int16 / 32768, int32 / 2**31, (uint8 - 128) / 128).
    Errors are raised on the first next() (or mid-stream for damage found later), as in `probe`.
    """
    if int(block_frames) < 1:
        raise ValueError("block_frames must be >= 1")
    block_frames = int(block_frames)
    facts = _Facts()
    with _Input(path) as inp:
        buf = np.empty((block_frames, 2), np.float32)
        fill = 0
        total = 0
        for piece in _decoded(inp, facts):
            total += len(piece)
            while len(piece):
                take = min(block_frames - fill, len(piece))
                buf[fill : fill + take] = piece[:take]
                fill += take
                piece = piece[take:]
                if fill == block_frames:
                    yield buf
                    buf = np.empty((block_frames, 2), np.float32)
                    fill = 0
        if total == 0:
            raise InputError("input is empty (0 samples)")
        if fill:
            yield buf[:fill]


class _AllChannels:
    """Decoded frames as float32 [n, channels], every channel kept (`_decoded`'s converter for surround)."""

    def convert(self, frame):
        yield _frame_to_float(frame)

    def flush(self):
        return iter(())


def iter_decode_channels(path) -> Iterator[np.ndarray]:
    """Every decoded sample of the first audio stream, every channel kept: float32 [n, channels] pieces (one per
    frame), at the stream's own rate. Surround inputs are read with this."""
    with _Input(path) as inp:
        yield from _decoded(inp, _Facts(), _AllChannels())


def first_frame_layout(path) -> tuple[str, list[str]]:
    """(layout name, channel names) of the first decoded frame of the first audio stream."""
    with _Input(path) as inp:
        for packet in inp.container.demux(inp.stream):
            for frame in packet.decode():
                return frame.layout.name, [c.name for c in frame.layout.channels]
    raise InputError("input is empty (0 samples)")
