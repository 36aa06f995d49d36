"""Streaming audio I/O: probe and decode any media with PyAV (`decode`), soxr resampling (`resample`), streaming
stem encoders (`encode`).

Nothing here holds a whole file in memory: decoding yields float32 ``[n, 2]`` blocks, the resampler works block
by block and the stem writer encodes block by block. Every failure a caller can cause is raised as an
`InputError` / `UnsupportedMediaError` / `OptionError` with a one-line message; PyAV and soundfile exceptions
never escape.
"""

from .decode import MAX_STREAMS, MODEL_RATE, AudioInfo, first_frame_layout, iter_decode, iter_decode_channels, probe
from .encode import OUTPUT_FORMATS, StemWriter, extension, mp3_rate, stem_paths, write_stem
from .resample import StreamResampler, out_frames, resample_blocks

__all__ = ["MAX_STREAMS", "MODEL_RATE", "OUTPUT_FORMATS", "AudioInfo", "StemWriter", "StreamResampler",
           "extension", "first_frame_layout", "iter_decode", "iter_decode_channels", "mp3_rate", "out_frames",
           "probe", "resample_blocks", "stem_paths", "write_stem"]
