"""``avsearch train``: media mode and feature mode, wired to the training core.

Media mode: decode the folders once (backbone features cached in the index directory), form
pairs (:mod:`avsearch.train.pairs`), hide labels for ``--labeled-ratio``, train the heads on top
of the frozen backbones, and write a model directory that ``embed --model DIR`` uses. With
``--augment`` the files are decoded a second time to compute per-item views through the same
frozen backbones (:func:`avsearch.train.pairs.add_views`): view 0 as decoded, the others
augmented copies (``avsearch.train.augment.DEFAULT_AUDIO_AUGMENT`` / ``DEFAULT_VISUAL_AUGMENT``).
Feature mode (``--features file.h5``): train directly on precomputed features in one of the
HDF5 layouts of :func:`avsearch.train.load_h5`; the test split, when present, is evaluated.

Media mode also fits the model's native spaces on the training windows (every window once,
as decoded, before any augmentation; :mod:`avsearch.encoders.native`): ``native.safetensors``
and the ``native:`` section of ``config.yaml``, which same-modality search ranks in. A model
whose audio tower includes ``soundnet`` gets the default ``fusion:`` rule with the zero-shot
bridge written out (:mod:`avsearch.encoders.bridge`) and, unless ``--bridge-map-alpha 0``, a
learned correction of the bridge's audio side fitted on the training pairs
(:mod:`avsearch.encoders.bridge_map`: ``bridge_map.safetensors``, ``bridge_map:``).

Either way the model's ``config.yaml`` records, under ``training``, the command that made it
(``command``, when the caller gives it: the CLI does) and the data it read (``data.files``,
``data.digest``: :func:`data_record`), so the run can be repeated and checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from avsearch.encoders.backbones import Backbones
from avsearch.encoders.bridge import BridgeSpace, FusionRule, image_classifier
from avsearch.encoders.bridge_map import (
    BridgeMap,
    build_memory,
    fit_bridge_map,
    pair_targets,
    write_bridge_map,
)
from avsearch.encoders.heads import HeadConfig
from avsearch.encoders.model_dir import (
    ModelConfig,
    TowerConfig,
    load_config,
    load_heads,
    sha256_file,
)
from avsearch.encoders.native import (
    default_parts,
    fit_native,
    part_columns,
    windows_by_modality,
    write_native,
)
from avsearch.encoders.registry import BACKBONES
from avsearch.errors import UsageError
from avsearch.evaluate import RetrievalReport
from avsearch.evaluate_index import _lookup, folder_label, read_labels_csv
from avsearch.media.discover import content_hash
from avsearch.train import FeatureSet, TrainConfig, evaluate_heads, load_h5, mask_labels, train
from avsearch.train.config import VISUAL_BACKBONE, has_bridge
from avsearch.train.loop import EpochRecord, deterministic_torch
from avsearch.train.pairs import BuiltPairs, Encoder, add_views, build_pairs, extract_features
from avsearch.train.views import TrainData, Views, build_views

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
    data: dict[str, Any] = field(default_factory=dict)  # files, digest
    command: str | None = None
    media: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def labels_function(labels_csv: Path | list[Path] | None) -> Callable[[Path], str | None]:
    """Labels from CSVs (several are merged; a file two of them label differently is an error)
    or, with none, from each file's parent folder name."""
    files = [labels_csv] if isinstance(labels_csv, Path) else list(labels_csv or [])
    if not files:
        return lambda p: folder_label(str(p))
    table: dict[str, str] = {}
    for csv_path in files:
        for key, label in read_labels_csv(csv_path).items():
            if table.setdefault(key, label) != label:
                raise UsageError(
                    f"{key} is labelled {table[key]!r} by one labels file and {label!r} by "
                    f"{csv_path}",
                    hint="give each file one label",
                )
    missing = [p for p in table if not Path(p).exists()]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise UsageError(
            f"{', '.join(map(str, files))} name(s) {len(missing)} file(s) that do not exist: "
            f"{shown}",
            hint="paths in a CSV are absolute or relative to the CSV's own folder",
        )
    return lambda p: _lookup(table, str(p))


