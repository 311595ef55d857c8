"""query: encode a sound, an image or a moment of a video; search the other modality.

The query is read by the reader stage (a range after a seek to it, in the index's windows) and
mapped by the mapper stage in batches. A query made of several windows (a long clip, or a video
range) is the normalised mean of its window vectors. Hits are grouped one per file (its best
segment) unless raw segments are asked. The vector space searched is chosen by
:mod:`avsearch.spaces`: a sound searching sounds (a picture pictures) ranks in the heads' space
fused with the model's native space of that modality, a cross-modal query in the heads' space
fused with the zero-shot bridge when the model has one, each by the gate of the model's
``fusion:`` rule (``--space``, ``--no-bridge`` override). A hit's ``score`` is what ranked
it: a cosine in the heads' or the native space, or a fused z-score
(:func:`avsearch.spaces.score_kind`); a hit ranked in another space than the heads' also
carries its cosine there (``heads_cosine``). Each hit of the heads' space gets a confidence
beside its raw score (:mod:`avsearch.calibrate`); ``min_confidence`` drops the weaker ones, and
when none is left the result is empty with a "no good match" note.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from avsearch import calibrate
from avsearch.config import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, QueryConfig
from avsearch.encoders.bridge import FusionRule
from avsearch.encoders.model import AVModel
from avsearch.errors import (
    EmptyIndexError,
    MediaError,
    ModelMismatchError,
    NoAudioError,
    UsageError,
)
from avsearch.media.discover import media_kind
from avsearch.media.paths import path_fields
from avsearch.media.segment import WindowSpec
from avsearch.relocate import follow_move
from avsearch.spaces import (
    FUSED,
    FUSED_NATIVE,
    NATIVE,
    FusedSearch,
    SearchFn,
    SpaceChoice,
    choose_space,
    cross_top,
    recorded_fusion,
    score_kind,
)
from avsearch.stages.mapper import Mapped, Mapper
from avsearch.stages.reader import range_pieces
from avsearch.store.index import IndexStore
from avsearch.store.manifest import HEADS

log = logging.getLogger(__name__)

QUERY_BATCH = 32  # windows per tower call


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    path: str
    start: float | None
    end: float | None
    modality: str
    segment_id: int
    confidence: float | None = None  # 0-1 against the query's background; None: too few segments
    duplicates: tuple[str, ...] = ()  # other indexed files with exactly the same content
    heads_cosine: float | None = None  # ranked in another space: the cosine in the heads' space

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rank": self.rank,
            "score": round(self.score, 6),
            **({} if self.heads_cosine is None else {"heads_cosine": round(self.heads_cosine, 6)}),
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            **path_fields(self.path),  # + path_b64 (exact bytes) for a non-UTF-8 name
            "start": self.start,
            "end": self.end,
            "modality": self.modality,
        }
        if self.duplicates:
            fields = [path_fields(d) for d in self.duplicates]
            out["duplicates"] = [f["path"] for f in fields]
            if any("path_b64" in f for f in fields):  # exact bytes of names that are not UTF-8
                out["duplicates_b64"] = [f.get("path_b64") for f in fields]
        return out


@dataclass
class QueryResult:
    query: str
    query_modality: str
    target: str
    model: str
    grouped: bool
    results: list[Hit] = field(default_factory=list)
    note: str | None = None  # why there are no results, when the query itself is the reason
    no_good_match: bool = False  # hits were found, none reached --min-confidence
    space: str = HEADS  # the space that answered: heads, native, heads+native or heads+bridge
    space_note: str | None = None  # why not the space the query would use by default
    fusion: dict[str, Any] | None = None  # heads+...: the rule and this query's weight

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **path_fields(self.query, "query"),
            "query_modality": self.query_modality,
            "target": self.target,
            "model": self.model,
            "grouped": self.grouped,
            "results": [h.to_json() for h in self.results],
        }
        if self.note:
            out["note"] = self.note
        if self.no_good_match:
            out["no_good_match"] = True
        out["space"] = self.space
        out["score_kind"] = score_kind(self.space)
        if self.space_note:
            out["space_note"] = self.space_note
        if self.fusion is not None:
            out["fusion"] = self.fusion
        return out


class SilentQuery(Exception):
    """The query's sound is digital silence: there is nothing in it to match."""


