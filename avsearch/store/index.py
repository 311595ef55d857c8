"""The index directory: manifest + per-modality FAISS files, opened together.

Layout of an index directory (default ``./.avsearch``)::

    manifest.sqlite      files, segments, vectors, schema version, model name + fingerprint,
                         window (samples, rate, shortest tail kept)
    audio.faiss          FAISS index of audio segment vectors in the heads' space (ids =
                         segment ids)
    visual.faiss         FAISS index of visual segment vectors in the heads' space
    native.audio.faiss   the same per further space of the model (``native``: the backbones'
    native.visual.faiss  own features, for same-modality search; ``bridge``: ImageNet groups,
    bridge.*.faiss       fused with the heads in cross-modal search), when the model has it
    vectors.json         per FAISS file: generation, count, dim, type, byte size, sha256
    embed.lock           the writer lock (see avsearch.store.lock)

A model's spaces are recorded in ``meta.spaces`` (JSON: per space its dimension per modality
and an id of what made its vectors); the FAISS files of a (space, modality) "slot" are kept
like the heads' ones, from the manifest's column of that space (``store.manifest``).

The manifest is the source of truth; the FAISS files are derived from it. A reader checks a FAISS
file against ``vectors.json`` (and that against the manifest) before using it; a stale,
mismatched or damaged file is rebuilt from one consistent read of the manifest, and saved only
when no writer holds the lock (else it stays in memory). ``sync_vectors`` (end of embed) does the
same and always saves, since the writer holds the lock; a file that is merely stale it updates
in place instead (new segment ids added, deleted ones removed or masked), see ``_update``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from avsearch.errors import (
    IndexCorruptError,
    ModelMismatchError,
    NoIndexError,
    SchemaError,
    UsageError,
    WindowMismatchError,
)
from avsearch.media.paths import display_path
from avsearch.media.segment import WindowSpec
from avsearch.store import vectors as vx
from avsearch.store.lock import WriterLock, writer_active
from avsearch.store.manifest import HEADS, SPACE_COLUMNS, Manifest

log = logging.getLogger(__name__)

MANIFEST = "manifest.sqlite"
SIDECAR = "vectors.json"
MODALITIES = ("audio", "visual")
SPACES = tuple(SPACE_COLUMNS)  # "heads", "native", "bridge"
SPACES_META = "spaces"  # meta key: the model's further spaces (see ModelStamp.spaces)
WINDOW_KEYS = ("window_samples", "window_rate", "window_min_tail")  # meta: the index's window


def slot_key(space: str, modality: str) -> str:
    """The name of a (space, modality) slot: its FAISS file is ``<key>.faiss`` and its record
    in vectors.json ``<key>``; the heads' slots keep the bare modality (``audio``)."""
    return modality if space == HEADS else f"{space}.{modality}"


def not_a_folder_error(root: Path) -> UsageError:
    """The index path names an existing file (or lies under one): say so, and what to do."""
    return UsageError(
        f"the index path {display_path(root)} is an existing file (or inside one), not a folder",
        hint="pass --index DIR (or set AVSEARCH_INDEX / `index:` in avsearch.yaml) to a folder; "
        "avsearch creates it if it does not exist",
    )


@dataclass
class SyncStats:
    """What ``sync_vectors`` did to one modality's FAISS file, and how long each phase took."""

    mode: str  # "unchanged" | "incremental" | "full"
    reason: str = ""  # why it was rebuilt (full), or ""
    factory: str = ""
    count: int = 0  # vectors now searchable
    added: int = 0
    removed: int = 0
    masked: int = 0  # removed vectors still in the file, masked (HNSW)
    read_s: float = 0.0  # reading the manifest (and, incremental, the FAISS file)
    update_s: float = 0.0  # building the index, or adding to / removing from it
    recall_s: float = 0.0  # measuring recall@10 after a full build
    save_s: float = 0.0  # serialising + writing + fsync + rename of the whole file
    bytes: int = 0  # of the file written

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Rebuild:
    """Why a FAISS file is rebuilt rather than updated in place."""

    reason: str
    damaged: bool = False  # a warning (the file was wrong), not routine


