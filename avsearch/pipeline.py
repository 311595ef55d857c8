"""embed: discover → plan (mark and sweep) → decode ahead in threads → encode in batches → write.

Planning compares the folder with the manifest: unchanged files (size + mtime) are skipped,
changed ones re-encoded, new ones hashed and, when their content hash matches a file that is
gone from disk, recorded as moved (no re-encoding); rows under the given roots that were not
seen are removed. Each encoded file is written with all its segments in one transaction, and
commits happen every few seconds, so a killed run loses at most the files in flight and a re-run
finishes the job. The FAISS files are rebuilt from the manifest at the end.

PyAV, soundfile, Pillow's resize and torch release the GIL, so decode threads overlap with the
encoder on separate cores without pickling windows between processes.

Nothing heavy happens before the plan says there is work: the model is read lazily (its config
and fingerprint, with the model files' hashes cached in the index directory by size and mtime),
so an unchanged folder loads no backbone, no head, no torch and no decoder.

The raw backbone features of every encoded file are kept in the feature cache
(``features.sqlite``, shared with ``avsearch train``; ``EmbedConfig.write_features``), keyed by
content hash and backbones: a file whose features are there is not decoded at all, only put
through the heads, so re-embedding with a retrained model costs the heads alone.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from avsearch.config import EmbedConfig
from avsearch.encoders.model import AVModel
from avsearch.encoders.model_dir import HashCache
from avsearch.errors import AvsearchError, MediaError, UsageError
from avsearch.media.discover import MediaFile, content_hash, discover, read_problem
from avsearch.media.paths import display_text, path_fields
from avsearch.store.features import FEATURES_DB, CachedWindow, FeatureCache
from avsearch.store.index import MANIFEST, IndexStore, ModelStamp
from avsearch.store.manifest import Manifest, NewSegment

if TYPE_CHECKING:
    from avsearch.media.decode import Piece, WindowSpec

log = logging.getLogger(__name__)

MODEL_HASHES = "model-hashes.json"  # the model files' sha256 (encoders.model_dir.HashCache)


def file_pieces(path: Path, kind: str, spec: WindowSpec, image_size: int = 224) -> Iterator[Piece]:
    """``avsearch.media.decode.file_pieces``, imported on first use: a run with nothing to
    encode never loads the decoders (PyAV, soundfile, Pillow)."""
    from avsearch.media.decode import file_pieces as decode

    return decode(path, kind, spec, image_size)


ProgressFn = Callable[[str, dict[str, Any]], None]


@dataclass
class Failure:
    path: str  # as the file system gave it (a non-UTF-8 name holds surrogate escapes)
    reason: str

    def to_json(self) -> dict[str, str]:
        """``path`` printable (plus ``path_b64`` when the name is not UTF-8), ``reason``."""
        return {**path_fields(self.path), "reason": display_text(self.reason)}


@dataclass
class EmbedSummary:
    index: str
    model: str
    new: int = 0
    updated: int = 0
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


@dataclass
class Job:
    file: MediaFile
    action: str  # "new" | "updated"
    digest: str
    replace_id: int | None = None


@dataclass
class Plan:
    jobs: list[Job]
    unchanged: int
    moved: list[tuple[int, MediaFile]]
    removed: list[int]
    failures: list[Failure] = field(default_factory=list)  # files that could not be read


def plan(manifest: Manifest, files: Iterable[MediaFile], roots: list[Path]) -> Plan:
    """Compare the discovered files with the manifest (see the module docstring).

    Content is compared by its full hash (``content_hash``); a stored digest of another kind
    (the old quick hash) never matches, so such a file is re-encoded once when its size or mtime
    changed, and is not recognised as moved. Entries ``discover`` could not read, and files that
    vanish or cannot be read while hashing, become ``failures``; their old rows are removed.
    """
    existing = manifest.files_under(roots)
    unseen = {row["path"]: row for row in existing.values()}
    jobs: list[Job] = []
    moved: list[tuple[int, MediaFile]] = []
    failures: list[Failure] = []
    unchanged = 0
    claimed: set[int] = set()
    touched: list[tuple[int, int]] = []  # (file id, new mtime) of files touched, not changed

    def read_hash(f: MediaFile) -> str | None:
        try:
            return content_hash(f.path)
        except OSError as exc:
            failures.append(Failure(str(f.path), read_problem(exc)))
            return None

    for f in files:
        if f.problem is not None:
            failures.append(Failure(str(f.path), f.problem))
            continue
        key = str(f.path)
        row = existing.get(key)
        if row is not None:
            if row["size"] == f.size and row["mtime_ns"] == f.mtime_ns:
                unseen.pop(key, None)
                unchanged += 1
                continue
            digest = read_hash(f)
            if digest is None:
                continue
            unseen.pop(key, None)
            if digest == row["hash"]:  # touched, not changed
                touched.append((row["id"], f.mtime_ns))
                unchanged += 1
                continue
            jobs.append(Job(f, "updated", digest, replace_id=row["id"]))
            continue
        digest = read_hash(f)
        if digest is None:
            continue
        source = next(
            (
                r
                for r in manifest.files_by_hash(digest)
                if r["id"] not in claimed and not Path(r["path"]).exists()
            ),
            None,
        )
        if source is not None:
            claimed.add(source["id"])
            unseen.pop(source["path"], None)
            moved.append((source["id"], f))
        else:
            jobs.append(Job(f, "new", digest))
    if touched:  # one transaction, not one per file
        with manifest.transaction():
            for file_id, mtime_ns in touched:
                manifest.touch_file(file_id, mtime_ns)
    removed = [row["id"] for row in unseen.values() if row["id"] not in claimed]
    return Plan(jobs, unchanged, moved, removed, failures)


class _Decoder:
    """Decode threads: each takes jobs and streams their pieces into one bounded queue.

    ``todo`` names the jobs to decode (all by default); with ``more=True`` the threads wait for
    jobs given later through ``add`` until ``no_more`` is called."""

    DONE = "done"
    FAIL = "fail"
    PIECE = "piece"

    def __init__(
        self,
        jobs: list[Job],
        spec: WindowSpec,
        image_size: int,
        workers: int,
        todo: Iterable[int] | None = None,
        *,
        more: bool = False,
    ) -> None:
        self.jobs = jobs
        self.spec = spec
        self.image_size = image_size
        self.todo: queue.Queue[int] = queue.Queue()
        for i in range(len(jobs)) if todo is None else todo:
            self.todo.put(i)
        self.open_input = threading.Event()
        if more:
            self.open_input.set()
        self.out: queue.Queue[tuple[str, int, Any]] = queue.Queue(maxsize=256)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, name=f"avsearch-decode-{n}", daemon=True)
            for n in range(max(1, min(workers, len(jobs) or 1)))
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def add(self, i: int) -> None:
        self.todo.put(i)

    def no_more(self) -> None:
        self.open_input.clear()

    def _next(self) -> int | None:
        while not self.stop.is_set():
            closed = not self.open_input.is_set()  # read first: all adds came before closing
            try:
                return self.todo.get_nowait() if closed else self.todo.get(timeout=0.1)
            except queue.Empty:
                if closed:
                    return None
        return None

    def _put(self, item: tuple[str, int, Any]) -> bool:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        while (i := self._next()) is not None:
            job = self.jobs[i]
            try:
                count = 0
                for piece in file_pieces(job.file.path, job.file.kind, self.spec, self.image_size):
                    count += 1
                    if not self._put((self.PIECE, i, piece)):
                        return
                if count == 0:
                    raise MediaError(job.file.path, "no audio or video stream to index")
                self._put((self.DONE, i, None))
            except MediaError as exc:
                self._put((self.FAIL, i, exc.reason))
            except Exception as exc:  # a decoder bug must not take the whole run down
                log.debug("decoding %s failed", job.file.path, exc_info=True)
                self._put((self.FAIL, i, f"{type(exc).__name__}: {exc}"))

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)


def run_embed(
    paths: list[Path],
    index_dir: Path,
    cfg: EmbedConfig,
    *,
    progress: ProgressFn | None = None,
    model: AVModel | None = None,
) -> EmbedSummary:
    t0 = time.perf_counter()
    report = progress or (lambda event, data: None)
    roots = [p.expanduser().resolve() for p in paths]
    for root in roots:
        if not root.exists():
            raise UsageError(f"{root} does not exist", hint="check the path you gave to embed")
    hashes = HashCache(index_dir / MODEL_HASHES) if model is None else None
    # lazy: config and fingerprint only; heads and backbones load when something is encoded
    if model is None:
        model = AVModel.load(cfg.model, lazy=True, hashes=hashes)
        if cfg.rebuild or not (index_dir / MANIFEST).is_file():
            getattr(model, "heads", None)  # a new index is stamped with it: fail now if broken
    ref = str(model.directory) if Path(cfg.model).expanduser().exists() else cfg.model
    stamp = ModelStamp(model.name, model.fingerprint, model.dim, ref)
    store = IndexStore.create_or_open(index_dir, stamp, rebuild=cfg.rebuild)
    if hashes is not None:
        hashes.save()
    summary = EmbedSummary(index=str(index_dir), model=model.name)
    try:
        files = list(discover(roots, exclude=[index_dir], follow_symlinks=cfg.follow_symlinks))
        report("discovered", {"files": len(files)})
        the_plan = plan(store.manifest, files, roots)
        summary.failures.extend(the_plan.failures)  # unreadable: dangling links, FIFOs, gone
        summary.failed += len(the_plan.failures)
        summary.unchanged = the_plan.unchanged
        for file_id, f in the_plan.moved:
            store.manifest.move_file(file_id, str(f.path), f.size, f.mtime_ns)
        summary.moved = len(the_plan.moved)
        summary.removed = store.manifest.remove_files(the_plan.removed)
        report(
            "plan",
            {
                "jobs": len(the_plan.jobs),
                "unchanged": summary.unchanged,
                "moved": summary.moved,
                "removed": summary.removed,
            },
        )
        if the_plan.jobs:
            spec = model.window_spec(cfg.window, cfg.min_tail)
            _encode_jobs(the_plan.jobs, store, model, spec, cfg, summary, report)
        report("finalising", {})
        store.sync_vectors()
        summary.total_files = store.manifest.file_count()
        summary.total_segments = store.manifest.segment_count()
    finally:
        store.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _open_feature_cache(
    store: IndexStore, model: AVModel, spec: WindowSpec, cfg: EmbedConfig
) -> tuple[FeatureCache, str] | None:
    """The feature cache and this model's key in it; None when the model has no separate
    backbones and heads (a stand-in), or the cache is neither there nor to be written."""
    if not all(hasattr(model, a) for a in ("feature_key", "features", "project")):
        return None
    path = Path(cfg.feature_cache).expanduser() if cfg.feature_cache else store.root / FEATURES_DB
    if not cfg.write_features and not path.exists():
        return None
    key = model.feature_key(spec)
    try:
        return FeatureCache(path), key
    except (sqlite3.Error, OSError) as exc:  # only a cache: encode without it
        log.warning("cannot use the feature cache %s (%s); decoding everything", path, exc)
        return None


def _encode_jobs(
    jobs: list[Job],
    store: IndexStore,
    model: AVModel,
    spec: WindowSpec,
    cfg: EmbedConfig,
    summary: EmbedSummary,
    report: ProgressFn,
) -> None:
    opened = _open_feature_cache(store, model, spec, cfg)
    try:
        _encode(jobs, store, model, spec, cfg, summary, report, opened)
    finally:
        if opened is not None:
            opened[0].close()


def _encode(
    jobs: list[Job],
    store: IndexStore,
    model: AVModel,
    spec: WindowSpec,
    cfg: EmbedConfig,
    summary: EmbedSummary,
    report: ProgressFn,
    opened: tuple[FeatureCache, str] | None,
) -> None:
    cache, key = opened if opened is not None else (None, "")
    hits: set[str] = set()
    if cache is not None:
        try:
            hits = cache.complete((j.digest for j in jobs), key)
        except sqlite3.Error as exc:
            log.warning("cannot read the feature cache %s (%s); decoding", cache.path, exc)
    writing = cache is not None and cfg.write_features
    from_cache = [i for i, job in enumerate(jobs) if job.digest in hits]
    decoder = _Decoder(
        jobs,
        spec,
        model.image_size,
        cfg.workers,
        (i for i, job in enumerate(jobs) if job.digest not in hits),
        more=bool(from_cache),
    )
    pending: dict[str, list[tuple[int, Piece]]] = {"audio": [], "visual": []}
    cached: dict[str, list[tuple[int, CachedWindow]]] = {"audio": [], "visual": []}
    segments: dict[int, list[NewSegment]] = {}
    features: dict[int, list[CachedWindow]] = {}  # raw features of decoded jobs, to cache
    waiting: dict[int, int] = {}  # windows decoded but not yet encoded, per job
    decoded: set[int] = set()
    failed: set[int] = set()
    ready: list[int] = []
    finished = 0
    last_commit = time.monotonic()

    silent: dict[int, int] = {}  # silent audio windows seen, per job

    def accept(j: int, modality: str, idx: int, start: float, end: float, v: np.ndarray) -> None:
        if np.all(np.isfinite(v)):
            segments.setdefault(j, []).append(NewSegment(modality, idx, start, end, v))
        else:  # never into the index: name the file and the window instead
            path = str(jobs[j].file.path)
            reason = (
                f"{modality} window {idx} ({start:.2f}-{end:.2f} s) gave a "
                "non-finite vector; that segment is not indexed"
            )
            summary.failures.append(Failure(path, reason))
            log.warning("%s: %s", path, reason)

    def encoded(j: int) -> None:
        waiting[j] -= 1
        if j in decoded and waiting[j] == 0:
            ready.append(j)

    def flush(modality: str) -> None:
        batch = [(j, p) for j, p in pending[modality] if j not in failed]
        pending[modality] = []
        if batch:
            data = np.stack([p.data for _, p in batch])
            if writing:  # keep the raw features; silent windows (cached too) get no vector
                feats = model.features(modality, data)
                for (j, p), f in zip(batch, feats, strict=True):
                    features.setdefault(j, []).append(
                        CachedWindow(modality, p.index, p.start, p.end, f, p.silent)
                    )
                live = [k for k, (_, p) in enumerate(batch) if not p.silent]
                vecs = iter(model.project(modality, feats[live]) if live else [])
            else:
                vecs = iter(model.embed(modality, data))
            for j, p in batch:
                if not p.silent:
                    accept(j, modality, p.index, p.start, p.end, next(vecs))
                encoded(j)
        rows = cached[modality]
        cached[modality] = []
        if rows:
            vecs = model.project(modality, np.stack([w.vector for _, w in rows]))
            for (j, w), v in zip(rows, vecs, strict=True):
                accept(j, modality, w.idx, w.start, w.end, v)
                encoded(j)

    def flush_all() -> None:
        for modality in ("audio", "visual"):
            flush(modality)

    def commit() -> None:
        nonlocal last_commit
        if not ready:
            return
        entries = [(jobs[j].digest, key, features.pop(j)) for j in ready if j in features]
        if cache is not None and entries:
            try:
                cache.put_many(entries)
            except sqlite3.Error as exc:  # only a cache: the index must not suffer
                log.warning("cannot write to the feature cache %s (%s)", cache.path, exc)
        with store.manifest.transaction():
            for j in ready:
                job = jobs[j]
                segs = sorted(segments.pop(j, []), key=lambda s: (s.modality, s.idx))
                if not segs and silent.get(j):
                    summary.silent_files.append(str(job.file.path))
                store.manifest.put_file(
                    path=str(job.file.path),
                    kind=job.file.kind,
                    size=job.file.size,
                    mtime_ns=job.file.mtime_ns,
                    digest=job.digest,
                    segments=segs,
                    replace_id=job.replace_id,
                )
                if job.action == "new":
                    summary.new += 1
                else:
                    summary.updated += 1
                summary.segments += len(segs)
                summary.audio_segments += sum(s.modality == "audio" for s in segs)
                summary.visual_segments += sum(s.modality == "visual" for s in segs)
                summary.media_seconds += max((s.end for s in segs), default=0.0)
        ready.clear()
        last_commit = time.monotonic()

    def take_cached(j: int) -> bool:
        """Queue the cached windows of job ``j`` for the heads; False when they are gone."""
        assert cache is not None
        try:
            windows = cache.get(jobs[j].digest, key)
        except sqlite3.Error as exc:
            log.warning("cannot read the feature cache %s (%s); decoding", cache.path, exc)
            windows = None
        if windows is None or any(w.silent is None for w in windows):
            return False
        waiting[j] = 0
        for w in windows:
            if w.silent:  # digital silence holds nothing to find: no audio vector
                silent[j] = silent.get(j, 0) + 1
                summary.silent_segments += 1
                continue
            waiting[j] += 1
            cached[w.modality].append((j, w))
            if len(cached[w.modality]) >= cfg.batch_size:
                flush(w.modality)
        decoded.add(j)
        if waiting[j] == 0:
            ready.append(j)
        report("file", {"path": str(jobs[j].file.path), "ok": True})
        return True

    def handle(kind: str, j: int, payload: Any) -> None:
        nonlocal finished
        if kind == _Decoder.PIECE:
            if j in failed:
                return
            if payload.silent:  # digital silence holds nothing to find: no audio vector
                silent[j] = silent.get(j, 0) + 1
                summary.silent_segments += 1
                if not writing:  # (its raw features still go to the cache)
                    return
            waiting[j] = waiting.get(j, 0) + 1
            pending[payload.modality].append((j, payload))
            if len(pending[payload.modality]) >= cfg.batch_size:
                flush(payload.modality)
        elif kind == _Decoder.DONE:
            decoded.add(j)
            finished += 1
            if waiting.get(j, 0) == 0:
                ready.append(j)
            report("file", {"path": str(jobs[j].file.path), "ok": True})
        else:
            failed.add(j)
            finished += 1
            segments.pop(j, None)
            features.pop(j, None)
            summary.failed += 1
            summary.failures.append(Failure(str(jobs[j].file.path), str(payload)))
            log.warning("skipping %s: %s", jobs[j].file.path, payload)
            report("file", {"path": str(jobs[j].file.path), "ok": False, "reason": payload})

    def maybe_commit() -> None:
        if len(ready) >= 256 or time.monotonic() - last_commit > cfg.commit_every:
            flush_all()
            commit()

    decoder.start()
    try:
        for j in from_cache:  # no decoding: the heads on cached features
            if take_cached(j):
                finished += 1
            else:
                decoder.add(j)
            while True:  # keep the decoder's queue moving meanwhile
                try:
                    handle(*decoder.out.get_nowait())
                except queue.Empty:
                    break
            maybe_commit()
        decoder.no_more()
        while finished < len(jobs):
            try:
                kind, j, payload = decoder.out.get(timeout=0.05)
            except queue.Empty:
                flush_all()
                if time.monotonic() - last_commit > cfg.commit_every:
                    commit()
                continue
            handle(kind, j, payload)
            maybe_commit()
        flush_all()
        commit()
    except KeyboardInterrupt:
        summary.interrupted = True
        decoder.close()
        try:
            flush_all()
            commit()
        finally:
            raise
    except AvsearchError:
        raise
    finally:
        decoder.close()
