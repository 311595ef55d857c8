"""The tower contract: what every backbone declares and does.

A tower turns a batch of decoded media into raw features ``float32 [B, dim]``. It declares its
input, and the rest of avsearch decodes to it:

- an audio tower takes mono float32 windows ``[B, window_samples]`` at ``sample_rate``
  (:class:`AudioInput`); its native window is what ``embed`` cuts files into by default. A
  shorter row is a clip's padded or short last window; the tower pads it as it needs;
- an image tower takes square RGB images ``uint8 [B, size, size, 3]`` (:class:`ImageInput`),
  cut from each picture or frame by :func:`avsearch.media.image.square_rgb`.

An audio tower may hear neighbouring windows together: it declares ``context_windows = K``
(K > 1) and takes ``features(batch, runs)``, a run id per row, rows of one id being consecutive
windows of one signal, at most K of them, aligned on the window index (``index // K``). The
mapper holds a file's windows until such a run is complete, so features do not depend on
batching; :func:`context_windows` and :func:`tower_features` are how callers ask and call.

Everything else belongs to the tower: normalisation, log-mel or other front-ends, resampling to
its network's own rate, chunking, inference mode. Every tower is batched. Towers are frozen:
they compute features and are never trained here.

A tower may run its network in bfloat16 (``embed --precision bf16``): it declares
``precisions = ("fp32", "bf16")`` and reads its ``precision`` attribute, which
:func:`set_precision` sets (on each part of a composite); features stay ``float32``. Others run
in float32 whatever is asked.

Towers are built by name from :mod:`avsearch.encoders.registry`; a model's ``config.yaml`` may
name several of one modality, which the registry concatenates
(:class:`avsearch.encoders.composite.CompositeTower`). This module imports neither torch nor
any tower.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "MODALITIES",
    "PRECISIONS",
    "AudioInput",
    "ImageInput",
    "Modality",
    "Precision",
    "Tower",
    "TowerInput",
    "autocast",
    "context_windows",
    "set_precision",
    "tower_features",
]

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")

Modality = Literal["audio", "visual"]
MODALITIES: tuple[Modality, ...] = ("audio", "visual")


@dataclass(frozen=True)
class AudioInput:
    """Mono float32 windows ``[B, window_samples]`` at ``sample_rate`` Hz."""

    sample_rate: int
    window_samples: int

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.window_samples <= 0:
            raise ValueError(f"sample rate and window must be positive: {self}")

    @property
    def seconds(self) -> float:
        return self.window_samples / self.sample_rate

    def describe(self) -> str:
        """``44.1 kHz, 2.322 s``."""
        return f"{self.sample_rate / 1000:g} kHz, {self.seconds:.3f} s"

    def to_json(self) -> dict[str, int]:
        return {"sample_rate": self.sample_rate, "window_samples": self.window_samples}


@dataclass(frozen=True)
class ImageInput:
    """Square RGB images ``uint8 [B, size, size, 3]``."""

    size: int

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError(f"image size must be positive: {self}")

    def describe(self) -> str:
        return f"{self.size}x{self.size} RGB"

    def to_json(self) -> dict[str, int]:
        return {"image_size": self.size}


TowerInput = AudioInput | ImageInput


@runtime_checkable
class Tower(Protocol):
    """A frozen backbone: ``features`` maps a batch of its declared input to ``[B, dim]``."""

    name: str
    modality: str  # "audio" or "visual"
    dim: int
    input: TowerInput

    def features(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` as :attr:`input` declares it -> ``float32 [len(batch), dim]``."""
        ...


def context_windows(tower: object) -> int:
    """How many consecutive windows ``tower`` hears together (1: each window alone)."""
    return max(1, int(getattr(tower, "context_windows", 1)))


def tower_features(tower: Tower, batch: np.ndarray, runs: Sequence[int] | None) -> np.ndarray:
    """``tower.features(batch)``, with the run ids when the tower hears windows together."""
    if runs is not None and context_windows(tower) > 1:
        return tower.features(batch, runs)  # type: ignore[call-arg]
    return tower.features(batch)


def set_precision(tower: object, precision: Precision) -> list[str]:
    """Run ``tower`` (each part of a composite) at ``precision`` where it can; returns the
    names of the parts that will (none: the tower runs in float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    parts = getattr(tower, "parts", None)
    if parts is not None:
        return [name for part in parts for name in set_precision(part, precision)]
    inner = getattr(tower, "part", None)  # a part fed at another rate
    if inner is not None:
        return set_precision(inner, precision)
    if precision in getattr(tower, "precisions", ("fp32",)):
        tower.precision = precision  # type: ignore[attr-defined]
        return [str(getattr(tower, "name", "?"))] if precision != "fp32" else []
    return []


def autocast(precision: str, device_type: str = "cpu") -> Any:
    """The context a tower runs its network in at ``precision`` (bf16: torch's autocast to
    bfloat16; fp32: a no-op)."""
    import torch

    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")
