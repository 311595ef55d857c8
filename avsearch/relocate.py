"""An index inside the folder it indexes keeps working when that folder is moved or copied.

The manifest stores absolute paths. Each ``embed`` records the index's *base*: the folder that
holds the index directory (``/data/photos`` for ``/data/photos/.avsearch``). When the index is
opened from another base (the folder was moved, or copied with its index), the files recorded
under the old base are looked for under the new one: when they are there (and no longer at the
old place, or the old place is another copy), their paths are rewritten, in one transaction,
as if they had been stored relative to the base. Files outside the base are left as they are;
so is everything when the files are not found at the new place (only the index directory was
moved: its files did not move with it).

Only paths change: segments, vectors and FAISS files are untouched (they are keyed by segment
id), so nothing is re-encoded. ``embed`` relocates under its writer lock; ``query`` when no
writer holds the lock (else it answers with the old paths and says so in the log). ``index
stats`` only reads: it reports a move still to apply (:func:`pending_move`) and keeps the old
paths until the next ``query`` or ``embed``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avsearch.media.paths import display_path
from avsearch.store.index import IndexStore
from avsearch.store.lock import WriterLock
from avsearch.store.manifest import FileRow, path_to_db

log = logging.getLogger(__name__)

BASE_KEY = "index_base"  # manifest meta: the folder holding the index directory at last embed
PROBE = 20  # files checked to decide whether the files moved with the index


def base_of(store: IndexStore) -> Path:
    return store.root.absolute().parent


def record_base(store: IndexStore) -> None:
    """Remember where the index lies now (called by embed, which holds the writer lock)."""
    base = str(base_of(store))
    if store.manifest.get_meta(BASE_KEY) != base:
        with store.manifest.transaction():
            store.manifest.set_meta(BASE_KEY, base)


@dataclass(frozen=True)
class PendingMove:
    """The index lies under another base than at its last embed, and its files came along:
    ``moves`` maps each recorded path under ``old`` to its path under ``new``."""

    old: Path
    new: Path
    rows: dict[str, FileRow]
    moves: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"from": str(self.old), "to": str(self.new), "files": len(self.moves)}


def pending_move(store: IndexStore) -> PendingMove | None:
    """The move :func:`follow_move` would apply now, without writing anything; None when the
    index was not moved, or only the index directory was (its files did not come along)."""
    old_raw = store.manifest.get_meta(BASE_KEY)
    new = base_of(store)
    if not old_raw or Path(old_raw) == new:
        return None
    old = Path(old_raw)
    rows = store.manifest.files_under([old])
    if not rows:
        return None
    moves = {p: str(new / Path(p).relative_to(old)) for p in rows}
    probe = sorted(moves)[:PROBE]
    here = sum(os.path.exists(moves[p]) for p in probe)
    if here * 2 <= len(probe):  # the files did not come along: only the index moved
        return None
    return PendingMove(old, new, rows, moves)


def follow_move(store: IndexStore, *, writer: bool = False) -> int:
    """Rewrite the paths of files under the index's old base to its new base when the index was
    moved with them (see the module docstring); the number of files rewritten. ``writer``: the
    caller holds the writer lock; else it is taken for the rewrite, or the rewrite is skipped
    when another process holds it."""
    move = pending_move(store)
    if move is None:
        return 0
    old, new, rows, moves = move.old, move.new, move.rows, move.moves
    lock = None if writer else WriterLock.try_acquire(store.root, "relocate")
    if not writer and lock is None:
        log.info("the index was moved; a writer is busy, so its paths are updated later")
        return 0
    try:
        taken = set(store.manifest.files_under([new]))
        with store.manifest.transaction():
            for path, row in rows.items():
                target = moves[path]
                if target in taken:  # already indexed there: keep that row
                    continue
                store.manifest.conn.execute(
                    "UPDATE files SET path = ? WHERE id = ?", (path_to_db(target), row["id"])
                )
            store.manifest.set_meta(BASE_KEY, str(new))
    finally:
        if lock is not None:
            lock.release()
    count = len(rows) - len(taken & set(moves.values()))
    log.info(
        "the index moved from %s to %s: %d file path(s) follow it",
        display_path(old),
        display_path(new),
        count,
    )
    return count
