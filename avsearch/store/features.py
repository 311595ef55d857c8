"""Backbone feature cache: per file content hash, backbone and window, the raw backbone features
of every window. It lives in the index directory (``features.sqlite``), so a second training
run on the same folder decodes nothing, and a moved file keeps its features.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    hash TEXT NOT NULL,
    backbone TEXT NOT NULL,
    modality TEXT NOT NULL,
    idx INTEGER NOT NULL,
    start REAL NOT NULL,
    "end" REAL NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
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


class FeatureCache:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.executescript(_SCHEMA)

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
            'SELECT modality, idx, start, "end", dim, vector FROM features '
            "WHERE hash = ? AND backbone = ? ORDER BY modality, idx",
            (digest, backbone),
        )
        return [
            CachedWindow(m, i, s, e, np.frombuffer(v, np.float32).reshape(d).copy())
            for m, i, s, e, d, v in rows
        ]

    def put(self, digest: str, backbone: str, windows: list[CachedWindow]) -> None:
        """Store all windows of a file at once (one transaction: all or nothing)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(
                "DELETE FROM features WHERE hash = ? AND backbone = ?", (digest, backbone)
            )
            self.conn.executemany(
                'INSERT INTO features(hash, backbone, modality, idx, start, "end", dim, vector) '
                "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
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
