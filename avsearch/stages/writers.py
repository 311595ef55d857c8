"""The writer stages. Each takes the mapped windows of a job (``take``), forgets a failed job
(``drop``) and writes the jobs that are complete (``commit``, a batch at a time):

- ``IndexWriter``: each file with all its segments into the manifest (each segment's heads
  vector and its vectors of the model's further spaces), in one transaction per commit; tallies
  the embed summary (silence, non-finite vectors, media seconds);
- ``FeatureWriter``: the raw tower features of each file into the feature cache;
- ``write_views``: training's views of one file's windows (augmented copies, or activations at
  the cut of a fine-tuned tower), in place of its cached features.
"""

from __future__ import annotations

import logging
import sqlite3
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from avsearch.errors import MediaError
from avsearch.media.paths import path_fields
from avsearch.stages.mapper import Mapped
from avsearch.stages.reader import REFRESH, Failure, Job
from avsearch.store.features import CachedWindow, FeatureCache
from avsearch.store.manifest import Manifest, NewSegment

if TYPE_CHECKING:
    from avsearch.media.decode import Piece

log = logging.getLogger(__name__)


class Writer(Protocol):
    def take(self, job: int, m: Mapped) -> None: ...
    def drop(self, job: int) -> None: ...
    def commit(self, jobs: Sequence[int]) -> None: ...


@dataclass
class EmbedSummary:
    """What ``embed`` did; the index writer tallies what it writes."""

    index: str
    model: str
    new: int = 0
    updated: int = 0
    refreshed: int = 0  # unchanged files re-encoded for a vector space their segments lacked
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    failed: int = 0
    segments: int = 0
    audio_segments: int = 0
    visual_segments: int = 0
    silent_segments: int = 0  # audio windows of digital silence: nothing to index
    media_seconds: float = 0.0
    seconds: float = 0.0
    total_files: int = 0
    total_segments: int = 0
    failures: list[Failure] = field(default_factory=list)
    silent_files: list[str] = field(default_factory=list)  # indexed with no segment at all
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "model": self.model,
            "files": {
                "new": self.new,
                "updated": self.updated,
                "refreshed": self.refreshed,
                "unchanged": self.unchanged,
                "moved": self.moved,
                "removed": self.removed,
                "failed": self.failed,
            },
            "segments": {
                "encoded": self.segments,
                "audio": self.audio_segments,
                "visual": self.visual_segments,
                "silent": self.silent_segments,
                "total_in_index": self.total_segments,
            },
            "files_in_index": self.total_files,
            "media_seconds": round(self.media_seconds, 3),
            "seconds": round(self.seconds, 3),
            "failures": [f.to_json() for f in self.failures],
            "silent_files": [path_fields(p) for p in self.silent_files],
            "interrupted": self.interrupted,
        }


class IndexWriter:
    def __init__(self, manifest: Manifest, jobs: Sequence[Job], summary: EmbedSummary) -> None:
        self.manifest, self.jobs, self.summary = manifest, jobs, summary
        self.segments: dict[int, list[NewSegment]] = {}
        self.silent: dict[int, int] = {}  # silent audio windows, per job

    def take(self, job: int, m: Mapped) -> None:
        if m.silent:  # digital silence holds nothing to find: no audio vector
            self.silent[job] = self.silent.get(job, 0) + 1
            self.summary.silent_segments += 1
        elif m.vector is not None and all(
            np.all(np.isfinite(v)) for v in (m.vector, *m.spaces.values())
        ):
            self.segments.setdefault(job, []).append(
                NewSegment(m.modality, m.idx, m.start, m.end, m.vector, m.spaces)
            )
        else:  # never into the index: name the file and the window instead
            path = str(self.jobs[job].file.path)
            reason = (
                f"{m.modality} window {m.idx} ({m.start:.2f}-{m.end:.2f} s) gave a "
                "non-finite vector; that segment is not indexed"
            )
            self.summary.failures.append(Failure(path, reason))
            log.warning("%s: %s", path, reason)

    def drop(self, job: int) -> None:
        self.segments.pop(job, None)
        self.silent.pop(job, None)

    def commit(self, jobs: Sequence[int]) -> None:
        done = [
            (j, sorted(self.segments.get(j, []), key=lambda g: (g.modality, g.idx))) for j in jobs
        ]
        with self.manifest.transaction():
            for j, segs in done:
                f = self.jobs[j].file
                self.manifest.put_file(
                    path=str(f.path),
                    kind=f.kind,
                    size=f.size,
                    mtime_ns=f.mtime_ns,
                    digest=self.jobs[j].digest,
                    segments=segs,
                    replace_id=self.jobs[j].replace_id,
                )
        s = self.summary  # (tallied once written: a commit interrupted is tried again)
        for j, segs in done:
            self.segments.pop(j, None)
            if self.silent.pop(j, 0) and not segs:
                s.silent_files.append(str(self.jobs[j].file.path))
            action = self.jobs[j].action
            s.new += action == "new"
            s.refreshed += action == REFRESH
            s.updated += action not in ("new", REFRESH)
            s.segments += len(segs)
            s.audio_segments += sum(g.modality == "audio" for g in segs)
            s.visual_segments += sum(g.modality == "visual" for g in segs)
            s.media_seconds += max((g.end for g in segs), default=0.0)


