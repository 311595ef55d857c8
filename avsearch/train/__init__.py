"""Training of the projection heads on backbone features (PSD, triplet, supervised, InfoNCE).

Public API (see docs/method.md for the objective):

- ``TrainConfig``, ``for_method`` — configuration and method presets (``config``)
- ``FeatureSet``, ``mask_labels``, ``split_validation``, ``load_h5`` — data (``data``)
- ``train``, ``TrainResult``, ``EpochRecord``, ``embed``, ``evaluate_heads`` — the loop
"""

from __future__ import annotations

from avsearch.train.config import TrainConfig, for_method
from avsearch.train.data import FeatureSet, load_h5, mask_labels, split_validation
from avsearch.train.loop import EpochRecord, TrainResult, embed, evaluate_heads, train

__all__ = [
    "EpochRecord",
    "FeatureSet",
    "TrainConfig",
    "TrainResult",
    "embed",
    "evaluate_heads",
    "for_method",
    "load_h5",
    "mask_labels",
    "split_validation",
    "train",
]
