"""Seeded synthetic class-clustered features for the training tests."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from avsearch.train.config import TrainConfig, for_method
from avsearch.train.data import FeatureSet


def clustered(
    n: int, n_classes: int = 4, seed: int = 0, noise: float = 0.6, dims: tuple[int, int] = (12, 16)
) -> FeatureSet:
    """Pairs whose audio and visual features sit around per-class centres (one per modality)."""
    rng = np.random.default_rng(seed)
    centres_a = np.random.default_rng(100).normal(size=(n_classes, dims[0]))
    centres_v = np.random.default_rng(200).normal(size=(n_classes, dims[1]))
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    a = centres_a[y] + noise * rng.normal(size=(n, dims[0]))
    v = centres_v[y] + noise * rng.normal(size=(n, dims[1]))
    return FeatureSet(a.astype(np.float32), v.astype(np.float32), y.astype(np.int64))


def tiny(method: str = "psd", **overrides: object) -> TrainConfig:
    """A config small enough for a sub-second CPU run."""
    base = dict(
        epochs=5,
        batch_size=48,
        dim=8,
        hidden=32,
        warmup_epochs=1,
        ramp_epochs=2,
        patience=0,
        lr=3e-3,
    )
    return for_method(method, **{**base, **overrides})


@pytest.fixture
def train_set() -> FeatureSet:
    return clustered(240, seed=0)


@pytest.fixture
def test_set() -> FeatureSet:
    return clustered(120, seed=1)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matrices gain nothing from intra-op threads, and on a shared busy CPU the spinning
    threads make these tests ~20x slower; determinism checks compare runs at one count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
