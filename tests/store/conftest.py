"""Small indexes built directly with IndexStore and random unit vectors (no model, no media)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from avsearch.store.index import IndexStore, ModelStamp
from avsearch.store.manifest import NewSegment

DIM = 8
STAMP = ModelStamp("m1", "f" * 64, DIM)

BuildIndex = Callable[..., Path]


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def add_file(store: IndexStore, path: str, rng: np.random.Generator, n_audio: int = 2) -> int:
    """A video-like file: ``n_audio`` audio segments and one visual segment."""
    segs = [NewSegment("audio", j, 2.0 * j, 2.0 * j + 2, unit(rng)) for j in range(n_audio)]
    segs.append(NewSegment("visual", 0, 0.0, 2.0, unit(rng)))
    return store.manifest.put_file(
        path=path, kind="video", size=10, mtime_ns=1, digest=f"sha256:{path}", segments=segs
    )


@pytest.fixture
def build_index(tmp_path: Path) -> BuildIndex:
    """build_index(name="index", files=4, sync=True) -> the index dir, closed."""

    def build(name: str = "index", files: int = 4, sync: bool = True, seed: int = 0) -> Path:
        root = tmp_path / name
        rng = np.random.default_rng(seed)
        with IndexStore.create_or_open(root, STAMP) as store:
            for i in range(files):
                add_file(store, f"/media/class{i % 2}/file{i}.mp4", rng)
            if sync:
                store.sync_vectors()
        return root

    return build


def set_vector(root: Path, segment_id: int, value: float) -> None:
    """Overwrite one stored vector's first value (e.g. NaN), bumping the generation as a
    writer would."""
    import sqlite3

    conn = sqlite3.connect(root / "manifest.sqlite")
    blob = conn.execute("SELECT vector FROM segments WHERE id = ?", (segment_id,)).fetchone()[0]
    v = np.frombuffer(blob, np.float32).copy()
    v[0] = value
    conn.execute("UPDATE segments SET vector = ? WHERE id = ?", (v.tobytes(), segment_id))
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    conn.commit()
    conn.close()
