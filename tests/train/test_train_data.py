"""Label masking, validation split, FeatureSet checks and the HDF5 loaders in each layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from avsearch.errors import UsageError
from avsearch.train.data import (
    MIN_PAIR_VALIDATION,
    FeatureSet,
    epoch_batches,
    load_h5,
    mask_labels,
    split_pair_validation,
    split_validation,
)

h5py = pytest.importorskip("h5py")

RNG = np.random.default_rng(0)


def feats(n: int, d: int) -> np.ndarray:
    return RNG.normal(size=(n, d)).astype(np.float32)


# ------------------------------------------------------------------------------ masking
def test_mask_labels_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(4), [50, 30, 10, 3])
    mask = mask_labels(labels, 0.1, seed=3)
    assert mask.dtype == bool and mask.shape == labels.shape
    assert [int(mask[labels == c].sum()) for c in range(4)] == [5, 3, 1, 1]
    assert np.array_equal(mask, mask_labels(labels, 0.1, seed=3))
    assert not np.array_equal(mask, mask_labels(labels, 0.1, seed=4))
    assert mask_labels(labels, 1.0, seed=0).all()
    assert mask_labels(labels, 0.001, seed=0).sum() == 4  # at least one per class


@pytest.mark.parametrize("ratio", [1.5, -0.2, 1.0001])
def test_mask_labels_rejects_bad_ratio(ratio: float) -> None:
    with pytest.raises(UsageError, match=r"--labeled-ratio must be in \[0, 1\]"):
        mask_labels(np.zeros(5, dtype=int), ratio, 0)


def test_mask_labels_ratio_zero_hides_every_label() -> None:
    mask = mask_labels(np.arange(12) % 3, 0.0, 0)
    assert mask.dtype == bool and mask.shape == (12,) and not mask.any()


def test_split_validation_uses_labeled_items_only() -> None:
    labels = np.repeat(np.arange(3), 20)
    mask = mask_labels(labels, 0.5, 0)
    train_idx, val_idx = split_validation(labels, mask, 0.2, seed=0)
    assert len(np.intersect1d(train_idx, val_idx)) == 0
    assert len(train_idx) + len(val_idx) == 60
    assert mask[val_idx].all()
    assert [int((labels[val_idx] == c).sum()) for c in range(3)] == [2, 2, 2]
    for c in range(3):  # every class keeps labeled training items
        assert (mask[train_idx] & (labels[train_idx] == c)).any()
    assert len(split_validation(labels, mask, 0.0, 0)[1]) == 0


def test_feature_set_checks() -> None:
    fs = FeatureSet(feats(4, 3), feats(4, 5), np.array([0, 1, 0, 1]))
    assert len(fs) == 4 and fs.audio.dtype == np.float32
    assert len(fs.subset(np.array([0, 2]))) == 2
    assert fs.digest() == FeatureSet(fs.audio, fs.visual, fs.labels).digest()
    with pytest.raises(UsageError, match="one row per pair"):
        FeatureSet(feats(4, 3), feats(3, 5), np.zeros(4, dtype=int))
    with pytest.raises(UsageError, match="2-D"):
        FeatureSet(feats(4, 3)[:, :, None], feats(4, 5), np.zeros(4, dtype=int))
    bad = feats(4, 3)
    bad[2, 1] = np.nan
    with pytest.raises(UsageError, match="NaN"):
        FeatureSet(bad, feats(4, 5), np.zeros(4, dtype=int))
    with pytest.raises(UsageError, match="integer"):
        FeatureSet(feats(4, 3), feats(4, 5), np.zeros(4))


# ------------------------------------------------------------------------------ HDF5
def write(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as fh:
        for name, value in datasets.items():
            fh.create_dataset(name, data=value)
    return path


def one_hot(labels: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[labels]


def ave_layout(n_train: int = 6, n_test: int = 4, **extra: np.ndarray) -> dict[str, np.ndarray]:
    base = {
        "audio_train": feats(n_train, 8),
        "visual_train": feats(n_train, 10),
        "lab_train": np.arange(n_train) % 3,
        "audio_test": feats(n_test, 8),
        "visual_test": feats(n_test, 10),
        "lab_test": np.arange(n_test) % 3,
    }
    return {**base, **extra}


def test_ave_layout_int_labels(tmp_path: Path) -> None:
    data = ave_layout()
    splits = load_h5(write(tmp_path / "ave.h5", **data))
    assert sorted(splits) == ["test", "train"]
    assert np.array_equal(splits["train"].audio, data["audio_train"])
    assert np.array_equal(splits["test"].labels, data["lab_test"])
    assert splits["train"].visual.shape == (6, 10)


def test_ave_layout_one_hot_and_val(tmp_path: Path) -> None:
    y = np.array([2, 0, 1, 1, 0, 2])
    data = ave_layout(
        lab_train=one_hot(y, 3),
        lab_test=one_hot(np.array([0, 1, 2, 0]), 3),
        audio_val=feats(3, 8),
        visual_val=feats(3, 10),
        lab_val=np.array([[0.0], [1.0], [2.0]]),
    )
    splits = load_h5(write(tmp_path / "vegas.h5", **data))
    assert sorted(splits) == ["test", "train", "val"]
    assert splits["train"].labels.tolist() == y.tolist()
    assert splits["val"].labels.tolist() == [0, 1, 2]


def test_plain_layout_with_int_and_string_splits(tmp_path: Path) -> None:
    y = np.array([0, 1, 2, 0, 1, 2, 0])
    base = {"audio": feats(7, 4), "visual": feats(7, 6), "label": y}
    ints = load_h5(write(tmp_path / "a.h5", **base, split=np.array([0, 0, 0, 1, 2, 2, 0])))
    assert {k: len(v) for k, v in ints.items()} == {"train": 4, "val": 1, "test": 2}
    assert ints["test"].labels.tolist() == [1, 2]
    names = np.array([b"train", b"train", b"test", b"validation", b"val", b"TEST", b"train"])
    strs = load_h5(write(tmp_path / "b.h5", **base, split=names))
    assert {k: len(v) for k, v in strs.items()} == {"train": 3, "val": 2, "test": 2}
    none = load_h5(write(tmp_path / "c.h5", **base))
    assert list(none) == ["train"] and len(none["train"]) == 7


def _nan_audio() -> np.ndarray:
    a = feats(6, 8)
    a[4, 0] = np.nan
    return a


BAD_FILES: dict[str, tuple[Callable[[], dict[str, np.ndarray]], str]] = {
    "missing dataset": (
        lambda: {k: v for k, v in ave_layout().items() if k != "visual_test"},
        "dataset 'visual_test' is missing",
    ),
    "missing labels": (
        lambda: {k: v for k, v in ave_layout().items() if k != "lab_train"},
        "dataset 'lab_train' is missing",
    ),
    "length mismatch": (
        lambda: ave_layout(visual_train=feats(5, 10)),
        "different lengths (6, 5, 6)",
    ),
    "rank 3": (
        lambda: ave_layout(audio_train=feats(6, 8)[:, None, :].repeat(2, 1)),
        "audio_train must be 2-D",
    ),
    "NaN": (lambda: ave_layout(audio_train=_nan_audio()), "NaN or infinite values in 1 row"),
    "empty one-hot row": (
        lambda: ave_layout(lab_train=np.zeros((6, 3), dtype=np.float32)),
        "has no class",
    ),
    "multi-label row": (
        lambda: ave_layout(lab_train=np.ones((6, 3), dtype=np.float32)),
        "only single-label data",
    ),
    "fractional labels": (
        lambda: ave_layout(lab_train=np.array([0.5, 1, 2, 0, 1, 2])),
        "non-integer values",
    ),
    "dims differ between splits": (
        lambda: ave_layout(audio_test=feats(4, 9)),
        "feature dimensions differ between splits",
    ),
    "unknown layout": (lambda: {"foo": feats(3, 2)}, "unknown layout (datasets: foo)"),
    "plain without label": (
        lambda: {"audio": feats(3, 2), "visual": feats(3, 2)},
        "dataset 'label' is missing",
    ),
    "bad split value": (
        lambda: {
            "audio": feats(3, 2),
            "visual": feats(3, 2),
            "label": np.arange(3),
            "split": np.array([0, 1, 5]),
        },
        "split has values [5]",
    ),
    "bad split name": (
        lambda: {
            "audio": feats(3, 2),
            "visual": feats(3, 2),
            "label": np.arange(3),
            "split": np.array([b"train", b"dev", b"test"]),
        },
        "split has unknown values ['dev']",
    ),
    "no train rows": (
        lambda: {
            "audio": feats(2, 2),
            "visual": feats(2, 2),
            "label": np.arange(2),
            "split": np.array([1, 2]),
        },
        "no row is in the train split",
    ),
    "split length": (
        lambda: {
            "audio": feats(3, 2),
            "visual": feats(3, 2),
            "label": np.arange(3),
            "split": np.array([0, 0]),
        },
        "split has 2 rows but audio has 3",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_usage_errors(tmp_path: Path, case: str) -> None:
    make, message = BAD_FILES[case]
    path = write(tmp_path / "bad.h5", **make())
    with pytest.raises(UsageError) as err:
        load_h5(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_not_a_file_or_not_hdf5(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        load_h5(tmp_path / "absent.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(UsageError, match="not a readable HDF5 file"):
        load_h5(text)


# ------------------------------------------------------------------------------ batches
def test_epoch_batches_mixed_and_labeled_only() -> None:
    labeled, unlabeled = np.arange(0, 20), np.arange(20, 100)
    batches = epoch_batches(
        np.random.default_rng(0),
        labeled,
        unlabeled,
        32,
        use_unlabeled=True,
        min_labeled_share=0.5,
    )
    assert len(batches) == 4  # ceil(100 / 32)
    for b in batches:
        assert len(b) == 32
        assert set(b[:16]) <= set(labeled) and set(b[16:]) <= set(unlabeled)
    seen = np.concatenate([b[16:] for b in batches])
    assert len(np.unique(seen)) == 64  # drawn from one permutation: no repeats yet
    again = epoch_batches(
        np.random.default_rng(0), labeled, unlabeled, 32, use_unlabeled=True, min_labeled_share=0.5
    )
    assert all(np.array_equal(x, y) for x, y in zip(batches, again, strict=True))
    only = epoch_batches(
        np.random.default_rng(0), labeled, unlabeled, 32, use_unlabeled=False, min_labeled_share=0
    )
    assert len(only) == 4 and all(len(b) == 20 and set(b) == set(labeled) for b in only)
    natural = epoch_batches(
        np.random.default_rng(0), labeled, unlabeled, 20, use_unlabeled=True, min_labeled_share=0
    )
    assert all(len(set(b) & set(labeled)) == 4 for b in natural)  # the natural 20 %
    few = epoch_batches(
        np.random.default_rng(0),
        labeled[:3],
        unlabeled,
        32,
        use_unlabeled=True,
        min_labeled_share=0.5,
    )
    assert all(len(set(b[:3])) == 3 and len(b) == 32 for b in few)  # never repeated in a batch


def test_split_pair_validation_holds_out_hidden_pairs_only() -> None:
    mask = np.zeros(100, dtype=bool)
    mask[:10] = True  # ten labeled pairs never go to pair validation
    train_idx, val_idx = split_pair_validation(mask, 0.1, seed=0)
    assert len(val_idx) == 9 and not mask[val_idx].any()
    assert sorted([*train_idx, *val_idx]) == list(range(100))
    again = split_pair_validation(mask, 0.1, seed=0)
    assert np.array_equal(again[1], val_idx)
    assert not np.array_equal(split_pair_validation(mask, 0.1, seed=1)[1], val_idx)
    # too few hidden pairs, or no fraction: no validation
    assert len(split_pair_validation(np.zeros(MIN_PAIR_VALIDATION - 1, bool), 0.1, 0)[1]) == 0
    assert len(split_pair_validation(np.zeros(100, bool), 0.0, 0)[1]) == 0
