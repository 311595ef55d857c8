"""query: encode a sound, an image or a moment of a video; search the other modality.

The query is read by the reader stage (a range after a seek to it, in the index's windows) and
mapped by the mapper stage in batches. A query made of several windows (a long clip, or a video
range) is the normalised mean of its window vectors. Hits are grouped one per file (its best
segment) unless raw segments are asked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avsearch.config import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, QueryConfig
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
from avsearch.stages.mapper import Mapped, Mapper
from avsearch.stages.reader import range_pieces
from avsearch.store.index import IndexStore

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

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "score": round(self.score, 6),
            **path_fields(self.path),  # + path_b64 (exact bytes) for a non-UTF-8 name
            "start": self.start,
            "end": self.end,
            "modality": self.modality,
        }


@dataclass
class QueryResult:
    query: str
    query_modality: str
    target: str
    model: str
    grouped: bool
    results: list[Hit] = field(default_factory=list)
    note: str | None = None  # why there are no results, when the query itself is the reason

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
        raise ModelMismatchError(store.root, stamp.name, f"{model.name} ({model.directory})")
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
    model's)."""
    spec = spec or model.window_spec()
    mapped: list[Mapped] = []
    mapper = Mapper(model, QUERY_BATCH, lambda _, m: mapped.append(m))
    read = 0
    try:
        for piece in range_pieces(path, kind, spec, cfg.start, cfg.end, modality, model.image_size):
            mapper.add(0, piece)
            read += 1
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
    vecs = [m.vector for m in mapped if m.vector is not None and np.all(np.isfinite(m.vector))]
    if not vecs:
        raise MediaError(path, f"the model gave no finite vector for this query{span}")
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
        try:
            qvec = encode_query(model, file.resolve(), kind, q_modality, cfg, store.window())
        except SilentQuery as silent:
            return QueryResult(
                str(file), q_modality, target, model.name, not cfg.segments, [], str(silent)
            )
        hits = _search(store, target, qvec, cfg.top, grouped=not cfg.segments)
    finally:
        if own_store:
            store.close()
    return QueryResult(str(file), q_modality, target, model.name, not cfg.segments, hits)


def _search(store: IndexStore, target: str, qvec: np.ndarray, top: int, grouped: bool) -> list[Hit]:
    index = store.index_for(target)
    k = top if not grouped else min(index.ntotal, max(top * 20, 100))
    while True:
        scores, ids = store.search(target, qvec, k)
        rows = store.manifest.segments_by_ids(int(i) for i in ids[0] if i >= 0)
        hits: list[Hit] = []
        seen: set[int] = set()
        for score, sid in zip(scores[0], ids[0], strict=True):
            row = rows.get(int(sid))
            if row is None:
                continue
            if grouped:
                if row.file_id in seen:
                    continue
                seen.add(row.file_id)
            is_still = (
                row.start == row.end == 0.0 and row.modality == "visual" and _is_image(row.path)
            )
            hits.append(
                Hit(
                    len(hits) + 1,
                    float(score),
                    row.path,
                    None if is_still else row.start,
                    None if is_still else row.end,
                    row.modality,
                    row.id,
                )
            )
            if len(hits) >= top:
                return hits
        if k >= index.ntotal:
            return hits
        k = min(index.ntotal, k * 4)


def _is_image(path: str) -> bool:
    return media_kind(Path(path)) == "image"
