"""``avsearch train``: media mode and feature mode, wired to the training core.

Media mode: decode the folders once (backbone features cached in the index directory), form
pairs (:mod:`avsearch.train.pairs`), hide labels for ``--labeled-ratio``, train the heads on top
of the frozen default backbones, and write a model directory that ``embed --model DIR`` uses.
With ``--augment`` or ``--finetune`` the files are decoded a second time to compute per-item
views (:func:`avsearch.train.pairs.add_views`): features of augmented copies, or, for a
fine-tuned backbone, the activations before its trainable blocks; fine-tuning then runs in
two stages (:func:`avsearch.train.finetune_run.train_finetune`) and saves the fine-tuned
backbones whole in the model directory.
Feature mode (``--features file.h5``): train directly on precomputed features in one of the
HDF5 layouts of :func:`avsearch.train.load_h5`; the test split, when present, is evaluated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np

from avsearch.encoders.backbones import Backbones
from avsearch.encoders.cut import BackboneCut, cut_backbone
from avsearch.encoders.finetune import BNMode, block_count
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
from avsearch.train.pairs import Encoder, add_views, build_pairs, extract_features
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
    media: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] | None = None
    finetune: dict[str, Any] | None = None  # fine-tuning / augmentation, when either is on

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


def media_template(name: str, cfg: TrainConfig | None = None) -> ModelConfig:
    """Default backbones with their default weight files (hashes recorded); a fine-tuned
    tower's weights are replaced by the run's own file when training ends."""
    towers = {}
    audio = (cfg or TrainConfig()).audio_backbone
    for modality, backbone in (("audio", audio), ("visual", "efficientnet-lite0")):
        info = BACKBONES[backbone]
        towers[modality] = TowerConfig(
            backbone, HeadConfig(info.dim), None, sha256_file(info.default_weights())
        )
    description = f"frozen {audio} + EfficientNet-Lite0, heads trained by `avsearch train`"
    if cfg is not None and cfg.finetuned:
        names = {"audio": audio, "visual": "EfficientNet-Lite0"}
        parts = [
            f"{names[m]} (last {cfg.unfreeze_blocks} block(s) fine-tuned)"
            if m in cfg.finetuned
            else f"frozen {names[m]}"
            for m in ("audio", "visual")
        ]
        description = f"{parts[0]} + {parts[1]}, heads trained by `avsearch train`"
    return ModelConfig(
        name=name,
        embedding_dim=128,
        audio=towers["audio"],
        visual=towers["visual"],
        description=description,
    )


def check_finetune_options(cfg: TrainConfig) -> None:
    """``--unfreeze-blocks`` against the block count of each fine-tuned backbone (before any
    decoding, so a bad value fails at once)."""
    for modality in cfg.finetuned:
        n = block_count(modality)
        if cfg.unfreeze_blocks > n:
            backbone = cfg.audio_backbone if modality == "audio" else "EfficientNet-Lite0"
            raise UsageError(
                f"--unfreeze-blocks must be in 1..{n} when fine-tuning the {modality} "
                f"backbone ({backbone} has {n} blocks), got {cfg.unfreeze_blocks}"
            )


def _view_modalities(cfg: TrainConfig) -> tuple[str, ...]:
    """Towers whose inputs are recomputed as views: the fine-tuned ones, and with
    augmentation both."""
    wanted = set(cfg.finetuned) | ({"audio", "visual"} if cfg.augment else set())
    return tuple(m for m in ("audio", "visual") if m in wanted)


def _view_encoder(
    cfg: TrainConfig, backbones: Backbones, cuts: dict[str, BackboneCut], sample_rate: int
) -> Encoder:
    """(modality, raw batch, seed) -> ``[B, V, ...]``: activations at the cut (float16) of a
    fine-tuned backbone, else backbone features (float32); views 1.. augmented."""
    from avsearch.train.augment import (
        AudioAugmentConfig,
        VisualAugmentConfig,
        augment_audio,
        augment_images,
    )

    audio_aug = AudioAugmentConfig(sample_rate=sample_rate)
    visual_aug = VisualAugmentConfig()

    def augment(modality: str) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
        if modality == "audio":
            return lambda batch, rng: augment_audio(batch, audio_aug, rng)
        return lambda batch, rng: augment_images(batch, visual_aug, rng)

    def encode(modality: str, batch: np.ndarray, seed: int) -> np.ndarray:
        cut = cuts.get(modality)
        enc = cut.activations if cut is not None else partial(backbones.features, modality)
        return build_views(
            batch,
            enc,
            n_views=cfg.n_views,
            augment=augment(modality) if cfg.augment else None,
            seed=seed + (cfg.seed << 32),  # the window's own seed, and --seed
            dtype=np.float16 if cut is not None else np.float32,
        ).data

    return encode


def _cache_sentence(cfg: TrainConfig, recomputed: tuple[str, ...]) -> str:
    """How the feature cache served the towers, e.g. "bypassed for the fine-tuned audio
    tower (views recomputed); used for the visual tower"."""
    bypassed = []
    for kind, towers in (
        ("fine-tuned", [m for m in recomputed if m in cfg.finetuned]),
        ("augmented", [m for m in recomputed if m not in cfg.finetuned]),
    ):
        if towers:
            plural = "s" if len(towers) > 1 else ""
            bypassed.append(f"the {kind} {' and '.join(towers)} tower{plural}")
    used = [f"the {m} tower" for m in ("audio", "visual") if m not in recomputed]
    if not bypassed:
        return "used for the audio and visual towers"
    text = f"bypassed for {' and '.join(bypassed)} (views recomputed)"
    return text + (f"; used for {used[0]}" if used else "")


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
    check_finetune_options(cfg)
    backbones = Backbones(audio=cfg.audio_backbone)
    for modality in cfg.finetuned:
        # load it now: first loaded under Backbones.features' inference mode, its weights
        # would be inference tensors, which can never require gradients
        getattr(backbones, modality)
    from avsearch.encoders.audio_frontend import SAMPLE_RATE, WINDOW_SAMPLES
    from avsearch.media.decode import WindowSpec

    spec = WindowSpec(WINDOW_SAMPLES, SAMPLE_RATE)
    labeler = labels_function(labels_csv)
    files, stats = extract_features(
        paths, index_dir, backbones, spec, labeler, progress=file_progress
    )
    if not files:
        raise UsageError("no media files found", hint="give folders of videos, sounds, images")
    recomputed = _view_modalities(cfg)
    cuts: dict[str, BackboneCut] = {}
    views_decoded = 0
    if recomputed:
        bn_mode = cast(BNMode, cfg.bn_mode)
        cuts = {
            m: cut_backbone(getattr(backbones, m), m, cfg.unfreeze_blocks, bn_mode)
            for m in cfg.finetuned
        }
        encode = _view_encoder(cfg, backbones, cuts, SAMPLE_RATE)
        views_decoded = add_views(
            files, recomputed, encode, spec, progress=file_progress, failures=stats.failures
        )
        if not files:
            raise UsageError("no media file decoded a second time for the views; see above")
    pairs = build_pairs(files, seed=cfg.seed)
    data: FeatureSet | TrainData
    if recomputed:
        data = TrainData(Views(pairs.audio), Views(pairs.visual), pairs.labels)
    else:
        data = FeatureSet(pairs.audio, pairs.visual, pairs.labels)
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
    common: dict[str, Any] = dict(
        resume=resume,
        progress=epoch_progress,
        model_template=media_template(out.name, cfg),
        training_info=info,
    )
    if cuts:
        from avsearch.train.finetune_run import train_finetune

        assert isinstance(data, TrainData)
        result = train_finetune(data, mask, cfg, out, cuts=cuts, **common)
    else:
        result = train(data, mask, cfg, out, **common)
    media = {
        "files": stats.files,
        "decoded": stats.decoded,
        "from_cache": stats.from_cache,
        "failed": [{"path": p, "reason": r} for p, r in stats.failures],
        "video_pairs": pairs.video_pairs,
        "label_pairs": pairs.label_pairs,
        "unpaired_windows": pairs.unpaired,
        "views_decoded": views_decoded,
        "feature_cache": _cache_sentence(cfg, recomputed),
    }
    return _summary(
        "media",
        result,
        cfg,
        len(data),
        int(mask.sum()),
        pairs.class_names,
        media=media,
        finetune=_finetune_info(cfg, result) if recomputed else None,
    )


