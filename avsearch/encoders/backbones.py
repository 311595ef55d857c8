"""A pair of frozen backbones (audio, visual), loaded lazily, turning decoded windows into raw
backbone features. AVModel puts projection heads on top; training caches these features."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avsearch.encoders.model_dir import sha256_file
from avsearch.encoders.registry import BACKBONES, load_backbone
from avsearch.errors import ModelError

AUDIO_CHUNK = 16


class Backbones:
    def __init__(
        self,
        audio: str = "aisfx",
        visual: str = "efficientnet-lite0",
        audio_weights: Path | None = None,
        visual_weights: Path | None = None,
        audio_sha256: str | None = None,
        visual_sha256: str | None = None,
    ) -> None:
        for name in (audio, visual):
            if name not in BACKBONES:
                raise ModelError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
        self.names = {"audio": audio, "visual": visual}
        self.weights = {"audio": audio_weights, "visual": visual_weights}
        self.expected_sha = {"audio": audio_sha256, "visual": visual_sha256}

    def _load(self, modality: str) -> nn.Module:
        weights = self.weights[modality]
        expected = self.expected_sha[modality]
        if weights is not None and expected:
            actual = sha256_file(weights)
            if actual != expected:
                raise ModelError(
                    f"{weights}: sha256 {actual[:12]}… differs from the model config's "
                    f"{expected[:12]}…",
                    hint="the backbone weights were changed; reinstall or re-convert them",
                )
        return load_backbone(self.names[modality], weights)

    @cached_property
    def audio(self) -> nn.Module:
        return self._load("audio")

    @cached_property
    def visual(self) -> nn.Module:
        return self._load("visual")

    def dim(self, modality: str) -> int:
        return BACKBONES[self.names[modality]].dim

    def key(self, window_samples: int, min_tail: float = 0.5) -> str:
        """Identifies features: backbone names, weight hashes and the windowing (the audio
        window length; the shortest tail kept as a window, when not the default 0.5 s)."""
        parts = []
        for m in ("audio", "visual"):
            w = self.weights[m] or BACKBONES[self.names[m]].default_weights()
            sha = self.expected_sha[m] or (sha256_file(w) if w.exists() else "missing")
            parts.append(f"{self.names[m]}@{sha[:16]}")
        tail = "" if min_tail == 0.5 else f"|t{min_tail:g}"
        return "|".join(parts) + f"|w{window_samples}" + tail

    @torch.inference_mode()
    def features(self, modality: str, batch: np.ndarray) -> np.ndarray:
        """audio: [B, samples] float32 mono; visual: [B, 224, 224, 3] uint8 → [B, dim]."""
        if len(batch) == 0:
            return np.zeros((0, self.dim(modality)), np.float32)
        if modality == "visual":
            return self.visual.embed(batch)
        net = self.audio
        out = [
            net(torch.from_numpy(np.ascontiguousarray(batch[i : i + AUDIO_CHUNK], np.float32)))
            for i in range(0, len(batch), AUDIO_CHUNK)
        ]
        return torch.cat(out).numpy()
