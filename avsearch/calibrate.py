"""Confidence: a raw cosine score put in context, per query, against a background of the index.

A score of 0.41 says nothing on its own: one query's best hits sit at 0.8, another's at 0.3,
depending on the query and the gallery. So every query is also scored against a *background*:
``BACKGROUND_SIZE`` segments of the target modality drawn at random from the index (seeded, so
the same query against the same index gives the same confidences). A hit's score becomes a
robust z-score against that background, ``z = (score - median) / (1.4826 * MAD)``, and the
z-score goes through a logistic curve ``1 / (1 + exp(-(A * z + B)))`` fitted, once, by
``bench/confidence.py`` on labelled queries (AV-Digits test split and ``natural/``, each
weighing the same): the confidence reads as "how often a hit this far above the crowd was a
match there".

Chosen by measurement (docs/benchmarks.md, "confidence"). Not the background percentile: it
saturates (the best few hits of every query sit near 1.0 whether they match or not, so no
threshold separates a good match from the best of a bad lot). Not the mean/std z-score: the
matches themselves are part of the background (a tenth of it on AV-Digits, a fiftieth on
natural/), so they widen the standard deviation by how many there are, and the same z means a
match on one gallery and noise on another; the median and the MAD hardly move with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avsearch.store.manifest import Manifest

BACKGROUND_SIZE = 512  # segments drawn per query (all of them when the index holds fewer)
BACKGROUND_SEED = 0
MIN_BACKGROUND = 8  # fewer segments than this: no spread to measure, confidence stays unknown
STD_FLOOR = 1e-3  # a background of identical scores does not divide by zero
MAD_TO_STD = 1.4826

# logistic curve of the robust z-score, fitted by bench/confidence.py (docs/benchmarks.md)
# for models/default's heads as trained on 2026-12-02 (aisfx + EfficientNet-Lite0); retrained
# with SoundNet in its audio tower the same day, its heads (still on aisfx) moved by < 3e-5
CURVE_A = 2.084
CURVE_B = -6.905


@dataclass(frozen=True)
class Curve:
    """``confidence = 1 / (1 + exp(-(a * z + b)))``."""

    a: float = CURVE_A
    b: float = CURVE_B

    def __call__(self, z: np.ndarray | float) -> np.ndarray:
        x = np.clip(self.a * np.asarray(z, dtype=np.float64) + self.b, -60.0, 60.0)
        out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
        return out


@dataclass(frozen=True)
class Background:
    """One query's scores against the background sample."""

    scores: np.ndarray  # float64, sorted ascending

    @classmethod
    def of(cls, scores: np.ndarray | Sequence[float]) -> Background:
        return cls(np.sort(np.asarray(scores, dtype=np.float64).ravel()))

    @property
    def usable(self) -> bool:
        return len(self.scores) >= MIN_BACKGROUND

    @property
    def median(self) -> float:
        return float(np.median(self.scores)) if len(self.scores) else 0.0

    @property
    def spread(self) -> float:
        """1.4826 x the median absolute deviation (the standard deviation, for normal data)."""
        if not len(self.scores):
            return STD_FLOOR
        mad = float(np.median(np.abs(self.scores - self.median)))
        return max(MAD_TO_STD * mad, STD_FLOOR)

    def z(self, scores: np.ndarray | float) -> np.ndarray:
        """Robust z-score: (score - median) / spread."""
        return (np.asarray(scores, dtype=np.float64) - self.median) / self.spread

    def z_mean_std(self, scores: np.ndarray | float) -> np.ndarray:
        """The plain z-score (mean, standard deviation): for the benchmark's comparison."""
        std = max(float(self.scores.std()), STD_FLOOR) if len(self.scores) else STD_FLOOR
        mean = float(self.scores.mean()) if len(self.scores) else 0.0
        return (np.asarray(scores, dtype=np.float64) - mean) / std

    def percentile(self, scores: np.ndarray | float) -> np.ndarray:
        """Share of the background scoring strictly below each score (ties count half)."""
        s = np.asarray(scores, dtype=np.float64)
        below = np.searchsorted(self.scores, s, side="left")
        upto = np.searchsorted(self.scores, s, side="right")
        out: np.ndarray = (below + upto) / (2.0 * max(len(self.scores), 1))
        return out

    def confidence(self, scores: np.ndarray | float, curve: Curve | None = None) -> np.ndarray:
        """Confidence in [0, 1] of each score (NaN when the background is too small)."""
        s = np.asarray(scores, dtype=np.float64)
        if not self.usable:
            return np.full(s.shape, np.nan)
        return (curve or Curve())(self.z(s))


def sample_ids(
    ids: np.ndarray, n: int = BACKGROUND_SIZE, seed: int = BACKGROUND_SEED
) -> np.ndarray:
    """``n`` of ``ids`` drawn without replacement (all when there are not more), sorted; the
    same ids for the same input and seed."""
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    if len(ids) <= n:
        return ids
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(ids, size=n, replace=False))


def background_vectors(
    manifest: Manifest,
    modality: str,
    dim: int,
    n: int = BACKGROUND_SIZE,
    seed: int = BACKGROUND_SEED,
) -> np.ndarray:
    """The vectors of ``n`` segments of ``modality`` drawn at random (seeded) from the manifest,
    float32 ``[<=n, dim]``; rows that are not ``dim`` finite values are left out."""
    conn = manifest.conn
    all_ids = np.fromiter(
        (r[0] for r in conn.execute("SELECT id FROM segments WHERE modality = ?", (modality,))),
        dtype=np.int64,
    )
    chosen = sample_ids(all_ids, n, seed)
    blobs: list[bytes] = []
    for lo in range(0, len(chosen), 500):
        chunk = [int(i) for i in chosen[lo : lo + 500]]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT vector FROM segments WHERE id IN ({marks}) ORDER BY id", chunk
        ).fetchall()
        blobs.extend(r[0] for r in rows if isinstance(r[0], bytes) and len(r[0]) == 4 * dim)
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    vecs = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(-1, dim)
    return vecs[np.isfinite(vecs).all(axis=1)].copy()


def background_for(query: np.ndarray, vectors: np.ndarray) -> Background:
    """The background of one query vector (``[dim]`` or ``[1, dim]``) over sampled vectors."""
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    return Background.of(vectors @ q if len(vectors) else np.zeros(0))


def check_min_confidence(value: float | None) -> None:
    """Raise ValueError unless ``value`` is None or a number in [0, 1]."""
    if value is None:
        return
    if isinstance(value, bool) or not math.isfinite(float(value)) or not 0 <= value <= 1:
        raise ValueError(f"must be between 0 and 1, got {value}")
