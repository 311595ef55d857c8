"""Backbone feature cache: per file content hash, backbone and window, the raw backbone features
of every window. It lives in the index directory (``features.sqlite``), so a second training
run on the same folder decodes nothing, a moved file keeps its features, and ``embed`` with a
retrained model (same backbones, new heads) only applies the heads. ``train`` and ``embed``
both write it.

Each window keeps its ``silent`` flag (digital silence: ``embed`` gives it no audio vector), so
``embed`` reproduces a file's segments exactly from the cache. Schema 2 added that column;
a schema-1 cache is upgraded in place, its windows' flag unknown (NULL): ``embed`` decodes such
a file again (and re-writes its entry), training uses it as it is.

It records its schema version in a ``meta`` table (``FEATURES_SCHEMA_VERSION``). A cache that
SQLite cannot read, or one with no or another schema version, is only a cache: it is discarded
and re-created empty (with a warning), and ``avsearch index check`` reports it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

log = logging.getLogger(__name__)

FEATURES_DB = "features.sqlite"  # its name in an index directory
FEATURES_SCHEMA_VERSION = 2
UPGRADABLE_VERSIONS = ("1",)  # upgraded in place when opened (see the module docstring)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS features (
    hash TEXT NOT NULL,
    backbone TEXT NOT NULL,
    modality TEXT NOT NULL,
    idx INTEGER NOT NULL,
    start REAL NOT NULL,
    "end" REAL NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    silent INTEGER,
    PRIMARY KEY (hash, backbone, modality, idx)
);
CREATE TABLE IF NOT EXISTS done (hash TEXT NOT NULL, backbone TEXT NOT NULL,
                                 PRIMARY KEY (hash, backbone));
"""


@dataclass(frozen=True)
class CachedWindow:
    modality: str
    idx: int
    start: float
    end: float
    vector: np.ndarray
    silent: bool | None = False  # digital silence (audio); None: unknown (a schema-1 entry)


class FeatureCache:
    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:  # the index path is a file
            from avsearch.store.index import not_a_folder_error

            raise not_a_folder_error(path.parent) from exc
        self.path = path
        try:
            self.conn = _open(path)
        except _Unusable as why:
            log.warning("%s %s; it is only a cache, so it is re-created empty", path, why)
            discard_cache(path)
            self.conn = _open(path)

    def close(self) -> None:
        self.conn.close()

    def get(self, digest: str, backbone: str) -> list[CachedWindow] | None:
        """The windows of a file, or None when that file was never fully cached."""
        done = self.conn.execute(
            "SELECT 1 FROM done WHERE hash = ? AND backbone = ?", (digest, backbone)
        ).fetchone()
        if not done:
            return None
        rows = self.conn.execute(
            'SELECT modality, idx, start, "end", dim, vector, silent FROM features '
            "WHERE hash = ? AND backbone = ? ORDER BY modality, idx",
            (digest, backbone),
        )
        return [
            CachedWindow(m, i, s, e, np.frombuffer(v, np.float32).reshape(d).copy(), _flag(silent))
            for m, i, s, e, d, v, silent in rows
        ]

    def complete(self, digests: Iterable[str], backbone: str) -> set[str]:
        """Which of ``digests`` are fully cached for ``backbone`` with every window's silence
        known (what ``embed`` can use without decoding), in a few queries."""
        wanted = list(dict.fromkeys(digests))
        found: set[str] = set()
        for lo in range(0, len(wanted), 500):
            chunk = wanted[lo : lo + 500]
            rows = self.conn.execute(
                "SELECT d.hash FROM done d WHERE d.backbone = ? "
                f"AND d.hash IN ({','.join('?' * len(chunk))}) AND NOT EXISTS ("
                "SELECT 1 FROM features f WHERE f.hash = d.hash AND f.backbone = d.backbone "
                "AND f.silent IS NULL)",
                (backbone, *chunk),
            )
            found.update(r[0] for r in rows)
        return found

    def put(self, digest: str, backbone: str, windows: list[CachedWindow]) -> None:
        """Store all windows of a file at once (one transaction: all or nothing)."""
        self.put_many([(digest, backbone, windows)])

    def put_many(self, entries: list[tuple[str, str, list[CachedWindow]]]) -> None:
        """Store the windows of several files (digest, backbone, windows) in one transaction."""
        if not entries:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for digest, backbone, windows in entries:
                self.conn.execute(
                    "DELETE FROM features WHERE hash = ? AND backbone = ?", (digest, backbone)
                )
                self.conn.executemany(
                    "INSERT INTO features(hash, backbone, modality, idx, start, "
                    '"end", dim, vector, silent) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    [
                        (
                            digest,
                            backbone,
                            w.modality,
                            w.idx,
                            w.start,
                            w.end,
                            int(w.vector.size),
                            np.ascontiguousarray(w.vector, np.float32).tobytes(),
                            None if w.silent is None else int(w.silent),
                        )
                        for w in windows
                    ],
                )
                self.conn.execute(
                    "INSERT OR REPLACE INTO done(hash, backbone) VALUES(?, ?)", (digest, backbone)
                )
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM done").fetchone()[0])


def _flag(value: object) -> bool | None:
    return None if value is None else bool(value)


class _Unusable(Exception):
    """The cache file cannot be used as it is (the message says why)."""


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # a cache: a power cut may cost the last put
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables:
            problem = _version_problem(conn, tables)
            if problem:
                raise _Unusable(problem)
            _upgrade(conn, tables)
        conn.executescript(_SCHEMA)
        if not tables:
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', ?)",
                (str(FEATURES_SCHEMA_VERSION),),
            )
    except sqlite3.DatabaseError as exc:
        conn.close()
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise
        raise _Unusable(f"is not a SQLite database or is damaged ({exc})") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _version_problem(conn: sqlite3.Connection, tables: set[str]) -> str | None:
    if "meta" not in tables:
        return "has no schema version (written by an older avsearch, or damaged)"
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return "has no schema version (written by an older avsearch, or damaged)"
    if str(row[0]) != str(FEATURES_SCHEMA_VERSION) and str(row[0]) not in UPGRADABLE_VERSIONS:
        return f"has schema version {row[0]!r}, not {FEATURES_SCHEMA_VERSION}"
    return None


def _upgrade(conn: sqlite3.Connection, tables: set[str]) -> None:
    """Schema 1 → 2: add the ``silent`` column (NULL, unknown, for the rows already there)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if str(row[0]) != "1":
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(features)")}
        if "features" in tables and "silent" not in columns:
            conn.execute("ALTER TABLE features ADD COLUMN silent INTEGER")
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'",
            (str(FEATURES_SCHEMA_VERSION),),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def features_problem(path: Path) -> str | None:
    """What is wrong with a feature cache file, or None (for ``avsearch index check``)."""
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        return f"cannot be opened ({exc})"
    try:
        rows = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        if rows != ["ok"]:
            return "is damaged: " + "; ".join(str(r) for r in rows[:5])
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return _version_problem(conn, tables)
    except sqlite3.DatabaseError as exc:
        return f"is not a SQLite database or is damaged ({exc})"
    finally:
        conn.close()


def discard_cache(path: Path) -> None:
    """Delete a feature cache and its WAL/shared-memory files."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        p.unlink(missing_ok=True)
