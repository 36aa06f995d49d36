"""Shared fixtures: small model packs built once per session, synthetic signals, the `gpu` marker."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch/onnxruntime spin up their pools

import numpy as np
import pytest
import torch

from testkit import toypack

torch.set_num_threads(1)

SR = 44100
BAND_CUTOFF_HZ = 4000.0  # the bandsplit pack's cutoff (toypack.build_pack default)


def pytest_sessionstart(session):
    """Subprocesses (the CLI, the RunPod worker, bench scripts) import the installed package, not the repo dir."""
    from importlib.metadata import PackageNotFoundError, distribution
    try:
        distribution("spark-dubbing")
    except PackageNotFoundError:
        pytest.exit("the repo's package is not installed in this Python: run `.venv/bin/pip install -e .` "
                    "(setup.sh does)", returncode=2)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def random_pack(tmp_path_factory):
    return toypack.build_pack(tmp_path_factory.mktemp("random_pack"), kind="random", stems="all")


@pytest.fixture(scope="session")
def vocals_pack(tmp_path_factory):
    return toypack.build_pack(tmp_path_factory.mktemp("vocals_pack"), kind="random", stems="vocals")


@pytest.fixture(scope="session")
def bandsplit_pack(tmp_path_factory):
    return toypack.build_pack(tmp_path_factory.mktemp("bandsplit_pack"), kind="bandsplit", stems="all",
                              cutoff_hz=BAND_CUTOFF_HZ)


@pytest.fixture(scope="session")
def identity_pack(tmp_path_factory):
    return toypack.build_pack(tmp_path_factory.mktemp("identity_pack"), kind="identity", stems="all")


def _fade(n, fade):
    # raised-cosine fade in/out, so onsets add no broadband click that would cross the band edge
    env = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
    env[:fade] = ramp
    env[n - fade:] = ramp[::-1]
    return env


def _band_noise(rng, n, lo, hi):
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    sig = np.fft.irfft(spec * ((f >= lo) & (f < hi)), n=n)
    return sig / np.sqrt(np.mean(sig ** 2))


def make_band_source(seconds, seed, tones_hz, noise_band, rms=0.1):
    """Stereo float32 [T, 2]: a few sines plus a noise band, both channels different, faded in/out."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    out = np.zeros((n, 2))
    for ch in range(2):
        sig = sum(rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
                  for f in tones_hz)
        sig = sig / np.sqrt(np.mean(sig ** 2)) + 0.5 * _band_noise(rng, n, *noise_band)
        out[:, ch] = sig
    out *= _fade(n, min(n // 4, int(0.05 * SR)))[:, None]
    out *= rms / np.sqrt(np.mean(out ** 2))
    return out.astype(np.float32)


@pytest.fixture(scope="session")
def two_band_sources():
    """(seconds, seed) -> (low_source, high_source), float32 [T, 2] each.

    Low: content in 100..2500 Hz; high: 6000..15000 Hz. Both well inside their side of
    BAND_CUTOFF_HZ and below the 17,640 Hz MDX band limit.
    """
    def make(seconds=3.0, seed=0):
        low = make_band_source(seconds, seed, (110.0, 220.5, 587.3, 1234.0, 1999.0), (100.0, 2500.0))
        high = make_band_source(seconds, seed + 1, (6100.0, 8800.0, 12345.0), (6000.0, 15000.0))
        return low, high
    return make


@pytest.fixture(scope="session")
def noise_mix():
    """(seconds, seed) -> white noise float32 [T, 2], rms 0.1 (full band, up to 22,050 Hz)."""
    def make(seconds=2.0, seed=0):
        rng = np.random.default_rng(seed)
        return (rng.standard_normal((int(round(seconds * SR)), 2)) * 0.1).astype(np.float32)
    return make


@pytest.fixture(scope="module")
def client(server):
    """An authenticated client of the test module's own `server` fixture."""
    with server.client() as c:
        yield c
