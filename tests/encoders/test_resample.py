"""Tests for avsearch.encoders.resample: the band-limited resampler the word tower, SoundNet
and composite towers use."""

from __future__ import annotations

import numpy as np
import pytest

from avsearch.encoders import resample as rs


def test_resample_keeps_a_tone_and_exact_zeros() -> None:
    t = np.arange(44_100) / 44_100
    out = rs.resample(np.sin(2 * np.pi * 440 * t)[None], 44_100, 16_000)
    assert out.shape == (1, 16_000)
    want = np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000)
    np.testing.assert_allclose(out[0, 100:-100], want[100:-100], atol=1e-4)
    # above the new Nyquist frequency: filtered out, not aliased
    high = rs.resample(np.sin(2 * np.pi * 10_000 * t)[None], 44_100, 16_000)
    assert np.abs(high[0, 100:-100]).max() < 1e-3
    # a burst followed by padding: the padding stays exactly zero past the filter's reach
    burst = np.zeros((1, 102_400))
    burst[0, 1_000:9_000] = 1.0
    padded = rs.resample(burst, 44_100, 16_000)
    assert padded.shape == (1, 37_152)
    assert np.all(padded[0, 9_000 * 16_000 // 44_100 + 20 :] == 0.0)


@pytest.mark.parametrize(
    ("rate_in", "rate_out", "n"), [(44_100, 16_000, 3_000), (8_000, 16_000, 500)]
)
def test_resample_is_the_windowed_sinc_sum(rate_in: int, rate_out: int, n: int) -> None:
    """The polyphase computation equals the filter written out, one output sample at a time."""
    x = np.random.default_rng(2).standard_normal((2, n))
    ratio = rate_out / rate_in
    cutoff = min(1.0, ratio) * rs.ROLLOFF
    half = int(np.ceil(rs.SINC_ZEROS / cutoff))
    got = rs.resample(x, rate_in, rate_out)
    assert got.shape == (2, round(n * ratio))
    for k in range(0, got.shape[1], 7):
        pos = k / ratio
        idx = np.arange(int(np.floor(pos)) - half + 1, int(np.floor(pos)) + half + 1)
        d = pos - idx
        kern = cutoff * np.sinc(cutoff * d) * (0.5 + 0.5 * np.cos(np.pi * d / half))
        kern[(np.abs(d) >= half) | (idx < 0) | (idx >= n)] = 0.0
        want = x[:, np.clip(idx, 0, n - 1)] @ kern
        np.testing.assert_allclose(got[:, k], want, atol=1e-12)
