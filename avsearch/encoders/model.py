"""AVModel: two frozen towers + two projection heads, loaded from a model directory.

Towers are loaded lazily, so querying with an image never loads the audio network. With
``AVModel.load(..., lazy=True)`` the heads are too, and importing this module imports no torch:
``embed`` on an unchanged folder reads the config and the fingerprint, and nothing else. The
window, sample rate and image size come from what the towers declare in the registry, which
loads nothing either.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avsearch.encoders import model_dir as md
from avsearch.errors import ModelError

if TYPE_CHECKING:
    from avsearch.encoders.backbones import Backbones
    from avsearch.encoders.heads import ProjectionHead
    from avsearch.encoders.tower import Tower
    from avsearch.media.decode import WindowSpec


class AVModel:
    def __init__(
        self,
        directory: Path,
        config: md.ModelConfig,
        fingerprint: str,
        *,
        lazy: bool = False,
        user_weights: Mapping[str, Path] | None = None,
    ) -> None:
        self.directory = directory
        self.config = config
        self.fingerprint = fingerprint
        self.user_weights = dict(user_weights or {})
        if lazy:  # cheap checks now (the file is there and is safetensors), the weights on use
            heads = directory / md.HEADS
            if not heads.exists():
                raise ModelError(f"{directory}: {md.HEADS} is missing")
            md.check_safetensors(heads, "projection heads")
        else:
            _ = self.heads, self.backbones

    @classmethod
    def load(
        cls,
        name_or_dir: str | Path,
        *,
        lazy: bool = False,
        hashes: md.HashCache | None = None,
        user_weights: Mapping[str, Path] | None = None,
    ) -> AVModel:
        """The model ``name_or_dir`` names. ``lazy``: load the heads on first use (the backbones
        always are); ``hashes``: a cache of file hashes for the fingerprint; ``user_weights``:
        weights files the user gave, by backbone name (``{"vggish": PATH}``; see
        :mod:`avsearch.encoders.registry`), checked against the config's sha256."""
        directory = md.resolve_model_dir(str(name_or_dir))
        config = md.load_config(directory)
        fingerprint = md.fingerprint(directory, hashes)
        return cls(directory, config, fingerprint, lazy=lazy, user_weights=user_weights)

    @cached_property
    def heads(self) -> tuple[ProjectionHead, ProjectionHead]:
        return md.load_heads(self.directory, self.config)

    @cached_property
    def backbones(self) -> Backbones:
        from avsearch.encoders.backbones import Backbones

        config = self.config
        return Backbones(
            config.audio.backbone,
            config.visual.backbone,
            md.backbone_weights_path(self.directory, config.audio, "audio"),
            md.backbone_weights_path(self.directory, config.visual, "visual"),
            config.audio.backbone_sha256,
            config.visual.backbone_sha256,
            self.user_weights,
        )

    @property
    def audio_head(self) -> ProjectionHead:
        return self.heads[0]

    @property
    def visual_head(self) -> ProjectionHead:
        return self.heads[1]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def dim(self) -> int:
        return self.config.embedding_dim

    @property
    def audio_backbone(self) -> Tower:
        return self.backbones.audio

    @property
    def visual_backbone(self) -> Tower:
        return self.backbones.visual

    @property
    def sample_rate(self) -> int:
        """The rate the audio tower declares."""
        return self.backbones.audio_input.sample_rate

    def window_spec(self, window: float | None = None, min_tail: float = 0.5) -> WindowSpec:
        """The windowing: ``window`` seconds, else the config's ``window_seconds``, else the
        audio tower's native window."""
        from avsearch.media.decode import WindowSpec

        seconds = window or self.config.window_seconds
        if seconds is None:
            return WindowSpec(self.backbones.audio_input.window_samples, self.sample_rate, min_tail)
        return WindowSpec.from_seconds(float(seconds), self.sample_rate, min_tail)

    @property
    def image_size(self) -> int:
        """The image size the visual tower declares."""
        return self.backbones.image_input.size

    def feature_key(self, spec: WindowSpec) -> str:
        """The key of this model's raw backbone features in the feature cache
        (:class:`avsearch.store.features.FeatureCache`): backbones, weights and windowing."""
        return self.backbones.key(spec.samples, spec.min_tail)

    def features(self, modality: str, batch: np.ndarray) -> np.ndarray:
        """Raw backbone features of decoded windows (loads that backbone on first use)."""
        return self.backbones.features(modality, batch)

    def project(self, modality: str, features: np.ndarray) -> np.ndarray:
        """The heads alone: raw backbone features → unit vectors."""
        import torch

        head = self.audio_head if modality == "audio" else self.visual_head
        with torch.inference_mode():
            return head(torch.from_numpy(np.asarray(features, np.float32))).numpy()

    def embed(self, modality: str, batch: np.ndarray) -> np.ndarray:
        return self.project(modality, self.features(modality, batch))
