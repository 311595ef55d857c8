"""The class-balanced batch sampler (``--sampler balanced --per-class M``): per-label counts,
the hidden-label fill, determinism by seed, and the refusals."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from avsearch.errors import UsageError
from avsearch.train import mask_labels, train
from avsearch.train.config import OptionValueError, TrainConfig, for_method
from avsearch.train.data import FeatureSet
from avsearch.train.sampler import balanced_batches
from tests.train.conftest import clustered, tiny


def _skewed(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labeled indices, their labels): one label of 200 pairs, 9 of 5, one of 2."""
    sizes = [200] + [5] * 9 + [2]
    codes = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    order = np.random.default_rng(seed).permutation(len(codes))
    return np.arange(len(codes))[order], codes[order]


def _labels_of(batch: np.ndarray, labeled: np.ndarray, codes: np.ndarray) -> Counter[int]:
    of = dict(zip(labeled.tolist(), codes.tolist(), strict=True))
    return Counter(of[i] for i in batch.tolist() if i in of)


def test_every_batch_holds_at_most_m_of_a_label() -> None:
    labeled, codes = _skewed()
    batches = balanced_batches(
        np.random.default_rng(0), labeled, codes, labeled[:0], 16, 4,
        use_unlabeled=False, min_labeled_share=0.0,
    )  # fmt: skip
    assert len(batches) >= 2
    for b in batches:
        assert len(set(b.tolist())) == len(b)  # no pair twice in a batch
        counts = _labels_of(b, labeled, codes)
        assert len(counts) == 4  # 16 // 4 labels
        assert max(counts.values()) <= 4
        assert all(n == min(4, (codes == c).sum()) for c, n in counts.items())
    # the big label is no more frequent than the others: 4 per batch at most, not 200/247
    total = Counter(c for b in batches for c in _labels_of(b, labeled, codes).elements())
    assert total[0] <= 4 * len(batches)


def test_same_seed_same_batches_other_seed_differs() -> None:
    labeled, codes = _skewed()
    unlabeled = np.arange(1000, 1100)

    def draw(seed: int) -> list[np.ndarray]:
        return balanced_batches(
            np.random.default_rng([seed, 3]), labeled, codes, unlabeled, 32, 4,
            use_unlabeled=True, min_labeled_share=0.5,
        )  # fmt: skip

    a, b, c = draw(0), draw(0), draw(1)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=False))


def test_hidden_label_pairs_fill_the_rest_uniformly() -> None:
    labeled, codes = _skewed()
    unlabeled = np.arange(1000, 1300)  # labeled share 247 / 547 < 0.5: 16 labeled slots
    batches = balanced_batches(
        np.random.default_rng(0), labeled, codes, unlabeled, 32, 4,
        use_unlabeled=True, min_labeled_share=0.5,
    )  # fmt: skip
    n = len(labeled) + len(unlabeled)
    for b in batches:
        assert len(b) == 32  # full: the hidden-label pairs fill what the labels leave
        lab = _labels_of(b, labeled, codes)
        assert len(lab) == 4 and max(lab.values()) <= 4  # 16 labeled slots, 4 labels of ≤ 4
        hidden = b[sum(lab.values()) :]
        assert set(hidden.tolist()) <= set(unlabeled.tolist())  # labeled first, then hidden
    assert sum(len(b) for b in batches) >= n  # an epoch draws about N pairs
    seen = Counter(i for b in batches for i in b.tolist() if i >= 1000)
    assert max(seen.values()) - min(seen.values()) <= 1  # successive permutations: even
    # a method that reads no hidden-label pair gets labeled batches only
    only = balanced_batches(
        np.random.default_rng(0), labeled, codes, unlabeled, 32, 4,
        use_unlabeled=False, min_labeled_share=0.5,
    )  # fmt: skip
    assert all(set(b.tolist()) <= set(labeled.tolist()) for b in only)
    assert all(len(_labels_of(b, labeled, codes)) == 8 for b in only)  # 32 // 4 labels


def test_few_labels_give_shorter_batches_and_more_steps() -> None:
    codes = np.repeat(np.arange(3), 50)
    labeled = np.arange(150)
    batches = balanced_batches(
        np.random.default_rng(0), labeled, codes, labeled[:0], 64, 4,
        use_unlabeled=True, min_labeled_share=0.0,
    )  # fmt: skip
    assert all(len(b) == 12 for b in batches)  # every label, 4 each; not padded
    assert len(batches) == 13  # ceil(150 / 12): an epoch draws about every pair once
    assert all(sorted(_labels_of(b, labeled, codes).values()) == [4, 4, 4] for b in batches)


def test_no_labeled_pair_is_refused() -> None:
    with pytest.raises(UsageError, match="--sampler balanced needs labeled pairs"):
        balanced_batches(
            np.random.default_rng(0), np.arange(0), np.arange(0), np.arange(10), 8, 2,
            use_unlabeled=True, min_labeled_share=0.0,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sampler": "magic"}, "--sampler must be one of random, balanced, got 'magic'"),
        ({"sampler": "balanced", "per_class": 0}, "--per-class must be an integer ≥ 1, got 0"),
        (
            {"sampler": "balanced", "batch_size": 16, "per_class": 9},
            "--per-class must be at most half of --batch-size (8)",
        ),
    ],
)
def test_bad_sampler_options(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(OptionValueError) as info:
        for_method("infonce", **overrides)
    assert message in str(info.value)


def test_balanced_needs_labels() -> None:
    with pytest.raises(OptionValueError, match="--sampler must be random with --labeled-ratio 0"):
        for_method("infonce", labeled_ratio=0.0, sampler="balanced")
    # the random sampler ignores --per-class (the CLI refuses the flag there)
    assert TrainConfig(per_class=1000).sampler == "random"


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "heads.safetensors"))


def _skewed_set() -> FeatureSet:
    """4 clustered labels, one of them 10× as many pairs as each of the others."""
    big = clustered(300, n_classes=4, seed=0)
    keep = np.flatnonzero((big.labels == 0) | (np.arange(300) % 10 == 0))
    return big.subset(keep)


@pytest.mark.parametrize(("method", "ratio"), [("infonce", 0.5), ("triplet", 1.0)])
def test_training_with_balanced_batches_is_deterministic(
    tmp_path: Path, method: str, ratio: float
) -> None:
    data = _skewed_set()
    mask = mask_labels(data.labels, ratio, seed=0)
    cfg = tiny(method, epochs=3, batch_size=16, sampler="balanced", per_class=2)
    a = train(data, mask, cfg, tmp_path / "a")
    train(data, mask, cfg, tmp_path / "b")
    train(data, mask, cfg.replace(sampler="random"), tmp_path / "r")
    wa, wb, wr = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "r")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["audio.net.0.weight"], wr["audio.net.0.weight"])
    assert a.model_config.training["recipe"]["sampler"] == "balanced"
    assert a.model_config.training["recipe"]["per_class"] == 2


def test_balanced_with_one_label_is_refused(tmp_path: Path) -> None:
    data = clustered(40, n_classes=1)
    cfg = tiny("infonce", epochs=1, batch_size=8, sampler="balanced", per_class=2)
    with pytest.raises(UsageError, match="2 labels or more, got 1"):
        train(data, np.ones(len(data), dtype=bool), cfg, tmp_path / "m")
