"""Cross-modal retrieval metrics as pure numpy functions.

Queries come from one modality and the gallery from the other (audio→visual, a2v, or
visual→audio, v2a). A gallery item is relevant to a query when both carry the same label.
Every query is ranked against the whole gallery.

Definitions. Ranks k = 1..N run over the N gallery items, rel(k) is 1 if the item at rank k
is relevant and 0 if not, R = Σ rel(k), hits(k) = Σ_{i≤k} rel(i), P(k) = hits(k) / k:

- Score: cosine similarity (rows are L2-normalised first, and a zero vector scores 0 against
  everything); ``normalize=False`` uses the plain inner product.
- Tie rule: the ranking is a stable sort by descending score. Items with equal scores keep
  gallery order, so the lower gallery index ranks first. This rule is deterministic but not
  tie-aware: if the gallery has exact duplicates, the metrics depend on gallery order.
  Real-valued embeddings rarely tie except for duplicated vectors. No "expected" AP is
  computed over tie permutations.
- AP = (1/R) Σ_k P(k)·rel(k): the mean of the precision at each relevant rank, over the
  whole gallery. MAP is the mean AP over queries.
- MAP@R (Musgrave et al., 2020, "A Metric Learning Reality Check"):
  (1/R) Σ_{k≤R} P(k)·rel(k), which only counts relevant items within the first R ranks.
- recall@k: the fraction of queries with at least one relevant item in the first k ranks
  (if k > N, all N ranks count).
- Interpolated precision at recall level r: max P(k) over the ranks k with hits(k)/R ≥ r,
  at n_levels evenly spaced levels from 0 to 1 (11 gives the classic 11-point curve).
- A query with R = 0 (no gallery item shares its label) has no defined AP. It is left out of
  every mean above (``average_precision`` alone returns 0.0 for it) and counted in
  ``RetrievalReport.n_skipped_queries``. If every query would be left out, ValueError.

Scores are computed in float64, one chunk of queries at a time, so memory stays bounded at a
few (chunk × N) arrays. Every metric of a direction comes from the same ranking.
``evaluate_cross_modal(..., scores=...)`` ranks by other scores than the cosine (a function of
the query rows giving their scores against the gallery; e.g. heads fused with the zero-shot
bridge, :mod:`avsearch.evaluate_index`); the rest is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _as_embeddings(x: np.ndarray, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from exc
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (items × dim), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _check_pair(
    queries: np.ndarray, gallery: np.ndarray, normalize: bool, names: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    q, g = _as_embeddings(queries, names[0]), _as_embeddings(gallery, names[1])
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"{names[0]} have dimension {q.shape[1]} but {names[1]} have dimension "
            f"{g.shape[1]}; both must live in the same embedding space"
        )
    return (_normalise(q), _normalise(g)) if normalize else (q, g)


def _encode_labels(
    q_labels: np.ndarray, g_labels: np.ndarray, n_q: int, n_g: int, names: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map labels of any dtype to shared integer codes: (classes, query codes, gallery codes)."""
    ql, gl = np.asarray(q_labels), np.asarray(g_labels)
    for arr, n, name in ((ql, n_q, names[0]), (gl, n_g, names[1])):
        if arr.ndim != 1 or len(arr) != n:
            raise ValueError(
                f"{name} must be a 1-D array with one label per embedding ({n}), "
                f"got shape {arr.shape}"
            )
    kinds = {"num" if a.dtype.kind in "biuf" else a.dtype.kind for a in (ql, gl)}
    if "num" in kinds and kinds & {"U", "S"}:
        raise ValueError(
            f"{names[0]} and {names[1]} mix numbers and strings: {ql.dtype}, {gl.dtype}"
        )
    try:
        classes, codes = np.unique(np.concatenate([ql, gl]), return_inverse=True)
    except TypeError as exc:
        raise ValueError(f"labels cannot be compared with each other: {exc}") from exc
    codes = codes.reshape(-1)
    return classes, codes[:n_q], codes[n_q:]


