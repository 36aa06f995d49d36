"""Surround inputs (more than two channels) kept in their own layout (../shared/docs/dubbing-stems.md).

The models are stereo, so a surround input goes through the recipe group by group: each natural left/right pair
(FL/FR, SL/SR, BL/BR, ...) as a stereo pair, the centre (and any other unpaired channel) as a dual-mono pair
whose two results are averaged back into one channel. LFE holds no dialog: it goes to the background stems
(and to effects / bass) unchanged. Every stem has the input's channel count, layout and frames at its rate;
per channel, dialog + background (vocals + instrumental) == input, the residual being computed at the output
rate from the input itself (`Separator.final_blocks`).

Modes (`Options.layout`): keep (every pair; 5.1 = 3 recipe passes, 7.1 = 4), center (the centre only, 1 pass;
the other channels go to the background stems untouched), stereo (the libswresample downmix, 1 pass, stereo
stems). mp3 and mono stems cannot hold a surround layout: with them the input is downmixed as for stereo.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

import av
import numpy as np

from . import audio
from .audio import MODEL_RATE
from .errors import OptionError
from .job import UNIT, Job, SeparationResult
from .signals import DiskSignal, blocks, work_signals

PAIRS = (("FL", "FR"), ("SL", "SR"), ("BL", "BR"), ("FLC", "FRC"), ("WL", "WR"), ("TFL", "TFR"),
         ("TBL", "TBR"), ("TSL", "TSR"), ("SDL", "SDR"))
LFE = ("LFE", "LFE2", "LFE1")
CENTRE = "FC"
# FFmpeg's default layout for a channel count, used when the input does not name its channels
DEFAULT_LAYOUTS = {3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
CODECS = {"wav": ("pcm_f32le", "flt", None), "wav16": ("pcm_s16le", "s16", 16), "wav24": ("pcm_s24le", "s32", 24),
          "flac": ("flac", "s32", 24)}


def applies(info: audio.AudioInfo, opts) -> bool:
    return info.channels > 2 and opts.layout != "stereo" and opts.output_format != "mp3" and not opts.mono


def layout_of(path) -> tuple[str, list[str]]:
    """(layout name, channel names) of the input's first audio stream, as decoded (FFmpeg's default layout for
    the channel count when the input does not name its channels)."""
    name, names = audio.first_frame_layout(path)
    if name in DEFAULT_LAYOUTS.values() or all(n not in ("", "NONE") for n in names):
        return name, names
    default = DEFAULT_LAYOUTS.get(len(names))
    if default is None:
        return name, [f"C{i}" for i in range(len(names))]
    return default, [c.name for c in av.AudioLayout(default).channels]


def plan(names: list[str], mode: str) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """(groups through the recipe: (left, right) or (c, c) for dual mono; LFE channels; channels passed to the
    background untouched)."""
    idx = {n: i for i, n in enumerate(names)}
    lfe = [i for i, n in enumerate(names) if n in LFE]
    if mode == "center":
        if CENTRE not in idx:
            raise OptionError("layout", "center needs a layout with a front-centre (FC) channel; use keep")
        c = idx[CENTRE]
        return [(c, c)], lfe, [i for i in range(len(names)) if i != c and i not in lfe]
    groups, used = [], set(lfe)
    for left, right in PAIRS:
        if left in idx and right in idx:
            groups.append((idx[left], idx[right]))
            used |= {idx[left], idx[right]}
    rest = [i for i in range(len(names)) if i not in used]
    generic = [n for n in rest if names[n].startswith("C") and names[n] != CENTRE]
    while len(generic) >= 2:   # channels without names: taken in order, two by two
        a, b = generic.pop(0), generic.pop(0)
        groups.append((a, b))
        rest = [i for i in rest if i not in (a, b)]
    groups += [(i, i) for i in rest]
    return sorted(groups), lfe, []


def passes_per_minute(channels: int, mode: str, names: list[str] | None = None) -> int:
    """Recipe passes per minute of input (each pass = the whole recipe on one stereo pair)."""
    if channels <= 2 or mode == "stereo":
        return 1
    names = names or [c.name for c in av.AudioLayout(DEFAULT_LAYOUTS[channels]).channels]
    return len(plan(names, mode)[0])


class _Columns:
    """Two columns of a multichannel signal, read as a stereo signal."""

    def __init__(self, sig, cols):
        self.sig, self.cols, self.frames = sig, list(cols), sig.frames

    def read(self, a, b):
        return self.sig.read(a, b)[:, self.cols]


class LayoutWriter:
    """A multichannel stem through FFmpeg (PyAV): WAV (WAVE_FORMAT_EXTENSIBLE with its channel mask, RF64 past
    4 GiB) or FLAC, with the layout in the file. Written under a temporary name, renamed by close()."""

    def __init__(self, path, rate: int, output_format: str, layout: str):
        if output_format not in CODECS:
            raise OptionError("output_format", "surround stems are written as wav, wav16, wav24 or flac")
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.part")
        codec, self.fmt, self.bits = CODECS[output_format]
        self.layout, self.rate = layout, int(rate)
        container = "flac" if output_format == "flac" else "wav"
        self.out = av.open(str(self.tmp), "w", format=container,
                           options={"rf64": "auto"} if container == "wav" else {})
        copts = {"bits_per_raw_sample": "24"} if output_format == "flac" else {}
        self.stream = self.out.add_stream(codec, rate=self.rate, layout=layout, options=copts)
        self.stream.format = self.fmt

    def write(self, x: np.ndarray) -> None:
        if not len(x):
            return
        if self.bits:
            q = np.clip(np.rint(x.astype(np.float64) * 2.0 ** (self.bits - 1)), -(2 ** (self.bits - 1)),
                        2 ** (self.bits - 1) - 1)
            x = (q.astype(np.int32) << 8) if self.bits == 24 else q.astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x).reshape(1, -1), format=self.fmt,
                                           layout=self.layout)
        frame.sample_rate = self.rate
        for p in self.stream.encode(frame):
            self.out.mux(p)

    def close(self) -> Path:
        for p in self.stream.encode(None):
            self.out.mux(p)
        self.out.close()
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self.out.close()
        except Exception:  # already broken; removing the file is what matters
            pass
        Path(self.tmp).unlink(missing_ok=True)


def separate_file(sep, input_path, info, output_dir, opts, stems, progress, cancel, work_dir, name, suffixes):
    """Separator.separate_file for a surround input in `keep` / `center` mode (`sep`: the Separator, through
    its public methods run_recipe, work_units and final_blocks)."""
    stems = sep.stems_asked(opts, stems)
    layout, names = layout_of(input_path)
    groups, lfe, untouched = plan(names, opts.layout)
    channels = info.channels
    out_rate = info.sample_rate if opts.sample_rate == "native" else MODEL_RATE
    out_frames = info.frames if opts.sample_rate == "native" else audio.out_frames(info.frames, info.sample_rate,
                                                                                   MODEL_RATE)
    length = audio.out_frames(info.frames, info.sample_rate, MODEL_RATE)
    job = Job(progress, cancel)
    job.start("load models")
    job.total = len(groups) * (sep.work_units(length, opts, stems) + 2 * length / UNIT) + 2 * out_frames / UNIT
    paths = audio.stem_paths(output_dir, name or Path(input_path).stem, stems, opts.output_format, suffixes)
    writers: dict[str, LayoutWriter] = {}
    written: list[Path] = []
    try:
        with work_signals(work_dir) as new_signal:
            job.start("decode")
            native = new_signal(info.frames, channels, "native")
            pos = 0
            for piece in audio.iter_decode_channels(input_path):
                native.write(pos, piece)
                pos += len(piece)
                job.step(len(piece) / UNIT / len(groups))
            # the input at the output rate (the residual stems are computed from it)
            at_out = native if out_rate == info.sample_rate else _resampled(native, info.sample_rate, out_rate,
                                                                            out_frames, new_signal)
            outs = {s: new_signal(out_frames, channels, f"stem_{s}") for s in stems}
            for k, (a, b) in enumerate(groups):
                mix = new_signal(length, 2, f"mix{k}")
                pos = 0
                for block in audio.resample_blocks((native.read(x, y)[:, [a, b]] for x, y in blocks(info.frames)),
                                                   info.sample_rate, MODEL_RATE, info.frames):
                    mix.write(pos, block)
                    pos += len(block)
                    job.step(len(block) / UNIT)
                signals = sep.run_recipe(mix, new_signal, opts, stems, job)
                pos = 0
                for got in sep.final_blocks(signals, _Columns(at_out, (a, b)), opts, stems, out_rate, out_frames,
                                            job):
                    for s, block in got.items():
                        if a == b:     # dual mono: the two results averaged back into one channel
                            outs[s].add(pos, _place(0.5 * (block[:, 0] + block[:, 1]), a, channels))
                        else:
                            outs[s].add(pos, _place(block[:, 0], a, channels) + _place(block[:, 1], b, channels))
                    pos += len(block)
            recipe = sep.recipe(opts)
            rest = recipe.rest_stems if recipe.rest_stems is not None else tuple(recipe.residuals)
            for c in lfe + untouched:   # not separated: to the stems that hold the rest, as they are
                targets = [s for s in stems if s in rest or (c in lfe and s in recipe.lfe_stems)]
                for x, y in blocks(out_frames):
                    col = _place(at_out.read(x, y)[:, c], c, channels)
                    for s in targets:
                        outs[s].add(x, col)
            job.start("encode")
            for s, path in paths.items():
                writers[s] = LayoutWriter(path, out_rate, opts.output_format, layout)
                for x, y in blocks(out_frames):
                    writers[s].write(outs[s].read(x, y))
                    job.step((y - x) / UNIT / len(stems))
            for s in list(writers):
                written.append(writers.pop(s).close())
            job.finish()
            return SeparationResult(paths, info, job.timings, sep.pack.kind)
    except BaseException:
        for w in writers.values():
            w.abort()
        for p in written:
            p.unlink(missing_ok=True)
        raise


def _place(col: np.ndarray, c: int, channels: int) -> np.ndarray:
    out = np.zeros((len(col), channels), np.float32)
    out[:, c] = col
    return out


def _resampled(native: DiskSignal, in_rate: int, out_rate: int, out_frames: int, new_signal) -> DiskSignal:
    """Every channel of `native` at `out_rate`, exactly `out_frames` long (two channels at a time)."""
    sig = new_signal(out_frames, native.channels, "at_out")
    for a in range(0, native.channels, 2):
        cols = [a, min(a + 1, native.channels - 1)]
        pos = 0
        for block in audio.resample_blocks((native.read(x, y)[:, cols] for x, y in blocks(native.frames)),
                                           in_rate, out_rate, native.frames, out_frames):
            cur = sig.read(pos, pos + len(block))
            cur[:, cols] = block
            sig.write(pos, cur)
            pos += len(block)
    return sig
