"""SQLite manifest: files, segments (with their vectors), schema version and model fingerprint.

The manifest is the source of truth. A file and all its segments are written in one transaction,
so an interrupted run leaves every file either fully indexed or absent; the FAISS files beside it
are derived data, rebuilt from here whenever the manifest's ``generation`` moved on.
Segment ids come from AUTOINCREMENT, so an id is never reused and FAISS ids stay valid.
Every deleted segment is logged in ``deleted_segments`` (by triggers, so in the deleting
transaction, whichever statement deleted it, cascades included; a row changed in place, which
avsearch itself never does, is logged too) with the generation it happened at: the writer
updates a FAISS file in place from those ids and the ids above the file's largest (see
``IndexStore.sync_vectors``).

Vector spaces (schema 3): besides its heads vector (``vector``, the model's shared cross-modal
space), a segment may hold one vector per further space of the model, each in a column of its
own (:data:`SPACE_COLUMNS`): ``native`` (the backbone's own features, centred and reduced: what
same-modality search ranks in) and ``bridge`` (ImageNet groups, the zero-shot route fused with
the heads in cross-modal search). NULL means the segment has none (the model has no such space,
or the index predates it: ``embed`` then re-encodes the file, from the feature cache when it
holds it). The FAISS files of a space use the same segment ids, so the deletion log serves
every space.

Paths: a file name that is valid UTF-8 is stored as TEXT; any other (POSIX names are bytes) as
the BLOB of its ``os.fsencode`` bytes, in the same column (SQLite types values, not columns),
and read back with ``os.fsdecode``. Callers see ``str`` paths either way (see
:func:`path_to_db`, :func:`path_from_db`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from avsearch.errors import IndexCorruptError, SchemaError

SCHEMA_VERSION = 3

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL,
    indexed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_hash ON files(hash);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    modality TEXT NOT NULL CHECK (modality IN ('audio', 'visual')),
    idx INTEGER NOT NULL,
    start REAL NOT NULL,
    "end" REAL NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_file ON segments(file_id);
CREATE INDEX IF NOT EXISTS segments_modality ON segments(modality, id);
"""

# 2: the log of deleted segment ids, for updating FAISS files in place. A deletion is logged with
# the generation it happened at (the writer bumps it after deleting, in the same transaction), so
# a FAISS file built at generation G may hold exactly the ids logged at G or later that it must
# not. A row changed in place (vector, modality or id; avsearch never does it) is logged under
# its old and new modality and id: it is taken out and added again. An index migrated to 2
# logged nothing before: `deletions_logged_from` says from which generation on the log is
# complete (FAISS files older than that are rebuilt).
_GENERATION = "COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation'), 0)"
_SCHEMA_V2 = f"""
CREATE TABLE IF NOT EXISTS deleted_segments (
    modality TEXT NOT NULL,
    id INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (modality, id)
);
CREATE INDEX IF NOT EXISTS deleted_segments_generation
    ON deleted_segments(modality, generation);
CREATE TRIGGER IF NOT EXISTS segments_deleted AFTER DELETE ON segments BEGIN
    INSERT OR REPLACE INTO deleted_segments(modality, id, generation)
        VALUES (old.modality, old.id, {_GENERATION});
END;
CREATE TRIGGER IF NOT EXISTS segments_changed AFTER UPDATE OF id, modality, vector ON segments
BEGIN
    INSERT OR REPLACE INTO deleted_segments(modality, id, generation)
        VALUES (old.modality, old.id, {_GENERATION});
    INSERT OR REPLACE INTO deleted_segments(modality, id, generation)
        VALUES (new.modality, new.id, {_GENERATION});
END;
INSERT OR REPLACE INTO meta(key, value) SELECT
    'deletions_logged_from', COALESCE((SELECT value FROM meta WHERE key = 'generation'), '0');
"""

# 3: a column per further vector space of the model (see the module docstring); NULL for the
# rows already there. Idempotent (a column already there is kept), like the statements above.
HEADS = "heads"
SPACE_COLUMNS: dict[str, str] = {HEADS: "vector", "native": "native", "bridge": "bridge"}


