"""Training inputs with augmented views of each item, computed once through frozen backbones.

A tower trains on backbone features ``[N, D]``. With augmentation, each item has ``V``
*views*: view 0 is the item as decoded, views 1..V-1 are augmented copies, all computed
once before training; every epoch draws one view per item (seeded), so the heads see a
different version of most items each epoch at the cost of ``V`` backbone passes per item in
all, not one per epoch.

``Views`` holds ``[N, V, D]`` (float16 or float32; compute is float32). ``TrainData`` pairs an
audio and a visual ``Views`` with one label per pair (row i of each goes together), like
``FeatureSet`` does for features.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avsearch.errors import UsageError
from avsearch.train.data import FeatureSet

__all__ = ["TrainData", "Views", "build_views"]

Encode = Callable[[np.ndarray], np.ndarray]
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True, eq=False)
class Views:
    """``data[i, k]``: view k of item i (view 0 un-augmented), ``[N, V, *item_shape]``."""

    data: np.ndarray

    def __post_init__(self) -> None:
        arr = self.data
        if not isinstance(arr, np.ndarray) or arr.ndim < 3:
            raise UsageError(
                f"views must be an array [N, V, ...], got {getattr(arr, 'shape', arr)}"
            )
        if arr.dtype not in (np.float16, np.float32):
            object.__setattr__(self, "data", arr.astype(np.float32))
        if arr.shape[1] < 1:
            raise UsageError("views need at least one view per item")

    @classmethod
    def of_features(cls, features: np.ndarray) -> Views:
        """One view per item: plain ``[N, D]`` features."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2:
            raise UsageError(f"features must be [N, D], got {x.shape}")
        return cls(x[:, None])

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_views(self) -> int:
        return int(self.data.shape[1])

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape[2:])

    def clean(self) -> np.ndarray:
        """View 0 of every item, float32 ``[N, *item_shape]``."""
        return np.asarray(self.data[:, 0], dtype=np.float32)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One view index per item for an epoch (all zeros, drawing nothing, if V == 1)."""
        if self.n_views == 1:
            return np.zeros(len(self), dtype=np.int64)
        return rng.integers(0, self.n_views, size=len(self))

    def take(self, rows: np.ndarray, views: np.ndarray) -> Tensor:
        """float32 tensor ``[len(rows), *item_shape]`` of view ``views[j]`` of row ``rows[j]``."""
        out = self.data[rows, views] if self.n_views > 1 else self.data[rows, 0]
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    def subset(self, idx: np.ndarray) -> Views:
        return Views(self.data[idx])

    def digest(self) -> str:
        h = hashlib.sha256(str(self.data.shape).encode() + str(self.data.dtype).encode())
        h.update(np.ascontiguousarray(self.data).tobytes())
        return h.hexdigest()


@dataclass(frozen=True, eq=False)
class TrainData:
    """Paired audio and visual views with one integer label per pair."""

    audio: Views
    visual: Views
    labels: np.ndarray

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise UsageError(f"labels must be a 1-D integer array, got {labels.shape}")
        if not len(self.audio) == len(self.visual) == len(labels):
            raise UsageError(
                f"audio, visual and labels must have one row per pair: got {len(self.audio)}, "
                f"{len(self.visual)} and {len(labels)} rows"
            )
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))

    @classmethod
    def of(cls, data: FeatureSet | TrainData) -> TrainData:
        if isinstance(data, TrainData):
            return data
        return cls(Views.of_features(data.audio), Views.of_features(data.visual), data.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> TrainData:
        return TrainData(self.audio.subset(idx), self.visual.subset(idx), self.labels[idx])

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.audio.digest(), self.visual.digest()):
            h.update(part.encode())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()


def build_views(
    raw: np.ndarray,
    encode: Encode,
    *,
    n_views: int = 1,
    augment: Augment | None = None,
    seed: int = 0,
    chunk: int = 32,
    dtype: type = np.float32,
    progress: Callable[[int], None] | None = None,
) -> Views:
    """Encode ``raw`` inputs (waveforms ``[N, samples]`` or images ``[N, H, W, 3]``) into
    ``[N, n_views, *out]`` views: view 0 as given, view k ≥ 1 through ``augment`` with a
    generator seeded from ``(seed, k, chunk start)`` - the same seed gives the same views.

    ``encode`` maps a chunk of raw inputs to backbone features;
    ``progress`` is called with the number of items encoded after each chunk.
    """
    if n_views < 1:
        raise ValueError(f"n_views must be ≥ 1, not {n_views}")
    if n_views > 1 and augment is None:
        raise ValueError("more than one view needs an augment function")
    n = len(raw)
    out: np.ndarray | None = None
    for k in range(n_views):
        for start in range(0, n, chunk):
            batch = np.asarray(raw[start : start + chunk])
            if k > 0 and augment is not None:
                batch = augment(batch, np.random.default_rng([seed, k, start]))
            enc = np.asarray(encode(batch))
            if out is None:
                out = np.empty((n, n_views, *enc.shape[1:]), dtype=dtype)
            out[start : start + len(batch), k] = enc
            if progress is not None:
                progress(len(batch))
    if out is None:
        raise UsageError("no items to encode")
    return Views(out)