ScoreFn = Callable[[np.ndarray], np.ndarray]  # query rows -> their scores vs the gallery


def _iter_rankings(
    q: np.ndarray,
    g: np.ndarray,
    chunk: int,
    score: ScoreFn | None = None,
    rows: np.ndarray | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first query row, gallery indices best-first) per chunk of queries; ``score``
    (given the original query ``rows`` of the chunk) replaces the cosine."""
    if chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk}")
    for start in range(0, len(q), chunk):
        if score is None:
            neg = -(q[start : start + chunk] @ g.T)
        else:
            picked = np.arange(len(q)) if rows is None else rows
            neg = -np.asarray(score(picked[start : start + chunk]), dtype=np.float64)
        # A stable sort is ~5x slower than the default one, and only rows with ties need it.
        order = np.argsort(neg, axis=1)
        tied = (np.diff(np.take_along_axis(neg, order, axis=1), axis=1) == 0).any(axis=1)
        if tied.any():
            order[tied] = np.argsort(neg[tied], axis=1, kind="stable")
        yield start, order


def rank_gallery(
    queries: np.ndarray, gallery: np.ndarray, *, chunk: int = 1024, normalize: bool = True
) -> np.ndarray:
    """Gallery indices of every query ranked best-first, shape (n_queries, n_gallery).

    The tie rule is in the module docstring. The result has n_queries × n_gallery entries, so
    the metric functions never build it in full.
    """
    q, g = _check_pair(queries, gallery, normalize, ("queries", "gallery"))
    out = np.empty((len(q), len(g)), dtype=np.intp)
    for start, order in _iter_rankings(q, g, chunk):
        out[start : start + len(order)] = order
    return out


def _ranked_metrics(
    rel: np.ndarray, n_levels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """AP, MAP@R term, 0-based first-hit rank and interpolated precision for each row.

    ``rel`` is (rows, N) relevance in rank order. Rows with no relevant item get AP 0.
    """
    n = rel.shape[1]
    hits = np.cumsum(rel, axis=1, dtype=np.float64)
    n_rel = hits[:, -1]
    denom = np.where(n_rel > 0, n_rel, 1.0)
    prec = np.where(rel, hits / np.arange(1, n + 1), 0.0)
    ap = prec.sum(axis=1) / denom
    ap_r = np.where(np.arange(n) < n_rel[:, None], prec, 0.0).sum(axis=1) / denom
    first = np.argmax(rel, axis=1)
    interp = np.zeros((len(rel), n_levels))
    if n_levels and len(rel):
        best_after = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
        r = n_rel.astype(np.int64)
        # Fewest hits m with m / R ≥ i / (n_levels - 1), in exact integer arithmetic; ≥ 1.
        need = np.maximum(1, -(-(np.arange(n_levels) * r[:, None]) // (n_levels - 1)))
        _, cols = np.nonzero(rel)
        pos = cols[(np.cumsum(r) - r)[:, None] + need - 1]
        interp = best_after[np.arange(len(rel))[:, None], pos]
    return ap, ap_r, first, interp


def average_precision(relevant_sorted: np.ndarray) -> float:
    """AP of one query from its relevance (bool) in rank order over the WHOLE gallery.

    Returns 0.0 if nothing is relevant (such queries are excluded from MAP, not counted as 0).
    """
    rel = np.asarray(relevant_sorted).astype(bool)
    if rel.ndim != 1 or rel.size == 0:
        raise ValueError(f"relevant_sorted must be a non-empty 1-D array, got shape {rel.shape}")
    return float(_ranked_metrics(rel[None, :], 0)[0][0])


@dataclass(frozen=True)
class _Direction:
    """Per-query metrics of the queries that have at least one relevant gallery item."""

    classes: np.ndarray
    codes: np.ndarray
    ap: np.ndarray
    ap_at_r: np.ndarray
    first_hit: np.ndarray
    interp: np.ndarray
    n_skipped: int


def _direction(
    q: np.ndarray, qc: np.ndarray, g: np.ndarray, gc: np.ndarray, classes: np.ndarray,
    *, chunk: int, n_levels: int = 0, score: ScoreFn | None = None,
) -> _Direction:  # fmt: skip
    keep = np.isin(qc, gc)
    if not keep.any():
        raise ValueError("no query has a relevant gallery item (the two sides share no label)")
    q, qc = q[keep], qc[keep]
    parts: list[tuple[np.ndarray, ...]] = []
    for start, order in _iter_rankings(q, g, chunk, score, np.flatnonzero(keep)):
        rel = qc[start : start + len(order), None] == gc[order]
        parts.append(_ranked_metrics(rel, n_levels))
    ap, ap_r, first, interp = (np.concatenate(p) for p in zip(*parts, strict=True))
    return _Direction(classes, qc, ap, ap_r, first, interp, int((~keep).sum()))


def _prepare_direction(
    q_emb: np.ndarray, q_labels: np.ndarray, g_emb: np.ndarray, g_labels: np.ndarray,
    *, chunk: int, normalize: bool, n_levels: int = 0, score: ScoreFn | None = None,
) -> _Direction:  # fmt: skip
    q, g = _check_pair(q_emb, g_emb, normalize, ("query embeddings", "gallery embeddings"))
    names = ("query labels", "gallery labels")
    classes, qc, gc = _encode_labels(q_labels, g_labels, len(q), len(g), names)
    return _direction(q, qc, g, gc, classes, chunk=chunk, n_levels=n_levels, score=score)


def mean_average_precision(
    q_emb: np.ndarray, q_labels: np.ndarray, g_emb: np.ndarray, g_labels: np.ndarray,
    *, chunk: int = 1024, normalize: bool = True,
) -> float:  # fmt: skip
    """MAP over the queries that have at least one relevant gallery item."""
    d = _prepare_direction(q_emb, q_labels, g_emb, g_labels, chunk=chunk, normalize=normalize)
    return float(d.ap.mean())


def map_at_r(
    q_emb: np.ndarray, q_labels: np.ndarray, g_emb: np.ndarray, g_labels: np.ndarray,
    *, chunk: int = 1024, normalize: bool = True,
) -> float:  # fmt: skip
    """MAP@R (Musgrave et al., 2020): R = number of relevant gallery items of the query."""
    d = _prepare_direction(q_emb, q_labels, g_emb, g_labels, chunk=chunk, normalize=normalize)
    return float(d.ap_at_r.mean())


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if not out or any(k < 1 for k in out):
        raise ValueError(f"ks must be a non-empty list of positive integers, got {list(ks)}")
    return out


def _recall(d: _Direction, ks: tuple[int, ...]) -> dict[int, float]:
    return {k: float((d.first_hit < k).mean()) for k in ks}


def recall_at_k(
    q_emb: np.ndarray, q_labels: np.ndarray, g_emb: np.ndarray, g_labels: np.ndarray,
    *, ks: Sequence[int] = (1, 5, 10), chunk: int = 1024, normalize: bool = True,
) -> dict[int, float]:  # fmt: skip
    """Fraction of queries with at least one relevant item in the first k ranks, per k."""
    kk = _check_ks(ks)
    d = _prepare_direction(q_emb, q_labels, g_emb, g_labels, chunk=chunk, normalize=normalize)
    return _recall(d, kk)


def _py(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _per_class(d: _Direction) -> dict[Any, float]:
    return {_py(d.classes[c]): float(d.ap[d.codes == c].mean()) for c in np.unique(d.codes)}


def per_class_ap(
    q_emb: np.ndarray, q_labels: np.ndarray, g_emb: np.ndarray, g_labels: np.ndarray,
    *, chunk: int = 1024, normalize: bool = True,
) -> dict[Any, float]:  # fmt: skip
    """Mean AP of the queries of each label (labels with no relevant gallery item are absent)."""
    d = _prepare_direction(q_emb, q_labels, g_emb, g_labels, chunk=chunk, normalize=normalize)
    return _per_class(d)


def precision_recall_curve(
    q_emb: np.ndarray, q_labels: np.ndarray, g_emb: np.ndarray, g_labels: np.ndarray,
    *, n_levels: int = 11, chunk: int = 1024, normalize: bool = True,
    score: ScoreFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(recall levels, mean interpolated precision at each level), for plotting. ``score``
    (query rows -> their scores against the gallery, as in :func:`evaluate_cross_modal`)
    replaces the cosine."""
    if n_levels < 2:
        raise ValueError(f"n_levels must be at least 2, got {n_levels}")
    d = _prepare_direction(
        q_emb, q_labels, g_emb, g_labels, chunk=chunk, normalize=normalize, n_levels=n_levels,
        score=score,
    )  # fmt: skip
    return np.linspace(0.0, 1.0, n_levels), d.interp.mean(axis=0)


