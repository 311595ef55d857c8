"""Band-limited resampling of waveform batches, in numpy (no torch).

Towers whose network runs at another rate than the windows they are given resample inside
themselves (the word model at 16 kHz, SoundNet at 22,050 Hz), and a composite tower hands a part
with another native rate its windows through :func:`resample`
(:class:`avsearch.encoders.composite.ResampledTower`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["ROLLOFF", "SINC_ZEROS", "polyphase", "resample"]

SINC_ZEROS = 16
ROLLOFF = 0.945


@lru_cache(maxsize=8)
def polyphase(rate_in: int, rate_out: int) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """The filter of :func:`resample` split by output phase: ``up`` phases, each a window of
    ``2 * half`` input taps starting after input sample ``start[p]`` (+ ``down`` per cycle)."""
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    cutoff = min(1.0, up / down) * ROLLOFF  # of the input's Nyquist frequency
    half = math.ceil(SINC_ZEROS / cutoff)
    phase = np.arange(up)
    start = (phase * down) // up  # the input sample at or before each phase's output time
    dist = (phase * down / up - start)[:, None] - np.arange(-half + 1, half + 1)[None, :]
    weights = cutoff * np.sinc(cutoff * dist) * (0.5 + 0.5 * np.cos(np.pi * dist / half))
    weights[np.abs(dist) >= half] = 0.0
    return up, down, half, start, weights


def resample(waves: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """``[B, N]`` at ``rate_in`` -> ``[B, round(N * rate_out / rate_in)]``, float64.

    A Hann-windowed sinc low-pass (16 zero crossings, 94.5% of the lower Nyquist frequency)
    of finite support, computed phase by phase (polyphase): a stretch of exact zeros (window
    padding) stays exactly zero.

    The dot products are ``np.einsum`` loops, not BLAS: as fast here, and OpenBLAS's threads,
    spinning after each call, took the cores torch's next layers needed (SoundNet's pass
    after this resampling ran 2.3x slower).
    """
    x = np.asarray(waves, dtype=np.float64)
    if rate_in == rate_out:
        return x.copy()
    up, down, half, start, weights = polyphase(rate_in, rate_out)
    n_out = max(1, round(x.shape[1] * up / down))
    padded = np.pad(x, ((0, 0), (half, half + down + 1)))  # taps beyond the row read zeros
    taps = np.lib.stride_tricks.sliding_window_view(padded, 2 * half, axis=-1)
    out = np.empty((len(x), n_out), dtype=np.float64)
    for p in range(min(up, n_out)):
        # outputs p, p + up, p + 2 up ... (one per cycle) read taps start[p] + 1 + down * j:
        # a strided view, not a gathered copy (which took most of the time)
        count = len(range(p, n_out, up))
        first = start[p] + 1
        rows = taps[:, first : first + down * count : down, :]
        out[:, p::up] = np.einsum("bkt,t->bk", rows, weights[p], optimize=False)
    return out
