"""Vector spaces in the index (schema 3): a column per further space, one FAISS file per (space,
modality) kept like the heads' ones (built, updated in place, checked, repaired), the
migration of a schema-2 index, and a model whose spaces changed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from avsearch.store import vectors as vx
from avsearch.store.index import SIDECAR, IndexStore, ModelStamp, slot_key
from avsearch.store.integrity import _present_columns, check_index, repair_index
from avsearch.store.manifest import _SCHEMA_V1, _SCHEMA_V2, SCHEMA_VERSION, Manifest, NewSegment
from avsearch.store.manifest import sql_statements as statements
from avsearch.store.stats import index_stats

DIM, NATIVE_A, NATIVE_V, BRIDGE = 8, 5, 3, 4
SPACES = {
    "native": {"audio": NATIVE_A, "visual": NATIVE_V, "id": "n1"},
    "bridge": {"audio": BRIDGE, "visual": BRIDGE, "id": "b1"},
}
STAMP = ModelStamp("m", "f" * 64, DIM, "m", SPACES)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _segments(rng: np.random.Generator, n_audio: int = 2, spaces: bool = True) -> list[NewSegment]:
    out = []
    for modality, n, nd in (("audio", n_audio, NATIVE_A), ("visual", 1, NATIVE_V)):
        heads, native, bridge = _unit(rng, n, DIM), _unit(rng, n, nd), _unit(rng, n, BRIDGE)
        for j in range(n):
            extra = {"native": native[j], "bridge": bridge[j]} if spaces else {}
            out.append(NewSegment(modality, j, 2.0 * j, 2.0 * j + 2, heads[j], extra))
    return out


def _put(store: IndexStore, path: str, rng: np.random.Generator, **kw: object) -> int:
    return store.manifest.put_file(
        path=path, kind="video", size=1, mtime_ns=1, digest=f"sha256:{path}",
        segments=_segments(rng, **kw),  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture
def index(tmp_path: Path) -> Path:
    root = tmp_path / "index"
    rng = np.random.default_rng(0)
    with IndexStore.create_or_open(root, STAMP) as store:
        for i in range(5):
            _put(store, f"/m/f{i}.mp4", rng)
        store.sync_vectors()
    return root


def test_every_slot_gets_its_file_and_record(index: Path) -> None:
    with IndexStore.open_existing(index) as store:
        assert store.slots() == {
            ("heads", "audio"): DIM,
            ("heads", "visual"): DIM,
            ("native", "audio"): NATIVE_A,
            ("native", "visual"): NATIVE_V,
            ("bridge", "audio"): BRIDGE,
            ("bridge", "visual"): BRIDGE,
        }
        infos = vx.read_sidecar(index / SIDECAR)
        for (space, modality), dim in store.slots().items():
            key = slot_key(space, modality)
            assert (index / f"{key}.faiss").is_file()
            assert infos[key].dim == dim and infos[key].count == (10 if modality == "audio" else 5)
            assert store.vector_problem(modality, space=space) is None
        # a native vector finds its own segment first
        ids, vecs = store.manifest.vectors("audio", NATIVE_A, space="native")
        _, found = store.search("audio", vecs[3:4], 1, "native")
        assert found[0, 0] == ids[3]
    assert check_index(index).ok


def test_updates_in_place_equal_a_fresh_build(index: Path) -> None:
    rng = np.random.default_rng(1)
    with IndexStore.create_or_open(index, STAMP) as store:
        store.manifest.remove_files([2])
        _put(store, "/m/new.mp4", rng, n_audio=3)
        store.sync_vectors()
        sync = store.last_sync
        assert sync["native.audio"].mode == "incremental"
        assert (sync["native.audio"].added, sync["native.audio"].removed) == (3, 2)
        assert sync["bridge.visual"].mode == "incremental"
        updated = (index / "native.audio.faiss").read_bytes()
        store.sync_vectors(force=True)
        assert (index / "native.audio.faiss").read_bytes() == updated
    assert check_index(index).ok


def test_a_damaged_space_file_is_found_and_rebuilt(index: Path) -> None:
    path = index / "bridge.audio.faiss"
    path.write_bytes(path.read_bytes()[:-16])
    report = check_index(index)
    assert [p.file for p in report.problems] == ["bridge.audio.faiss"]
    repaired = repair_index(index)
    assert repaired.ok and repaired.after is not None and repaired.after.ok


def test_a_non_finite_space_vector_is_dropped_and_its_file_reencoded(index: Path) -> None:
    conn = sqlite3.connect(index / "manifest.sqlite")
    blob = conn.execute("SELECT native FROM segments WHERE id = 4").fetchone()[0]
    v = np.frombuffer(blob, np.float32).copy()
    v[0] = np.nan
    conn.execute("UPDATE segments SET native = ? WHERE id = 4", (v.tobytes(),))
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    conn.commit()
    conn.close()
    report = check_index(index)
    assert any("native" in p.detail and p.what == "non-finite vectors" for p in report.problems)
    repaired = repair_index(index)
    assert repaired.ok and repaired.reencode_files == 1
    with IndexStore.open_existing(index) as store:
        assert store.manifest.segment_count("audio", "native") == 9


def test_a_segment_without_a_space_vector_is_counted_as_lacking(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    with IndexStore.create_or_open(tmp_path / "i", STAMP) as store:
        full = _put(store, "/m/a.mp4", rng)
        bare = _put(store, "/m/b.mp4", rng, spaces=False)
        store.sync_vectors()
        assert store.manifest.segment_count("audio") == 4
        assert store.manifest.segment_count("audio", "native") == 2
        assert store.manifest.files_lacking(store.slots()) == {bare}
        assert full not in store.manifest.files_lacking([("native", "visual")])
        plan = store.manifest.conn.execute(
            "EXPLAIN QUERY PLAN SELECT DISTINCT file_id FROM segments "
            "WHERE modality = 'audio' AND native IS NULL"
        ).fetchall()
        assert "segments_no_native" in " ".join(str(tuple(r)) for r in plan)
    stats = index_stats(tmp_path / "i")
    assert stats["spaces"]["native"]["lacking"] == {"audio": 2, "visual": 1}
    assert stats["vector_indexes"]["native.audio"]["count"] == 2


def test_a_changed_space_loses_its_vectors_and_files(index: Path) -> None:
    changed = {**SPACES, "bridge": {**SPACES["bridge"], "id": "b2"}}
    with IndexStore.create_or_open(index, ModelStamp("m", "f" * 64, DIM, "m", changed)) as store:
        assert store.manifest.segment_count("audio", "bridge") == 0
        assert store.manifest.segment_count("audio", "native") == 10
        assert not (index / "bridge.audio.faiss").exists()
        assert "bridge.audio" not in vx.read_sidecar(index / SIDECAR)
        assert len(store.manifest.files_lacking(store.slots())) == 5
        store.sync_vectors()
    assert check_index(index).ok


def test_a_space_the_model_no_longer_has_is_dropped(index: Path) -> None:
    off = {"native": SPACES["native"], "bridge": {"off": "no soundnet part"}}
    with IndexStore.create_or_open(index, ModelStamp("m", "f" * 64, DIM, "m", off)) as store:
        assert ("bridge", "audio") not in store.slots()
        store.sync_vectors()
    assert not (index / "bridge.visual.faiss").exists()
    assert "bridge.visual" not in vx.read_sidecar(index / SIDECAR)
    assert check_index(index).ok
    assert index_stats(index)["spaces"]["bridge"] == {"off": "no soundnet part"}


def _schema2_manifest(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for script in (_SCHEMA_V1, _SCHEMA_V2):
        for statement in statements(script):
            conn.execute(statement)
    rng = np.random.default_rng(3)
    meta = {
        "schema_version": "2", "model_name": "m", "model_fingerprint": "f" * 64,
        "dim": str(DIM), "model_ref": "m", "generation": "1", "index_id": "x",
    }  # fmt: skip
    conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
    conn.execute("INSERT INTO files VALUES (1, '/m/a.wav', 'audio', 1, 1, 'sha256:a', 0)")
    for j in range(3):
        conn.execute(
            'INSERT INTO segments(file_id, modality, idx, start, "end", vector) '
            "VALUES (1, 'audio', ?, 0, 1, ?)",
            (j, _unit(rng, 1, DIM)[0].tobytes()),
        )
    conn.close()


def test_a_schema_2_index_is_migrated_with_its_spaces_empty(tmp_path: Path) -> None:
    root = tmp_path / "old"
    root.mkdir()
    _schema2_manifest(root / "manifest.sqlite")
    conn = sqlite3.connect(root / "manifest.sqlite")
    assert _present_columns(conn)[-2:] == ("NULL AS native", "NULL AS bridge")
    conn.close()
    with IndexStore.open_existing(root) as store:  # a reader migrates it
        assert store.manifest.schema_version() == SCHEMA_VERSION
        assert store.slots() == {("heads", "audio"): DIM, ("heads", "visual"): DIM}
        assert store.manifest.segment_count("audio", "native") == 0
        store.sync_vectors()
    with IndexStore.create_or_open(root, STAMP) as store:  # embed with a model that has spaces
        assert store.manifest.files_lacking(store.slots()) == {1}
        store.sync_vectors()
        assert store.last_sync["native.audio"].count == 0
    assert check_index(root).ok
    manifest = Manifest(root / "manifest.sqlite")
    manifest.ensure_schema()  # idempotent
    manifest.ensure_schema()
    cols = [r[1] for r in manifest.conn.execute("PRAGMA table_info(segments)")]
    assert cols[-2:] == ["native", "bridge"]
    manifest.close()


def test_an_unknown_space_never_reaches_sql(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "m.sqlite")
    manifest.ensure_schema()
    with pytest.raises(ValueError, match="unknown vector space"):
        manifest.vectors("audio", 4, space="x; DROP TABLE segments")
    manifest.close()