@dataclass(frozen=True)
class RetrievalReport:
    """Both directions of a cross-modal evaluation. Dicts are keyed by "a2v" / "v2a"."""

    a2v_map: float
    v2a_map: float
    map: float
    a2v_map_at_r: float
    v2a_map_at_r: float
    recall_at: dict[str, dict[int, float]]
    per_class: dict[str, dict[Any, float]]
    n_audio: int
    n_visual: int
    n_skipped_queries: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict with the CLI's keys; recall levels and labels become strings."""
        return {
            "a2v_map": self.a2v_map,
            "v2a_map": self.v2a_map,
            "map": self.map,
            "a2v_map_at_r": self.a2v_map_at_r,
            "v2a_map_at_r": self.v2a_map_at_r,
            "recall_at": {d: {str(k): v for k, v in r.items()} for d, r in self.recall_at.items()},
            "n_audio": self.n_audio,
            "n_visual": self.n_visual,
            "n_skipped_queries": dict(self.n_skipped_queries),
            "per_class": {
                d: {str(k): v for k, v in pc.items()} for d, pc in self.per_class.items()
            },
        }


def evaluate_cross_modal(
    audio_emb: np.ndarray, audio_labels: np.ndarray,
    visual_emb: np.ndarray, visual_labels: np.ndarray,
    *, ks: Sequence[int] = (1, 5, 10), chunk: int = 1024, normalize: bool = True,
    scores: Mapping[str, ScoreFn] | None = None,
) -> RetrievalReport:  # fmt: skip
    """Rank audio against visual (a2v) and visual against audio (v2a); relevance = same label.

    Each direction's scores are computed once, chunk by chunk, and every metric of that
    direction comes from the same ranking. ``scores`` (``{"a2v": fn, "v2a": fn}``) replaces the
    cosine of a direction: ``fn(query rows)`` gives those queries' scores against the whole
    gallery (rows index ``audio_emb`` for a2v, ``visual_emb`` for v2a).
    """
    kk = _check_ks(ks)
    a, v = _check_pair(audio_emb, visual_emb, normalize, ("audio embeddings", "visual embeddings"))
    names = ("audio labels", "visual labels")
    classes, ac, vc = _encode_labels(audio_labels, visual_labels, len(a), len(v), names)
    fns = scores or {}
    dirs = {
        "a2v": _direction(a, ac, v, vc, classes, chunk=chunk, score=fns.get("a2v")),
        "v2a": _direction(v, vc, a, ac, classes, chunk=chunk, score=fns.get("v2a")),
    }
    a2v, v2a = float(dirs["a2v"].ap.mean()), float(dirs["v2a"].ap.mean())
    return RetrievalReport(
        a2v_map=a2v,
        v2a_map=v2a,
        map=(a2v + v2a) / 2,
        a2v_map_at_r=float(dirs["a2v"].ap_at_r.mean()),
        v2a_map_at_r=float(dirs["v2a"].ap_at_r.mean()),
        recall_at={name: _recall(d, kk) for name, d in dirs.items()},
        per_class={name: _per_class(d) for name, d in dirs.items()},
        n_audio=len(a),
        n_visual=len(v),
        n_skipped_queries={name: d.n_skipped for name, d in dirs.items()},
    )
