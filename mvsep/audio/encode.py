"""Streaming stem encoders (WAV/RF64, FLAC, MP3): block by block, to a temporary file renamed when complete."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import OptionError
from .decode import _why
from .resample import StreamResampler, _as_stereo_block

OUTPUT_FORMATS = ("wav", "wav16", "wav24", "flac", "mp3")
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
# Data bytes above which a WAV's 32-bit size fields overflow; such stems are written as RF64 (still ".wav").
_WAV_LIMIT = 0xFFFFFFFF - (1 << 20)


def extension(output_format: str) -> str:
    """File extension (with the dot) of an output format."""
    _check_format(output_format)
    return {"flac": ".flac", "mp3": ".mp3"}.get(output_format, ".wav")


def stem_paths(output_dir, name: str, stems, output_format: str, suffixes: dict[str, str] | None = None) -> dict:
    """{stem: output_dir/<name>_<suffix><ext>}; the dir is made."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ext = extension(output_format)
    return {s: output_dir / f"{name}_{(suffixes or {}).get(s, s)}{ext}" for s in stems}


def _check_format(output_format):
    if output_format not in OUTPUT_FORMATS:
        raise OptionError("output_format", f"must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")


def mp3_rate(sample_rate: int) -> int:
    """The rate an mp3 stem is stored at: MPEG audio allows 8000..48000 Hz in 9 steps. Other rates are
    resampled: above 48 kHz to 44100 (multiples of 11025) or 48000, otherwise to the next higher MPEG rate."""
    sample_rate = int(sample_rate)
    if sample_rate in _MP3_RATES:
        return sample_rate
    if sample_rate > 48000:
        return 44100 if sample_rate % 11025 == 0 else 48000
    return next(r for r in _MP3_RATES if r > sample_rate)


_SFC_SET_ADD_PEAK_CHUNK = 0x1050  # sndfile.h; soundfile does not wrap this command


def _no_peak_chunk(f: sf.SoundFile) -> None:
    """libsndfile adds a PEAK chunk with the write time to float WAV files: without it, identical stems are
    identical bytes. Must run before the first write."""
    sf._snd.sf_command(f._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)