def query_modalities(kind: str, target: str | None) -> tuple[str, str]:
    """(modality of the query vector, modality searched)."""
    if kind == "image":
        return "visual", target or "audio"
    if kind == "audio":
        return "audio", target or "visual"
    # video: its sound finds pictures by default; --target audio uses its frames
    if target == "audio":
        return "visual", "audio"
    return "audio", "visual"


def load_index_model(store: IndexStore, wanted: str | None) -> AVModel:
    stamp = store.model_stamp()
    assert stamp is not None
    ref = wanted or store.manifest.get_meta("model_ref") or stamp.name
    model = AVModel.load(ref)
    if model.fingerprint != stamp.fingerprint:
        raise ModelMismatchError(
            store.root,
            stamp.name,
            model.name,
            ref=ref,
            fingerprints=(stamp.fingerprint, model.fingerprint),
        )
    return model


def encode_query(
    model: AVModel,
    path: Path,
    kind: str,
    modality: str,
    cfg: QueryConfig,
    spec: WindowSpec | None = None,
) -> np.ndarray:
    """The query vector of ``path`` cut into ``spec``'s windows (the index's; default: the
    model's), in the heads' space."""
    return encode_query_spaces(model, path, kind, modality, cfg, spec)[HEADS]


def encode_query_spaces(
    model: AVModel,
    path: Path,
    kind: str,
    modality: str,
    cfg: QueryConfig,
    spec: WindowSpec | None = None,
) -> dict[str, np.ndarray]:
    """The query vectors ``[1, d]`` of ``path`` in the heads' space and in every further space
    the model has for ``modality`` (``native``, ``bridge``): each the normalised mean of its
    windows' vectors."""
    spec = spec or model.window_spec()
    mapped: list[Mapped] = []
    mapper = Mapper(model, QUERY_BATCH, lambda _, m: mapped.append(m))
    read = 0
    try:
        for piece in range_pieces(path, kind, spec, cfg.start, cfg.end, modality, model.image_size):
            mapper.add(0, piece)
            read += 1
        mapper.done(0)
        mapper.flush()
    except NoAudioError as exc:
        if kind == "video":
            raise MediaError(
                path,
                "this video has no sound to query with; `--target audio` searches sounds "
                "with its frames instead",
            ) from exc
        raise
    span = "" if cfg.start is None and cfg.end is None else f" in [{cfg.start}, {cfg.end})"
    if not read:  # (a video without sound raised NoAudioError above)
        what = "audio" if modality == "audio" else "frames"
        raise MediaError(path, f"no {what} to query with{span}")
    if all(m.silent for m in mapped):
        raise SilentQuery(
            f"the query's sound{span} is digital silence (peak below -120 dBFS): there is "
            "nothing in it to match"
        )
    good = [
        m
        for m in mapped
        if m.vector is not None
        and all(np.all(np.isfinite(v)) for v in (m.vector, *m.spaces.values()))
    ]
    if not good:
        raise MediaError(path, f"the model gave no finite vector for this query{span}")
    out = {HEADS: _unit_mean([m.vector for m in good])}
    for space in set().union(*(m.spaces for m in good)):
        out[space] = _unit_mean([m.spaces[space] for m in good if space in m.spaces])
    return out


def _unit_mean(vecs: list[Any]) -> np.ndarray:
    mean = np.mean(vecs, axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)[None, :]