def _migrate_v3(conn: sqlite3.Connection) -> None:
    have = {str(r[1]) for r in conn.execute("PRAGMA table_info(segments)")}
    for space, column in SPACE_COLUMNS.items():
        if space != HEADS and column not in have:
            conn.execute(f"ALTER TABLE segments ADD COLUMN {column} BLOB")
        if space != HEADS:  # (partial: tiny once every segment holds the space; files_lacking)
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS segments_no_{column} ON segments(modality, file_id) "
                f"WHERE {column} IS NULL"
            )


# version -> statements (or a function) upgrading from version-1 (rclip's ensure_version, step
# by step)
MIGRATIONS: dict[int, str | Callable[[sqlite3.Connection], None]] = {
    1: _SCHEMA_V1,
    2: _SCHEMA_V2,
    3: _migrate_v3,
}


def sql_statements(script: str) -> list[str]:
    """The complete statements of ``script`` (a trigger's body holds ``;`` of its own)."""
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending.strip())
            pending = ""
    if pending.strip(" \n;"):
        out.append(pending.strip())
    return out


class FileRow(TypedDict):
    id: int
    path: str
    kind: str
    size: int
    mtime_ns: int
    hash: str


@dataclass(frozen=True)
class SegmentRow:
    id: int
    file_id: int
    path: str
    modality: str
    idx: int
    start: float
    end: float


@dataclass(frozen=True)
class NewSegment:
    modality: str
    idx: int
    start: float
    end: float
    vector: np.ndarray  # in the heads' space
    spaces: Mapping[str, np.ndarray] = field(default_factory=dict)  # further spaces: "native"...


def path_to_db(path: str) -> str | bytes:
    """How a path is stored: TEXT when it is valid UTF-8, else the BLOB of its bytes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def path_from_db(value: str | bytes) -> str:
    """The ``str`` path of a stored value (a BLOB comes back with surrogate escapes)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _column(space: str) -> str:
    """The segments column of a space (ValueError for an unknown one: never in SQL)."""
    try:
        return SPACE_COLUMNS[space]
    except KeyError:
        raise ValueError(f"unknown vector space {space!r}") from None


