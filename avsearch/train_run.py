"""``avsearch train``: media mode and feature mode, wired to the training core.

Media mode: decode the folders once (backbone features cached in the index directory), form
pairs (:mod:`avsearch.trainset`), hide labels for ``--labeled-ratio``, train the heads on top
of the frozen default backbones, and write a model directory that ``embed --model DIR`` uses.
Feature mode (``--features file.h5``): train directly on precomputed features in one of the
HDF5 layouts of :func:`avsearch.train.load_h5`; the test split, when present, is evaluated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avsearch.encoders.backbones import Backbones
from avsearch.encoders.heads import HeadConfig
from avsearch.encoders.model_dir import (
    ModelConfig,
    TowerConfig,
    load_config,
    load_heads,
    sha256_file,
)
from avsearch.encoders.registry import BACKBONES
from avsearch.errors import UsageError
from avsearch.evaluate import RetrievalReport
from avsearch.evaluate_index import _lookup, folder_label, read_labels_csv
from avsearch.train import FeatureSet, TrainConfig, evaluate_heads, load_h5, mask_labels, train
from avsearch.train.loop import EpochRecord
from avsearch.trainset import build_pairs, extract_features

log = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    mode: str
    out_dir: str
    fingerprint: str
    method: str
    labeled_ratio: float
    pairs: int
    labeled_pairs: int
    classes: list[str]
    epochs_run: int
    best_epoch: int
    best_val_map: float | None
    stopped_early: bool
    seconds_per_epoch: float
    media: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def labels_function(labels_csv: Path | None) -> Callable[[Path], str | None]:
    if labels_csv is None:
        return lambda p: folder_label(str(p))
    table = read_labels_csv(labels_csv)
    missing = [p for p in table if not Path(p).exists()]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise UsageError(
            f"{labels_csv} names {len(missing)} file(s) that do not exist: {shown}",
            hint="paths in the CSV are absolute or relative to the CSV's own folder",
        )
    return lambda p: _lookup(table, str(p))


def media_template(name: str) -> ModelConfig:
    """Default backbones with their default weight files (hashes recorded)."""
    towers = {}
    for modality, backbone in (("audio", "aisfx"), ("visual", "efficientnet-lite0")):
        info = BACKBONES[backbone]
        towers[modality] = TowerConfig(
            backbone, HeadConfig(info.dim), None, sha256_file(info.default_weights())
        )
    return ModelConfig(
        name=name,
        embedding_dim=128,
        audio=towers["audio"],
        visual=towers["visual"],
        description="frozen aisfx + EfficientNet-Lite0, heads trained by `avsearch train`",
    )


def run_train_media(
    paths: list[Path],
    index_dir: Path,
    out: Path,
    cfg: TrainConfig,
    *,
    labels_csv: Path | None = None,
    resume: bool = False,
    file_progress: Callable[[str, dict[str, Any]], None] | None = None,
    epoch_progress: Callable[[EpochRecord], None] | None = None,
) -> TrainSummary:
    backbones = Backbones()
    from avsearch.encoders.audio_frontend import SAMPLE_RATE, WINDOW_SAMPLES
    from avsearch.media.decode import WindowSpec

    spec = WindowSpec(WINDOW_SAMPLES, SAMPLE_RATE)
    labeler = labels_function(labels_csv)
    files, stats = extract_features(
        paths, index_dir, backbones, spec, labeler, progress=file_progress
    )
    if not files:
        raise UsageError("no media files found", hint="give folders of videos, sounds, images")
    pairs = build_pairs(files, seed=cfg.seed)
    features = FeatureSet(pairs.audio, pairs.visual, pairs.labels)
    mask = mask_labels(pairs.labels, cfg.labeled_ratio, cfg.seed)
    info = {
        "mode": "media",
        "data": {
            "paths": [str(p) for p in paths],
            "labels": str(labels_csv) if labels_csv else "parent folder names",
            "class_names": pairs.class_names,
            "video_pairs": pairs.video_pairs,
            "label_pairs": pairs.label_pairs,
            "unpaired_windows": pairs.unpaired,
        },
    }
    result = train(
        features,
        mask,
        cfg,
        out,
        resume=resume,
        progress=epoch_progress,
        model_template=media_template(out.name),
        training_info=info,
    )
    media = {
        "files": stats.files,
        "decoded": stats.decoded,
        "from_cache": stats.from_cache,
        "failed": [{"path": p, "reason": r} for p, r in stats.failures],
        "video_pairs": pairs.video_pairs,
        "label_pairs": pairs.label_pairs,
        "unpaired_windows": pairs.unpaired,
    }
    return _summary(
        "media", result, cfg, len(features), int(mask.sum()), pairs.class_names, media=media
    )


def run_train_features(
    h5: Path,
    out: Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    epoch_progress: Callable[[EpochRecord], None] | None = None,
) -> TrainSummary:
    splits = load_h5(h5)
    data = splits["train"]
    mask = mask_labels(data.labels, cfg.labeled_ratio, cfg.seed)
    info = {"mode": "features", "data": {"features": str(h5), "splits": sorted(splits)}}
    result = train(
        data,
        mask,
        cfg,
        out,
        val=splits.get("val"),
        resume=resume,
        progress=epoch_progress,
        training_info=info,
    )
    test = None
    if "test" in splits:
        t = splits["test"]
        report = evaluate_heads(
            result.audio_head, result.visual_head, t.audio, t.labels, t.visual, t.labels
        )
        test = report.to_json()
    classes = [str(c) for c in np.unique(data.labels)]
    return _summary("features", result, cfg, len(data), int(mask.sum()), classes, test=test)


def _summary(
    mode: str,
    result: Any,
    cfg: TrainConfig,
    n: int,
    n_labeled: int,
    classes: list[str],
    **extra: Any,
) -> TrainSummary:
    secs = [r.seconds for r in result.history]
    return TrainSummary(
        mode=mode,
        out_dir=str(result.out_dir),
        fingerprint=result.fingerprint,
        method=cfg.method,
        labeled_ratio=cfg.labeled_ratio,
        pairs=n,
        labeled_pairs=n_labeled,
        classes=classes,
        epochs_run=len(result.history),
        best_epoch=result.best_epoch,
        best_val_map=result.best_val_map,
        stopped_early=result.stopped_early,
        seconds_per_epoch=float(np.mean(secs)) if secs else 0.0,
        **extra,
    )


def evaluate_feature_file(h5: Path, model_dir: Path, split: str = "test") -> RetrievalReport:
    """MAP of a model directory's heads on one split of a feature file (``eval --features``)."""
    splits = load_h5(h5)
    if split not in splits:
        raise UsageError(f"{h5} has no {split!r} split (has: {', '.join(sorted(splits))})")
    data = splits[split]
    config = load_config(model_dir)
    audio_head, visual_head = load_heads(model_dir, config)
    for name, head, feats in (
        ("audio", audio_head, data.audio),
        ("visual", visual_head, data.visual),
    ):
        if head.cfg.in_dim != feats.shape[1]:
            raise UsageError(
                f"the model's {name} head takes {head.cfg.in_dim}-d features but {h5} has "
                f"{feats.shape[1]}-d {name} features"
            )
    return evaluate_heads(
        audio_head, visual_head, data.audio, data.labels, data.visual, data.labels
    )
