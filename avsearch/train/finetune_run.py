"""Fine-tuning in two stages: heads on frozen features, then backbone tails with the heads.

``train_finetune`` is "linear probing, then fine-tuning" (LP-FT; Kumar et al., ICLR 2022,
"Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution"), with
the full PSD objective in both stages:

1. **heads**: the projection heads and classifier train for ``cfg.epochs`` on the features
   of the (augmented) views, with the fine-tuned backbones still frozen - the ordinary run
   of :func:`avsearch.train.loop.train`, written to ``out_dir/stage1-heads``;
2. **tails**: the last ``cfg.unfreeze_blocks`` blocks of each backbone in ``cuts`` join in
   for ``cfg.finetune_epochs`` more epochs, warm-started from stage 1, backbone parameters
   at ``cfg.lr * cfg.backbone_lr_scale``; the labeled share stays at its floor and the soft
   weight at 1 (the schedule's end state). The model directory in ``out_dir`` holds the
   best stage-2 epoch by validation MAP, with the fine-tuned backbones saved whole.

Starting the tails from trained heads means the first backbone updates follow useful
gradients instead of those of random heads, and the backbone moves less; on a CPU it also
keeps the expensive tail epochs few. Both stages share one validation split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avsearch.encoders.cut import BackboneCut
from avsearch.encoders.model_dir import ModelConfig
from avsearch.errors import UsageError
from avsearch.train.config import TrainConfig
from avsearch.train.data import split_validation
from avsearch.train.loop import ProgressCallback, TrainResult, train
from avsearch.train.views import TrainData, Views

__all__ = ["STAGE1_DIR", "feature_views", "train_finetune"]

STAGE1_DIR = "stage1-heads"


def feature_views(views: Views, cut: BackboneCut, chunk: int = 256) -> Views:
    """Backbone features of every view of stored activations (the tail in eval mode)."""
    n, v = len(views), views.n_views
    out = np.empty((n, v, cut.backbone.dim), dtype=np.float32)
    for k in range(v):
        for start in range(0, n, chunk):
            out[start : start + chunk, k] = cut.features(
                np.asarray(views.data[start : start + chunk, k], dtype=np.float32)
            )
    return Views(out)


def train_finetune(
    data: TrainData,
    label_mask: np.ndarray,
    cfg: TrainConfig,
    out_dir: Path | str,
    *,
    cuts: dict[str, BackboneCut],
    val: TrainData | None = None,
    features: dict[str, Views] | None = None,
    stage1: TrainResult | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    model_template: ModelConfig | None = None,
    training_info: dict[str, Any] | None = None,
) -> TrainResult:
    """Two-stage fine-tuning (module docstring). ``data`` holds activations at the cut for the
    modalities in ``cuts`` and features for the others; ``features`` may give the feature
    views of the cut modalities if the caller has them already (else they are computed);
    ``stage1`` skips the heads stage and starts from that run (same data, split and config).
    """
    if not cuts:
        raise UsageError("train_finetune needs at least one backbone to fine-tune")
    out_dir = Path(out_dir)
    mask = np.asarray(label_mask, dtype=bool)
    if val is None and cfg.val_fraction > 0:
        tr_idx, va_idx = split_validation(data.labels, mask, cfg.val_fraction, cfg.seed)
        if len(va_idx):
            val, data, mask = data.subset(va_idx), data.subset(tr_idx), mask[tr_idx]
            if features is not None:
                features = {m: f.subset(tr_idx) for m, f in features.items()}

    def as_features(d: TrainData, given: dict[str, Views] | None) -> TrainData:
        views = {"audio": d.audio, "visual": d.visual}
        for m, cut in cuts.items():
            views[m] = given[m] if given and m in given else feature_views(views[m], cut)
        return TrainData(views["audio"], views["visual"], d.labels)

    heads = stage1 or train(
        as_features(data, features),
        mask,
        cfg,
        out_dir / STAGE1_DIR,
        val=None if val is None else as_features(val, None),
        resume=resume,
        progress=progress,
        model_template=model_template,
        training_info={**(training_info or {}), "stage": "heads"},
    )
    stage2 = cfg.replace(epochs=cfg.finetune_epochs, warmup_epochs=0, ramp_epochs=0)
    return train(
        data,
        mask,
        stage2,
        out_dir,
        val=val,
        resume=resume,
        progress=progress,
        model_template=model_template,
        training_info={
            **(training_info or {}),
            "stage": "tails",
            "stage1": {
                "epochs": cfg.epochs,
                "best_epoch": heads.best_epoch,
                "best_val_map": heads.best_val_map,
            },
        },
        cuts=cuts,
        init=heads.nets.state_dict(),
    )
