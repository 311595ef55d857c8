"""Tests for avsearch.encoders.composite on tiny numpy towers: parts side by side in order,
parts at another sample rate fed the same stretch of time, the contract held."""

from __future__ import annotations

import numpy as np
import pytest

from avsearch.encoders.composite import CompositeTower, ResampledTower, checked_features
from avsearch.encoders.resample import resample
from avsearch.encoders.tower import AudioInput, ImageInput, Tower
from avsearch.errors import ModelError


class Stats:
    """An audio tower: per row [mean, std, peak, length] (float32)."""

    modality = "audio"
    dim = 4

    def __init__(self, name: str, rate: int = 8_000, window: int = 800) -> None:
        self.name = name
        self.input = AudioInput(rate, window)
        self.seen: list[np.ndarray] = []

    def features(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, np.float64)
        self.seen.append(x)
        cols = [x.mean(1), x.std(1), np.abs(x).max(1, initial=0.0), np.full(len(x), x.shape[1])]
        return np.stack(cols, 1).astype(np.float32)


class Colour:
    """An image tower: per image its mean colour (3)."""

    modality = "visual"
    dim = 3

    def __init__(self, name: str, size: int = 8) -> None:
        self.name = name
        self.input = ImageInput(size)

    def features(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch, np.float32).mean((1, 2))


def waves(n: int = 3, length: int = 800, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, length)).astype(np.float32)


def test_the_test_towers_keep_the_contract() -> None:
    assert isinstance(Stats("a"), Tower) and isinstance(Colour("c"), Tower)


def test_parts_side_by_side_in_order() -> None:
    a, b = Stats("a"), Stats("b")
    both = CompositeTower("a+b", [a, b])
    assert (both.name, both.modality, both.dim, both.input) == ("a+b", "audio", 8, a.input)
    x = waves()
    out = both.features(x)
    assert out.shape == (3, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.concatenate([a.features(x), b.features(x)], 1))
    flipped = CompositeTower("b+a", [Stats("b"), Stats("a")])
    assert flipped.parts[0].name == "b"
    assert both.features(np.zeros((0, 800), np.float32)).shape == (0, 8)


def test_a_part_at_another_rate_gets_the_same_time_resampled() -> None:
    host, other = Stats("host", 8_000, 800), Stats("other", 16_000, 1_600)
    both = CompositeTower("host+other", [host, other])
    assert both.input == host.input
    assert isinstance(both.parts[1], ResampledTower) and both.parts[1].input == host.input
    x = waves()
    out = both.features(x)
    (fed,) = other.seen[-1:]
    assert fed.shape == (3, 1_600)  # 0.1 s at 16 kHz: the same stretch of time
    np.testing.assert_allclose(fed, resample(x, 8_000, 16_000).astype(np.float32), atol=1e-6)
    assert out[:, 7].tolist() == [1_600.0] * 3
    # a part at the host's rate but another window is given the host's window as it is
    longer = CompositeTower("host+long", [host, Stats("long", 8_000, 4_000)])
    assert longer.parts[1].input == AudioInput(8_000, 4_000)
    assert longer.features(x)[:, 7].tolist() == [800.0] * 3


def test_what_cannot_go_together_is_refused() -> None:
    with pytest.raises(ModelError, match="mixes modalities"):
        CompositeTower("a+c", [Stats("a"), Colour("c")])
    with pytest.raises(ModelError, match="same image size"):
        CompositeTower("c+d", [Colour("c", 8), Colour("d", 16)])
    with pytest.raises(ModelError, match="at least two"):
        CompositeTower("a", [Stats("a")])
    images = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    pair = CompositeTower("c+d", [Colour("c"), Colour("d")])
    np.testing.assert_allclose(pair.features(images)[:, :3], pair.features(images)[:, 3:])


def test_a_tower_breaking_the_contract_is_named() -> None:
    class Wrong(Stats):
        dim = 5  # declares 5, returns 4

    with pytest.raises(ModelError, match=r"'wrong' returned features of shape \(3, 4\)"):
        checked_features(Wrong("wrong"), waves())
    with pytest.raises(ModelError, match="'wrong'"):
        CompositeTower("a+wrong", [Stats("a"), Wrong("wrong")]).features(waves())
    out = checked_features(Stats("a"), waves().astype(np.float64))
    assert out.dtype == np.float32


class _Part:
    def __init__(self, name: str, precisions: tuple[str, ...]) -> None:
        self.name, self.precisions, self.precision = name, precisions, "fp32"


def test_set_precision_reaches_the_parts_that_can_run_it() -> None:
    from avsearch.encoders.tower import set_precision

    fast, plain = _Part("a", ("fp32", "bf16")), _Part("b", ("fp32",))
    composite = type("C", (), {"parts": (fast, type("R", (), {"part": plain})())})()
    assert set_precision(composite, "bf16") == ["a"]
    assert (fast.precision, plain.precision) == ("bf16", "fp32")
    assert set_precision(composite, "fp32") == [] and fast.precision == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        set_precision(fast, "fp16")  # type: ignore[arg-type]