def run_query(
    file: Path,
    index_dir: Path,
    cfg: QueryConfig,
    *,
    model: AVModel | None = None,
    store: IndexStore | None = None,
) -> QueryResult:
    file = file.expanduser()
    if not file.is_file():
        raise UsageError(f"{file}: no such file", hint="give an audio clip, an image or a video")
    kind = media_kind(file)
    if kind is None:
        exts = sorted(AUDIO_EXTENSIONS | IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
        raise UsageError(f"{file}: not a supported media file", hint=f"supported: {' '.join(exts)}")
    if kind == "image" and (cfg.start is not None or cfg.end is not None):
        raise UsageError("--start/--end do not apply to an image query")
    own_store = store is None
    store = store or IndexStore.open_existing(index_dir)
    try:
        follow_move(store)  # an index moved with the folder it indexes: its paths follow
        model = model or load_index_model(store, cfg.model)
        q_modality, target = query_modalities(kind, cfg.target)
        index = store.index_for(target)
        if index.ntotal == 0:
            raise EmptyIndexError(
                f"the index at {store.root} has no {target} segments to search",
                hint="embed some images or videos"
                if target == "visual"
                else "embed some sounds or videos",
            )
        choice = choose_space(
            store, q_modality, target, cfg.space, bridge=not cfg.no_bridge, fusion=_rule(model)
        )
        if cfg.min_confidence is not None and choice.space != HEADS:
            if cfg.space == NATIVE:
                raise UsageError(
                    "--min-confidence reads confidences calibrated on the heads' cosines",
                    hint="drop --space native, or --min-confidence",
                )
            choice = SpaceChoice(
                HEADS,
                f"searched the heads' space alone, not {choice.space}: --min-confidence reads "
                "confidences calibrated on its cosines",
            )
        try:
            qvecs = encode_query_spaces(
                model, file.resolve(), kind, q_modality, cfg, store.window()
            )
        except SilentQuery as silent:
            return QueryResult(
                str(file), q_modality, target, model.name, not cfg.segments, [], str(silent),
                space=choice.space, space_note=choice.note,
            )  # fmt: skip
        qvec = qvecs[HEADS]
        search, choice, fusion = _searcher(store, target, qvecs, choice, model)
        hits = _search(store, target, qvec, cfg.top, grouped=not cfg.segments, search=search)
        if choice.space == HEADS:  # (the confidence curve is fitted on the heads' cosines)
            hits = with_confidence(store, target, qvec, hits)
        else:  # (the score is not the heads' cosine: give that too)
            hits = with_heads_cosine(store, qvec, hits)
            if fusion is not None and fusion.get(f"{choice.space.split('+')[1]}_weight") == 0:
                # the other space weighed nothing: the order is the heads' own, so their
                # cosines' confidences hold (a query the heads recognise keeps them)
                hits = with_confidence(store, target, qvec, hits, heads_cosine=True)
    finally:
        if own_store:
            store.close()
    result = QueryResult(
        str(file), q_modality, target, model.name, not cfg.segments, hits,
        space=choice.space, space_note=choice.note, fusion=fusion,
    )  # fmt: skip
    return keep_confident(result, cfg.min_confidence)


def _searcher(
    store: IndexStore,
    target: str,
    qvecs: dict[str, np.ndarray],
    choice: SpaceChoice,
    model: AVModel,
) -> tuple[SearchFn | None, SpaceChoice, dict[str, Any] | None]:
    """How to search the chosen space (None: the heads' space as it is), the choice (heads
    when the query has no vector of the chosen space), and the fusion's record."""
    if choice.space == NATIVE and NATIVE in qvecs:
        q = qvecs[NATIVE]
        return (lambda k: store.search(target, q, k, NATIVE)), choice, None
    rule = _rule(model) or recorded_fusion(store)
    if choice.space == FUSED and "bridge" in qvecs:
        fused = FusedSearch(store, target, qvecs[HEADS], qvecs["bridge"], rule)
        return fused, choice, fused.to_json()
    if choice.space == FUSED_NATIVE and NATIVE in qvecs:
        other = "visual" if target == "audio" else "audio"
        top = cross_top(store, other, qvecs[HEADS])  # (do the heads recognise the query?)
        fused = FusedSearch(
            store, target, qvecs[HEADS], qvecs[NATIVE], rule, other=NATIVE, gate_top=top
        )
        return fused, choice, fused.to_json()
    if choice.space != HEADS:
        note = f"searched the heads' space: the query has no {choice.space} vector"
        return None, SpaceChoice(HEADS, note), None
    return None, choice, None


def with_confidence(
    store: IndexStore, target: str, qvec: np.ndarray, hits: list[Hit], *, heads_cosine: bool = False
) -> list[Hit]:
    """``hits`` with their confidence against the query's background (avsearch.calibrate),
    from their score, or with ``heads_cosine`` from their ``heads_cosine`` (a hit without one
    gets none)."""
    if not hits:
        return hits
    sample = calibrate.background_vectors(store.manifest, target, store.dim)
    raw = [h.heads_cosine if heads_cosine else h.score for h in hits]
    values = np.array([np.nan if r is None else r for r in raw], dtype=np.float64)
    conf = calibrate.background_for(qvec, sample).confidence(values)
    return [
        replace(h, confidence=None if math.isnan(c) else float(c))
        for h, c in zip(hits, conf.tolist(), strict=True)
    ]


def with_heads_cosine(store: IndexStore, qvec: np.ndarray, hits: list[Hit]) -> list[Hit]:
    """``hits`` (ranked in another space) with their segment's cosine with ``qvec`` in the
    heads' space: one read of their heads vectors (None for a segment without one)."""
    if not hits:
        return hits
    vecs = store.manifest.vectors_by_ids([h.segment_id for h in hits], store.dim, HEADS)
    q = np.asarray(qvec, np.float32).reshape(-1)
    return [
        replace(h, heads_cosine=float(vecs[h.segment_id] @ q) if h.segment_id in vecs else None)
        for h in hits
    ]


def keep_confident(result: QueryResult, min_confidence: float | None) -> QueryResult:
    """``result`` without the hits below ``min_confidence`` (a hit whose confidence is
    unknown does not pass); none left: empty, with a "no good match" note."""
    if min_confidence is None or not result.results:
        return result
    kept = [
        h for h in result.results if h.confidence is not None and h.confidence >= min_confidence
    ]
    if kept:
        return replace(result, results=kept)
    known = [h.confidence for h in result.results if h.confidence is not None]
    why = (
        f"the best of {len(result.results)} hit(s) has confidence {max(known):.2f}"
        if known
        else "no hit has a known confidence: the index holds too few segments of that "
        "modality, or the space that answered has no calibrated curve"
    )
    note = f"no good match: no hit reaches confidence {min_confidence:g} ({why})"
    return replace(result, results=[], note=note, no_good_match=True)


def _rule(model: AVModel) -> FusionRule | None:
    """The model's fusion rule (None for a stand-in without one: the index's then)."""
    return getattr(model, "fusion", None)


def _search(
    store: IndexStore,
    target: str,
    qvec: np.ndarray,
    top: int,
    grouped: bool,
    search: SearchFn | None = None,
) -> list[Hit]:
    """Hits of ``qvec`` in the heads' space, or of ``search`` (k -> best k (scores, ids)) when
    given (another space, or the fusion)."""
    index = store.index_for(target)
    k = top if not grouped else min(index.ntotal, max(top * 20, 100))
    while True:
        scores, ids = store.search(target, qvec, k) if search is None else search(k)
        rows = store.manifest.segments_by_ids(int(i) for i in ids[0] if i >= 0)
        digests = _file_hashes(store, {r.file_id for r in rows.values()})
        hits: list[Hit] = []
        seen: set[tuple[str, int]] = set()  # (content, segment index); a file's content once
        for score, sid in zip(scores[0], ids[0], strict=True):
            row = rows.get(int(sid))
            if row is None:
                continue
            key = (digests.get(row.file_id) or f"id:{row.file_id}", -1 if grouped else row.idx)
            if key in seen:  # (grouped: another window of this file, or an identical file)
                continue
            seen.add(key)
            is_still = (
                row.start == row.end == 0.0 and row.modality == "visual" and _is_image(row.path)
            )
            # identical files: one hit, under the first of their paths, listing the others
            same = sorted([row.path, *_same_content(store, digests.get(row.file_id), row.path)])
            hits.append(
                Hit(
                    len(hits) + 1,
                    float(score),
                    same[0],
                    None if is_still else row.start,
                    None if is_still else row.end,
                    row.modality,
                    row.id,
                    duplicates=tuple(same[1:]),
                )
            )
            if len(hits) >= top:
                return hits
        if k >= index.ntotal:
            return hits
        k = min(index.ntotal, k * 4)


def _file_hashes(store: IndexStore, file_ids: set[int]) -> dict[int, str]:
    """The content hash of each file id (exact duplicates share one)."""
    out: dict[int, str] = {}
    ids = sorted(file_ids)
    for lo in range(0, len(ids), 500):
        chunk = ids[lo : lo + 500]
        rows = store.manifest.conn.execute(
            f"SELECT id, hash FROM files WHERE id IN ({','.join('?' * len(chunk))})", chunk
        )
        out.update({int(r[0]): str(r[1]) for r in rows})
    return out


def _same_content(store: IndexStore, digest: str | None, path: str) -> tuple[str, ...]:
    """The other indexed paths holding exactly the content ``digest``, sorted."""
    if not digest:
        return ()
    return tuple(
        sorted(r["path"] for r in store.manifest.files_by_hash(digest) if r["path"] != path)
    )


def _is_image(path: str) -> bool:
    return media_kind(Path(path)) == "image"
