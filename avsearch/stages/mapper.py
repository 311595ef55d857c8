"""The mapper stage: windows → tower features in batches (``model.features``), then the heads
(``model.project``); or both at once (``model.embed``) when the raw features are not kept.

Windows of each modality wait in a batch until it is full or the caller flushes; each mapped
window goes to ``emit(job, Mapped)``. Digital silence (``Piece.silent``) has nothing to find:
it gets no vector, and no tower call unless its raw features are kept. Windows read from the
feature cache (``CachedWindow``) already hold their features and only go through the heads:
``open_feature_cache`` and ``cached_windows`` are that lookup, so cached files skip decoding.

An audio tower that hears neighbouring windows together (``context_windows`` K > 1: SoundNet)
gets them in runs: a file's audio windows wait until their block of K (window index // K) is
complete (the next block begins, or ``done(job)``: the reader finished the file), then go to a
batch whole; each batch row carries a run id (same job, consecutive indices, same block, not
silent). The features of a window thus depend on its file alone, not on batch size or timing.

A model with further vector spaces (``space_vectors``: native, bridge) gets them from the same
features, computed once per batch (``Mapped.spaces``): no extra backbone pass.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from avsearch.store.features import CachedWindow, FeatureCache

if TYPE_CHECKING:
    from avsearch.media.decode import Piece
    from avsearch.stages.reader import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mapped:
    modality: str
    idx: int
    start: float
    end: float
    silent: bool
    feature: np.ndarray | None = None  # raw tower features, when computed now and kept
    vector: np.ndarray | None = None  # through the heads; None for silence or features only
    spaces: dict[str, np.ndarray] = field(default_factory=dict)  # further spaces' vectors

    def window(self) -> CachedWindow:
        """As the feature cache stores it (``feature`` must be set)."""
        assert self.feature is not None
        return CachedWindow(
            self.modality, self.idx, self.start, self.end, self.feature, self.silent
        )


class Mapper:
    """``model``: ``embed(modality, batch)``, and with ``features`` (keep the raw features) or
    cached windows, ``features`` / ``project`` as ``AVModel`` has them. ``heads=False`` maps to
    raw features only (training's feature extraction). ``emit`` receives every mapped window
    (the runner sets it)."""

    def __init__(
        self,
        model: Any,
        batch_size: int,
        emit: Callable[[int, Mapped], None] = lambda job, m: None,
        *,
        features: bool = False,
        heads: bool = True,
    ) -> None:
        self.model, self.batch_size, self.emit = model, batch_size, emit
        self.keep, self.heads = features, heads
        self.raw: dict[str, list[tuple[int, Piece]]] = {"audio": [], "visual": []}
        self.known: dict[str, list[tuple[int, CachedWindow]]] = {"audio": [], "visual": []}
        self.held: dict[int, list[Piece]] = {}  # per job: audio windows of an open block
        self._context: int | None = None

    @property
    def context(self) -> int:
        """How many consecutive audio windows the model's tower hears together (asked once,
        on the first decoded audio window: it loads the tower)."""
        if self._context is None:
            ask = getattr(self.model, "context_windows", None)
            self._context = max(1, int(ask("audio"))) if ask is not None else 1
        return self._context

    def add(self, job: int, w: Piece | CachedWindow) -> None:
        if isinstance(w, CachedWindow):
            if w.silent or not self.heads:
                self.emit(job, Mapped(w.modality, w.idx, w.start, w.end, bool(w.silent)))
                return
            waiting: list[Any] = self.known[w.modality]
        elif w.modality == "audio" and self.context > 1:
            if w.silent and not self.keep:
                self.emit(job, Mapped(w.modality, w.index, w.start, w.end, True))
            else:
                self.held.setdefault(job, []).append(w)
            if (w.index + 1) % self.context == 0:
                self._release(job)
            return
        elif w.silent and not self.keep:
            self.emit(job, Mapped(w.modality, w.index, w.start, w.end, True))
            return
        else:
            waiting = self.raw[w.modality]
        waiting.append((job, w))
        if len(waiting) >= self.batch_size:
            self.flush(w.modality)

    def done(self, job: int) -> None:
        """The reader has given every window of ``job``: its open block is complete."""
        self._release(job)

    def _release(self, job: int) -> None:
        block = self.held.pop(job, [])
        if block:
            self.raw["audio"].extend((job, p) for p in block)
            if len(self.raw["audio"]) >= self.batch_size:
                self.flush("audio")

    def drop(self, job: int) -> None:
        """Forget the waiting windows of ``job`` (it failed)."""
        self.held.pop(job, None)
        for waiting in (*self.raw.values(), *self.known.values()):
            waiting[:] = [(j, w) for j, w in waiting if j != job]

    def _runs(self, m: str, batch: list[tuple[int, Piece]]) -> list[int] | None:
        """A run id per row (:mod:`avsearch.encoders.tower`); None: the tower hears windows
        alone."""
        k = self.context if m == "audio" else 1
        if k <= 1:
            return None
        runs: list[int] = []
        for r, (j, p) in enumerate(batch):
            pj, pp = batch[r - 1]
            joined = r > 0 and pj == j and pp.index + 1 == p.index and pp.index // k == p.index // k
            runs.append(runs[-1] if joined and not (p.silent or pp.silent) else r)
        return runs

    def flush(self, modality: str | None = None) -> None:
        """Map every waiting window (of ``modality``, or of both)."""
        for m in (modality,) if modality else ("audio", "visual"):
            raw, self.raw[m] = self.raw[m], []  # (taken first: an interrupted batch is lost)
            if raw:
                self._map_raw(m, raw)
            known, self.known[m] = self.known[m], []
            if known:
                feats = np.stack([w.vector for _, w in known])
                vecs = self.model.project(m, feats)
                spaces = self._spaces(m, feats)
                for k, ((j, w), v) in enumerate(zip(known, vecs, strict=True)):
                    sp = {name: x[k] for name, x in spaces.items()}
                    self.emit(j, Mapped(m, w.idx, w.start, w.end, False, vector=v, spaces=sp))

    def _spaces(self, m: str, feats: np.ndarray) -> dict[str, np.ndarray]:
        """The further spaces' vectors of a batch of features (none for a model without)."""
        if not self.heads or not len(feats) or not hasattr(self.model, "space_vectors"):
            return {}
        return dict(self.model.space_vectors(m, feats))

    def _map_raw(self, m: str, batch: list[tuple[int, Piece]]) -> None:
        data = np.stack([p.data for _, p in batch])
        runs = self._runs(m, batch)
        more = {} if runs is None else {"runs": runs}
        if not self.keep and not hasattr(self.model, "space_vectors"):
            vecs = self.model.embed(m, data, **more)
            for (j, p), v in zip(batch, vecs, strict=True):
                self.emit(j, Mapped(m, p.index, p.start, p.end, p.silent, vector=v))
            return
        feats = self.model.features(m, data, **more)
        live = [k for k, (_, p) in enumerate(batch) if not p.silent] if self.heads else []
        vecs = dict(zip(live, self.model.project(m, feats[live]) if live else [], strict=True))
        spaces = self._spaces(m, feats[live]) if live else {}
        rows = {k: r for r, k in enumerate(live)}
        for k, (j, p) in enumerate(batch):
            sp = {name: x[rows[k]] for name, x in spaces.items()} if k in rows else {}
            feature = feats[k] if self.keep else None
            self.emit(j, Mapped(m, p.index, p.start, p.end, p.silent, feature, vecs.get(k), sp))


def open_feature_cache(path: Path, *, create: bool) -> FeatureCache | None:
    """The feature cache at ``path``; None when it is not there and not to be ``create``d, or
    cannot be used (it is only a cache: the run decodes instead)."""
    if not create and not path.exists():
        return None
    try:
        return FeatureCache(path)
    except (sqlite3.Error, OSError) as exc:
        log.warning("cannot use the feature cache %s (%s); decoding everything", path, exc)
        return None


def complete_in_cache(cache: FeatureCache, digests: list[str], key: str) -> set[str]:
    """Which of ``digests`` the cache holds whole, every window's silence known."""
    try:
        return cache.complete(digests, key)
    except sqlite3.Error as exc:
        log.warning("cannot read the feature cache %s (%s); decoding", cache.path, exc)
        return set()


def cached_windows(cache: FeatureCache, key: str, job: Job) -> list[CachedWindow] | None:
    """A file's windows from the cache, for the heads alone; None: decode it."""
    try:
        windows = cache.get(job.digest, key)
    except sqlite3.Error as exc:
        log.warning("cannot read the feature cache %s (%s); decoding", cache.path, exc)
        return None
    if windows is None or any(w.silent is None for w in windows):
        return None
    return windows
