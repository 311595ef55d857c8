"""Fixed, deterministic time windows.

A file of duration D is cut into windows [k·w, (k+1)·w) for k = 0, 1, …, with no overlap.
The last, partial window is kept when it holds at least ``min_tail`` seconds (or when it is the
only one: a clip shorter than one window is one padded segment). Audio windows are zero-padded
to exactly ``w`` seconds of samples; the visual vector of a video window comes from the frame
nearest the window centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowSpec:
    """A window of ``samples`` audio samples at ``sample_rate`` (the audio backbone's rate); a
    trailing part shorter than ``min_tail`` seconds is dropped unless it is the whole clip."""

    samples: int
    sample_rate: int
    min_tail: float = 0.5

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    @classmethod
    def from_seconds(cls, seconds: float, sample_rate: int, min_tail: float = 0.5) -> WindowSpec:
        return cls(round(seconds * sample_rate), sample_rate, min_tail)

    def describe(self) -> str:
        """E.g. ``2.322 s (102400 samples at 44100 Hz, tails from 0.5 s kept)``."""
        return (
            f"{self.seconds:.3f} s ({self.samples} samples at {self.sample_rate} Hz, "
            f"tails from {self.min_tail:g} s kept)"
        )


@dataclass(frozen=True)
class Window:
    index: int
    start: float
    end: float

    @property
    def centre(self) -> float:
        return (self.start + self.end) / 2


def window_count(duration: float, window: float, min_tail: float = 0.5) -> int:
    """How many windows a ``duration``-second stream gives (at least 1 when duration > 0)."""
    if duration <= 0:
        return 0
    full = math.floor(duration / window + 1e-9)
    tail = duration - full * window
    n = full + (1 if tail >= min(min_tail, window) - 1e-9 and tail > 1e-9 else 0)
    return max(n, 1)


def windows(duration: float, window: float, min_tail: float = 0.5) -> list[Window]:
    n = window_count(duration, window, min_tail)
    return [
        Window(index=k, start=round(k * window, 6), end=round(min((k + 1) * window, duration), 6))
        for k in range(n)
    ]


def window_index(t: float, window: float) -> int:
    return math.floor(t / window + 1e-9)


def cut_samples(samples: np.ndarray, sample_rate: int, window_samples: int) -> np.ndarray:
    """Cut a mono signal into [n, window_samples] rows, zero-padding the last row."""
    n = max(1, math.ceil(len(samples) / window_samples))
    out = np.zeros((n, window_samples), dtype=np.float32)
    flat = out.reshape(-1)
    flat[: len(samples)] = samples
    return out
