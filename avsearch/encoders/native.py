"""Native spaces: each tower's own features, kept for same-modality search.

The heads map sounds and pictures into one shared space, trained on the pairs they saw; they
keep little of the backbones' general structure (``docs/benchmarks.md``, "Vector spaces": a
sound searching sounds ranks better in the backbone's own features than through the heads).
A *native* space is, per modality, the tower's features (for a composite tower only the parts
listed, e.g. ``aisfx`` of ``[aisfx, words]``), minus a mean, projected onto their leading
principal directions (no whitening: the projection keeps the features' geometry, only drops
the directions of least variance) and L2-normalised::

    v = normalise((f[parts] - mean) @ components)        # [B, dim], dim <= MAX_DIM

``mean`` may be zero (``centred: false``): then ``components`` are the leading directions of
the uncentred features, so cosines in the space are those of the raw features up to the
dropped directions. The two vectors of a sound and a picture are never compared with each
other: each modality's space has its own dimension.

A model directory holds the fitted statistics in ``native.safetensors`` (``audio.mean``,
``audio.components``, ``visual.mean``, ``visual.components``; float32) and how they were made
in its ``config.yaml``::

    native:
      audio: {parts: [aisfx], dim: 128, centred: false}
      visual: {parts: [efficientnet-lite0], dim: 128, centred: false}
      fitted_on: {...}          # what the statistics were fitted on

``avsearch train`` fits them on its training windows (:func:`fit_native`);
:func:`avsearch.train.native.fit_native_for_model` adds them to an existing model directory
from a folder's features (``python -m avsearch.train.native MODEL_DIR PATH...``). Both files
are part of the model's fingerprint, so vectors of another fit never meet. Reading and
applying them imports no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avsearch.encoders.registry import BACKBONES
from avsearch.encoders.tower import MODALITIES
from avsearch.errors import ModelError

log = logging.getLogger(__name__)

__all__ = [
    "MAX_DIM",
    "NATIVE_FILE",
    "NativeSpace",
    "NativeTower",
    "declared_dims",
    "default_parts",
    "fit_native",
    "load_native",
    "part_columns",
    "windows_by_modality",
    "write_native",
]

NATIVE_FILE = "native.safetensors"
MAX_DIM = 256
DEFAULT_DIM = 256  # docs/benchmarks.md, "Vector spaces": 128 lost more when fitted elsewhere
DEFAULT_CENTRED = False  # a mean fitted on one collection hurt another (same section)
# audio parts that carry general sound similarity; the others (spoken words, cepstra) are kept
# out of a composite's native audio space (measured: docs/benchmarks.md, "Vector spaces")
GENERAL_AUDIO_PARTS = ("aisfx", "soundnet", "panns-cnn14", "vggish")


def part_columns(backbone: str, parts: Sequence[str]) -> np.ndarray:
    """The feature columns of ``parts`` (atomic backbones) inside the features of the tower
    ``backbone`` (a registered name or composite), in the tower's order. ModelError when a part
    is not one of the tower's."""
    atoms = BACKBONES.parts(backbone)
    names = [a.name for a in atoms]
    missing = [p for p in parts if p not in names]
    if missing or not parts:
        raise ModelError(
            f"{', '.join(missing) or 'no part'} is not a part of the backbone "
            f"{backbone!r} ({', '.join(names)})"
        )
    cols: list[np.ndarray] = []
    offset = 0
    for atom in atoms:
        if atom.name in parts:
            cols.append(np.arange(offset, offset + atom.dim))
        offset += atom.dim
    return np.concatenate(cols)


def default_parts(backbone: str, modality: str) -> tuple[str, ...]:
    """The parts of a tower that enter its native space by default: for audio the general
    sound parts (``aisfx`` of ``[aisfx, words]``) when the tower has any, else every part; for
    images every part."""
    names = tuple(a.name for a in BACKBONES.parts(backbone))
    if modality == "audio":
        general = tuple(n for n in names if n in GENERAL_AUDIO_PARTS)
        if general:
            return general[:1]
    return names


