"""Disk: what a job will write (estimated before it runs), free space, and the result zip.

The zip holds each stem once: stems are added uncompressed (stored) and each loose stem is deleted as soon as it
is in the zip, so a stem download is a byte range of result.zip (`member_range`).
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import struct
import zipfile
from pathlib import Path

from .runner import MODEL_RATE, Runner

BYTES_PER_SAMPLE = {"wav": 4, "wav16": 2, "wav24": 3, "flac": 3}  # flac: at most its 24-bit PCM size
MP3_BYTES_PER_S = 40_000  # 320 kbit/s
SLACK = 1 << 20  # headers, the log, the zip directory


def need_bytes(facts: dict, options: dict) -> dict:
    """Estimated peak disk use of a job beyond its input: the engine's float32 work signals while the stems are
    encoded (the channels the recipe declares, `Recipe.work_channels`: mdx23 the 44.1 kHz mix and vocals, 6
    channels more of drums/bass/other sums with 4 stems; cinematic the mix and 6 channels of music/effects/dialog
    sums; plus the input at its own rate when that is not 44.1 kHz, for the residual stems; a surround input
    kept in its layout: that per channel group, and its channels at the input's and the output's rate), or the
    stems plus the largest one while the zip is built, whichever is more. `options`: the job's stored options."""
    frames, rate = int(facts.get("frames") or 0), int(facts.get("sample_rate") or MODEL_RATE)
    in_channels = int(facts.get("channels") or 2)
    length = math.ceil(frames * MODEL_RATE / rate)
    fmt = options.get("format", "wav")
    names = options.get("stems") or ("vocals", "instrumental")
    model_ch = Runner.work_channels(options)
    out_frames = frames if options.get("sample_rate", "native") == "native" else length
    out_rate = rate if options.get("sample_rate", "native") == "native" else MODEL_RATE
    surround = (in_channels > 2 and options.get("layout", "keep") != "stereo" and fmt != "mp3"
                and not options.get("mono"))
    if surround:  # every channel a group at most; native, resampled and one signal per stem at full width
        work = 4 * (length * model_ch * in_channels + (frames + out_frames * (1 + len(names))) * in_channels)
    else:
        work = 4 * (length * model_ch + (frames * 2 if rate != MODEL_RATE else 0))
    channels = 1 if options.get("mono") else in_channels if surround else 2
    if fmt == "mp3":
        stem = int(MP3_BYTES_PER_S * out_frames / out_rate) + 4096
    else:
        stem = out_frames * channels * BYTES_PER_SAMPLE[fmt] + 4096
    stems = stem * len(names)
    return {"work": work, "stems": stems, "total": stems + max(work, stem) + SLACK}


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def reserve_bytes(path: Path, reserve_mb: float | None) -> int:
    """Space jobs leave free (for SQLite, logs, uploads): SPARK_DISK_RESERVE_MB, else 5% of the disk, at most
    256 MB."""
    if reserve_mb is not None:
        return int(reserve_mb * 2**20)
    return min(256 << 20, shutil.disk_usage(path).total // 20)


def is_disk_full(exc: BaseException | None, path: Path) -> bool:
    """The error came from a full disk (ENOSPC / EDQUOT anywhere in its chain, or next to no space left:
    some writers, libsndfile among them, report a short write without errno)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
    try:
        return free_bytes(path) < (1 << 20)
    except OSError:
        return False


def mb(n: float) -> float:
    return round(n / 2**20, 1)


def build_zip(final: Path, members: list[tuple[Path, str]], progress=lambda: None) -> None:
    """Move the stem files into `final` (stored entries, written to `.part` and renamed); each stem file is
    deleted as soon as it is in the zip. On error the `.part` is removed (the caller removes the stems)."""
    tmp = final.with_name(final.name + ".part")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
            for path, arcname in members:
                z.write(path, arcname)
                path.unlink()
                progress()
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def member_range(zip_path: Path, arcname: str) -> tuple[int, int]:
    """(offset, size) of a stored member's bytes inside the zip."""
    with zipfile.ZipFile(zip_path) as z:
        info = z.getinfo(arcname)
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(f"{arcname} is compressed")
        with open(zip_path, "rb") as f:
            f.seek(info.header_offset)
            header = f.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        return info.header_offset + 30 + name_len + extra_len, info.file_size
