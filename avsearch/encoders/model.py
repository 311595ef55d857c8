"""AVModel: two frozen backbones + two projection heads, loaded from a model directory.

Backbones are loaded lazily, so querying with an image never loads the audio network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avsearch.encoders import model_dir as md
from avsearch.encoders.backbones import Backbones
from avsearch.encoders.heads import ProjectionHead
from avsearch.media.decode import WindowSpec


class AVModel:
    def __init__(self, directory: Path, config: md.ModelConfig, fingerprint: str) -> None:
        self.directory = directory
        self.config = config
        self.fingerprint = fingerprint
        self.audio_head, self.visual_head = md.load_heads(directory, config)
        self.backbones = Backbones(
            config.audio.backbone,
            config.visual.backbone,
            md.backbone_weights_path(directory, config.audio),
            md.backbone_weights_path(directory, config.visual),
            config.audio.backbone_sha256,
            config.visual.backbone_sha256,
        )

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

    @property
    def audio_backbone(self) -> torch.nn.Module:
        return self.backbones.audio

    @property
    def visual_backbone(self) -> torch.nn.Module:
        return self.backbones.visual

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

    @torch.inference_mode()
    def project(self, modality: str, features: np.ndarray) -> np.ndarray:
        head: ProjectionHead = self.audio_head if modality == "audio" else self.visual_head
        return head(torch.from_numpy(np.asarray(features, np.float32))).numpy()

    def embed(self, modality: str, batch: np.ndarray) -> np.ndarray:
        return self.project(modality, self.backbones.features(modality, batch))
