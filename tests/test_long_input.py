"""Minutes of input through the file path (disk signals, streamed decode/encode) against whole-file processing."""
import numpy as np
import soundfile as sf

from conftest import SR
from mvsep.engine import Options, Separator
from testkit.reference import reference_separate


def test_two_minutes_windowed_equal_whole_file(vocals_pack, tmp_path):
    frames = 2 * 60 * SR + 4321
    rng = np.random.default_rng(21)
    t = np.arange(frames) / SR
    mix = (rng.standard_normal((frames, 2)) * 0.05 + 0.2 * np.sin(2 * np.pi * 330 * t)[:, None]).astype(np.float32)
    src = tmp_path / "long.wav"
    sf.write(src, mix, SR, subtype="FLOAT")
    kw = dict(only_vocals=True, overlap_large=0.1, chunk_size=300_000)  # ~70 demucs windows, ~30 MDX chunks
    res = Separator(vocals_pack, device="cpu").separate_file(src, tmp_path / "out", Options(shifts=0, **kw))
    ref = reference_separate(vocals_pack, mix, **kw)
    for stem in ("vocals", "instrumental"):
        got, rate = sf.read(res.stems[stem], dtype="float32")
        assert rate == SR and got.shape == (frames, 2)
        assert np.abs(got - ref[stem]).max() < 1e-4, stem