def media_template(name: str, cfg: TrainConfig | None = None) -> ModelConfig:
    """Default backbones with their default weight files (hashes recorded)."""
    towers = {}
    cfg = cfg or TrainConfig()
    audio = cfg.audio_backbone
    for modality, backbone in (("audio", audio), ("visual", VISUAL_BACKBONE)):
        info = BACKBONES[backbone]
        head = HeadConfig(info.dim)
        if modality == "audio" and cfg.audio_head_parts:
            parts = tuple(cfg.audio_head_parts.split("+"))
            head = HeadConfig(len(part_columns(audio, parts)), parts=parts)
        towers[modality] = TowerConfig(backbone, head, None, sha256_file(info.default_weights()))
    return ModelConfig(
        name=name,
        embedding_dim=128,
        audio=towers["audio"],
        visual=towers["visual"],
        description=f"frozen {audio} + EfficientNet-Lite0, heads trained by `avsearch train`",
        fusion=FusionRule().to_config() if has_bridge(audio) else {},
    )


def data_record(roots: list[Path], files: list[Path]) -> dict[str, Any]:
    """``{"files": n, "digest": "sha256:…"}`` of the training data: the sha256 of the JSON of
    the sorted ``[path relative to its root, content hash]`` list (a root given as a file is
    named by its file name), so the same files anywhere give the same digest."""
    resolved = [r.expanduser().resolve() for r in roots]
    entries = []
    for path in files:
        rel = path.name
        for root in resolved:
            if path == root:
                break
            if path.is_relative_to(root):
                rel = path.relative_to(root).as_posix()
                break
        entries.append([rel, content_hash(path)])
    entries.sort()
    digest = hashlib.sha256(json.dumps(entries, ensure_ascii=False).encode()).hexdigest()
    return {"files": len(entries), "digest": f"sha256:{digest}"}


def label_mask(pairs: BuiltPairs, ratio: float, seed: int) -> np.ndarray:
    """Which pairs keep their label: a seeded share ``ratio`` of those that have one."""
    known = pairs.known
    mask = np.zeros(len(pairs.labels), dtype=bool)
    if known.any():
        mask[known] = mask_labels(pairs.labels[known], ratio, seed)
    return mask


def _view_encoder(cfg: TrainConfig, backbones: Backbones, sample_rate: int) -> Encoder:
    """(modality, raw batch, seed) -> ``[B, V, D]`` backbone features; views 1.. augmented."""
    from avsearch.train.augment import (
        DEFAULT_AUDIO_AUGMENT,
        DEFAULT_VISUAL_AUGMENT,
        augment_audio,
        augment_images,
    )

    audio_aug = replace(DEFAULT_AUDIO_AUGMENT, sample_rate=sample_rate)

    def augment(modality: str) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
        if modality == "audio":
            return lambda batch, rng: augment_audio(batch, audio_aug, rng)
        return lambda batch, rng: augment_images(batch, DEFAULT_VISUAL_AUGMENT, rng)

    def encode(modality: str, batch: np.ndarray, seed: int) -> np.ndarray:
        return build_views(
            batch,
            partial(backbones.features, modality),
            n_views=cfg.n_views,
            augment=augment(modality),
            seed=seed + (cfg.seed << 32),  # the window's own seed, and --seed
        ).data

    return encode


def _augmentation_info(cfg: TrainConfig) -> dict[str, Any]:
    from avsearch.train.augment import DEFAULT_AUDIO_AUGMENT, DEFAULT_VISUAL_AUGMENT

    return {
        "views": cfg.n_views,
        "audio": DEFAULT_AUDIO_AUGMENT.describe(),
        "visual": DEFAULT_VISUAL_AUGMENT.describe(),
    }


def fits_bridge_map(cfg: TrainConfig) -> bool:
    """Whether ``train`` fits a bridge map: a tower with the bridge, ``bridge_map_alpha`` > 0."""
    return bool(cfg.bridge_map_alpha) and has_bridge(cfg.audio_backbone)