@dataclass(frozen=True)
class NativeTower:
    """One modality's native space over the features of the tower ``backbone``."""

    backbone: str
    parts: tuple[str, ...]
    mean: np.ndarray  # [len(columns)]
    components: np.ndarray  # [len(columns), dim]
    centred: bool

    def __post_init__(self) -> None:
        cols = self.columns
        if self.mean.shape != (len(cols),) or self.components.shape[0] != len(cols):
            raise ModelError(
                f"native space of {self.backbone!r} ({'+'.join(self.parts)}): statistics of "
                f"shape {self.mean.shape} / {self.components.shape} for {len(cols)} features"
            )
        if not 1 <= self.dim <= MAX_DIM:
            raise ModelError(f"native space dimension must be 1..{MAX_DIM}, not {self.dim}")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.components).all()):
            raise ModelError(f"native space of {self.backbone!r}: non-finite statistics")

    @property
    def columns(self) -> np.ndarray:
        return part_columns(self.backbone, self.parts)

    @property
    def dim(self) -> int:
        return int(self.components.shape[1])

    def vectors(self, features: np.ndarray) -> np.ndarray:
        """Tower features ``[B, D]`` -> unit native vectors ``float32 [B, dim]`` (a row whose
        projection is zero stays zero)."""
        x = np.asarray(features, dtype=np.float64)[:, self.columns]
        y = (x - self.mean) @ self.components
        norm = np.linalg.norm(y, axis=1, keepdims=True)
        return (y / np.where(norm > 0, norm, 1.0)).astype(np.float32)

    def config(self) -> dict[str, Any]:
        return {"parts": list(self.parts), "dim": self.dim, "centred": self.centred}


@dataclass(frozen=True)
class NativeSpace:
    """The native spaces of a model, per modality (a modality may have none)."""

    towers: Mapping[str, NativeTower]
    fitted_on: Mapping[str, Any]

    def dims(self) -> dict[str, int]:
        return {m: t.dim for m, t in self.towers.items()}

    def vectors(self, modality: str, features: np.ndarray) -> np.ndarray | None:
        tower = self.towers.get(modality)
        return None if tower is None else tower.vectors(features)

    def config(self) -> dict[str, Any]:
        """The ``native:`` section of ``config.yaml``."""
        out: dict[str, Any] = {m: t.config() for m, t in self.towers.items()}
        out["fitted_on"] = dict(self.fitted_on)
        return out

    def tensors(self) -> dict[str, np.ndarray]:
        out = {}
        for m, t in self.towers.items():
            out[f"{m}.mean"] = np.ascontiguousarray(t.mean, dtype=np.float32)
            out[f"{m}.components"] = np.ascontiguousarray(t.components, dtype=np.float32)
        return out


