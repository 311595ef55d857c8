"""Which vector space answers a search, and the fusion of the heads with the other spaces.

An index keeps, per modality, the heads' vectors (the model's shared cross-modal space) and,
when its model has them, vectors of further spaces (``avsearch.store.index``, "slots"). Both
fusions below follow one rule, the model's ``fusion:`` gate (:class:`FusionRule`)::

    score = z_heads + w(q) * z_other,    w(q) = gated_weight(best cross-modal heads cosine of q)

where ``z`` is a cosine z-scored per query over the whole gallery of the target modality and
the gate opens (``weight``, 4) when the heads do not recognise the query (its best cosine with
an item of the other modality is below ``low``, 0.5) and closes (0) when they do (above
``high``, 0.7):

- same modality (a sound searching sounds, a picture pictures): the heads fused with the
  ``native`` space of that modality (``heads+native``; the backbone's own features,
  :mod:`avsearch.encoders.native`). The heads know the concepts they were trained on far
  better than the backbone (AV-Digits test sound->sound MAP 0.971 vs 0.260); the backbone keeps
  the similarity of what the heads never saw (natural/ sounds, heads trained on AV-Digits
  alone: 0.432 vs 0.212); gated, the fusion keeps most of both (0.967 and 0.403;
  ``docs/benchmarks.md``, "Vector spaces"). The
  heads' space alone when the model has no native space (with a note); ``--space native`` or
  ``--space heads`` ranks in one of them alone;
- cross-modal: the heads' space, fused with the ``bridge`` space when the model has one
  (:mod:`avsearch.encoders.bridge`; ``heads+bridge``); the gate is the query's best heads
  cosine in the gallery searched. ``fusion: {bridge: off}``, ``--no-bridge`` or ``--space
  heads``: heads alone.

**Exact z-scores.** The gallery mean and standard deviation of one query's cosines are those
of all its scores against the gallery. Below ``vectors.FLAT_MAX`` vectors (an exact ``Flat``
FAISS file) they are computed from every gallery vector (the file's own vectors, read in
place: the same work as the exact search), and so is the fused score of every gallery item:
the ranking is exact. Beyond (an IVF file), the mean and deviation come from a seeded sample of
``STATS_SAMPLE`` gallery vectors (an estimate within a few per cent), and the fused score is
computed for the union of each space's ``max(top * 20, 100)`` best candidates (which the
caller widens until it has enough files).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from avsearch.encoders.bridge import FusionRule
from avsearch.errors import UsageError
from avsearch.store import vectors as vx
from avsearch.store.index import IndexStore
from avsearch.store.manifest import HEADS

NATIVE = "native"
BRIDGE = "bridge"
FUSED = "heads+bridge"
FUSED_NATIVE = "heads+native"
STATS_SAMPLE = 10_000
STATS_SEED = 0

SearchFn = Callable[[int], tuple[np.ndarray, np.ndarray]]  # k -> (scores [1, n], ids [1, n])


def score_kind(space: str) -> str:
    """What a hit's ``score`` is when ``space`` ranked: ``cosine`` (``heads``, ``native``: the
    cosine in that space, -1..1) or ``fused`` (``heads+native``, ``heads+bridge``: the fused
    ``z_heads + w * z_other`` of the module docstring, a sum of z-scores, not bounded by 1)."""
    return "fused" if space in (FUSED, FUSED_NATIVE) else "cosine"


def score_meaning(space: str) -> str:
    """``score_kind`` in words, for people (the query table's caption, the results page)."""
    if space in (FUSED, FUSED_NATIVE):
        other = space.split("+", 1)[1]
        return (
            f"fused z-score, z(heads cosine) + w × z({other} cosine) over the gallery; not a cosine"
        )
    return "cosine in the heads' space" if space == HEADS else f"cosine in the {space} space"


@dataclass(frozen=True)
class SpaceChoice:
    """The space a search runs in (``heads``, ``native``, ``heads+native`` or
    ``heads+bridge``) and why not the default one, when it could not be (``note``)."""

    space: str
    note: str | None = None


def complete_slot(store: IndexStore, modality: str, space: str) -> bool:
    """Whether every segment of ``modality`` holds a vector of ``space``."""
    if store.slot_dim(modality, space) is None:
        return False
    return store.manifest.segment_count(modality, space) == store.manifest.segment_count(modality)


def lacking_note(store: IndexStore, modality: str, space: str) -> str:
    held = store.manifest.segment_count(modality, space)
    total = store.manifest.segment_count(modality)
    return (
        f"{total - held} of {total} {modality} segments of the index have no {space} vectors "
        "yet (indexed before the model had that space); `avsearch embed` over their folders "
        "makes them, from the feature cache"
    )


def off_reason(store: IndexStore, space: str) -> str:
    stamp = store.model_stamp()
    if stamp is None or not stamp.spaces:
        return (
            "the index was built before vector spaces were recorded; `avsearch embed` over its "
            "folders adds those its model has (from the feature cache)"
        )
    info = stamp.spaces.get(space, {})
    return str(info.get("off") or f"the index holds no {space} vectors")


def choose_space(
    store: IndexStore,
    q_modality: str,
    target: str,
    requested: str | None = None,
    *,
    bridge: bool = True,
    fusion: FusionRule | None = None,
) -> SpaceChoice:
    """The space a query of ``q_modality`` searching ``target`` runs in (module docstring).
    ``requested``: ``heads`` or ``native`` (``--space``); ``bridge``: False for ``--no-bridge``;
    ``fusion``: the model's rule (default: the one the index recorded). UsageError for a space
    that cannot answer (native across modalities, or one the index lacks)."""
    if requested not in (None, HEADS, NATIVE):
        raise UsageError(f"--space must be heads or native, not {requested!r}")
    if requested == HEADS:  # one space alone, whatever the modalities
        return SpaceChoice(HEADS)
    if q_modality == target:
        if complete_slot(store, target, NATIVE):
            return SpaceChoice(NATIVE if requested == NATIVE else FUSED_NATIVE)
        why = (
            lacking_note(store, target, NATIVE)
            if store.slot_dim(target, NATIVE) is not None
            else off_reason(store, NATIVE)
        )
        if requested == NATIVE:
            raise UsageError(f"no native {target} space to search: {why}", hint="--space heads")
        return SpaceChoice(HEADS, f"searched the heads' space: {why}")
    if requested == NATIVE:
        raise UsageError(
            "a native space holds one modality; a sound and a picture meet only in the heads' "
            "space",
            hint="drop --space native, or search the same modality (--target)",
        )
    rule = fusion if fusion is not None else recorded_fusion(store)
    if not bridge or not rule.on or store.slot_dim(target, BRIDGE) is None:
        return SpaceChoice(HEADS)
    if not complete_slot(store, target, BRIDGE):
        return SpaceChoice(HEADS, f"no bridge fusion: {lacking_note(store, target, BRIDGE)}")
    return SpaceChoice(FUSED)


def recorded_fusion(store: IndexStore) -> FusionRule:
    """The fusion rule the index recorded with its bridge space (the defaults when none)."""
    stamp = store.model_stamp()
    info = {} if stamp is None else stamp.spaces.get(BRIDGE, {})
    return FusionRule.from_config(dict(info.get("fusion") or {}), "the index's meta.spaces")


# --------------------------------------------------------------------------- gallery scores
def flat_gallery(index: faiss.Index) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, vectors ``[n, d]``) an exact Flat index holds (read in place, no copy); None for
    any other index type."""
    if not isinstance(index, faiss.IndexIDMap2):
        return None
    inner = faiss.downcast_index(index.index)
    if not isinstance(inner, faiss.IndexFlat):
        return None
    n, d = inner.ntotal, inner.d
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, d), np.float32)
    xb = faiss.rev_swig_ptr(inner.get_xb(), n * d).reshape(n, d)
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    return ids, xb


def gallery_scores(
    store: IndexStore, target: str, space: str, q: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, cosines) of query ``q`` against every gallery vector of a slot when its index is
    exact Flat; None otherwise."""
    found = flat_gallery(store.index_for(target, space))
    if found is None:
        return None
    ids, xb = found
    return ids, xb @ np.asarray(q, np.float32).reshape(-1)


