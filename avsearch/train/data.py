"""Training data on precomputed features: paired feature sets, label masking, HDF5 loaders.

A ``FeatureSet`` holds ``audio`` [N, Da] and ``visual`` [N, Dv] float32 features and integer
``labels`` [N]; row i of ``audio`` is paired with row i of ``visual`` (the same video window,
or, on AV-Digits, a clip and an image formed into a pair within a class).

Supported HDF5 layouts (``load_h5``):

(a) The public AVE / VEGAS feature releases of this research line (e.g. the TNN-C-CCA and
    triplet-retrieval code of Zeng et al.): one dataset per split and role,
    ``audio_{split}`` [N, Da], ``visual_{split}`` [N, Dv], ``lab_{split}`` with split in
    ``train`` (required), ``test`` and ``val`` (optional; all three roles must be present
    for a split that appears). Labels are an integer vector [N] (float vectors with whole
    values and [N, 1] columns are accepted) or a one-hot matrix [N, C].
(b) A plain layout: ``audio`` [N, Da], ``visual`` [N, Dv], ``label`` [N] (or one-hot
    [N, C]), optional ``split`` [N] with integers 0 / 1 / 2 or strings ``train`` / ``val`` /
    ``test`` (``validation`` is accepted for ``val``). Without ``split`` every row is train.

Features must be 2-D (average per-second features such as AVE's [N, 10, 128] VGGish over the
time axis before writing them), finite, and of one length per split. Every problem is a
``UsageError`` naming the file and the dataset.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avsearch.errors import AvsearchError, UsageError

SPLITS = ("train", "val", "test")
_SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Paired features: row i of ``audio`` goes with row i of ``visual``; one label per pair."""

    audio: np.ndarray
    visual: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        audio = _as_features(self.audio, "audio")
        visual = _as_features(self.visual, "visual")
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise UsageError(
                f"labels must be a 1-D integer array, got shape {labels.shape} ({labels.dtype})"
            )
        if not (len(audio) == len(visual) == len(labels)):
            raise UsageError(
                f"audio, visual and labels must have one row per pair: got {len(audio)}, "
                f"{len(visual)} and {len(labels)} rows"
            )
        object.__setattr__(self, "audio", audio)
        object.__setattr__(self, "visual", visual)
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> FeatureSet:
        return FeatureSet(self.audio[idx], self.visual[idx], self.labels[idx])

    def digest(self) -> str:
        """sha256 over the arrays' bytes and shapes (identifies the data of a run)."""
        h = hashlib.sha256()
        for arr in (self.audio, self.visual, self.labels):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def _as_features(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise UsageError(f"{name} features must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise UsageError(f"{name} features must be 2-D (items × dim), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UsageError(f"{name} features are empty (shape {arr.shape})")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = int((~np.isfinite(arr)).any(axis=1).sum())
    if bad:
        raise UsageError(f"{name} features contain NaN or infinite values in {bad} row(s)")
    return arr


def mask_labels(labels: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """A seeded bool mask keeping the labels of a share ``ratio`` of the items, per class.

    Each class c with n_c items keeps max(1, round(ratio · n_c)) of them (all of them when
    ratio is 1, none when it is 0), chosen by ``numpy.random.default_rng(seed)`` class by
    class in sorted order.
    """
    if not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
        raise UsageError(f"--labeled-ratio must be in [0, 1], got {ratio!r}")
    y = np.asarray(labels)
    if y.ndim != 1:
        raise UsageError(f"labels must be 1-D, got shape {y.shape}")
    mask = np.zeros(len(y), dtype=bool)
    if ratio == 0:
        return mask
    rng = np.random.default_rng(seed)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        keep = len(idx) if ratio >= 1 else min(len(idx), max(1, round(ratio * len(idx))))
        mask[np.sort(rng.choice(idx, keep, replace=False))] = True
    return mask


MIN_VALIDATION_CLASS = 10  # classes with fewer labeled items give none to validation


def split_validation(
    labels: np.ndarray, label_mask: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): a seeded, per-class share of the LABELED items.

    Validation needs labels, so it is drawn from labeled items only: of a class with
    n_c ≥ ``MIN_VALIDATION_CLASS`` labeled items, max(1, round(fraction · n_c)) go to
    validation. A smaller class keeps all its items for training: a concept with one photo and
    two recordings (most of natural/) cannot spare one, and holding it out left the farm's dog
    photo out of the default model's training. Unlabeled items always stay in training.
    """
    y = np.asarray(labels)
    mask = np.asarray(label_mask, dtype=bool)
    val = np.zeros(len(y), dtype=bool)
    if fraction > 0:
        rng = np.random.default_rng([seed, 7919])
        for label in np.unique(y[mask]):
            idx = np.flatnonzero(mask & (y == label))
            if len(idx) < MIN_VALIDATION_CLASS:
                continue
            k = max(1, round(fraction * len(idx)))
            val[rng.choice(idx, k, replace=False)] = True
    return np.flatnonzero(~val), np.flatnonzero(val)


MIN_PAIR_VALIDATION = 20  # fewer unlabeled pairs than this: no pair validation


def split_pair_validation(
    label_mask: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) when no label can validate (``--labeled-ratio 0``,
    or every class too small): a seeded share ``fraction`` of the pairs whose label is hidden,
    each to be its own class in validation, so validation MAP is how well a held-out sound
    finds its own picture (and back) among the other held-out pairs: co-occurrence retrieval on
    pairs training never saw. Memorising the training pairs does not raise it; learning what
    makes a sound go with a picture does. Fewer than ``MIN_PAIR_VALIDATION`` such pairs: none.
    """
    mask = np.asarray(label_mask, dtype=bool)
    hidden = np.flatnonzero(~mask)
    val = np.zeros(len(mask), dtype=bool)
    if fraction > 0 and len(hidden) >= MIN_PAIR_VALIDATION:
        rng = np.random.default_rng([seed, 7927])
        k = max(2, round(fraction * len(hidden)))
        val[rng.choice(hidden, k, replace=False)] = True
    return np.flatnonzero(~val), np.flatnonzero(val)


def cycle(rng: np.random.Generator, idx: np.ndarray, count: int) -> np.ndarray:
    """``count`` items: successive seeded permutations of ``idx`` concatenated (none when
    ``idx`` is empty)."""
    if count <= 0 or len(idx) == 0:
        return idx[:0]
    reps = math.ceil(count / len(idx))
    return np.concatenate([rng.permutation(idx) for _ in range(reps)])[:count]


def epoch_batches(
    rng: np.random.Generator,
    labeled: np.ndarray,
    unlabeled: np.ndarray,
    batch_size: int,
    *,
    use_unlabeled: bool,
    min_labeled_share: float,
) -> list[np.ndarray]:
    """One epoch's batches of item indices: ceil(N / batch_size) steps, N = all items.

    Without ``use_unlabeled`` (or without unlabeled items) batches come from the labeled items
    only. Otherwise each batch has b_L = round(B · max(n_labeled / N, min_labeled_share))
    labeled items first, then unlabeled ones. Each kind is drawn from successive seeded
    permutations, cycled when exhausted, so every batch is full and the order depends only on
    ``rng``.
    """
    n = len(labeled) + len(unlabeled)
    steps = max(1, math.ceil(n / batch_size))
    if not use_unlabeled or len(unlabeled) == 0:
        b = min(batch_size, len(labeled))
        stream = cycle(rng, labeled, steps * b)
        return [stream[i * b : (i + 1) * b] for i in range(steps)]
    b = min(batch_size, n)
    share = max(len(labeled) / n, min_labeled_share)
    b_l = min(len(labeled), max(1, round(b * share)))
    b_u = min(len(unlabeled), b - b_l)
    ls, us = cycle(rng, labeled, steps * b_l), cycle(rng, unlabeled, steps * b_u)
    return [
        np.concatenate([ls[i * b_l : (i + 1) * b_l], us[i * b_u : (i + 1) * b_u]])
        for i in range(steps)
    ]


# ----------------------------------------------------------------------------------- HDF5
def _require_h5py() -> Any:
    try:
        import h5py
    except ImportError as exc:
        raise AvsearchError(
            "reading --features needs h5py, which is not installed",
            hint="pip install 'avsearch[train]'  (or: pip install h5py)",
        ) from exc
    return h5py


def load_h5(path: Path | str) -> dict[str, FeatureSet]:
    """Read a feature file in one of the layouts of the module docstring.

    Returns ``{"train": FeatureSet, ...}`` with the splits present (``train`` always; ``val``
    and ``test`` when the file has them).
    """
    h5py = _require_h5py()
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--features {path}: no such file")
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise UsageError(f"--features {path}: not a readable HDF5 file ({exc})") from exc
    with fh:
        names = sorted(k for k in fh if isinstance(fh[k], h5py.Dataset))
        if "audio_train" in names or "visual_train" in names or "lab_train" in names:
            return _load_split_layout(fh, path, names)
        if "audio" in names or "visual" in names:
            return _load_plain_layout(fh, path, names)
        raise UsageError(
            f"--features {path}: unknown layout (datasets: {', '.join(names) or 'none'})",
            hint="expected audio_train/visual_train/lab_train[/..._test/..._val] or "
            "audio/visual/label[/split]; see docs/method.md",
        )


def _dataset(fh: Any, path: Path, name: str, names: list[str]) -> np.ndarray:
    if name not in names:
        raise UsageError(
            f"--features {path}: dataset {name!r} is missing (found: {', '.join(names) or 'none'})"
        )
    return np.asarray(fh[name][()])


def _check_features(arr: np.ndarray, path: Path, name: str) -> np.ndarray:
    if arr.dtype.kind not in "fiu":
        raise UsageError(f"--features {path}: {name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        hint = "average the time axis first" if arr.ndim == 3 else None
        raise UsageError(
            f"--features {path}: {name} must be 2-D (items × dim), got shape {arr.shape}",
            hint=hint,
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UsageError(f"--features {path}: {name} is empty (shape {arr.shape})")
    bad = ~np.isfinite(arr.astype(np.float64))
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise UsageError(
            f"--features {path}: {name} has NaN or infinite values in {len(rows)} row(s) "
            f"(first: row {int(rows[0])})"
        )
    return arr.astype(np.float32)


def _check_labels(arr: np.ndarray, path: Path, name: str) -> np.ndarray:
    where = f"--features {path}: {name}"
    if arr.dtype.kind not in "fiub":
        raise UsageError(f"{where} must be numeric labels, got dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        values = arr.astype(np.float64)
        if not np.isfinite(values).all():
            raise UsageError(f"{where} has NaN or infinite values")
        top = values.max(axis=1)
        empty = np.flatnonzero(top <= 0)
        if len(empty):
            raise UsageError(f"{where}: row {int(empty[0])} of the one-hot matrix has no class")
        multi = np.flatnonzero((values == top[:, None]).sum(axis=1) > 1)
        if len(multi):
            raise UsageError(
                f"{where}: row {int(multi[0])} has several classes; only single-label data "
                "is supported"
            )
        return values.argmax(axis=1).astype(np.int64)
    if arr.ndim != 1:
        raise UsageError(
            f"{where} must be a label vector [N] or a one-hot matrix [N, C], got {arr.shape}"
        )
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise UsageError(f"{where} has NaN or infinite values")
        if not np.array_equal(arr, np.round(arr)):
            raise UsageError(f"{where} has non-integer values")
    return arr.astype(np.int64)


def _feature_set(
    audio: np.ndarray, visual: np.ndarray, labels: np.ndarray, path: Path, names: tuple[str, ...]
) -> FeatureSet:
    a = _check_features(audio, path, names[0])
    v = _check_features(visual, path, names[1])
    y = _check_labels(labels, path, names[2])
    if not (len(a) == len(v) == len(y)):
        raise UsageError(
            f"--features {path}: {names[0]}, {names[1]} and {names[2]} have different lengths "
            f"({len(a)}, {len(v)}, {len(y)}); row i of each must describe pair i"
        )
    return FeatureSet(a, v, y)


def _load_split_layout(fh: Any, path: Path, names: list[str]) -> dict[str, FeatureSet]:
    out: dict[str, FeatureSet] = {}
    for split in SPLITS:
        roles = (f"audio_{split}", f"visual_{split}", f"lab_{split}")
        if split != "train" and not any(r in names for r in roles):
            continue
        arrays = [_dataset(fh, path, r, names) for r in roles]
        out[split] = _feature_set(*arrays, path, roles)
    dims = {s: (fs.audio.shape[1], fs.visual.shape[1]) for s, fs in out.items()}
    if len(set(dims.values())) > 1:
        raise UsageError(f"--features {path}: feature dimensions differ between splits: {dims}")
    return out


def _split_codes(raw: np.ndarray, path: Path) -> np.ndarray:
    arr = np.asarray(raw)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise UsageError(f"--features {path}: split must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind in "SUO":
        text = np.array([x.decode() if isinstance(x, bytes) else str(x) for x in arr])
        text = np.char.lower(np.char.strip(text))
        bad = sorted(set(text.tolist()) - set(_SPLIT_NAMES))
        if bad:
            raise UsageError(
                f"--features {path}: split has unknown values {bad[:5]}; "
                "use train/val/test or 0/1/2"
            )
        return np.array([SPLITS.index(_SPLIT_NAMES[t]) for t in text], dtype=np.int64)
    if arr.dtype.kind not in "iuf":
        raise UsageError(f"--features {path}: split must hold integers or strings")
    bad_vals = sorted(set(np.unique(arr).tolist()) - {0, 1, 2})
    if bad_vals:
        raise UsageError(
            f"--features {path}: split has values {bad_vals[:5]}; use 0 (train), 1 (val), 2 (test)"
        )
    return arr.astype(np.int64)


def _load_plain_layout(fh: Any, path: Path, names: list[str]) -> dict[str, FeatureSet]:
    full = _feature_set(
        _dataset(fh, path, "audio", names),
        _dataset(fh, path, "visual", names),
        _dataset(fh, path, "label", names),
        path,
        ("audio", "visual", "label"),
    )
    if "split" not in names:
        return {"train": full}
    codes = _split_codes(fh["split"][()], path)
    if len(codes) != len(full):
        raise UsageError(
            f"--features {path}: split has {len(codes)} rows but audio has {len(full)}"
        )
    if not (codes == 0).any():
        raise UsageError(f"--features {path}: no row is in the train split")
    return {
        name: full.subset(np.flatnonzero(codes == i))
        for i, name in enumerate(SPLITS)
        if (codes == i).any()
    }