def fit_bridge_map_for(
    cfg: TrainConfig,
    backbones: Backbones,
    pairs: BuiltPairs,
    revealed: np.ndarray,
    record: dict[str, Any],
) -> BridgeMap | None:
    """The learned correction of the bridge's audio side (:mod:`avsearch.encoders.bridge_map`)
    from the training pairs (``revealed``: which keep their label); None when the model has no
    bridge, ``bridge_map_alpha`` is 0 (:func:`fits_bridge_map`), or no pair has both sides."""
    if not fits_bridge_map(cfg) or not len(pairs.labels):
        return None

    def classifier() -> tuple[np.ndarray, np.ndarray]:
        found = image_classifier(backbones.visual)
        if found is None:  # pragma: no cover - the registry's visual tower has one
            raise UsageError("the visual tower has no EfficientNet-Lite0 classifier")
        return found

    space = BridgeSpace(cfg.audio_backbone, VISUAL_BACKBONE, classifier)
    first = (slice(None), 0) if pairs.audio.ndim == 3 else (slice(None),)  # views: view 0
    audio = space.vectors("audio", pairs.audio[first])
    pictures = space.vectors("visual", pairs.visual[first])
    x, y, w = pair_targets(audio, pictures, pairs.labels.tolist(), revealed)
    fitted_on = {"files": record["files"], "digest": record["digest"], "by": "avsearch train"}
    memory = None
    if cfg.bridge_memory_k:  # each training sound window once, with its pair's target
        parts = (
            tuple(cfg.audio_head_parts.split("+"))
            if cfg.audio_head_parts
            else default_parts(cfg.audio_backbone, "audio")
        )
        first_of: dict[str, int] = {}  # (a window paired with several pictures: once)
        for i, source in enumerate(pairs.sources):
            first_of.setdefault(source, i)
        rows = np.array(sorted(first_of.values()), dtype=np.int64)
        cols = part_columns(cfg.audio_backbone, parts)
        features = pairs.audio[first][np.ix_(rows, cols)]
        memory = build_memory(features, y[rows], parts, k=cfg.bridge_memory_k)
    return fit_bridge_map(x, y, w, alpha=cfg.bridge_map_alpha, fitted_on=fitted_on, memory=memory)


