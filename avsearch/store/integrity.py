"""``avsearch index check`` and ``avsearch index repair``: find and fix damage in an index dir.

``check_index`` reads everything and reports every problem it finds (it never writes):

- ``manifest.sqlite``: opens at all, ``PRAGMA quick_check``, ``PRAGMA foreign_key_check``, a
  readable schema version this avsearch supports, a model recorded, a readable generation, and
  every stored vector of every space the index keeps (heads, and the model's ``native`` and
  ``bridge`` ones): its dimension in float32 values, all finite;
- ``vectors.json``: present, of the current format, each record agreeing with the manifest
  (same manifest id and generation, same count and dim);
- each ``*.faiss`` file (one per space and modality): size, sha256, readable by FAISS, count
  (plus the removed vectors an HNSW file still masks) and dim as recorded, and the very segment
  ids the manifest holds in that space (masked ones left out; also after updates in place);
- ``features.sqlite`` (when present): ``quick_check`` and its schema version.

``repair_index`` takes the writer lock and rebuilds what can be rebuilt from the manifest (the
source of truth): the FAISS files and sidecar; it drops segment rows whose vector is non-finite
or malformed (never a file row: those files are marked so the next ``embed`` re-encodes them);
it re-creates a damaged feature cache (it is only a cache); it salvages a manifest that SQLite
opens but finds damaged (every row it can still read, scanning each table forwards and then
backwards from the end up to the damage), and moves a manifest SQLite cannot open at all aside
(``manifest.sqlite.damaged-<timestamp>``): only a new ``embed`` can re-create that one.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from avsearch.errors import IndexCorruptError, NoIndexError
from avsearch.store import vectors as vx
from avsearch.store.features import FeatureCache, discard_cache, features_problem
from avsearch.store.index import (
    MANIFEST,
    MODALITIES,
    SIDECAR,
    IndexStore,
    move_manifest_aside,
    slot_key,
)
from avsearch.store.lock import WriterLock, writer_active
from avsearch.store.manifest import HEADS, SCHEMA_VERSION, SPACE_COLUMNS, Manifest

FEATURES = "features.sqlite"
REENCODE = {"size": -1, "mtime_ns": -1, "hash": ""}  # a file row the next embed re-encodes
_FILES_COLUMNS = ("id", "path", "kind", "size", "mtime_ns", "hash", "indexed_at")
_SEGMENT_COLUMNS = (
    "id",
    "file_id",
    "modality",
    "idx",
    "start",
    '"end"',
    "vector",
    "native",
    "bridge",
)
_SPACE_ONLY_COLUMNS = ("native", "bridge")  # NULL when a manifest of an older schema lacks them


@dataclass(frozen=True)
class Problem:
    what: str  # a short name of the kind of problem
    file: str  # the file of the index directory it is in
    detail: str  # what exactly is wrong
    repairable: bool  # `avsearch index repair` fixes it (without re-running embed on everything)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.file}: {self.what}: {self.detail}"


@dataclass
class IntegrityReport:
    index: Path
    problems: list[Problem] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # what was checked and found fine
    notes: list[str] = field(default_factory=list)  # worth knowing, not a problem
    writer_active: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "index": str(self.index),
            "problems": [p.to_json() for p in self.problems],
            "checked": list(self.checked),
            "notes": list(self.notes),
            "writer_active": self.writer_active,
        }


@dataclass
class RepairReport:
    index: Path
    before: IntegrityReport
    actions: list[str] = field(default_factory=list)
    reencode_files: int = 0  # files the next embed re-encodes
    needs_embed: bool = False  # the manifest was moved aside: only `embed` re-creates it
    after: IntegrityReport | None = None

    @property
    def ok(self) -> bool:
        return not self.needs_embed and (self.after is None or self.after.ok)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "index": str(self.index),
            "problems_found": [p.to_json() for p in self.before.problems],
            "actions": list(self.actions),
            "reencode_files": self.reencode_files,
            "needs_embed": self.needs_embed,
            "remaining": [] if self.after is None else [p.to_json() for p in self.after.problems],
        }


# ------------------------------------------------------------------------------------- check
def check_index(root: Path, *, _writer: bool | None = None) -> IntegrityReport:
    """Every problem of the index directory ``root`` (NoIndexError when there is no index)."""
    if not (root / MANIFEST).is_file():
        raise NoIndexError(root)
    report = IntegrityReport(
        root, writer_active=writer_active(root) if _writer is None else _writer
    )
    manifest = _check_manifest(root, report)
    if manifest is not None:
        try:
            _check_vector_files(root, manifest, report)
        except IndexCorruptError as exc:  # a damaged page met while reading
            _add_once(report, Problem("manifest damaged", MANIFEST, exc.message, True))
        finally:
            manifest.close()
    features = root / FEATURES
    if features.exists():
        problem = features_problem(features)
        if problem:
            report.problems.append(
                Problem("feature cache", FEATURES, f"{FEATURES} {problem}", True)
            )
        else:
            report.checked.append(f"{FEATURES}: quick_check ok, schema version ok")
    leftovers = _leftover_temp_files(root)
    if leftovers and not report.writer_active:
        report.notes.append(
            f"{len(leftovers)} temp file(s) left by an interrupted write "
            f"({', '.join(p.name for p in leftovers[:3])}); `avsearch index repair` removes them"
        )
    for aside in sorted(root.glob(f"{MANIFEST}.damaged-*")):
        if not aside.name.endswith(("-wal", "-shm")):
            report.notes.append(f"{aside.name} is a damaged manifest moved aside earlier")
    if report.writer_active:
        report.notes.append(
            "an `avsearch embed` is writing to this index: vector indexes behind the manifest "
            "are expected until it finishes"
        )
    return report


def _add_once(report: IntegrityReport, problem: Problem) -> None:
    if not any(p.what == problem.what and p.file == problem.file for p in report.problems):
        report.problems.append(problem)


def _check_manifest(root: Path, report: IntegrityReport) -> Manifest | None:
    """Checks of manifest.sqlite; the open Manifest when the rest can be checked, else None."""
    path = root / MANIFEST
    try:
        manifest = Manifest(path)
    except IndexCorruptError as exc:
        report.problems.append(
            Problem(
                "manifest unreadable",
                MANIFEST,
                f"{exc.message}; nothing else holds the file list and vectors: `avsearch index "
                "repair` moves it aside, then `avsearch embed PATH` must run again",
                False,
            )
        )
        return None
    try:
        rows = [str(r[0]) for r in manifest.conn.execute("PRAGMA quick_check").fetchall()]
        if rows != ["ok"]:
            lines = [
                line
                for row in rows
                for line in row.splitlines()
                if line.strip() and not line.startswith("***")
            ]
            more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
            report.problems.append(
                Problem(
                    "manifest damaged",
                    MANIFEST,
                    "SQLite quick_check: " + "; ".join(lines[:3]) + more + "; `avsearch index "
                    "repair` salvages every row SQLite can still read",
                    True,
                )
            )
        else:
            report.checked.append(f"{MANIFEST}: quick_check ok")
        orphans = manifest.conn.execute("PRAGMA foreign_key_check(segments)").fetchall()
        if orphans:
            report.problems.append(
                Problem(
                    "orphan segments",
                    MANIFEST,
                    f"{len(orphans)} segment(s) belong to no file",
                    True,
                )
            )
        if not _check_schema_and_meta(manifest, report):
            manifest.close()
            return None
        _check_stored_vectors(manifest, report)
    except IndexCorruptError as exc:
        _add_once(
            report,
            Problem("manifest damaged", MANIFEST, f"{exc.message}; repair salvages it", True),
        )
        manifest.close()
        return None
    return manifest


def _tables_are_current(manifest: Manifest) -> bool:
    """Whether the manifest's tables have exactly the columns of the current schema."""
    want = {
        "meta": ["key", "value"],
        "files": list(_FILES_COLUMNS),
        "segments": [c.strip('"') for c in _SEGMENT_COLUMNS],
    }
    for table, columns in want.items():
        have = [str(r[1]) for r in manifest.conn.execute(f"PRAGMA table_info({table})")]
        if have != columns:
            return False
    return True


