"""The model directory of a training run: the caller's template, filled in.

``check_template`` validates a ``ModelConfig`` template against the feature dimensions
before training (a registered backbone must match the feature dimension; unregistered names such as
``vggish-features`` are allowed and make a directory for feature evaluation only).
``build_model_config`` fills in heads, embedding dim and the ``training`` section.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from avsearch.encoders.heads import HeadConfig
from avsearch.encoders.model_dir import ModelConfig, TowerConfig
from avsearch.encoders.native import part_columns
from avsearch.encoders.registry import BACKBONES
from avsearch.errors import UsageError
from avsearch.train.config import TrainConfig
from avsearch.train.data import FeatureSet
from avsearch.train.nets import AVNets


def check_template(
    template: ModelConfig | None, dims: FeatureSet | dict[str, int], cfg: TrainConfig
) -> ModelConfig:
    """The template (or a placeholder), checked against the feature dimension per modality
    (``dims``: ``{"audio": Da, "visual": Dv}`` or a ``FeatureSet``)."""
    if template is None:
        placeholder = HeadConfig(1, cfg.dim, cfg.hidden, cfg.dropout)
        template = ModelConfig(
            name="trained",
            embedding_dim=cfg.dim,
            audio=TowerConfig("audio-features", placeholder),
            visual=TowerConfig("visual-features", placeholder),
            description="projection heads trained on precomputed features "
            "(no registered backbones: usable for feature evaluation only)",
        )
    if isinstance(dims, FeatureSet):
        dims = {"audio": dims.audio.shape[1], "visual": dims.visual.shape[1]}
    for modality, tower in (("audio", template.audio), ("visual", template.visual)):
        info = BACKBONES.get(tower.backbone)
        if info is None:
            continue
        if info.modality != modality:
            raise UsageError(f"backbone {tower.backbone!r} is a {info.modality} backbone")
        expected = info.dim
        if tower.head.parts:  # the head reads these parts of the tower's features
            expected = len(part_columns(tower.backbone, tower.head.parts))
        if expected != dims[modality]:
            raise UsageError(
                f"the {modality} features have {dims[modality]} dimensions but backbone "
                f"{tower.backbone!r} gives {expected}",
                hint="name a non-registered backbone (e.g. 'vggish-features') for features "
                "from another network",
            )
    return template


def build_model_config(
    template: ModelConfig,
    cfg: TrainConfig,
    nets: AVNets,
    training_info: dict[str, Any],
    *,
    classes: list[int],
    counts: dict[str, int],
    results: dict[str, Any],
) -> ModelConfig:
    """The template with the trained heads, dim and recipe; our keys win over the caller's."""
    training = {
        **template.training,
        **training_info,
        "method": cfg.method,
        "recipe": cfg.to_dict(),
        "classes": classes,
        "classifier": {"kind": "cosine", "scale": cfg.classifier_scale},
        "counts": counts,
        "results": results,
    }
    return replace(
        template,
        embedding_dim=cfg.dim,
        audio=replace(
            template.audio, head=replace(nets.audio.cfg, parts=template.audio.head.parts)
        ),
        visual=replace(
            template.visual, head=replace(nets.visual.cfg, parts=template.visual.head.parts)
        ),
        training=training,
    )