def run_train_media(
    paths: list[Path],
    index_dir: Path,
    out: Path,
    cfg: TrainConfig,
    *,
    labels_csv: Path | list[Path] | None = None,
    resume: bool = False,
    command: str | None = None,
    file_progress: Callable[[str, dict[str, Any]], None] | None = None,
    epoch_progress: Callable[[EpochRecord], None] | None = None,
) -> TrainSummary:
    """Train on media folders (module docstring); ``command`` is recorded in the model."""
    backbones = Backbones(audio=cfg.audio_backbone)
    from avsearch.media.decode import WindowSpec

    audio_input = BACKBONES[cfg.audio_backbone].input  # the tower's own window and rate
    spec = WindowSpec(audio_input.window_samples, audio_input.sample_rate)  # type: ignore[union-attr]
    label_csvs = [labels_csv] if isinstance(labels_csv, Path) else list(labels_csv or [])
    labeler = labels_function(label_csvs)
    # backbone passes on one thread too: on 2, EfficientNet-Lite0 gave an image's features
    # other last bits from run to run, and a re-run on a fresh index would train on them
    with deterministic_torch():
        files, stats = extract_features(
            paths, index_dir, backbones, spec, labeler, progress=file_progress
        )
        if not files:
            raise UsageError("no media files found", hint="give folders of videos, sounds, images")
        windows = windows_by_modality(files)  # (as decoded: the views below replace them)
        # the bridge map reads the windows as decoded, as `embed` computes them (soundnet hears
        # runs of windows there; the views are computed window by window)
        decoded_pairs = None
        if cfg.augment and fits_bridge_map(cfg):
            decoded_pairs = build_pairs(files, seed=cfg.seed)
        views_decoded = 0
        if cfg.augment:
            encode = _view_encoder(cfg, backbones, spec.sample_rate)
            views_decoded = add_views(
                files,
                ("audio", "visual"),
                encode,
                spec,
                progress=file_progress,
                failures=stats.failures,
            )
            if not files:
                raise UsageError("no media file decoded a second time for the views; see above")
    pairs = build_pairs(files, seed=cfg.seed)
    map_pairs = pairs if decoded_pairs is None else decoded_pairs  # (before the slicing below)
    if cfg.audio_head_parts:  # the head reads these parts of the tower's features alone
        cols = part_columns(cfg.audio_backbone, cfg.audio_head_parts.split("+"))
        pairs = replace(pairs, audio=np.ascontiguousarray(pairs.audio[..., cols]))
    data: FeatureSet | TrainData
    if cfg.augment:
        data = TrainData(Views(pairs.audio), Views(pairs.visual), pairs.labels)
    else:
        data = FeatureSet(pairs.audio, pairs.visual, pairs.labels)
    mask = label_mask(pairs, cfg.labeled_ratio, cfg.seed)
    record = data_record(paths, [f.file.path for f in files])
    data_info: dict[str, Any] = {
        **record,
        "paths": [str(p) for p in paths],
        "labels": [str(p) for p in label_csvs] or "parent folder names",
        "class_names": pairs.class_names,
        "video_pairs": pairs.video_pairs,
        "unlabeled_pairs": pairs.unlabeled_pairs,
        "label_pairs": pairs.label_pairs,
        "unpaired_windows": pairs.unpaired,
    }
    if label_csvs:
        data_info["labels_sha256"] = [sha256_file(p) for p in label_csvs]
    info: dict[str, Any] = {"mode": "media"}
    if command is not None:
        info["command"] = command
    info["data"] = data_info
    if cfg.augment:
        info["augmentation"] = _augmentation_info(cfg)
    result = train(
        data,
        mask,
        cfg,
        out,
        resume=resume,
        progress=epoch_progress,
        model_template=media_template(out.name, cfg),
        training_info=info,
    )
    native = fit_native(
        windows,
        {"audio": cfg.audio_backbone, "visual": VISUAL_BACKBONE},
        fitted_on={"files": record["files"], "digest": record["digest"], "by": "avsearch train"},
    )
    if native.towers:  # (fewer than two windows of a modality: no native space for it)
        result = replace(result, fingerprint=write_native(result.out_dir, native))
    map_mask = mask if decoded_pairs is None else label_mask(map_pairs, cfg.labeled_ratio, cfg.seed)
    bridge_map = fit_bridge_map_for(cfg, backbones, map_pairs, map_mask, record)
    if bridge_map is not None:
        result = replace(result, fingerprint=write_bridge_map(result.out_dir, bridge_map))
    media = {
        "files": stats.files,
        "decoded": stats.decoded,
        "from_cache": stats.from_cache,
        "failed": [{"path": p, "reason": r} for p, r in stats.failures],
        "video_pairs": pairs.video_pairs,
        "unlabeled_pairs": pairs.unlabeled_pairs,
        "label_pairs": pairs.label_pairs,
        "unpaired_windows": pairs.unpaired,
        "views": cfg.n_views,
        "views_decoded": views_decoded,
        # views are augmented copies the cache (features of the windows as decoded) lacks
        "feature_cache": "bypassed: views recomputed" if cfg.augment else "used",
    }
    return _summary(
        "media",
        result,
        cfg,
        len(data),
        int(mask.sum()),
        pairs.class_names,
        data=record,
        command=command,
        media=media,
    )


def run_train_features(
    h5: Path,
    out: Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    command: str | None = None,
    epoch_progress: Callable[[EpochRecord], None] | None = None,
) -> TrainSummary:
    """Train on a feature file (module docstring); ``command`` is recorded in the model."""
    if cfg.augment:
        raise UsageError(
            "augmentation needs media, not feature files",
            hint="give media folders instead of --features, or drop --augment",
        )
    splits = load_h5(h5)
    data = splits["train"]
    mask = mask_labels(data.labels, cfg.labeled_ratio, cfg.seed)
    record = data_record([h5], [h5.expanduser().resolve()])
    info: dict[str, Any] = {"mode": "features"}
    if command is not None:
        info["command"] = command
    info["data"] = {**record, "features": str(h5), "splits": sorted(splits)}
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
    return _summary(
        "features",
        result,
        cfg,
        len(data),
        int(mask.sum()),
        classes,
        data=record,
        command=command,
        test=test,
    )


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