class StemWriter:
    """Streaming encoder of one stem to `path`.

    Formats: "wav" 32-bit float WAV (no clipping), "wav16"/"wav24" PCM WAV and "flac" 24-bit FLAC (clipped to
    [-1, 1], rounded as FFmpeg does: round(x * 2**(bits-1)) clipped to the integer range), "mp3" constant
    bitrate 320 kbit/s by libsndfile's LAME encoder (MPEG-2 rates <= 24 kHz cap it at 160, MPEG-2.5 <= 12 kHz
    at 64), with a LAME/Xing header so decoders drop the encoder delay and padding (FFmpeg and libsndfile read
    back exactly the written length); mp3 at a rate MPEG lacks is resampled to `mp3_rate(sample_rate)`
    (`file_rate` says what the file holds). A WAV whose data would pass 4 GiB is written as RF64 when
    `frames` (the expected length) is given.

    The file is written under a temporary name in the same directory and renamed onto `path` by close(), so a
    reader never sees a half-written stem; abort() (or an exception inside `with`) removes it.
    """

    def __init__(self, path, sample_rate: int, output_format: str = "wav", mono: bool = False,
                 frames: int | None = None):
        _check_format(output_format)
        if int(sample_rate) <= 0:
            raise OptionError("sample_rate", f"must be a positive integer, got {sample_rate!r}")
        self.path = Path(path)
        self.sample_rate = int(sample_rate)
        self.output_format = output_format
        self.mono = bool(mono)
        self.channels = 1 if self.mono else 2
        self.file_rate = mp3_rate(self.sample_rate) if output_format == "mp3" else self.sample_rate
        self.frames_written = 0  # frames given to write(), at sample_rate
        self._resampler = None
        if self.file_rate != self.sample_rate:
            self._resampler = StreamResampler(self.sample_rate, self.file_rate, None)
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.part")
        self._int_bits = {"wav16": 16, "wav24": 24, "flac": 24}.get(output_format)
        container, subtype, extra = {
            "wav": ("WAV", "FLOAT", {}),
            "wav16": ("WAV", "PCM_16", {}),
            "wav24": ("WAV", "PCM_24", {}),
            "flac": ("FLAC", "PCM_24", {}),
            "mp3": ("MP3", "MPEG_LAYER_III", {"compression_level": 0.0, "bitrate_mode": "CONSTANT"}),
        }[output_format]
        if container == "WAV" and frames is not None:
            bytes_per_sample = {"FLOAT": 4, "PCM_16": 2, "PCM_24": 3}[subtype]
            if int(frames) * self.channels * bytes_per_sample > _WAV_LIMIT:
                container = "RF64"
        self.subtype = subtype
        try:
            self._file = sf.SoundFile(self._tmp, "w", samplerate=self.file_rate, channels=self.channels,
                                      subtype=subtype, format=container, **extra)
        except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as e:
            self._remove_tmp()
            raise OSError(f"cannot create {self.path.name} ({output_format}): {_why(e)}") from None
        if subtype == "FLOAT":
            _no_peak_chunk(self._file)
        self._closed = False

    def write(self, block) -> None:
        """Append a float32 [n, 2] block (a [n] array counts as mono); mono=True stores (L + R) / 2."""
        if self._closed:
            raise RuntimeError("StemWriter is closed")
        x = _as_stereo_block(block)
        self.frames_written += len(x)
        if self._resampler is not None:
            x = self._resampler.process(x)
        self._encode(x)

    def _encode(self, x: np.ndarray) -> None:
        if not len(x):
            return
        if self.mono:
            x = (0.5 * (x[:, 0] + x[:, 1]))[:, None]
        if self._int_bits:
            # Integer samples computed here (clip + round) rather than by libsndfile, which scales by 2**n - 1
            # and does not clip unless told to. 24-bit values sit in the top bits of int32, as libsndfile wants.
            q = np.clip(np.rint(x.astype(np.float64) * 2.0 ** (self._int_bits - 1)),
                        -(2 ** (self._int_bits - 1)), 2 ** (self._int_bits - 1) - 1)
            x = (q * 2 ** (32 - self._int_bits)).astype(np.int32) if self._int_bits == 24 else q.astype(np.int16)
        elif self.output_format == "mp3":
            x = np.clip(x, -1.0, 1.0)
        try:
            self._file.write(np.ascontiguousarray(x))
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise OSError(f"cannot write {self.path.name}: {_why(e)}") from None

    def close(self) -> Path:
        """Finish the file and move it to `path` (atomic rename); returns `path`."""
        if self._closed:
            return self.path
        try:
            if self._resampler is not None:
                self._encode(self._resampler.flush())
            self._file.close()
            with open(self._tmp, "rb") as f:  # the data is on disk before the name says it is complete
                os.fsync(f.fileno())
            os.replace(self._tmp, self.path)
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            self.abort()
            raise OSError(f"cannot write {self.path.name}: {_why(e)}") from None
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop the stem: close and remove the temporary file; `path` is left untouched."""
        if self._closed:
            return
        self._closed = True
        try:
            self._file.close()
        except Exception:  # already broken; removing the file is what matters
            pass
        self._remove_tmp()

    def _remove_tmp(self):
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_stem(path, array, sample_rate: int, output_format: str = "wav", mono: bool = False,
               block_frames: int = 262144) -> Path:
    """Write a whole float32 [T, 2] (or [T]) array as one stem; see StemWriter."""
    x = np.asarray(array)
    with StemWriter(path, sample_rate, output_format, mono, frames=len(x)) as w:
        for i in range(0, len(x), block_frames):
            w.write(x[i : i + block_frames])
        if len(x) == 0:
            w.write(np.zeros((0, 2), np.float32))
    return Path(path)