def _check_schema_and_meta(manifest: Manifest, report: IntegrityReport) -> bool:
    """Schema version, model and generation; False when nothing further can be checked."""
    try:
        version = manifest.schema_version()
    except IndexCorruptError as exc:
        fits = _tables_are_current(manifest)
        tail = (
            f"; its tables are those of schema {SCHEMA_VERSION}, so repair sets it"
            if fits
            else "; its tables are not those of this avsearch's schema"
        )
        report.problems.append(Problem("schema version", MANIFEST, exc.message + tail, fits))
        if not fits:
            return False
        version = SCHEMA_VERSION
    if version == 0:
        report.problems.append(
            Problem(
                "schema version",
                MANIFEST,
                f"{manifest.path} records no schema version: not an avsearch index, or damaged",
                False,
            )
        )
        return False
    if version > SCHEMA_VERSION:
        report.problems.append(
            Problem(
                "schema version",
                MANIFEST,
                f"schema version {version} is newer than this avsearch supports "
                f"({SCHEMA_VERSION}): upgrade avsearch",
                False,
            )
        )
        return False
    report.checked.append(f"{MANIFEST}: schema version {version}")
    try:
        stamp = IndexStore(manifest.path.parent, manifest).model_stamp()
    except IndexCorruptError as exc:
        stamp = None
        report.problems.append(Problem("model", MANIFEST, exc.message, False))
    if stamp is None:
        if not any(p.what == "model" for p in report.problems):
            report.problems.append(
                Problem(
                    "model",
                    MANIFEST,
                    "no model recorded: re-create the index with `avsearch embed PATH --rebuild`",
                    False,
                )
            )
        return False
    try:
        manifest.generation  # noqa: B018 - reading it is the check
    except IndexCorruptError as exc:
        report.problems.append(Problem("generation", MANIFEST, exc.message, True))
    return True