def _finetune_info(cfg: TrainConfig, result: Any) -> dict[str, Any]:
    tuned = list(cfg.finetuned)
    towers = {"audio": result.model_config.audio, "visual": result.model_config.visual}
    return {
        "modalities": tuned,
        "unfreeze_blocks": cfg.unfreeze_blocks if tuned else None,
        "bn_mode": cfg.bn_mode if tuned else None,
        "backbone_lr_scale": cfg.backbone_lr_scale if tuned else None,
        "augment": cfg.augment,
        "views": cfg.n_views,
        "heads_epochs": cfg.epochs if tuned else None,
        "tails_epochs": cfg.finetune_epochs if tuned else None,
        "backbone_files": [towers[m].backbone_weights for m in tuned if towers[m].backbone_weights],
        # the heads stage beat every tails epoch on validation: the backbones stay as they were
        "kept_heads_stage": bool(tuned) and result.best_epoch == -1,
    }


def run_train_features(
    h5: Path,
    out: Path,
    cfg: TrainConfig,
    *,
    resume: bool = False,
    epoch_progress: Callable[[EpochRecord], None] | None = None,
) -> TrainSummary:
    if cfg.finetuned or cfg.augment:
        raise UsageError(
            "fine-tuning and augmentation need media, not feature files",
            hint="give media folders instead of --features, or drop --finetune / --augment",
        )
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
    tuned = [m for m in ("audio", "visual") if getattr(config, m).backbone_weights]
    if tuned:
        raise UsageError(
            f"{model_dir} has a fine-tuned {' and '.join(tuned)} backbone, but {h5} holds "
            "features of an unchanged backbone, so its heads would be scored on inputs they "
            "never see; evaluate it on media instead: avsearch embed --model "
            f"{model_dir} FOLDER, then avsearch eval"
        )
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
