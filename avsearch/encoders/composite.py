"""Composite towers: several towers of one modality over the same input, features concatenated.

A model's ``config.yaml`` may name a list of backbones for a tower (``audio: {backbone:
[aisfx, words]}``); :func:`avsearch.encoders.registry.load_backbone` builds each part and joins
them here. The composite declares its first part's input; every part receives that input:

- an audio part declaring another sample rate gets the same windows resampled to its own rate
  (:class:`ResampledTower`, the band-limited resampler of :mod:`avsearch.encoders.resample`),
  i.e. the same stretch of time;
- image parts must declare the same image size (a decoded image has one size).

Features are the parts' features side by side, in the order listed. No torch here: the parts
bring their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from avsearch.encoders.resample import resample
from avsearch.encoders.tower import AudioInput, Tower, TowerInput, context_windows, tower_features
from avsearch.errors import ModelError

__all__ = ["CompositeTower", "ResampledTower", "checked_features"]


def checked_features(
    tower: Tower, batch: np.ndarray, runs: Sequence[int] | None = None
) -> np.ndarray:
    """``tower.features(batch)`` (with ``runs`` when it hears windows together:
    :func:`avsearch.encoders.tower.tower_features`), held to the contract: ``float32
    [len(batch), tower.dim]`` (ModelError naming the tower otherwise)."""
    out = np.asarray(tower_features(tower, batch, runs))
    if out.shape != (len(batch), tower.dim):
        raise ModelError(
            f"tower {tower.name!r} returned features of shape {out.shape}; its contract is "
            f"[{len(batch)}, {tower.dim}]"
        )
    return out.astype(np.float32, copy=False)


class ResampledTower:
    """An audio tower fed windows at another rate: ``input`` is the host's (rate, window); each
    batch is resampled to the part's own rate before its :meth:`features`."""

    def __init__(self, part: Tower, host: AudioInput) -> None:
        if not isinstance(part.input, AudioInput):
            raise ModelError(f"tower {part.name!r} does not take audio")
        self.part = part
        self.name = part.name
        self.modality = part.modality
        self.dim = part.dim
        self.input: TowerInput = host
        self.rate = part.input.sample_rate
        self.context_windows = context_windows(part)

    def features(self, batch: np.ndarray, runs: Sequence[int] | None = None) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float32)
        if len(x) == 0 or x.shape[-1] == 0:
            return checked_features(self.part, x, runs)
        waves = resample(x, self.input.sample_rate, self.rate).astype(np.float32)
        return checked_features(self.part, waves, runs)


def _fit(part: Tower, host: TowerInput, name: str) -> Tower:
    """``part`` made to take the ``host`` input (the composite's), or ModelError."""
    if part.input == host:
        return part
    if isinstance(part.input, AudioInput) and isinstance(host, AudioInput):
        if part.input.sample_rate == host.sample_rate:
            return part  # the same rate: the part is given the host's window as it is
        return ResampledTower(part, host)
    raise ModelError(
        f"backbone {name!r}: part {part.name!r} takes {part.input.describe()}, the first part "
        f"{host.describe()}; image parts must take the same image size"
    )


class CompositeTower:
    """Towers of one modality over one input (the first part's), their features concatenated in
    order: ``features(batch) = [part_1(batch) | part_2(batch) | ...]``."""

    def __init__(self, name: str, parts: Sequence[Tower]) -> None:
        if len(parts) < 2:
            raise ModelError(f"backbone {name!r}: a composite needs at least two parts")
        modalities = {p.modality for p in parts}
        if len(modalities) != 1:
            raise ModelError(
                f"backbone {name!r} mixes modalities: "
                + ", ".join(f"{p.name} ({p.modality})" for p in parts)
            )
        self.name = name
        self.modality = parts[0].modality
        self.input: TowerInput = parts[0].input
        self.parts: tuple[Tower, ...] = tuple(_fit(p, self.input, name) for p in parts)
        self.dim = sum(p.dim for p in self.parts)
        self.context_windows = max(context_windows(p) for p in self.parts)

    def features(self, batch: np.ndarray, runs: Sequence[int] | None = None) -> np.ndarray:
        """The parts' features side by side; ``runs`` reach the parts that hear windows
        together (the others hear each window alone)."""
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([checked_features(p, batch, runs) for p in self.parts], axis=1)