def sampled_stats(
    store: IndexStore, target: str, space: str, q: np.ndarray, n: int = STATS_SAMPLE
) -> tuple[float, float]:
    """(mean, standard deviation) of ``q``'s cosines over a seeded sample of ``n`` gallery
    vectors of a slot."""
    dim = store.slot_dim(target, space)
    assert dim is not None
    index = store.index_for(target, space)
    ids = vx.index_ids(index)
    if ids is None or not len(ids):
        return 0.0, 1.0
    rng = np.random.default_rng(STATS_SEED)
    pick = np.sort(rng.choice(ids, min(n, len(ids)), replace=False))
    vecs = store.manifest.vectors_by_ids(pick.tolist(), dim, space)
    x = np.stack(list(vecs.values())) if vecs else np.zeros((0, dim), np.float32)
    s = x @ np.asarray(q, np.float32).reshape(-1)
    return (float(s.mean()), float(s.std())) if len(s) else (0.0, 1.0)


def zscore(scores: np.ndarray, mean: float, std: float) -> np.ndarray:
    return (np.asarray(scores, np.float64) - mean) / (std if std > 0 else 1.0)


def fuse(
    heads: np.ndarray,
    bridge: np.ndarray,
    heads_stats: tuple[float, float],
    bridge_stats: tuple[float, float],
    weight: float,
) -> np.ndarray:
    """``z(heads) + weight * z(bridge)`` of aligned score arrays, each z-scored with its
    gallery (mean, standard deviation)."""
    return zscore(heads, *heads_stats) + weight * zscore(bridge, *bridge_stats)


