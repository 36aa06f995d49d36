"""Cold start (issue 22): ONNX Runtime's optimized graphs kept in SPARK_ORT_CACHE keyed by the model's sha256,
models loading at the same time, each once."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from mvsep.engine import Options, Separator

SR = 44100


@pytest.fixture(scope="module")
def clip():
    return (np.random.default_rng(5).standard_normal((2 * SR, 2)) * 0.1).astype(np.float32)


def test_the_optimized_graph_cache_is_keyed_by_sha_and_changes_no_sample(vocals_pack, clip, tmp_path, monkeypatch):
    opts = Options(only_vocals=True, single_onnx=True, shifts=0)
    monkeypatch.delenv("SPARK_ORT_CACHE", raising=False)
    plain = Separator(vocals_pack, device="cpu").separate_array(clip, SR, opts)
    monkeypatch.setenv("SPARK_ORT_CACHE", str(tmp_path / "ort"))
    first = Separator(vocals_pack, device="cpu")
    out1 = first.separate_array(clip, SR, opts)
    sha = first.pack._digests["Kim_Vocal_2.onnx"]
    cached = list((tmp_path / "ort").iterdir())
    assert [p.name.split("-")[0] for p in cached] == [sha]  # named by the verified manifest sha, no temp left
    stamp = cached[0].stat().st_mtime_ns
    out2 = Separator(vocals_pack, device="cpu").separate_array(clip, SR, opts)  # loads the cached graph
    assert cached[0].stat().st_mtime_ns == stamp  # read, not rewritten
    for stem in plain:
        assert plain[stem].tobytes() == out1[stem].tobytes() == out2[stem].tobytes()


def test_warm_loads_the_models_at_once_and_each_only_once(vocals_pack, monkeypatch):
    sep = Separator(vocals_pack, device="cpu")
    pack = sep.pack
    loads, running, peak = [], [0], [0]
    lock = threading.Lock()
    real_onnx, real_demucs = pack._load_onnx, pack._load_demucs

    def slowed(real):
        def load(*a):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                loads.append(a[0])
            try:
                threading.Event().wait(0.3)  # a slow disk: loads that overlap finish together
                return real(*a)
            finally:
                with lock:
                    running[0] -= 1
        return load

    monkeypatch.setattr(pack, "_load_onnx", slowed(real_onnx))
    monkeypatch.setattr(pack, "_load_demucs", slowed(real_demucs))
    threads = [threading.Thread(target=sep.warm, args=(Options(only_vocals=True),)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(loads) == sorted(["04573f0d-f3cf25b2.th", "Kim_Vocal_2.onnx", "Kim_Inst.onnx"])  # once each
    assert peak[0] >= 2  # at the same time
    assert set(pack.resident()) == {"demucs:04573f0d-f3cf25b2.th", "onnx:Kim_Vocal_2.onnx", "onnx:Kim_Inst.onnx"}