@dataclass(frozen=True)
class ModelStamp:
    name: str
    fingerprint: str
    dim: int
    ref: str = ""  # how to load the model again: a shipped model's name or a directory
    # further spaces: {"native": {"audio": 128, "visual": 128, "id": "..."}, "bridge": {...}}
    # (a modality's dimension, when the model has that space for it; "id" names what made the
    # vectors: another id means they must be made again)
    spaces: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def move_manifest_aside(root: Path) -> Path:
    """Rename a damaged ``manifest.sqlite`` (with its -wal/-shm files) to
    ``manifest.sqlite.damaged-<timestamp>``, and drop the FAISS files and sidecar derived from
    it; returns the new path. The next ``embed`` then starts a new manifest."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = root / f"{MANIFEST}.damaged-{stamp}"
    n = 1
    while aside.exists():
        n += 1
        aside = root / f"{MANIFEST}.damaged-{stamp}-{n}"
    for suffix in ("-wal", "-shm", ""):  # the database last: a -wal never outlives its file
        src = root / f"{MANIFEST}{suffix}"
        if src.exists():
            src.rename(aside.with_name(aside.name + suffix))
    for derived in (SIDECAR, *(f"{slot_key(s, m)}.faiss" for s in SPACES for m in MODALITIES)):
        (root / derived).unlink(missing_ok=True)
    return aside


class IndexStore:
    def __init__(self, root: Path, manifest: Manifest, lock: WriterLock | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self._lock = lock  # held by a store opened for writing (create_or_open)
        self._indexes: dict[str, faiss.Index] = {}
        self.last_sync: dict[str, SyncStats] = {}  # per modality, of the last sync_vectors

    # ------------------------------------------------------------------------------- opening
    @classmethod
    def create_or_open(cls, root: Path, model: ModelStamp, *, rebuild: bool = False) -> IndexStore:
        """For writing (embed). Refuses an index of another model unless ``rebuild``."""
        try:
            root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise not_a_folder_error(root) from exc
        except OSError as exc:
            raise UsageError(
                f"cannot create the index directory {display_path(root)}: {exc.strerror}",
                hint="pass --index DIR with a folder you can write to",
            ) from exc
        lock = WriterLock.acquire(root, "embed")  # held until close(); IndexBusyError if taken
        try:
            manifest = _open_for_writing(root, rebuild=rebuild)
        except BaseException:
            lock.release()
            raise
        store = cls(root, manifest, lock)
        try:
            stamp = store.model_stamp()
            if stamp is None or rebuild:
                with manifest.transaction():
                    if stamp is not None:
                        log.info(
                            "rebuilding: dropping %d files encoded with model %s",
                            manifest.file_count(),
                            stamp.name,
                        )
                        manifest.clear()
                    manifest.delete_meta(*WINDOW_KEYS)  # (the run records its own)
                    manifest.set_meta("model_name", model.name)
                    manifest.set_meta("model_fingerprint", model.fingerprint)
                    manifest.set_meta("dim", str(model.dim))
                    manifest.set_meta("model_ref", model.ref or model.name)
                    manifest.set_meta(SPACES_META, json.dumps(dict(model.spaces), sort_keys=True))
            elif stamp.fingerprint != model.fingerprint:
                raise ModelMismatchError(
                    root,
                    stamp.name,
                    model.name,
                    fingerprints=(stamp.fingerprint, model.fingerprint),
                )
            else:
                store._record_spaces(model.spaces)
            if not manifest.get_meta("index_id"):
                with manifest.transaction():
                    manifest.set_meta("index_id", uuid.uuid4().hex)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_existing(cls, root: Path) -> IndexStore:
        """For reading (query, eval, stats)."""
        if root.exists() and not root.is_dir():
            raise not_a_folder_error(root)
        path = root / MANIFEST
        if not path.exists():
            raise NoIndexError(root)
        manifest = Manifest(path)
        version = manifest.schema_version()
        if version == 0:
            manifest.close()
            raise NoIndexError(root)
        if version != 1:
            manifest.ensure_schema()  # raises for newer; migrates older
        store = cls(root, manifest)
        if store.model_stamp() is None:
            manifest.close()
            raise SchemaError(
                f"the index at {root} has no model recorded",
                hint="rebuild it with `avsearch embed PATH --rebuild`",
            )
        return store

    def close(self) -> None:
        self._indexes.clear()
        try:
            self.manifest.close()
        finally:
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def model_stamp(self) -> ModelStamp | None:
        name = self.manifest.get_meta("model_name")
        fp = self.manifest.get_meta("model_fingerprint")
        dim = self.manifest.get_meta("dim")
        if not (name and fp and dim):
            return None
        if not dim.isdigit():
            raise IndexCorruptError(
                f"{self.manifest.path} has an unreadable dim {dim!r} (meta.dim)"
            )
        return ModelStamp(
            name, fp, int(dim), self.manifest.get_meta("model_ref") or name, self._spaces_meta()
        )

    def _spaces_meta(self) -> dict[str, dict[str, Any]]:
        """``meta.spaces``; {} when absent (an index from before spaces) or unreadable."""
        raw = self.manifest.get_meta(SPACES_META)
        try:
            spaces = json.loads(raw) if raw else {}
        except ValueError:
            log.warning("%s: unreadable meta.spaces %r; ignored", self.manifest.path, raw)
            return {}
        if not isinstance(spaces, dict):
            return {}
        return {str(k): dict(v) for k, v in spaces.items() if isinstance(v, dict) and k in SPACES}

    def _record_spaces(self, spaces: Mapping[str, Mapping[str, Any]]) -> None:
        """Record the model's further spaces (writer, under the lock). A space whose
        dimensions or id changed loses its vectors (the next embed makes them again, from the
        feature cache) and its FAISS files."""
        have = self._spaces_meta()
        want = {k: dict(v) for k, v in spaces.items()}
        if have == want and self.manifest.get_meta(SPACES_META) is not None:
            return
        changed = [s for s in SPACES if s != HEADS and have.get(s) != want.get(s)]
        with self.manifest.transaction():
            cleared = sum(self.manifest.clear_space(s) for s in changed if have.get(s))
            self.manifest.set_meta(SPACES_META, json.dumps(want, sort_keys=True))
            if cleared:
                self.manifest.bump_generation()
        if not changed:
            return
        infos = vx.read_sidecar(self.root / SIDECAR)
        for space in changed:
            if have.get(space):
                log.info("the model's %s space changed: its vectors are made again", space)
            for modality in MODALITIES:
                self.faiss_path(modality, space).unlink(missing_ok=True)
                infos.pop(slot_key(space, modality), None)
        if (self.root / SIDECAR).exists():
            vx.write_sidecar(self.root / SIDECAR, infos)

    def slots(self) -> dict[tuple[str, str], int]:
        """The (space, modality) slots this index keeps vectors of, with their dimension: the
        heads' two, then those of the model's further spaces."""
        out = {(HEADS, m): self.dim for m in MODALITIES}
        for space, dims in self._spaces_meta().items():
            for modality in MODALITIES:
                dim = dims.get(modality)
                if isinstance(dim, int) and dim > 0 and self.manifest.has_space(space):
                    out[(space, modality)] = dim
        return out

    def slot_dim(self, modality: str, space: str = HEADS) -> int | None:
        """The dimension of a slot; None when the index keeps no vectors of it."""
        return self.slots().get((space, modality))

    @property
    def dim(self) -> int:
        stamp = self.model_stamp()
        assert stamp is not None
        return stamp.dim

    def window(self) -> WindowSpec | None:
        """The window the index's files were cut into; None when not recorded (an index from
        before windows were, or a new one before its first embed)."""
        raw = [self.manifest.get_meta(k) for k in WINDOW_KEYS]
        if None in raw:
            return None
        try:
            return WindowSpec(int(raw[0] or ""), int(raw[1] or ""), float(raw[2] or ""))
        except ValueError:
            raise IndexCorruptError(
                f"{self.manifest.path} has an unreadable window {raw!r} (meta.window_*)"
            ) from None

    def record_window(self, spec: WindowSpec) -> None:
        with self.manifest.transaction():
            for key, value in zip(
                WINDOW_KEYS, (spec.samples, spec.sample_rate, spec.min_tail), strict=True
            ):
                self.manifest.set_meta(key, str(value))

    def check_window(self, seconds: float | None, min_tail: float) -> WindowSpec:
        """The index's window, when a run asking for windows of ``seconds`` (None: the index's)
        and ``min_tail`` may add to it; else WindowMismatchError naming both."""
        have = self.window()
        assert have is not None
        samples = have.samples if seconds is None else round(seconds * have.sample_rate)
        if (samples, min_tail) != (have.samples, have.min_tail):
            wanted = WindowSpec(samples, have.sample_rate, min_tail)
            raise WindowMismatchError(self.root, have.describe(), wanted.describe(), wanted.seconds)
        return have

    # ------------------------------------------------------------------------------- vectors
    def faiss_path(self, modality: str, space: str = HEADS) -> Path:
        return self.root / f"{slot_key(space, modality)}.faiss"

    @property
    def index_id(self) -> str:
        """A random id of this manifest (so a sidecar left by another manifest never fits)."""
        return self.manifest.get_meta("index_id") or ""

    def record_problem(
        self, modality: str, info: vx.IndexInfo | None, generation: int, space: str = HEADS
    ) -> tuple[str, bool] | None:
        """Why a sidecar record does not describe this manifest state, as (reason, damaged):
        ``damaged`` is False for a stale record (an interrupted or running embed), True for a
        record that disagrees with the manifest it claims to describe."""
        if info is None:
            return "has no record in vectors.json", False
        if info.manifest_id != self.index_id:
            return "was built from another manifest", False
        if info.generation != generation:
            return (
                f"was built from generation {info.generation}; the manifest is at {generation}",
                False,
            )
        count = self.manifest.segment_count(modality, space)
        dim = self.slot_dim(modality, space)
        if info.count != count or info.dim != dim:
            return (
                f"disagrees with the manifest: vectors.json records {info.count} vectors of dim "
                f"{info.dim}, the manifest holds {count} of dim {dim}",
                True,
            )
        return None

    def vector_problem(
        self,
        modality: str,
        *,
        checksum: bool | None = None,
        load: bool = True,
        space: str = HEADS,
    ) -> tuple[str, bool] | None:
        """What keeps a slot's FAISS file from serving queries now, as (reason, damaged);
        None when it is up to date and checks out (see ``vx.verify_index_file``)."""
        with self.manifest.read_snapshot():
            info = vx.read_sidecar(self.root / SIDECAR).get(slot_key(space, modality))
            problem = self.record_problem(modality, info, self.manifest.generation, space)
            if problem is not None:
                return problem
            _, detail = vx.verify_index_file(
                self.faiss_path(modality, space), info, checksum=checksum, load=load
            )
            return None if detail is None else (detail, True)

    def sync_vectors(
        self, *, force: bool = False, checksum: bool | None = None
    ) -> dict[str, vx.IndexInfo]:
        """Bring each slot's FAISS file up to the manifest: a file that is only stale (the
        manifest moved on) is updated in place when this store holds the writer lock (``_update``:
        the segments added since are added, the deleted ones removed); one that is missing,
        damaged (size, and sha256 as ``vx.verify_index_file`` decides), disagrees with the
        manifest, or cannot be updated is rebuilt. ``force`` rebuilds every file.

        Read from one consistent read of the manifest. Saved when this store holds the writer
        lock or can take it; else kept in memory for this store's searches. Raises
        IndexCorruptError when the manifest holds a vector that cannot enter FAISS (NaN/inf).
        What was done is in ``last_sync`` (keyed by slot: ``audio``, ``native.audio``...)."""
        sidecar = self.root / SIDECAR
        built: dict[str, tuple[faiss.Index, vx.IndexInfo]] = {}
        self.last_sync = {}
        with self.manifest.read_snapshot():
            infos = vx.read_sidecar(sidecar)
            generation = self.manifest.generation
            for space, modality in self.slots():
                key = slot_key(space, modality)
                path = self.faiss_path(modality, space)
                info = infos.get(key)
                reason = "forced"
                if not force:
                    problem = self.record_problem(modality, info, generation, space)
                    if problem is None:
                        _, detail = vx.verify_index_file(path, info, checksum=checksum, load=False)
                        if detail is None:
                            assert info is not None
                            self.last_sync[key] = SyncStats(
                                "unchanged", factory=info.factory, count=info.count
                            )
                            continue
                        problem = (detail, True)
                    if not problem[1] and self._owns_lock():
                        updated = self._update(modality, info, generation, checksum, space)
                        if isinstance(updated, Rebuild):
                            problem = (updated.reason, updated.damaged)
                        else:
                            built[key] = updated
                            continue
                    self._log_rebuild(path, *problem)
                    reason = problem[0]
                built[key] = self._build(modality, generation, space)
                self.last_sync[key].reason = reason
        for key, (index, _) in built.items():
            self._indexes[key] = index
        dropped = self._drop_inactive(infos)
        if built or dropped:
            saved = self._save(built, infos, dropped)
            if saved is not None:
                infos = saved
                if self._owns_lock():
                    self._prune_deletions(infos)
        return infos

    def _drop_inactive(self, infos: dict[str, vx.IndexInfo]) -> list[str]:
        """Records (and, under the writer lock, files) of slots this index no longer keeps: a
        space the model does not have (any more)."""
        active = {slot_key(s, m) for s, m in self.slots()}
        gone = [k for k in infos if k not in active]
        if self._owns_lock():
            for space in SPACES:
                for modality in MODALITIES:
                    if slot_key(space, modality) not in active:
                        self.faiss_path(modality, space).unlink(missing_ok=True)
        return gone

    def _owns_lock(self) -> bool:
        return self._lock is not None and self._lock.held

    def _update(
        self,
        modality: str,
        info: vx.IndexInfo | None,
        generation: int,
        checksum: bool | None,
        space: str = HEADS,
    ) -> tuple[faiss.Index, vx.IndexInfo] | Rebuild:
        """Update a stale FAISS file in place (inside the caller's read snapshot, under the
        writer lock): remove the segment ids deleted since its generation (``deleted_segments``)
        and add the ids above its largest one (ids are never reused, so those are exactly the
        segments added since; a row changed in place is removed and added again).

        Returns (index, record), or why the file must be rebuilt instead (``Rebuild``): no
        record of this manifest, the deletion log does not reach back to its generation, the
        count calls for another index type (``choose_index_spec``), the file fails its check,
        an HNSW file would hold more than ``vx.COMPACT_DELETED_SHARE`` masked vectors (it is
        compacted by the rebuild), or the result does not hold exactly as many vectors as the
        manifest (a safety net: it never should)."""
        path = self.faiss_path(modality, space)
        dim = self.slot_dim(modality, space) or 0
        if info is None or info.manifest_id != self.index_id or info.dim != dim:
            return Rebuild("has no record of this manifest in vectors.json")
        logged_from = self.manifest.deletions_logged_from()
        if logged_from is None or info.generation < logged_from:
            return Rebuild(
                f"was built at generation {info.generation}, before the manifest logged deleted "
                "segments"
            )
        count = self.manifest.segment_count(modality, space)
        spec = vx.choose_index_spec(count, dim)
        if spec.factory != info.factory:
            return Rebuild(f"is {info.factory}; {count} vectors call for {spec.factory}")
        t0 = time.perf_counter()
        index, detail = vx.verify_index_file(path, info, checksum=checksum, writable=True)
        if index is None:
            return Rebuild(detail or "is unreadable", damaged=True)
        removed_ids = self.manifest.deleted_since(modality, info.generation)
        changed_ids, changed = self.manifest.changed_vectors(
            modality, dim, since=info.generation, up_to_id=info.max_id, space=space
        )
        ids, vecs = self.manifest.vectors(modality, dim, after_id=info.max_id, space=space)
        t1 = time.perf_counter()
        try:
            removed = vx.remove_ids(index, removed_ids) - len(changed_ids)
            vx.add_vectors(index, changed_ids, changed)  # (rows changed in place: never by us)
            vx.add_vectors(index, ids, vecs)
        except RuntimeError as exc:
            return Rebuild(f"could not be updated in place ({vx.faiss_error_text(exc)})")
        masked = vx.masked_count(index)
        t2 = time.perf_counter()
        live = index.ntotal - masked
        if live != count:
            return Rebuild(
                f"held {live} vectors after an update in place, the manifest {count}", damaged=True
            )
        if vx.needs_compaction(masked, index.ntotal):
            return Rebuild(
                f"would mask {masked} removed vectors of {index.ntotal} (over "
                f"{vx.COMPACT_DELETED_SHARE:.0%}); compacting"
            )
        log.info(
            "%s: updated in place (+%d, -%d segments, %d masked)", path, len(ids), removed, masked
        )
        self.last_sync[slot_key(space, modality)] = SyncStats(
            "incremental",
            factory=info.factory,
            count=count,
            added=len(ids),
            removed=removed,
            masked=masked,
            read_s=t1 - t0,
            update_s=t2 - t1,
        )
        new_info = replace(
            info,
            generation=generation,
            count=count,
            max_id=max(info.max_id, int(ids[-1]) if len(ids) else -1),
            masked=masked,
            bytes=-1,
            sha256="",
        )
        return index, new_info

    def _prune_deletions(self, infos: dict[str, vx.IndexInfo]) -> None:
        """Forget logged deletions every FAISS file has already left out."""
        keys = [slot_key(s, m) for s, m in self.slots()]
        generations = [infos[k].generation for k in keys if k in infos]
        if generations:
            try:
                self.manifest.prune_deleted(min(generations))
            except sqlite3.OperationalError as exc:  # (only a log: next time then)
                log.info("could not prune the deleted-segments log: %s", exc)

    def index_for(self, modality: str, space: str = HEADS) -> faiss.Index:
        """The FAISS index of a slot, checked (size, count, dim) against vectors.json and that
        against the manifest; rebuilt from the manifest when stale, damaged or missing.
        UsageError when the index keeps no vectors of that space."""
        key = slot_key(space, modality)
        if key in self._indexes:
            return self._indexes[key]
        if self.slot_dim(modality, space) is None:
            raise UsageError(f"the index at {self.root} holds no {space} {modality} vectors")
        path = self.faiss_path(modality, space)
        with self.manifest.read_snapshot():
            generation = self.manifest.generation
            infos = vx.read_sidecar(self.root / SIDECAR)
            info = infos.get(key)
            problem = self.record_problem(modality, info, generation, space)
            if problem is None:
                index, detail = vx.verify_index_file(path, info)
                if index is not None:
                    self._indexes[key] = index
                    return index
                problem = (detail or "is unreadable", True)
            self._log_rebuild(path, *problem)
            built = self._build(modality, generation, space)
        self._indexes[key] = built[0]
        self._save({key: built}, infos)
        return built[0]

    def _log_rebuild(self, path: Path, reason: str, damaged: bool) -> None:
        if damaged and not (self._lock is None and writer_active(self.root)):
            log.warning("%s %s; rebuilding it from the manifest", path, reason)
        else:  # stale, or a writer is replacing it right now: routine
            log.info("%s %s; rebuilding it from the manifest", path, reason)

    def _build(
        self, modality: str, generation: int, space: str = HEADS
    ) -> tuple[faiss.Index, vx.IndexInfo]:
        """A FAISS index of the manifest's vectors of a slot (inside the caller's read
        snapshot), its search breadth tuned to the recall@10 target on a sample of them
        (``vx.tune_search``; exact search: 1.0 without measuring)."""
        t0 = time.perf_counter()
        dim = self.slot_dim(modality, space) or 0
        # IndexCorruptError for NaN/inf
        ids, vecs = self.manifest.vectors(modality, dim, space=space)
        spec = vx.choose_index_spec(len(ids), dim)
        t1 = time.perf_counter()
        try:
            index = vx.build_index(ids, vecs, spec)
        except RuntimeError as exc:
            raise IndexCorruptError(
                f"cannot build the {modality} vector index from {self.manifest.path}: "
                f"{vx.faiss_error_text(exc)}"
            ) from exc
        t2 = time.perf_counter()
        tuned = vx.tune_search(index, ids, vecs, spec)  # (exact search: 1.0, not measured)
        t3 = time.perf_counter()
        info = vx.IndexInfo(
            generation,
            len(ids),
            dim,
            spec.kind,
            spec.factory,
            manifest_id=self.index_id,
            max_id=int(ids[-1]) if len(ids) else -1,
            nprobe=tuned.nprobe,
            ef_search=tuned.ef_search,
            recall=round(tuned.recall, 4),
            recall_queries=tuned.queries,
            built_count=len(ids),
        )
        self.last_sync[slot_key(space, modality)] = SyncStats(
            "full",
            factory=spec.factory,
            count=len(ids),
            read_s=t1 - t0,
            update_s=t2 - t1,
            recall_s=t3 - t2,
        )
        return index, info

    def _save(
        self,
        built: dict[str, tuple[faiss.Index, vx.IndexInfo]],
        seen: dict[str, vx.IndexInfo],
        dropped: list[str] | None = None,
    ) -> dict[str, vx.IndexInfo] | None:
        """Save rebuilt indexes (by slot key) and their sidecar records under the writer lock,
        leaving out the records of ``dropped`` slots; the new sidecar records, or None when they
        stay in memory (a writer is running, read-only dir). A record another process replaced
        since ``seen`` was read is left alone."""
        own = self._lock is not None and self._lock.held
        lock = self._lock if own else WriterLock.try_acquire(self.root, "query")
        if lock is None:
            log.info("a writer holds %s; the rebuilt vector index is kept in memory", self.root)
            return None
        sidecar = self.root / SIDECAR
        try:
            infos = vx.read_sidecar(sidecar)
            for key in dropped or ():
                if own:
                    infos.pop(key, None)
            for key, (index, info) in built.items():
                if not own and infos.get(key) != seen.get(key):
                    continue  # someone saved a newer one meanwhile
                t0 = time.perf_counter()
                path = self.root / f"{key}.faiss"
                size, digest = vx.save_index(index, path)
                mtime = path.stat().st_mtime_ns
                infos[key] = replace(info, bytes=size, sha256=digest, mtime_ns=mtime)
                if key in self.last_sync:
                    self.last_sync[key].save_s = time.perf_counter() - t0
                    self.last_sync[key].bytes = size
            vx.write_sidecar(sidecar, infos)
            return infos
        except OSError as exc:
            log.info(
                "cannot save the rebuilt vector index in %s (%s); kept in memory", self.root, exc
            )
            return None
        finally:
            if not own:
                lock.release()

    def search(
        self, modality: str, queries: np.ndarray, k: int, space: str = HEADS
    ) -> tuple[np.ndarray, np.ndarray]:
        return vx.search(self.index_for(modality, space), queries, k)


def _open_for_writing(root: Path, *, rebuild: bool) -> Manifest:
    """The manifest, schema ensured. A damaged one is refused (IndexCorruptError), never
    overwritten, unless ``rebuild``: then it is moved aside and a new one started."""
    path = root / MANIFEST
    manifest: Manifest | None = None
    try:
        manifest = Manifest(path)
        manifest.ensure_schema()
        return manifest
    except IndexCorruptError as exc:
        if manifest is not None:
            manifest.close()
        if not rebuild:
            raise
        aside = move_manifest_aside(root)
        log.warning("%s; --rebuild: moved it aside to %s, starting a new index", exc.message, aside)
    manifest = Manifest(path)
    manifest.ensure_schema()
    return manifest
