"""AVModel: two frozen backbones + two projection heads, loaded from a model directory.

Backbones are loaded lazily, so querying with an image never loads the audio network.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avsearch.encoders import model_dir as md
from avsearch.encoders.heads import ProjectionHead
from avsearch.encoders.registry import BACKBONES, load_backbone
from avsearch.errors import ModelError
from avsearch.media.decode import WindowSpec

log = logging.getLogger(__name__)

AUDIO_CHUNK = 16


class AVModel:
    def __init__(self, directory: Path, config: md.ModelConfig, fingerprint: str) -> None:
        self.directory = directory
        self.config = config
        self.fingerprint = fingerprint
        self.audio_head, self.visual_head = md.load_heads(directory, config)
        for tower in (config.audio, config.visual):
            if tower.backbone not in BACKBONES:
                raise ModelError(f"{directory}: unknown backbone {tower.backbone!r}")

    @classmethod
    def load(cls, name_or_dir: str | Path) -> AVModel:
        directory = md.resolve_model_dir(str(name_or_dir))
        config = md.load_config(directory)
        return cls(directory, config, md.fingerprint(directory))

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def dim(self) -> int:
        return self.config.embedding_dim

    # ------------------------------------------------------------------------------- backbones
    def _backbone(self, tower: md.TowerConfig) -> nn.Module:
        weights = md.backbone_weights_path(self.directory, tower)
        if weights is not None and tower.backbone_sha256:
            actual = md.sha256_file(weights)
            if actual != tower.backbone_sha256:
                raise ModelError(
                    f"{weights}: sha256 {actual[:12]}… differs from the model config's "
                    f"{tower.backbone_sha256[:12]}…",
                    hint="the backbone weights were changed; reinstall or re-convert them",
                )
        return load_backbone(tower.backbone, weights)

    @cached_property
    def audio_backbone(self) -> nn.Module:
        return self._backbone(self.config.audio)

    @cached_property
    def visual_backbone(self) -> nn.Module:
        return self._backbone(self.config.visual)

    @property
    def sample_rate(self) -> int:
        from avsearch.encoders.audio_frontend import SAMPLE_RATE

        return SAMPLE_RATE

    def window_spec(self, window: float | None = None, min_tail: float = 0.5) -> WindowSpec:
        from avsearch.encoders.audio_frontend import WINDOW_SAMPLES

        seconds = window or self.config.window_seconds
        if seconds is None:
            return WindowSpec(WINDOW_SAMPLES, self.sample_rate, min_tail)
        return WindowSpec.from_seconds(float(seconds), self.sample_rate, min_tail)

    @property
    def image_size(self) -> int:
        return 224

    # ------------------------------------------------------------------------------- features
    @torch.inference_mode()
    def audio_features(self, waves: np.ndarray) -> np.ndarray:
        """[B, samples] mono float32 at ``sample_rate`` → [B, backbone dim] features."""
        net = self.audio_backbone
        out = [
            net(torch.from_numpy(np.ascontiguousarray(waves[i : i + AUDIO_CHUNK], np.float32)))
            for i in range(0, len(waves), AUDIO_CHUNK)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, 512), np.float32)

    @torch.inference_mode()
    def visual_features(self, images: np.ndarray) -> np.ndarray:
        """[B, 224, 224, 3] uint8 RGB → [B, backbone dim] features."""
        if len(images) == 0:
            return np.zeros((0, self.visual_backbone.dim), np.float32)
        return self.visual_backbone.embed(images)

    @torch.inference_mode()
    def project(self, modality: str, features: np.ndarray) -> np.ndarray:
        head: ProjectionHead = self.audio_head if modality == "audio" else self.visual_head
        return head(torch.from_numpy(np.asarray(features, np.float32))).numpy()

    def embed(self, modality: str, batch: np.ndarray) -> np.ndarray:
        feats = self.audio_features(batch) if modality == "audio" else self.visual_features(batch)
        return self.project(modality, feats)
