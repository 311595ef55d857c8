"""A learned correction of the zero-shot bridge on the audio side (issue #19).

The bridge (:mod:`avsearch.encoders.bridge`) compares a sound's ImageNet-group vector, as
SoundNet-8 predicts it, with a picture's, as EfficientNet-Lite0's classifier gives it. SoundNet's
guesses are biased in ways paired media reveal: music of any instrument puts mass on the same
few instrument groups, a farmyard on the groups its training videos showed with it. A model
trained on pairs can learn those biases in the bridge's own 58-d group space, which is the
same for every concept: a correction learned on flutes and trumpets carries over to clarinets,
where heads trained on the same pairs learn the flutes and trumpets and little else.

The map (:class:`BridgeMap`) is a residual linear map of a sound's unit bridge vector ``b``::

    mapped(b) = normalise(b + (b - mean) @ W)

fitted by ``avsearch train`` (:func:`fit_bridge_map`) by weighted ridge regression: each
training pair's audio bridge vector should move towards its target, the normalised mean of the
visual bridge vectors of its label's pairs (of the pair's own picture when the label is hidden),
each label weighing as much as any other (a minute of music as much as a bark), and the
penalty ``alpha * |W|^2`` keeping it near the identity, i.e. near the zero-shot bridge. Pictures
keep their bridge vectors. With no training pair whose picture has a bridge vector, no map.

**Memory of the training sounds** (:class:`BridgeMemory`). The map corrects what SoundNet
heard; the training sounds also say what a sound *like this one* looked like. The memory keeps,
per training sound window, its general-sound features (the tower's ``aisfx`` part, centred on
the training windows and L2-normalised) and its pair's target. A sound's vector then becomes::

    normalise(mapped(b) + beta * s * normalise(mean of the targets of its k nearest windows))

(cosine of the centred features; ``s`` the mean cosine of those ``k`` neighbours, clipped to
[0, 1]; ``k = 5``, ``beta = 1``). A clarinet finds flutes and oboes among the training sounds,
whose pictures sit in the same ImageNet groups as a clarinet's; a sound unlike any training
sound (low ``s``) leans little, rather than towards the pictures of whatever came nearest.

Measured (``bench/natural.py``, leave concepts out: map and memory learned on the training
concepts, scored on the held-out ones): ``docs/benchmarks.md``, "Natural sounds, leave
concepts out".

Stored in the model directory: ``bridge_map.safetensors`` (``mean [58]``, ``weight [58,
58]``; with a memory ``memory.centre [D]``, ``memory.keys [N, D]`` (float16),
``memory.targets [N, 58]``) and the ``bridge_map:`` section of ``config.yaml`` (``alpha``,
what it was fitted on, ``memory: {parts, windows, k, beta}``); the directory's fingerprint
covers both, so an index re-makes its bridge vectors when the map changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avsearch.errors import ModelError

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
    "DEFAULT_K",
    "MAP_FILE",
    "BridgeMap",
    "BridgeMemory",
    "build_memory",
    "fit_bridge_map",
    "load_bridge_map",
    "pair_targets",
    "write_bridge_map",
]

MAP_FILE = "bridge_map.safetensors"
DEFAULT_ALPHA = 0.5  # in units of one label's weight (the penalty against a label's pull)
DEFAULT_K = 5  # neighbours in the memory of training sounds
DEFAULT_BETA = 1.0  # weight of their pictures' direction (times their mean cosine)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


@dataclass(frozen=True)
class BridgeMemory:
    """Training sound windows (centred, unit ``keys`` of the tower ``parts``) and their pairs'
    ``targets`` (unit bridge vectors); ``k`` neighbours weigh ``beta`` (module docstring)."""

    parts: tuple[str, ...]
    centre: np.ndarray  # [D]
    keys: np.ndarray  # [N, D]
    targets: np.ndarray  # [N, G]
    k: int = DEFAULT_K
    beta: float = DEFAULT_BETA

    def __post_init__(self) -> None:
        n, d = self.keys.shape if self.keys.ndim == 2 else (-1, -1)
        if n < 1 or self.centre.shape != (d,) or self.targets.ndim != 2 or len(self.targets) != n:
            raise ModelError(
                f"bridge memory of shapes {self.centre.shape} / {self.keys.shape} / "
                f"{self.targets.shape}"
            )
        if self.k < 1 or self.beta < 0:
            raise ModelError(f"bridge memory with k={self.k}, beta={self.beta}")
        for x in (self.centre, self.keys, self.targets):
            if not np.isfinite(x).all():
                raise ModelError("bridge memory holds non-finite values")

    def lean(self, features: np.ndarray) -> np.ndarray:
        """Part features ``[B, D]`` -> ``s * unit mean target`` of each row's ``k`` nearest
        keys, ``s`` their mean cosine clipped to [0, 1] (module docstring)."""
        q = _normalise(np.asarray(features, dtype=np.float64) - self.centre)
        sims = q @ np.asarray(self.keys, dtype=np.float64).T
        k = min(self.k, sims.shape[1])
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        near = np.clip(np.take_along_axis(sims, nearest, axis=1).mean(axis=1), 0.0, 1.0)
        targets = np.asarray(self.targets, dtype=np.float64)[nearest].mean(axis=1)
        return near[:, None] * _normalise(targets)

    def config(self) -> dict[str, Any]:
        n = len(self.keys)
        return {"parts": list(self.parts), "windows": n, "k": self.k, "beta": self.beta}


def build_memory(
    features: np.ndarray,
    targets: np.ndarray,
    parts: Sequence[str],
    *,
    k: int = DEFAULT_K,
    beta: float = DEFAULT_BETA,
) -> BridgeMemory | None:
    """The memory of training windows (``features``: their ``parts`` columns, one row per
    window; ``targets``: their unit target bridge vectors); None with no finite row."""
    x = np.asarray(features, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    keep = np.isfinite(x).all(axis=1) & np.isfinite(t).all(axis=1)
    x, t = x[keep], t[keep]
    if not len(x):
        return None
    centre = x.mean(axis=0)
    keys = _normalise(x - centre).astype(np.float16).astype(np.float64)  # (as stored)
    return BridgeMemory(tuple(parts), centre, keys, _normalise(t), k, beta)


@dataclass(frozen=True)
class BridgeMap:
    """``mapped(b) = normalise(b + (b - mean) @ weight)`` for unit audio bridge vectors."""

    mean: np.ndarray  # [G]
    weight: np.ndarray  # [G, G]
    alpha: float = DEFAULT_ALPHA
    fitted_on: dict[str, Any] = field(default_factory=dict)
    memory: BridgeMemory | None = None

    def __post_init__(self) -> None:
        g = self.mean.shape
        if len(g) != 1 or self.weight.shape != (g[0], g[0]):
            raise ModelError(f"bridge map of shapes {self.mean.shape} / {self.weight.shape}")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.weight).all()):
            raise ModelError("bridge map holds non-finite values")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def apply(self, vectors: np.ndarray, parts: np.ndarray | None = None) -> np.ndarray:
        """Unit audio bridge vectors ``[B, G]`` -> mapped unit vectors ``float32 [B, G]``;
        ``parts``: the same windows' features of the memory's parts ``[B, D]`` (needed when
        the map has a memory)."""
        b = np.asarray(vectors, dtype=np.float64)
        if b.ndim != 2 or b.shape[1] != self.dim:
            raise ValueError(f"expected [B, {self.dim}] bridge vectors, got {b.shape}")
        mapped = _normalise(b + (b - self.mean) @ self.weight)
        if self.memory is not None:
            if parts is None or len(parts) != len(b):
                raise ValueError("a bridge map with a memory needs the windows' part features")
            mapped = _normalise(mapped + self.memory.beta * self.memory.lean(parts))
        return mapped.astype(np.float32)

    def tensors(self) -> dict[str, np.ndarray]:
        out = {
            "mean": self.mean.astype(np.float32),
            "weight": self.weight.astype(np.float32),
        }
        if self.memory is not None:
            out["memory.centre"] = self.memory.centre.astype(np.float32)
            out["memory.keys"] = self.memory.keys.astype(np.float16)
            out["memory.targets"] = self.memory.targets.astype(np.float32)
        return out

    def config(self) -> dict[str, Any]:
        """The ``bridge_map:`` section of ``config.yaml``."""
        out = {"dim": self.dim, "alpha": self.alpha, "fitted_on": dict(self.fitted_on)}
        if self.memory is not None:
            out["memory"] = self.memory.config()
        return out


def pair_targets(
    audio: np.ndarray,
    visual: np.ndarray,
    labels: Sequence[Any],
    revealed: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs ``[N, G]``, targets ``[N, G]``, weights ``[N]``) of training pairs.

    ``audio``/``visual``: the pairs' unit bridge vectors; ``labels``: each pair's label;
    ``revealed``: whether train may see it. A revealed pair's target is the normalised mean of
    the visual vectors of its label's revealed pairs and weighs ``1 / (pairs of the label)``; a
    hidden pair's target is its own picture's vector (what co-occurs with the sound) and, its
    label unknown, it weighs as one more label's share would: ``1 / (hidden pairs)`` times
    ``(hidden pairs) / (pairs per label)``, i.e. ``1 / mean pairs per revealed label`` (1 when
    no label is revealed)."""
    a = np.asarray(audio, dtype=np.float64)
    v = np.asarray(visual, dtype=np.float64)
    shown = np.asarray(revealed, dtype=bool)
    labs = np.asarray(labels, dtype=object)
    if not (len(a) == len(v) == len(labs) == len(shown)):
        raise ValueError("audio, visual, labels and revealed must have one row per pair")
    targets = v.copy()
    weights = np.zeros(len(a))
    sizes = []
    for lab in dict.fromkeys(labs[shown].tolist()):
        rows = np.flatnonzero(shown & (labs == lab))
        targets[rows] = _normalise(v[rows].mean(axis=0, keepdims=True))[0]
        weights[rows] = 1.0 / len(rows)
        sizes.append(len(rows))
    hidden = ~shown
    weights[hidden] = 1.0 / (float(np.mean(sizes)) if sizes else 1.0)
    return a, targets, weights