@dataclass
class _BadVectors:
    segment_ids: list[int] = field(default_factory=list)
    file_ids: set[int] = field(default_factory=set)
    nonfinite: dict[str, int] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)


def _scan_vectors(
    manifest: Manifest, slots: dict[tuple[str, str], int]
) -> tuple[_BadVectors, dict[str, int]]:
    """The segments with a malformed or non-finite vector in any space of ``slots`` ((space,
    modality) -> dim; a space's vector may be NULL, the heads' may not), and the count per
    modality. A problem in a further space is named ``modality (space)``."""
    bad = _BadVectors()
    counts = {m: 0 for m in MODALITIES}
    spaces = [HEADS, *sorted({s for s, _ in slots if s != HEADS})]
    columns = ", ".join(SPACE_COLUMNS[sp] for sp in spaces)
    cur = manifest.conn.execute(f"SELECT id, file_id, modality, {columns} FROM segments")
    while rows := cur.fetchmany(4096):
        for k, space in enumerate(spaces):
            good: list[tuple[int, int, str, bytes]] = []
            for row in rows:
                sid, fid, modality, blob = row[0], row[1], row[2], row[3 + k]
                if k == 0:
                    counts[modality] = counts.get(modality, 0) + 1
                dim = slots.get((space, modality))
                if dim is None or (space != HEADS and blob is None):
                    continue
                name = modality if space == HEADS else f"{modality} ({space})"
                if isinstance(blob, bytes) and len(blob) == 4 * dim:
                    good.append((sid, fid, name, blob))
                else:
                    bad.segment_ids.append(int(sid))
                    bad.file_ids.add(int(fid))
                    bad.malformed[name] = bad.malformed.get(name, 0) + 1
            by_dim: dict[int, list[tuple[int, int, str, bytes]]] = {}
            for g in good:
                by_dim.setdefault(len(g[3]) // 4, []).append(g)
            for dim, group in by_dim.items():
                raw = b"".join(g[3] for g in group)
                vecs = np.frombuffer(raw, dtype=np.float32).reshape(-1, dim)
                for i in np.flatnonzero(~np.isfinite(vecs).all(axis=1)):
                    sid, fid, name, _ = group[int(i)]
                    bad.segment_ids.append(int(sid))
                    bad.file_ids.add(int(fid))
                    bad.nonfinite[name] = bad.nonfinite.get(name, 0) + 1
    bad.segment_ids = sorted(set(bad.segment_ids))
    return bad, counts


def _check_stored_vectors(manifest: Manifest, report: IntegrityReport) -> None:
    store = IndexStore(manifest.path.parent, manifest)
    dim = store.dim
    with manifest.read_snapshot():
        bad, counts = _scan_vectors(manifest, store.slots())
    for label, per in (("non-finite vectors", bad.nonfinite), ("malformed vectors", bad.malformed)):
        if per:
            what = (
                "NaN or infinite values"
                if per is bad.nonfinite
                else "not their space's dimension in float32 values"
            )
            parts = ", ".join(f"{n} {m}" for m, n in sorted(per.items()))
            report.problems.append(
                Problem(
                    label,
                    MANIFEST,
                    f"{parts} segment vector(s) hold {what}; repair drops those segments and "
                    "marks their files to be re-encoded by the next `avsearch embed`",
                    True,
                )
            )
    if bad.file_ids:
        report.notes.append(f"{len(bad.file_ids)} file(s) have segments with bad vectors")
    spaces = sorted({s for s, _ in store.slots() if s != HEADS})
    report.checked.append(
        f"{MANIFEST}: {counts.get('audio', 0)} audio and {counts.get('visual', 0)} visual vectors "
        f"of dim {dim} read" + (f" (and their {', '.join(spaces)} vectors)" if spaces else "")
    )


def _check_vector_files(root: Path, manifest: Manifest, report: IntegrityReport) -> None:
    store = IndexStore(root, manifest)
    sidecar_problem = vx.sidecar_problem(root / SIDECAR)
    has_segments = manifest.segment_count() > 0
    if sidecar_problem is not None:
        if sidecar_problem == "missing" and not has_segments and not _any_faiss(root):
            report.checked.append("no vector index yet (the index holds no segment)")
            return
        report.problems.append(
            Problem(
                "vector index record",
                SIDECAR,
                f"{SIDECAR} is {sidecar_problem}; repair rebuilds the FAISS files and it "
                "from the manifest (as query and embed would)",
                True,
            )
        )
        return
    try:
        generation = manifest.generation
    except IndexCorruptError:
        return  # reported with the manifest; repair resets it and rebuilds these files
    infos = vx.read_sidecar(root / SIDECAR)
    for space, modality in store.slots():
        key = slot_key(space, modality)
        name = f"{key}.faiss"
        with manifest.read_snapshot():
            record = store.record_problem(modality, infos.get(key), generation, space)
            if record is not None:
                reason, damaged = record
                if not damaged and report.writer_active:
                    report.notes.append(f"{name} {reason} (an embed is running)")
                    continue
                report.problems.append(
                    Problem(
                        "vector index disagrees with the manifest"
                        if damaged
                        else "stale vector index",
                        name,
                        f"{name} {reason}; repair (or the next query) rebuilds it from the "
                        "manifest",
                        True,
                    )
                )
                continue
            index, detail = vx.verify_index_file(
                store.faiss_path(modality, space), infos[key], checksum=True
            )
            if index is None:
                report.problems.append(
                    Problem(
                        "vector index damaged",
                        name,
                        f"{name} {detail}; repair rebuilds it from the manifest",
                        True,
                    )
                )
                continue
            ids = vx.index_ids(index)  # (IDMap or IVF; masked ones left out)
            if ids is not None:
                held = "" if space == HEADS else f" AND {SPACE_COLUMNS[space]} IS NOT NULL"
                want = np.fromiter(
                    (
                        r[0]
                        for r in manifest.conn.execute(
                            f"SELECT id FROM segments WHERE modality = ?{held} ORDER BY id",
                            (modality,),
                        )
                    ),
                    dtype=np.int64,
                )
                if not np.array_equal(np.sort(ids), want):
                    missing = len(np.setdiff1d(want, ids))
                    extra = len(np.setdiff1d(ids, want))
                    report.problems.append(
                        Problem(
                            "vector index disagrees with the manifest",
                            name,
                            f"{name} lacks {missing} segment id(s) of the manifest and holds "
                            f"{extra} it does not have; repair rebuilds it",
                            True,
                        )
                    )
                    continue
            masked = infos[key].masked
            report.checked.append(
                f"{name}: {index.ntotal - masked} vectors"
                + (f" (+{masked} removed, masked)" if masked else "")
                + ", size and sha256 as recorded, ids as in the manifest"
            )


def _any_faiss(root: Path) -> bool:
    return any(root.glob("*.faiss"))


def _leftover_temp_files(root: Path) -> list[Path]:
    return sorted(
        p
        for pattern in (".*.faiss.*.tmp", f".{SIDECAR}.*.tmp", f".{MANIFEST}.salvage-*")
        for p in root.glob(pattern)
    )


# ------------------------------------------------------------------------------------ repair
def repair_index(root: Path) -> RepairReport:
    """Fix what ``check_index`` finds, as far as it can be fixed (see the module docstring).

    Raises NoIndexError when there is no index, IndexBusyError while an embed is running."""
    if not (root / MANIFEST).is_file():
        raise NoIndexError(root)
    with WriterLock.acquire(root, "repair") as lock:
        before = check_index(root, _writer=False)
        rep = RepairReport(root, before)
        for tmp in _leftover_temp_files(root):
            tmp.unlink(missing_ok=True)
            rep.actions.append(f"removed {tmp.name}, left by an interrupted write")
        kinds = {p.what for p in before.problems if p.file == MANIFEST}
        if "manifest unreadable" in kinds:
            aside = move_manifest_aside(root)
            rep.needs_embed = True
            rep.actions.append(
                f"moved the unreadable {MANIFEST} aside to {aside.name} (with the vector "
                "indexes derived from it): nothing else holds the file list and the vectors, so "
                "run `avsearch embed PATH` again to re-create the index"
            )
        elif "manifest damaged" in kinds and not _salvage_manifest(root, rep):
            rep.needs_embed = True
        if not rep.needs_embed:
            _repair_manifest_rows(root, rep, before, lock)
        _repair_features(root, rep, before)
        if rep.needs_embed:
            return rep
        rep.after = check_index(root, _writer=False)
        return rep


def _repair_manifest_rows(
    root: Path, rep: RepairReport, before: IntegrityReport, lock: WriterLock
) -> None:
    """Meta values, orphan and bad segment rows, then the FAISS files and sidecar."""
    manifest = Manifest(root / MANIFEST)
    try:
        kinds = {p.what for p in before.problems}
        schema_fixable = any(p.what == "schema version" and p.repairable for p in before.problems)
        if schema_fixable:
            with manifest.transaction():  # 1, the tables checked; the migrations are idempotent
                manifest.set_meta("schema_version", "1")
            manifest.ensure_schema()
            rep.actions.append(f"set the unreadable schema version to {SCHEMA_VERSION}")
        try:
            if manifest.schema_version() < SCHEMA_VERSION:
                manifest.ensure_schema()  # (an older index: migrated, as embed would)
        except IndexCorruptError:
            return  # not fixable: reported as remaining
        store = IndexStore(root, manifest, lock)
        if store.model_stamp() is None:
            return
        if "generation" in kinds:
            with manifest.transaction():
                manifest.set_meta("generation", "1")
            rep.actions.append("reset the unreadable generation (the vector indexes are rebuilt)")
        if "generation" in kinds or schema_fixable:
            manifest.reset_deletion_log()  # its generations meant another count
        orphans = manifest.conn.execute(
            "SELECT count(*) FROM segments WHERE file_id NOT IN (SELECT id FROM files)"
        ).fetchone()[0]
        changed = False
        if orphans:
            with manifest.transaction():
                manifest.conn.execute(
                    "DELETE FROM segments WHERE file_id NOT IN (SELECT id FROM files)"
                )
                manifest.bump_generation()
            rep.actions.append(f"dropped {orphans} segment(s) that belonged to no file")
            changed = True
        with manifest.read_snapshot():
            bad, _ = _scan_vectors(manifest, store.slots())
        if bad.segment_ids:
            with manifest.transaction():
                _drop_segments(manifest, bad.segment_ids)
                _mark_reencode(manifest, bad.file_ids)
                manifest.bump_generation()
            rep.reencode_files += len(bad.file_ids)
            rep.actions.append(
                f"dropped {len(bad.segment_ids)} segment(s) whose vector was non-finite or "
                f"malformed; {len(bad.file_ids)} file(s) will be re-encoded by the next "
                "`avsearch embed`"
            )
            changed = True
        vector_problem = any(
            p.file == SIDECAR or p.file.endswith(".faiss") for p in before.problems
        )
        force = changed or vector_problem or bool(kinds & {"generation", "schema version"})
        infos = store.sync_vectors(force=force, checksum=True)
        if force:
            keys = [slot_key(sp, m) for sp, m in store.slots()]
            counts = ", ".join(f"{k}.faiss ({infos[k].count} vectors)" for k in keys if k in infos)
            rep.actions.append(f"rebuilt {counts} and {SIDECAR} from the manifest")
    finally:
        manifest.close()  # (not store.close(): the caller releases the lock)


def _drop_segments(manifest: Manifest, segment_ids: list[int]) -> None:
    for i in range(0, len(segment_ids), 500):
        chunk = segment_ids[i : i + 500]
        manifest.conn.execute(
            f"DELETE FROM segments WHERE id IN ({','.join('?' * len(chunk))})", chunk
        )


def _mark_reencode(manifest: Manifest, file_ids: set[int]) -> None:
    """Make the next embed re-encode these files: a size and hash no file has."""
    manifest.conn.executemany(
        "UPDATE files SET size = ?, mtime_ns = ?, hash = ? WHERE id = ?",
        [(REENCODE["size"], REENCODE["mtime_ns"], REENCODE["hash"], fid) for fid in file_ids],
    )


def _repair_features(root: Path, rep: RepairReport, before: IntegrityReport) -> None:
    if not any(p.file == FEATURES for p in before.problems):
        return
    path = root / FEATURES
    discard_cache(path)
    FeatureCache(path).close()
    rep.actions.append(
        f"re-created {FEATURES} empty (it is only a cache of backbone features; "
        "`avsearch train` fills it again)"
    )


# ---------------------------------------------------------------------------------- salvage
def _read_table(
    conn: sqlite3.Connection, table: str, columns: tuple[str, ...]
) -> tuple[list[tuple[Any, ...]], tuple[int, int] | None]:
    """Every row SQLite can still read, by rowid: forwards until the damage, then backwards from
    the end until it; and the rowid gap (last good before, first good after) when damage was met.
    """
    sql = f"SELECT rowid, {', '.join(columns)} FROM {table} ORDER BY rowid"
    rows: dict[int, tuple[Any, ...]] = {}
    try:
        for r in conn.execute(sql):
            rows[int(r[0])] = tuple(r[1:])
        return list(rows.values()), None
    except sqlite3.DatabaseError:
        pass
    before = max(rows, default=0)
    after = before
    try:
        for r in conn.execute(sql + " DESC"):
            if int(r[0]) in rows:
                break
            rows[int(r[0])] = tuple(r[1:])
            after = int(r[0])
    except sqlite3.DatabaseError:
        pass
    return [rows[k] for k in sorted(rows)], (before, after)


def _salvage_manifest(root: Path, rep: RepairReport) -> bool:
    """Copy every readable row of a damaged manifest into a new one and put it in place (the
    damaged one is moved aside). False when nothing usable could be read."""
    src = root / MANIFEST
    dst = root / f".{MANIFEST}.salvage-{time.strftime('%Y%m%dT%H%M%S')}"
    for suffix in ("", "-wal", "-shm"):
        dst.with_name(dst.name + suffix).unlink(missing_ok=True)
    try:
        old = sqlite3.connect(f"file:{quote(str(src))}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error:
        return _give_up_salvage(root, rep, dst, "SQLite cannot open it")
    try:
        meta, _ = _read_table(old, "meta", ("key", "value"))
        files, files_gap = _read_table(old, "files", _FILES_COLUMNS)
        segments, seg_gap = _read_table(old, "segments", _present_columns(old))
        try:
            seq = old.execute("SELECT seq FROM sqlite_sequence WHERE name='segments'").fetchone()
        except sqlite3.DatabaseError:
            seq = None
    except sqlite3.DatabaseError as exc:
        old.close()
        return _give_up_salvage(root, rep, dst, str(exc))
    old.close()
    values = {str(k): str(v) for k, v in meta}
    if not (values.get("model_name") and values.get("model_fingerprint") and values.get("dim")):
        return _give_up_salvage(root, rep, dst, "its model record could not be read")
    new = Manifest(dst)
    try:
        new.ensure_schema()
        file_ids = {int(f[0]) for f in files}
        kept = [s for s in segments if int(s[1]) in file_ids]
        suspect: set[int] = set()
        if seg_gap is not None:  # a file's segments have consecutive ids: the gap's neighbours
            by_id = {int(s[0]): int(s[1]) for s in segments}
            suspect |= {by_id[i] for i in seg_gap if i in by_id}
            with_segments = {int(s[1]) for s in kept}
            suspect |= file_ids - with_segments  # (a silent file is merely re-encoded)
        with new.transaction():
            for key, value in values.items():
                if key not in ("schema_version", "generation"):
                    new.set_meta(key, value)
            generation = values.get("generation", "0")
            new.set_meta("generation", str(int(generation) + 1 if generation.isdigit() else 1))
            new.conn.executemany(
                f"INSERT INTO files({', '.join(_FILES_COLUMNS)}) VALUES(?, ?, ?, ?, ?, ?, ?)",
                files,
            )
            new.conn.executemany(
                f"INSERT INTO segments({', '.join(_SEGMENT_COLUMNS)}) "
                f"VALUES({', '.join('?' * len(_SEGMENT_COLUMNS))})",
                kept,
            )
            if seq is not None and str(seq[0]).isdigit():
                new.conn.execute(
                    "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'segments'",
                    (int(seq[0]),),
                )
            _mark_reencode(new, suspect)
        new.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        new.conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        new.close()
    aside = move_manifest_aside(root)
    dst.rename(src)
    for suffix in ("-wal", "-shm"):
        dst.with_name(dst.name + suffix).unlink(missing_ok=True)
    lost = []
    if files_gap is not None:
        lost.append(f"file rows with rowids {files_gap[0] + 1}..{files_gap[1] - 1}")
    if seg_gap is not None:
        lost.append(f"segment rows with ids in {seg_gap[0] + 1}..{seg_gap[1] - 1}")
    dropped = len(segments) - len(kept)
    rep.reencode_files += len(suspect)
    rep.actions.append(
        f"salvaged the damaged {MANIFEST} into a new one ({len(files)} files, {len(kept)} "
        f"segments read back"
        + (f"; unreadable: {', '.join(lost)}" if lost else "")
        + (f"; dropped {dropped} segment(s) of lost files" if dropped else "")
        + f"); the damaged file is kept as {aside.name}"
        + (
            f"; {len(suspect)} file(s) that may have lost segments will be re-encoded by the "
            "next `avsearch embed`"
            if suspect
            else ""
        )
        + (
            "; files whose rows were lost are re-encoded as new by the next embed"
            if files_gap
            else ""
        )
    )
    return True


def _present_columns(conn: sqlite3.Connection) -> tuple[str, ...]:
    """The segment columns to read from a manifest being salvaged: those of the current schema,
    a further space's column it lacks (an older schema) read as NULL."""
    try:
        have = {str(r[1]) for r in conn.execute("PRAGMA table_info(segments)")}
    except sqlite3.DatabaseError:
        have = set()
    return tuple(
        f"NULL AS {c}" if c in _SPACE_ONLY_COLUMNS and have and c not in have else c
        for c in _SEGMENT_COLUMNS
    )


def _give_up_salvage(root: Path, rep: RepairReport, dst: Path, why: str) -> bool:
    for suffix in ("", "-wal", "-shm"):
        dst.with_name(dst.name + suffix).unlink(missing_ok=True)
    aside = move_manifest_aside(root)
    rep.actions.append(
        f"could not salvage {MANIFEST} ({why}); moved it aside to {aside.name}: run "
        "`avsearch embed PATH` again to re-create the index"
    )
    return False
