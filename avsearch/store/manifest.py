"""SQLite manifest: files, segments (with their vectors), schema version and model fingerprint.

The manifest is the source of truth. A file and all its segments are written in one transaction,
so an interrupted run leaves every file either fully indexed or absent; the FAISS files beside it
are derived data, rebuilt from here whenever the manifest's ``generation`` moved on.
Segment ids come from AUTOINCREMENT, so an id is never reused and FAISS ids stay valid.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np

from avsearch.errors import SchemaError

SCHEMA_VERSION = 1

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

# version -> statements upgrading from version-1 (rclip's ensure_version, step by step)
MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1}


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
    vector: np.ndarray


class Manifest:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.row_factory = sqlite3.Row
        self._in_tx = False

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
        return int(row[0]) if row else 0

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
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.set_meta("schema_version", str(version))

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

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

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

    # ------------------------------------------------------------------------------- files
    def files_under(self, roots: Iterable[Path]) -> dict[str, FileRow]:
        out: dict[str, FileRow] = {}
        for root in roots:
            root_s = str(root)
            prefix = root_s.rstrip("/") + "/"
            rows = self.conn.execute(
                "SELECT id, path, kind, size, mtime_ns, hash FROM files "
                "WHERE path = ? OR substr(path, 1, ?) = ?",
                (root_s, len(prefix), prefix),
            )
            for r in rows:
                out[r["path"]] = FileRow(**dict(r))  # type: ignore[typeddict-item]
        return out

    def files_by_hash(self, digest: str) -> list[FileRow]:
        rows = self.conn.execute(
            "SELECT id, path, kind, size, mtime_ns, hash FROM files WHERE hash = ?", (digest,)
        )
        return [FileRow(**dict(r)) for r in rows]  # type: ignore[typeddict-item]

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
            self.conn.execute("DELETE FROM files WHERE path = ?", (path,))
            cur = self.conn.execute(
                "INSERT INTO files(path, kind, size, mtime_ns, hash, indexed_at) "
                "VALUES(?, ?, ?, ?, ?, ?)",
                (path, kind, size, mtime_ns, digest, time.time()),
            )
            file_id = int(cur.lastrowid or 0)
            self.conn.executemany(
                'INSERT INTO segments(file_id, modality, idx, start, "end", vector) '
                "VALUES(?, ?, ?, ?, ?, ?)",
                [
                    (
                        file_id,
                        s.modality,
                        s.idx,
                        s.start,
                        s.end,
                        np.ascontiguousarray(s.vector, dtype=np.float32).tobytes(),
                    )
                    for s in segments
                ],
            )
            self.bump_generation()
        return file_id

    def move_file(self, file_id: int, new_path: str, size: int, mtime_ns: int) -> None:
        with self.transaction():
            self.conn.execute("DELETE FROM files WHERE path = ? AND id != ?", (new_path, file_id))
            self.conn.execute(
                "UPDATE files SET path = ?, size = ?, mtime_ns = ? WHERE id = ?",
                (new_path, size, mtime_ns, file_id),
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
    def segment_count(self, modality: str | None = None) -> int:
        if modality is None:
            return int(self.conn.execute("SELECT count(*) FROM segments").fetchone()[0])
        return int(
            self.conn.execute(
                "SELECT count(*) FROM segments WHERE modality = ?", (modality,)
            ).fetchone()[0]
        )

    def vectors(self, modality: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors) of one modality, ordered by id."""
        rows = self.conn.execute(
            "SELECT id, vector FROM segments WHERE modality = ? ORDER BY id", (modality,)
        ).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return ids, np.zeros((0, dim), dtype=np.float32)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(-1, dim)
        return ids, vecs.copy()

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
                out[int(r[0])] = SegmentRow(*r)
        return out

    def labelled_segments(self) -> list[SegmentRow]:
        rows = self.conn.execute(
            'SELECT s.id, s.file_id, f.path, s.modality, s.idx, s.start, s."end" '
            "FROM segments s JOIN files f ON f.id = s.file_id ORDER BY s.id"
        )
        return [SegmentRow(*r) for r in rows]