def union_candidates(*id_lists: np.ndarray) -> np.ndarray:
    """The distinct valid ids (>= 0) of several search results, sorted."""
    ids = np.concatenate([np.asarray(i, np.int64).ravel() for i in id_lists] or [np.zeros(0)])
    return np.unique(ids[ids >= 0]).astype(np.int64)


def cross_top(store: IndexStore, modality: str, q_heads: np.ndarray) -> float:
    """The best heads cosine of ``q_heads`` with a segment of ``modality`` (the gate's input:
    how well the heads recognise the query); 0 when there is none."""
    if store.manifest.segment_count(modality) == 0:
        return 0.0
    top, _ = store.search(modality, q_heads, 1)
    return float(top[0, 0]) if top.size else 0.0


@dataclass
class FusedSearch:
    """Heads + ``other`` space (``bridge``, or ``native`` for a same-modality query) search of
    one query (module docstring): ``weight`` is the other space's weight for it, ``heads_top``
    the best heads cosine that set it (``gate_top``, given: a same-modality query's best
    cosine with the other modality; else its best in the gallery searched); called with ``k``
    it returns the fused (scores, ids), best first, as ``IndexStore.search`` does."""

    store: IndexStore
    target: str
    q_heads: np.ndarray
    q_other: np.ndarray
    rule: FusionRule
    other: str = BRIDGE
    gate_top: float | None = None
    weight: float = 0.0
    heads_top: float = 0.0
    exact: bool = False

    def __post_init__(self) -> None:
        heads = gallery_scores(self.store, self.target, HEADS, self.q_heads)
        other = gallery_scores(self.store, self.target, self.other, self.q_other)
        self._all: tuple[np.ndarray, np.ndarray] | None = None
        if heads is not None and other is not None:
            (hi, hs), (oi, os_) = heads, other
            order_h, order_o = np.argsort(hi), np.argsort(oi)
            if np.array_equal(hi[order_h], oi[order_o]):
                hs, os_, ids = hs[order_h], os_[order_o], hi[order_h]
                self._gate(float(hs.max()) if len(hs) else 0.0)
                stats_h = (float(hs.mean()), float(hs.std())) if len(hs) else (0.0, 1.0)
                stats_o = (float(os_.mean()), float(os_.std())) if len(os_) else (0.0, 1.0)
                fused = fuse(hs, os_, stats_h, stats_o, self.weight)
                order = np.argsort(-fused, kind="stable")
                self._all = (fused[order], ids[order])
                self.exact = True
                return
        self._stats_h = sampled_stats(self.store, self.target, HEADS, self.q_heads)
        self._stats_o = sampled_stats(self.store, self.target, self.other, self.q_other)
        top, _ = self.store.search(self.target, self.q_heads, 1)
        self._gate(float(top[0, 0]) if top.size else 0.0)

    def _gate(self, gallery_top: float) -> None:
        self.heads_top = gallery_top if self.gate_top is None else self.gate_top
        gate = self.rule.gate if self.other == NATIVE else self.rule.weight_for
        self.weight = float(gate(self.heads_top))

    def __call__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._all is not None:
            scores, ids = self._all
            return scores[None, :k], ids[None, :k]
        _, ids_h = self.store.search(self.target, self.q_heads, k)
        _, ids_o = self.store.search(self.target, self.q_other, k, self.other)
        cand = union_candidates(ids_h, ids_o)
        dims = {sp: self.store.slot_dim(self.target, sp) or 0 for sp in (HEADS, self.other)}
        vh = self.store.manifest.vectors_by_ids(cand.tolist(), dims[HEADS], HEADS)
        vo = self.store.manifest.vectors_by_ids(cand.tolist(), dims[self.other], self.other)
        cand = np.array([i for i in cand.tolist() if i in vh and i in vo], np.int64)
        if not len(cand):
            return np.zeros((1, 0), np.float32), np.zeros((1, 0), np.int64)
        hs = np.stack([vh[i] for i in cand.tolist()]) @ self.q_heads.reshape(-1)
        os_ = np.stack([vo[i] for i in cand.tolist()]) @ self.q_other.reshape(-1)
        fused = fuse(hs, os_, self._stats_h, self._stats_o, self.weight)
        order = np.argsort(-fused, kind="stable")[:k]
        return fused[order][None, :], cand[order][None, :]

    def to_json(self) -> dict[str, object]:
        return {
            "rule": self.rule.to_config(),
            "heads_top": round(self.heads_top, 6),
            f"{self.other}_weight": round(self.weight, 6),
            "exact": self.exact,
        }