def fit_bridge_map(
    inputs: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray,
    *,
    alpha: float = DEFAULT_ALPHA,
    fitted_on: Mapping[str, Any] | None = None,
    memory: BridgeMemory | None = None,
) -> BridgeMap | None:
    """Weighted ridge fit of the residual map (module docstring), with ``memory`` beside it;
    None with no weight."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, not {alpha}")
    x = np.asarray(inputs, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    keep = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1) & (w > 0)
    x, y, w = x[keep], y[keep], w[keep]
    if not len(x) or w.sum() <= 0:
        return None
    mean = (w[:, None] * x).sum(axis=0) / w.sum()
    xc = x - mean
    xw = xc * w[:, None]
    gram = xw.T @ xc + alpha * np.eye(x.shape[1])
    weight = np.linalg.solve(gram, xw.T @ (y - x))
    info = {"pairs": len(x), **dict(fitted_on or {})}
    return BridgeMap(mean, weight, float(alpha), info, memory)


def write_bridge_map(model_dir: Path, bridge_map: BridgeMap) -> str:
    """Write ``bridge_map.safetensors`` and the ``bridge_map:`` section of ``config.yaml`` into a
    model directory (each file atomically); returns the new fingerprint."""
    from dataclasses import replace

    from avsearch.encoders import model_dir as md

    config = md.load_config(model_dir)
    md.write_side_file(model_dir, MAP_FILE, bridge_map.tensors())
    return md.write_config(model_dir, replace(config, bridge_map=bridge_map.config()))


def load_bridge_map(model_dir: Path, section: Mapping[str, Any]) -> BridgeMap | None:
    """The map a model directory declares (``section``: its config's ``bridge_map:``); None when
    it declares none. ModelError when the file is missing, not safetensors, or does not fit."""
    if not section:
        return None
    from avsearch.encoders import model_dir as md

    path = model_dir / MAP_FILE
    tensors = md.read_side_file(model_dir, MAP_FILE, "a bridge map", "bridge map")
    try:
        mean = tensors["mean"].astype(np.float64)
        weight = tensors["weight"].astype(np.float64)
        dim = int(section["dim"])
        alpha = float(section.get("alpha", DEFAULT_ALPHA))
        memory = None
        decl = section.get("memory")
        if decl:
            memory = BridgeMemory(
                tuple(str(p) for p in decl["parts"]),
                tensors["memory.centre"].astype(np.float64),
                tensors["memory.keys"].astype(np.float64),
                tensors["memory.targets"].astype(np.float64),
                int(decl.get("k", DEFAULT_K)),
                float(decl.get("beta", DEFAULT_BETA)),
            )
            if len(memory.keys) != int(decl.get("windows", len(memory.keys))):
                raise ModelError(f"{path}: bridge memory holds another number of windows")
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: bridge map: missing or bad {exc}") from exc
    found = BridgeMap(mean, weight, alpha, dict(section.get("fitted_on") or {}), memory)
    if found.dim != dim:
        raise ModelError(f"{path}: bridge map is {found.dim}-d, config.yaml says {dim}")
    return found