def _pca(x: np.ndarray, dim: int, centred: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components ``[D, k]``) of the rows of ``x``: the leading right singular vectors of
    the (centred, when ``centred``) rows, each signed so its largest entry is positive (the
    same data give the same file). With more rows than features they come from the
    eigenvectors of the ``[D, D]`` second-moment matrix (one pass over the rows, so a large
    training set costs little more than reading it)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0) if centred else np.zeros(x.shape[1])
    xc = x - mean
    if len(xc) > xc.shape[1]:
        evals, evecs = np.linalg.eigh(xc.T @ xc)
        order = np.argsort(evals)[::-1]
        s = np.sqrt(np.clip(evals[order], 0.0, None))
        vt = evecs[:, order].T
    else:
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
    keep = max(1, min(dim, int((s > s[0] * 1e-6).sum()) if len(s) and s[0] > 0 else 1))
    comps = vt[:keep]
    signs = np.sign(comps[np.arange(keep), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    return mean, comps.T


def fit_native(
    features: Mapping[str, np.ndarray],
    backbones: Mapping[str, str],
    *,
    parts: Mapping[str, Sequence[str]] | None = None,
    dim: int = DEFAULT_DIM,
    centred: bool = DEFAULT_CENTRED,
    fitted_on: Mapping[str, Any] | None = None,
) -> NativeSpace:
    """Fit each modality's native space on its tower features ``features[modality]`` (``[N,
    D]``, e.g. every window of the training files once). ``backbones`` names each tower;
    ``parts`` the parts entering (default :func:`default_parts`). A modality with fewer than two
    rows gets no native space."""
    if not 1 <= dim <= MAX_DIM:
        raise ValueError(f"dim must be 1..{MAX_DIM}, not {dim}")
    towers: dict[str, NativeTower] = {}
    counts: dict[str, int] = {}
    for modality in MODALITIES:
        x = features.get(modality)
        if x is None or len(x) < 2:
            continue
        backbone = backbones[modality]
        chosen = tuple((parts or {}).get(modality) or default_parts(backbone, modality))
        cols = part_columns(backbone, chosen)
        mean, comps = _pca(np.asarray(x)[:, cols], dim, centred)
        towers[modality] = NativeTower(backbone, chosen, mean, comps, centred)
        counts[modality] = len(x)
    info = {"windows": counts, **dict(fitted_on or {})}
    return NativeSpace(towers, info)


def write_native(model_dir: Path, space: NativeSpace) -> str:
    """Write ``native.safetensors`` and the ``native:`` section of ``config.yaml`` into a model
    directory (each file atomically); returns the new fingerprint."""
    from dataclasses import replace

    from avsearch.encoders import model_dir as md

    config = md.load_config(model_dir)
    for modality, tower in space.towers.items():
        if getattr(config, modality).backbone != tower.backbone:
            raise ModelError(
                f"{model_dir}: native {modality} space fitted for {tower.backbone!r}, the model's "
                f"tower is {getattr(config, modality).backbone!r}"
            )
    md.write_side_file(model_dir, NATIVE_FILE, space.tensors())
    return md.write_config(model_dir, replace(config, native=space.config()))


def load_native(model_dir: Path, section: Mapping[str, Any]) -> NativeSpace | None:
    """The native spaces a model directory declares (``section``: its config's ``native:``);
    None when it declares none. ModelError when ``native.safetensors`` is missing, not
    safetensors, or does not fit the declaration."""
    if not section:
        return None
    from avsearch.encoders import model_dir as md

    path = model_dir / NATIVE_FILE
    tensors = md.read_side_file(model_dir, NATIVE_FILE, "a native space", "native space statistics")
    config = md.load_config(model_dir)
    towers: dict[str, NativeTower] = {}
    for modality in MODALITIES:
        decl = section.get(modality)
        if not decl:
            continue
        try:
            parts = tuple(str(p) for p in decl["parts"])
            mean = tensors[f"{modality}.mean"].astype(np.float64)
            comps = tensors[f"{modality}.components"].astype(np.float64)
            centred = bool(decl.get("centred", True))
            dim = int(decl["dim"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: native {modality} space: missing or bad {exc}") from exc
        tower = NativeTower(getattr(config, modality).backbone, parts, mean, comps, centred)
        if tower.dim != dim:
            raise ModelError(f"{path}: native {modality} space is {tower.dim}-d, config.yaml {dim}")
        towers[modality] = tower
    return NativeSpace(towers, dict(section.get("fitted_on") or {}))


def windows_by_modality(files: Iterable[Any]) -> dict[str, np.ndarray]:
    """Every window's features once, per modality, from ``train``'s file features (objects
    with ``windows`` of ``CachedWindow``; silent audio windows left out: they get no vector)."""
    rows: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
    for f in files:
        for w in f.windows:
            if w.modality == "audio" and w.silent:
                continue
            rows[w.modality].append(np.asarray(w.vector, dtype=np.float32).reshape(-1))
    return {m: np.stack(r) for m, r in rows.items() if r}


def declared_dims(section: Mapping[str, Any]) -> dict[str, int]:
    """The dimension per modality a config's ``native:`` section declares (nothing loaded)."""
    out = {}
    for modality in MODALITIES:
        decl = section.get(modality) if section else None
        if isinstance(decl, Mapping) and isinstance(decl.get("dim"), int):
            out[modality] = int(decl["dim"])
    return out