class FeatureWriter:
    """``kept``: where the windows of each committed job also go (training keeps them)."""

    def __init__(
        self,
        cache: FeatureCache,
        key: str,
        jobs: Sequence[Job],
        kept: dict[int, list[CachedWindow]] | None = None,
    ) -> None:
        self.cache, self.key, self.jobs, self.kept = cache, key, jobs, kept
        self.windows: dict[int, list[CachedWindow]] = {}

    def take(self, job: int, m: Mapped) -> None:
        if m.feature is not None:  # (not a window read from the cache)
            self.windows.setdefault(job, []).append(m.window())

    def drop(self, job: int) -> None:
        self.windows.pop(job, None)

    def commit(self, jobs: Sequence[int]) -> None:
        done = {
            j: sorted(self.windows.pop(j), key=lambda w: (w.modality, w.idx))
            for j in jobs
            if j in self.windows
        }
        entries = [(self.jobs[j].digest, self.key, w) for j, w in done.items()]
        try:
            self.cache.put_many(entries)
        except sqlite3.Error as exc:  # only a cache: the index must not suffer
            log.warning("cannot write to the feature cache %s (%s)", self.cache.path, exc)
        if self.kept is not None:
            self.kept.update(done)


ViewEncoder = Callable[[str, np.ndarray, int], np.ndarray]
"""(modality, raw batch, seed) -> [B, V, ...] views of each item; the seed is derived from
the file's path and the batch's first window, so every window draws its own augmentation."""


def write_views(
    path: Path,
    windows: list[CachedWindow],
    pieces: list[Piece],
    modalities: tuple[str, ...],
    encode: ViewEncoder,
    batch_size: int,
) -> list[CachedWindow]:
    """The cached ``windows`` of the file at ``path``, those of ``modalities`` holding their
    views of the freshly decoded ``pieces`` (batches of one file), the others' vectors as
    one-view ``[1, D]`` arrays. MediaError when the pieces are not the windows cached (the
    file changed since)."""
    views: dict[tuple[str, int], np.ndarray] = {}
    for modality in modalities:
        wanted = {w.idx for w in windows if w.modality == modality}
        chosen = [p for p in pieces if p.modality == modality and p.index in wanted]
        if len(chosen) != len(wanted):
            raise MediaError(path, "decoded differently from the cached features")
        for i in range(0, len(chosen), batch_size):
            chunk = chosen[i : i + batch_size]
            seed = zlib.crc32(f"{path}#{modality}#{chunk[0].index}".encode())
            out = encode(modality, np.stack([p.data for p in chunk]), seed)
            for p, v in zip(chunk, out, strict=True):
                views[(modality, p.index)] = v
    return [
        replace(w, vector=views[(w.modality, w.idx)])
        if w.modality in modalities
        else replace(w, vector=np.asarray(w.vector)[None])
        for w in windows
    ]