def _blob(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _file_row(r: sqlite3.Row) -> FileRow:
    return FileRow(
        id=r["id"],
        path=path_from_db(r["path"]),
        kind=r["kind"],
        size=r["size"],
        mtime_ns=r["mtime_ns"],
        hash=r["hash"],
    )


def _segment_row(r: sqlite3.Row) -> SegmentRow:
    return SegmentRow(int(r[0]), int(r[1]), path_from_db(r[2]), r[3], int(r[4]), r[5], r[6])


MANIFEST_DAMAGED_HINT = (
    "run `avsearch index repair` (it salvages what SQLite can still read, or moves the file "
    "aside), or start over with `avsearch embed PATH --rebuild`"
)


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """SQLite's "file is not a database" and "database disk image is malformed" (not a lock, a
    constraint, a full disk or a programming error)."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    text = str(exc).lower()
    return (
        name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
        or type(exc) is sqlite3.DatabaseError
        # damaged bytes inside a TEXT cell, or a damaged header field (found by fuzzing)
        or text.startswith(("could not decode to utf-8", "unsupported file format"))
    )


def damaged_error(path: Path, exc: BaseException) -> IndexCorruptError:
    return IndexCorruptError(
        f"{path} is not a SQLite database or is damaged: {exc}", hint=MANIFEST_DAMAGED_HINT
    )


def _reraise(path: Path, exc: sqlite3.DatabaseError) -> None:
    if is_corruption(exc):
        raise damaged_error(path, exc) from exc
    raise exc


class GuardedCursor(sqlite3.Cursor):
    """A cursor whose reads raise IndexCorruptError naming the file when SQLite finds damage
    (try/except, so the common path costs nothing: rows are iterated through ``__next__``)."""

    db_path: Path

    def execute(self, sql: str, parameters: Any = (), /) -> GuardedCursor:
        try:
            super().execute(sql, parameters)
        except sqlite3.DatabaseError as exc:
            _reraise(self.db_path, exc)
        return self

    def executemany(self, sql: str, seq: Any, /) -> GuardedCursor:
        try:
            super().executemany(sql, seq)
        except sqlite3.DatabaseError as exc:
            _reraise(self.db_path, exc)
        return self

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.DatabaseError as exc:
            _reraise(self.db_path, exc)
            raise

    def fetchmany(self, size: int | None = None) -> list[Any]:
        try:
            return super().fetchmany(self.arraysize if size is None else size)
        except sqlite3.DatabaseError as exc:
            _reraise(self.db_path, exc)
            raise

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.DatabaseError as exc:
            _reraise(self.db_path, exc)
            raise

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.DatabaseError as exc:
            _reraise(self.db_path, exc)
            raise


class GuardedConnection(sqlite3.Connection):
    """``execute``/``executemany`` go through a GuardedCursor (see ``connect``)."""

    db_path: Path

    def execute(self, sql: str, parameters: Any = (), /) -> GuardedCursor:
        cur = self.cursor(GuardedCursor)
        cur.db_path = self.db_path
        return cur.execute(sql, parameters)

    def executemany(self, sql: str, seq: Any, /) -> GuardedCursor:
        cur = self.cursor(GuardedCursor)
        cur.db_path = self.db_path
        return cur.executemany(sql, seq)


def connect(path: Path) -> GuardedConnection:
    """A connection whose "not a database"/"malformed" errors are IndexCorruptError."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0, factory=GuardedConnection)
    conn.db_path = path
    return conn


class Manifest:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = connect(path)
        try:
            self.conn.execute("PRAGMA foreign_keys = ON")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            self.conn.close()
            raise
        self.conn.row_factory = sqlite3.Row
        self._in_tx = False
        self._in_read = False
        self._columns: frozenset[str] | None = None  # of segments, read once (has_space)

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------------------- schema
    def schema_version(self) -> int:
        has_meta = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if not has_meta:
            return 0
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            return 0
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            version = -1
        if version < 0:
            raise IndexCorruptError(
                f"{self.path} has an unreadable schema version {row[0]!r} (meta.schema_version)"
            )
        return version

    def ensure_schema(self) -> None:
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise SchemaError(
                f"the index at {self.path.parent} has schema version {current}, newer than this "
                f"avsearch supports ({SCHEMA_VERSION})",
                hint="upgrade avsearch, or use another --index directory",
            )
        with self.transaction():
            for version in range(current + 1, SCHEMA_VERSION + 1):
                step = MIGRATIONS[version]
                if callable(step):
                    step(self.conn)
                else:
                    for statement in sql_statements(step):
                        self.conn.execute(statement)
                self.set_meta("schema_version", str(version))
        self._columns = None

    # ------------------------------------------------------------------------------- meta
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def delete_meta(self, *keys: str) -> None:
        self.conn.executemany("DELETE FROM meta WHERE key=?", [(k,) for k in keys])

    @property
    def generation(self) -> int:
        raw = self.get_meta("generation")
        try:
            return int(raw or 0)
        except ValueError:
            raise IndexCorruptError(
                f"{self.path} has an unreadable generation {raw!r} (meta.generation)"
            ) from None

    def bump_generation(self) -> None:
        self.set_meta("generation", str(self.generation + 1))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._in_tx:
            yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
        finally:
            self._in_tx = False

    @contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """Reads inside see one committed state of the manifest (a deferred read transaction),
        whatever a concurrent writer commits meanwhile. Nested in a transaction it is that one."""
        if self._in_tx or self._in_read:
            yield
            return
        self.conn.execute("BEGIN")
        self._in_read = True
        try:
            yield
        finally:
            self._in_read = False
            self.conn.execute("COMMIT")

    # ------------------------------------------------------------------------------- files
    def files_under(self, roots: Iterable[Path]) -> dict[str, FileRow]:
        out: dict[str, FileRow] = {}
        for root in roots:
            # compared as bytes, so TEXT and BLOB (non-UTF-8) paths both match
            root_b = os.fsencode(root)
            prefix = root_b.rstrip(b"/") + b"/"
            rows = self.conn.execute(
                "SELECT id, path, kind, size, mtime_ns, hash FROM files "
                "WHERE CAST(path AS BLOB) = ? OR substr(CAST(path AS BLOB), 1, ?) = ?",
                (root_b, len(prefix), prefix),
            )
            for r in rows:
                row = _file_row(r)
                out[row["path"]] = row
        return out

    def files_by_hash(self, digest: str) -> list[FileRow]:
        rows = self.conn.execute(
            "SELECT id, path, kind, size, mtime_ns, hash FROM files WHERE hash = ?", (digest,)
        )
        return [_file_row(r) for r in rows]

    def file_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM files").fetchone()[0])

    def put_file(
        self,
        *,
        path: str,
        kind: str,
        size: int,
        mtime_ns: int,
        digest: str,
        segments: list[NewSegment],
        replace_id: int | None = None,
    ) -> int:
        """Insert (or replace) a file with all its segments, in the current transaction."""
        with self.transaction():
            if replace_id is not None:
                self.conn.execute("DELETE FROM files WHERE id = ?", (replace_id,))
            stored = path_to_db(path)
            self.conn.execute("DELETE FROM files WHERE path = ?", (stored,))
            cur = self.conn.execute(
                "INSERT INTO files(path, kind, size, mtime_ns, hash, indexed_at) "
                "VALUES(?, ?, ?, ?, ?, ?)",
                (stored, kind, size, mtime_ns, digest, time.time()),
            )
            file_id = int(cur.lastrowid or 0)
            extra = [sp for sp in SPACE_COLUMNS if sp != HEADS and self.has_space(sp)]
            columns = ", ".join(SPACE_COLUMNS[sp] for sp in (HEADS, *extra))
            marks = ", ".join("?" * (6 + len(extra)))
            self.conn.executemany(
                f'INSERT INTO segments(file_id, modality, idx, start, "end", {columns}) '
                f"VALUES({marks})",
                [
                    (
                        file_id,
                        s.modality,
                        s.idx,
                        s.start,
                        s.end,
                        _blob(s.vector),
                        *(_blob(s.spaces.get(sp)) for sp in extra),
                    )
                    for s in segments
                ],
            )
            self.bump_generation()
        return file_id

    def move_file(self, file_id: int, new_path: str, size: int, mtime_ns: int) -> None:
        stored = path_to_db(new_path)
        with self.transaction():
            self.conn.execute("DELETE FROM files WHERE path = ? AND id != ?", (stored, file_id))
            self.conn.execute(
                "UPDATE files SET path = ?, size = ?, mtime_ns = ? WHERE id = ?",
                (stored, size, mtime_ns, file_id),
            )
            self.bump_generation()

    def touch_file(self, file_id: int, mtime_ns: int) -> None:
        self.conn.execute("UPDATE files SET mtime_ns = ? WHERE id = ?", (mtime_ns, file_id))

    def remove_files(self, file_ids: Iterable[int]) -> int:
        ids = list(file_ids)
        if not ids:
            return 0
        with self.transaction():
            self.conn.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in ids])
            self.bump_generation()
        return len(ids)

    def clear(self) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM segments")
            self.conn.execute("DELETE FROM files")
            self.bump_generation()

    # ------------------------------------------------------------------------------- segments
    def has_space(self, space: str) -> bool:
        """Whether the segments table has the column of ``space`` (an index of schema 1 or 2
        read without migrating has none but the heads')."""
        if space == HEADS:
            return True
        if self._columns is None:
            rows = self.conn.execute("PRAGMA table_info(segments)").fetchall()
            self._columns = frozenset(str(r[1]) for r in rows)
        return _column(space) in self._columns  # (ValueError for an unknown space)

    def segment_count(self, modality: str | None = None, space: str = HEADS) -> int:
        """Segments (of ``modality``) holding a vector of ``space`` (every segment holds one
        of the heads')."""
        if not self.has_space(space):
            return 0
        if modality is None:
            if space != HEADS:
                return sum(self.segment_count(m, space) for m in ("audio", "visual"))
            return int(self.conn.execute("SELECT count(*) FROM segments").fetchone()[0])
        total = int(
            self.conn.execute(
                "SELECT count(*) FROM segments WHERE modality = ?", (modality,)
            ).fetchone()[0]
        )
        if space == HEADS:
            return total
        # all but those lacking it: counted on the partial index segments_no_<column>, which
        # holds only them (counting the holders would read every row's vector)
        lacking = self.conn.execute(
            f"SELECT count(*) FROM segments WHERE modality = ? AND {_column(space)} IS NULL",
            (modality,),
        ).fetchone()[0]
        return total - int(lacking)

    def vectors(
        self, modality: str, dim: int, *, after_id: int | None = None, space: str = HEADS
    ) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors) of one modality in ``space``, ordered by id (only ids above
        ``after_id``, if given; only segments holding a vector of that space).

        Raises IndexCorruptError when a stored vector is not ``dim`` float32 values or holds NaN
        or inf: such a row must never reach FAISS or an evaluation (``avsearch index repair``
        drops it and marks its file to be re-encoded)."""
        if not self.has_space(space):
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        col = _column(space)
        rows = self.conn.execute(
            f"SELECT id, {col}, file_id FROM segments WHERE modality = ? AND id > ? "
            f"AND {col} IS NOT NULL ORDER BY id",
            (modality, -1 if after_id is None else after_id),
        ).fetchall()
        return self._checked_vectors(rows, modality, dim, space)

    def vectors_by_ids(
        self, ids: Iterable[int], dim: int, space: str = HEADS
    ) -> dict[int, np.ndarray]:
        """The ``space`` vectors of the segments ``ids`` that hold one (unchecked: for scoring
        search candidates, which FAISS already holds checked)."""
        if not self.has_space(space):
            return {}
        col = _column(space)
        id_list = [int(i) for i in ids]
        out: dict[int, np.ndarray] = {}
        for start in range(0, len(id_list), 500):
            chunk = id_list[start : start + 500]
            rows = self.conn.execute(
                f"SELECT id, {col} FROM segments WHERE id IN ({','.join('?' * len(chunk))}) "
                f"AND {col} IS NOT NULL",
                chunk,
            )
            for r in rows:
                if isinstance(r[1], bytes) and len(r[1]) == 4 * dim:
                    out[int(r[0])] = np.frombuffer(r[1], dtype=np.float32)
        return out

    def changed_vectors(
        self, modality: str, dim: int, *, since: int, up_to_id: int, space: str = HEADS
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the segments of ``modality`` with ids up to ``up_to_id`` that were
        changed in place at generation ``since`` or later (in ``deleted_segments`` yet still
        here), ordered by id; checked as ``vectors`` checks."""
        if not self.has_space(space):
            return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        col = _column(space)
        rows = self.conn.execute(
            f"SELECT id, {col}, file_id FROM segments WHERE modality = ? AND id <= ? "
            f"AND {col} IS NOT NULL AND id IN "
            "(SELECT id FROM deleted_segments WHERE modality = ? AND generation >= ?) "
            "ORDER BY id",
            (modality, up_to_id, modality, since),
        ).fetchall()
        return self._checked_vectors(rows, modality, dim, space)

    def files_lacking(self, slots: Iterable[tuple[str, str]]) -> set[int]:
        """Ids of the files with a segment of one of ``slots`` ((space, modality) pairs) that
        holds no vector of that space (the model gained a space, or the index predates it)."""
        out: set[int] = set()
        for space, modality in slots:
            if space == HEADS:
                continue
            held = f" AND {_column(space)} IS NULL" if self.has_space(space) else ""
            rows = self.conn.execute(
                f"SELECT DISTINCT file_id FROM segments WHERE modality = ?{held}", (modality,)
            )  # (on the partial index segments_no_<column>: instant when none lacks it)
            out.update(int(r[0]) for r in rows)
        return out

    def clear_space(self, space: str) -> int:
        """Drop every vector of ``space`` (its vectors were made otherwise: the model's space
        changed); returns how many. The caller bumps the generation."""
        if space == HEADS or not self.has_space(space):
            return 0
        col = _column(space)
        cur = self.conn.execute(f"UPDATE segments SET {col} = NULL WHERE {col} IS NOT NULL")
        return int(cur.rowcount or 0)

    def _checked_vectors(
        self, rows: list[Any], modality: str, dim: int, space: str = HEADS
    ) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return ids, np.zeros((0, dim), dtype=np.float32)
        width = 4 * dim
        wrong = {r[2] for r in rows if not isinstance(r[1], bytes) or len(r[1]) != width}
        if wrong:
            n = sum(1 for r in rows if not isinstance(r[1], bytes) or len(r[1]) != width)
            where = "" if space == HEADS else f" of the {space} space"
            raise IndexCorruptError(
                f"{self.path} holds {n} {modality} vector(s){where} that are not {dim} float32 "
                f"values (in {len(wrong)} file(s)); they cannot be searched",
                hint="run `avsearch index repair`: it drops those segments and marks their "
                "files to be re-encoded by the next `avsearch embed`",
            )
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(-1, dim)
        finite = np.isfinite(vecs).all(axis=1)
        if not finite.all():
            files = {rows[i][2] for i in np.flatnonzero(~finite)}
            where = "" if space == HEADS else f" of the {space} space"
            raise IndexCorruptError(
                f"{self.path} holds {int((~finite).sum())} {modality} vector(s){where} with NaN "
                f"or infinite values (in {len(files)} file(s)); they cannot be searched",
                hint="run `avsearch index repair`: it drops those segments and marks their "
                "files to be re-encoded by the next `avsearch embed`",
            )
        return ids, vecs.copy()

    def deletions_logged_from(self) -> int | None:
        """The generation from which on every deleted segment is in ``deleted_segments``; None
        when deletions are not logged (the trigger is missing, the marker unreadable)."""
        triggers = self.conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' "
            "AND name IN ('segments_deleted', 'segments_changed')"
        ).fetchone()[0]
        raw = self.get_meta("deletions_logged_from")
        if triggers != 2 or raw is None or not raw.isdigit():
            return None
        return int(raw)

    def reset_deletion_log(self) -> None:
        """Empty the log and start it anew at the current generation (FAISS files built before
        are then rebuilt rather than updated): for ``index repair`` after it reset the schema
        version or the generation."""
        with self.transaction():
            self.conn.execute("DELETE FROM deleted_segments")
            self.set_meta("deletions_logged_from", str(self.generation))

    def deleted_since(self, modality: str, generation: int) -> np.ndarray:
        """Ids of the segments of ``modality`` deleted (or changed) at ``generation`` or later,
        sorted: those a FAISS file built at that generation may hold and must not (as they
        were)."""
        rows = self.conn.execute(
            "SELECT id FROM deleted_segments WHERE modality = ? AND generation >= ? ORDER BY id",
            (modality, generation),
        )
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def prune_deleted(self, before_generation: int) -> int:
        """Forget deletions logged before ``before_generation`` (every FAISS file is at least
        that new, so none holds them); returns how many. Does not bump the generation."""
        with self.transaction():
            cur = self.conn.execute(
                "DELETE FROM deleted_segments WHERE generation < ?", (before_generation,)
            )
        return int(cur.rowcount or 0)

    def segments_by_ids(self, ids: Iterable[int]) -> dict[int, SegmentRow]:
        id_list = [int(i) for i in ids]
        out: dict[int, SegmentRow] = {}
        for chunk_start in range(0, len(id_list), 500):
            chunk = id_list[chunk_start : chunk_start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f'SELECT s.id, s.file_id, f.path, s.modality, s.idx, s.start, s."end" '
                f"FROM segments s JOIN files f ON f.id = s.file_id WHERE s.id IN ({marks})",
                chunk,
            )
            for r in rows:
                out[int(r[0])] = _segment_row(r)
        return out

    def labelled_segments(self) -> list[SegmentRow]:
        rows = self.conn.execute(
            'SELECT s.id, s.file_id, f.path, s.modality, s.idx, s.start, s."end" '
            "FROM segments s JOIN files f ON f.id = s.file_id ORDER BY s.id"
        )
        return [_segment_row(r) for r in rows]
