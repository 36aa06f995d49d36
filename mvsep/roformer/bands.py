"""Frequency bands of the two RoFormers: BS-RoFormer's fixed runs of bins, Mel-RoFormer's overlapping mel bands.

A band is a contiguous range of STFT bins `(first, last)`, both included. The Mel bands are the bins with a
positive weight in librosa's Slaney mel filterbank (`librosa.filters.mel(sr, n_fft, n_mels)`, norm="slaney",
fmin 0, fmax sr/2), computed here in float64 the way librosa does it, so no librosa dependency is needed;
bin 0 goes to the first band and the Nyquist bin to the last (librosa gives them -0.0 / ~1e-18).
"""
from __future__ import annotations

import numpy as np

# Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, np.float64)
    mel = f / _F_SP
    log = f >= _MIN_LOG_HZ
    return np.where(log, _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    hz = _F_SP * m
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), hz)


def mel_filter_weights(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """float32 [n_mels, n_fft // 2 + 1]: the triangles of librosa's Slaney filterbank (Slaney area norm)."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), n_mels + 2))
    width = np.diff(edges)
    ramps = np.subtract.outer(edges, fft_hz)
    weights = np.zeros((n_mels, len(fft_hz)), np.float64)
    for i in range(n_mels):
        lower = -ramps[i] / width[i]
        upper = ramps[i + 2] / width[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))[:, None]
    return weights.astype(np.float32)


def mel_bands(sample_rate: int, n_fft: int, n_bands: int) -> list[tuple[int, int]]:
    """(first, last) bin of each mel band; raises ValueError when a band holds no bin or is not contiguous
    (too many bands for the FFT size)."""
    held = mel_filter_weights(sample_rate, n_fft, n_bands) > 0
    held[0, 0] = True
    held[-1, -1] = True
    bands = []
    for b, row in enumerate(held):
        bins = np.flatnonzero(row)
        if not len(bins):
            raise ValueError(f"mel band {b} of {n_bands} holds no bin at n_fft {n_fft}")
        if bins[-1] - bins[0] + 1 != len(bins):
            raise ValueError(f"mel band {b} is not a contiguous range of bins")
        bands.append((int(bins[0]), int(bins[-1])))
    return bands


def fixed_bands(freqs_per_bands) -> list[tuple[int, int]]:
    """(first, last) bin of consecutive bands of the given sizes, from bin 0."""
    bands, start = [], 0
    for n in freqs_per_bands:
        n = int(n)
        if n < 1:
            raise ValueError(f"a band of {n} bins")
        bands.append((start, start + n - 1))
        start += n
    return bands


def bins_per_band(bands: list[tuple[int, int]], n_bins: int) -> np.ndarray:
    """How many bands hold each bin; raises ValueError when a bin is in none or a band leaves the spectrum."""
    count = np.zeros(n_bins, np.int64)
    for first, last in bands:
        if first < 0 or last >= n_bins:
            raise ValueError(f"band ({first}, {last}) is outside the {n_bins} bins")
        count[first:last + 1] += 1
    if (count == 0).any():
        raise ValueError(f"bin {int(np.flatnonzero(count == 0)[0])} is in no band")
    return count
