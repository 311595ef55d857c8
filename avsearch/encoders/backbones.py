"""A pair of frozen towers (audio, visual), loaded lazily, turning decoded windows into raw
backbone features. AVModel puts projection heads on top; training caches these features.

Each side is a backbone name of :mod:`avsearch.encoders.registry` (a composite ``a+b`` too).
Reading what a side declares (dimension, input) loads nothing; importing this module imports
no torch (the towers bring it when they are built).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avsearch.encoders.composite import checked_features
from avsearch.encoders.files import sha256_file
from avsearch.encoders.registry import BACKBONES, load_backbone, weights_files, weights_key
from avsearch.encoders.tower import (
    MODALITIES,
    PRECISIONS,
    AudioInput,
    ImageInput,
    Precision,
    context_windows,
    set_precision,
)
from avsearch.errors import ModelError

if TYPE_CHECKING:
    from avsearch.encoders.registry import BackboneInfo
    from avsearch.encoders.tower import Tower


class Backbones:
    def __init__(
        self,
        audio: str = "aisfx",
        visual: str = "efficientnet-lite0",
        audio_weights: Path | None = None,
        visual_weights: Path | None = None,
        audio_sha256: str | None = None,
        visual_sha256: str | None = None,
        user_weights: Mapping[str, Path] | None = None,
        precision: Precision = "fp32",
    ) -> None:
        """``audio_weights``/``visual_weights``: the model's own file for each tower's primary
        part; ``*_sha256``: what the model config recorded for it; ``user_weights``: weights
        files the user gave, by backbone name (``{"vggish": PATH}``); ``precision``: what the
        towers that can run at another precision run at (:func:`set_precision`)."""
        if precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.precision: Precision = precision
        self.names = {"audio": audio, "visual": visual}
        self.info: dict[str, BackboneInfo] = {}
        for modality, name in self.names.items():
            info = BACKBONES.lookup(name)
            if info.modality != modality:
                raise ModelError(f"backbone {name!r} is a {info.modality} backbone, not {modality}")
            self.info[modality] = info
        self.weights = {"audio": audio_weights, "visual": visual_weights}
        self.expected_sha = {"audio": audio_sha256, "visual": visual_sha256}
        self.user_weights = dict(user_weights or {})

    def _load(self, modality: str) -> Tower:
        """The tower, after checking a weights file the user pointed at (a model directory's
        file, ``$AVSEARCH_<NAME>_WEIGHTS``) against the sha256 the model config records."""
        name = self.names[modality]
        expected = self.expected_sha[modality]
        files = weights_files(name, self.weights[modality], self.user_weights)
        primary = files[0] if files else None
        if expected and primary and primary.present and primary.source != "default":
            actual = sha256_file(primary.path)
            if actual != expected:
                raise ModelError(
                    f"{primary.path}: sha256 {actual[:12]}… differs from the model config's "
                    f"{expected[:12]}…",
                    hint="the backbone weights were changed; reinstall or re-convert them",
                )
        tower = load_backbone(name, self.weights[modality], self.user_weights)
        set_precision(tower, self.precision)
        return tower

    @cached_property
    def audio(self) -> Tower:
        return self._load("audio")

    @cached_property
    def visual(self) -> Tower:
        return self._load("visual")

    def tower(self, modality: str) -> Tower:
        if modality not in MODALITIES:
            raise ValueError(f"modality must be audio or visual, not {modality!r}")
        return self.audio if modality == "audio" else self.visual

    def dim(self, modality: str) -> int:
        return self.info[modality].dim

    @property
    def audio_input(self) -> AudioInput:
        declared = self.info["audio"].input
        if not isinstance(declared, AudioInput):  # pragma: no cover - checked by modality
            raise ModelError(f"{self.names['audio']} declares no audio input")
        return declared

    @property
    def image_input(self) -> ImageInput:
        declared = self.info["visual"].input
        if not isinstance(declared, ImageInput):  # pragma: no cover - checked by modality
            raise ModelError(f"{self.names['visual']} declares no image input")
        return declared

    def key(self, window_samples: int, min_tail: float = 0.5) -> str:
        """Identifies features: every part of each tower with its weights' hash, and the
        windowing (the audio window length; the shortest tail kept as a window, when not the
        default 0.5 s), e.g. ``aisfx@c1d1…+words@3739…|efficientnet-lite0@5793…|w102400``."""
        parts = [
            weights_key(self.names[m], self.weights[m], self.expected_sha[m], self.user_weights)
            for m in MODALITIES
        ]
        tail = "" if min_tail == 0.5 else f"|t{min_tail:g}"
        return "|".join(parts) + f"|w{window_samples}" + tail + self._precision_key()

    def _precision_key(self) -> str:
        """``|bf16`` when a tower runs a part at bfloat16 (its features differ from float32's
        by a few percent), else nothing: float32 keys are those of earlier versions."""
        if self.precision == "fp32":
            return ""
        reduced = any(
            self.precision in BACKBONES.lookup(part).precisions
            for m in MODALITIES
            for part in BACKBONES.lookup(self.names[m]).parts or (self.names[m],)
        )
        return f"|{self.precision}" if reduced else ""

    def context_windows(self, modality: str) -> int:
        """How many consecutive windows the tower hears together (loads it)."""
        return context_windows(self.tower(modality))

    def features(
        self, modality: str, batch: np.ndarray, runs: Sequence[int] | None = None
    ) -> np.ndarray:
        """audio: ``[B, samples]`` float32 mono; visual: ``[B, size, size, 3]`` uint8 →
        ``float32 [B, dim]`` (loads that tower on first use); ``runs``: see
        :mod:`avsearch.encoders.tower`."""
        if len(batch) == 0:
            return np.zeros((0, self.dim(modality)), np.float32)
        return checked_features(self.tower(modality), batch, runs)
