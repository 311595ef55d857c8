"""FAISS files updated in place by ``sync_vectors`` (added ids appended, removed ones taken out or
masked), the deletion log behind it, the compaction rule, and the recall recorded at build."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from avsearch.errors import IndexCorruptError
from avsearch.store import vectors as vx
from avsearch.store.index import SIDECAR, IndexStore
from avsearch.store.integrity import check_index, repair_index
from avsearch.store.manifest import _SCHEMA_V1, NewSegment
from avsearch.store.stats import index_stats
from tests.store.conftest import DIM, STAMP, set_vector

ForceSpec = Callable[[str], None]
SPECS = {
    "flat": vx.IndexSpec("flat", "Flat"),
    "hnsw": vx.IndexSpec("hnsw", "HNSW32", ef_search=256),
    "ivf-flat": vx.IndexSpec("ivf", "IVF4,Flat", nprobe=4),  # all lists: exact
    "ivf-sq8": vx.IndexSpec("ivf", "IVF4,SQ8", nprobe=4),
    "half-probed": vx.IndexSpec("ivf", "IVF4,SQ8", nprobe=2),  # approximate
}


def _vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Library:
    """An index of files with ``per_file`` audio segments each (and one visual), random unit
    vectors, seeded; files are added and removed through the manifest as embed does."""

    def __init__(self, root: Path, seed: int = 0, per_file: int = 5) -> None:
        self.root = root
        self.rng = np.random.default_rng(seed)
        self.per_file = per_file
        self.store = IndexStore.create_or_open(root, STAMP)
        self.files: list[int] = []
        self.n = 0

    def add(self, count: int) -> None:
        with self.store.manifest.transaction():
            for _ in range(count):
                vecs = _vectors(self.rng, self.per_file + 1)
                segs = [
                    NewSegment("audio", j, 2.0 * j, 2.0 * j + 2, vecs[j])
                    for j in range(self.per_file)
                ]
                segs.append(NewSegment("visual", 0, 0.0, 2.0, vecs[-1]))
                self.n += 1
                fid = self.store.manifest.put_file(
                    path=f"/media/f{self.n}.mp4",
                    kind="video",
                    size=1,
                    mtime_ns=1,
                    digest=f"sha256:{self.n}",
                    segments=segs,
                )
                self.files.append(fid)

    def remove(self, count: int) -> list[int]:
        """Remove ``count`` random files; returns their audio segment ids."""
        gone = sorted(self.rng.choice(self.files, count, replace=False).tolist())
        ids = [
            int(r[0])
            for fid in gone
            for r in self.store.manifest.conn.execute(
                "SELECT id FROM segments WHERE file_id = ? AND modality = 'audio'", (fid,)
            )
        ]
        self.store.manifest.remove_files(gone)
        self.files = [f for f in self.files if f not in gone]
        return ids

    def sync(self) -> dict[str, vx.IndexInfo]:
        return self.store.sync_vectors()

    def close(self) -> None:
        if self.store.manifest is not None:
            self.store.close()


@pytest.fixture
def lib(tmp_path: Path) -> Iterator[Library]:
    library = Library(tmp_path / "index")
    yield library
    library.close()


@pytest.fixture
def force_spec(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForceSpec]:
    def force(name: str) -> None:
        # (the visual files, 60-odd vectors, stay flat)
        monkeypatch.setattr(
            vx, "choose_index_spec", lambda n, dim: SPECS[name if n >= 100 else "flat"]
        )

    yield force


def _fresh(store: IndexStore, modality: str = "audio") -> tuple[faiss.Index, np.ndarray]:
    ids, vecs = store.manifest.vectors(modality, DIM)
    return vx.build_index(ids, vecs, vx.IndexSpec("flat", "Flat")), vecs


def test_flat_updated_in_place_equals_a_fresh_build(lib: Library, tmp_path: Path) -> None:
    lib.add(40)
    lib.sync()
    assert lib.store.last_sync["audio"].mode == "full"
    queries = _vectors(np.random.default_rng(9), 25)
    for step in range(6):
        if step % 2 == 0:
            lib.add(7)
        if step % 2 == 1 or step % 3 == 0:  # add, remove, or both
            lib.remove(5)
        infos = lib.sync()
        for modality in ("audio", "visual"):
            stats = lib.store.last_sync[modality]
            assert stats.mode == "incremental", stats
            fresh, _ = _fresh(lib.store, modality)
            # the very file a fresh build writes: same vectors, same order, same ids
            size, digest = vx.save_index(fresh, tmp_path / "fresh.faiss")
            assert (infos[modality].bytes, infos[modality].sha256) == (size, digest)
            got = lib.store.search(modality, queries, 10)
            want = vx.search(fresh, queries, 10)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
            path = lib.store.faiss_path(modality)
            assert vx.verify_index_file(path, infos[modality], checksum=True)[1] is None
    report = check_index(lib.root, _writer=False)
    assert report.ok, report.to_json()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf-flat", "ivf-sq8"])
def test_a_removed_segment_is_never_returned(
    lib: Library,
    force_spec: ForceSpec,
    kind: str,
) -> None:
    force_spec(kind)
    lib.add(60)  # 300 audio vectors
    lib.sync()
    all_ids, all_vecs = lib.store.manifest.vectors("audio", DIM)
    removed = lib.remove(5)  # 25 of 300: under the compaction share
    lib.add(3)
    lib.sync()
    stats = lib.store.last_sync["audio"]
    assert stats.mode == "incremental" and stats.removed == len(removed) and stats.added == 15
    assert stats.masked == (len(removed) if kind == "hnsw" else 0)
    queries = all_vecs[np.isin(all_ids, removed)]  # each removed vector, searched for
    count = lib.store.manifest.segment_count("audio")
    for store in (lib.store, IndexStore.open_existing(lib.root)):  # in memory, then from disk
        try:
            _, found = store.search("audio", queries, count)
            assert not np.isin(found, removed).any()
            assert (found >= 0).sum() > 0.9 * count * len(queries)  # the rest is all there
            live, vecs = store.manifest.vectors("audio", DIM)
            _, top = store.search("audio", vecs, 1)  # each live vector finds itself
            assert np.mean(top[:, 0] == live) > (0.999 if kind in ("flat", "ivf-flat") else 0.9)
        finally:
            if store is not lib.store:
                store.close()
    report = check_index(lib.root, _writer=False)
    assert report.ok, report.to_json()


def test_hnsw_masks_removed_vectors_until_the_share_calls_for_compaction(
    lib: Library,
    force_spec: ForceSpec,
) -> None:
    force_spec("hnsw")
    lib.add(100)  # 500 audio vectors
    lib.sync()
    lib.remove(8)  # 40 of 500 = 8 %
    infos = lib.sync()
    assert lib.store.last_sync["audio"].mode == "incremental"
    assert infos["audio"].masked == 40 and infos["audio"].count == 460
    assert vx.load_index(lib.store.faiss_path("audio")).ntotal == 500
    lib.remove(3)  # 55 of 500 = 11 % > COMPACT_DELETED_SHARE
    infos = lib.sync()
    stats = lib.store.last_sync["audio"]
    assert stats.mode == "full" and "compacting" in stats.reason
    assert infos["audio"].masked == 0 and infos["audio"].count == 445
    assert vx.load_index(lib.store.faiss_path("audio")).ntotal == 445
    assert vx.needs_compaction(11, 100) and not vx.needs_compaction(10, 100)


def test_a_count_that_calls_for_another_index_type_rebuilds(
    lib: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vx, "FLAT_MAX", 120)
    lib.add(20)  # 100 audio vectors: flat
    lib.sync()
    lib.add(2)
    lib.sync()
    assert lib.store.last_sync["audio"].mode == "incremental"
    lib.add(2)  # 120: past FLAT_MAX
    infos = lib.sync()
    stats = lib.store.last_sync["audio"]
    assert stats.mode == "full" and "call for" in stats.reason
    assert infos["audio"].kind != "flat" and infos["visual"].kind == "flat"


def test_recall_is_recorded_at_build_and_shown_by_stats(
    lib: Library,
    force_spec: ForceSpec,
) -> None:
    force_spec("half-probed")
    lib.add(60)
    infos = lib.sync()
    audio = infos["audio"]
    assert audio.recall_queries == 200 and 0.5 < audio.recall <= 1.0
    assert audio.built_count == 300 and audio.nprobe == 2
    raw = json.loads((lib.root / SIDECAR).read_text())
    assert raw["format"] == vx.SIDECAR_FORMAT == 3
    assert raw["indexes"]["audio"]["recall"] == audio.recall
    lib.add(1)
    infos = lib.sync()  # in place: the recall measured at the build stays
    assert infos["audio"].recall == audio.recall and infos["audio"].count == 305
    lib.close()
    stats = index_stats(lib.root)["vector_indexes"]
    assert stats["audio"]["recall_at_10"] == audio.recall
    assert stats["audio"]["search"] == {"nprobe": 2}
    assert stats["visual"]["recall_at_10"] == 1.0 and stats["visual"]["recall_queries"] == 0

    from avsearch.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["--index", str(lib.root), "index", "stats"])
    assert result.exit_code == 0, result.output
    assert f"audio: 305 vectors, IVF4,SQ8 (nprobe 2), recall@10 {audio.recall:.3f}" in (
        result.output
    )
    assert "200 queries over 300 vectors" in result.output
    assert "visual: 61 vectors, Flat, recall@10 1.000 (exact search), up to date" in result.output
    result = runner.invoke(app, ["--index", str(lib.root), "--json", "index", "stats"])
    data = json.loads(result.output)
    assert data["vector_indexes"]["audio"]["recall_at_10"] == audio.recall


def test_measured_recall_counts_ties_and_misses() -> None:
    x = _vectors(np.random.default_rng(1), 50)
    x[1] = x[0]  # a twin: either is a right answer
    ids = np.arange(100, 150)
    exact, _ = vx.exact_knn(x, x[:1], 2)
    found = np.array([[101, 100]])
    assert vx.recall_at_k(found, x[:1], ids, x, exact[:, -1]) == 1.0
    worst = np.argsort(x @ x[0])[:2] + 100
    assert vx.recall_at_k(worst[None], x[:1], ids, x, exact[:, -1]) == 0.0
    assert vx.recall_at_k(np.array([[100, -1]]), x[:1], ids, x, exact[:, -1]) == 0.5


def test_every_deletion_is_logged_with_its_generation(lib: Library) -> None:
    m = lib.store.manifest
    lib.add(3)
    assert m.deletions_logged_from() == 0
    g = m.generation
    (first, *_) = lib.remove(1)  # remove_files: a cascade from files
    assert first in m.deleted_since("audio", g).tolist()
    assert m.deleted_since("audio", g + 1).size == 0
    fid = lib.files[0]
    old = [r[0] for r in m.conn.execute("SELECT id FROM segments WHERE file_id = ?", (fid,))]
    path = m.conn.execute("SELECT path FROM files WHERE id = ?", (fid,)).fetchone()[0]
    m.put_file(path=path, kind="video", size=2, mtime_ns=2, digest="sha256:x", segments=[])
    assert set(old) <= set(m.deleted_since("audio", g).tolist()) | set(
        m.deleted_since("visual", g).tolist()
    )
    m.clear()
    assert m.segment_count() == 0 and len(m.deleted_since("audio", 0)) == 15
    lib.sync()  # every file now at this generation: the log is pruned
    assert m.conn.execute("SELECT count(*) FROM deleted_segments").fetchone()[0] == 0


def test_a_row_changed_in_place_is_taken_out_and_added_again(lib: Library) -> None:
    lib.add(10)
    lib.sync()
    lib.close()
    target = np.zeros(DIM, np.float32)
    target[0] = 1.0
    conn = sqlite3.connect(lib.root / "manifest.sqlite")
    conn.execute("UPDATE segments SET vector = ? WHERE id = 7", (target.tobytes(),))
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    conn.commit()
    conn.close()
    with IndexStore.create_or_open(lib.root, STAMP) as store:
        store.sync_vectors()
        assert store.last_sync["audio"].mode == "incremental"
        scores, ids = store.search("audio", target[None], 1)
        assert ids[0, 0] == 7 and scores[0, 0] == pytest.approx(1.0)
        assert store.index_for("audio").ntotal == store.manifest.segment_count("audio")
    set_vector(lib.root, 3, float("nan"))  # a damaged row is met, not skipped
    with (
        IndexStore.create_or_open(lib.root, STAMP) as store,
        pytest.raises(IndexCorruptError, match="NaN or infinite"),
    ):
        store.sync_vectors()


def test_an_index_migrated_from_schema_1_rebuilds_files_older_than_its_log(
    tmp_path: Path,
) -> None:
    root = tmp_path / "index"
    root.mkdir()
    conn = sqlite3.connect(root / "manifest.sqlite")
    conn.executescript(_SCHEMA_V1)
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [
            ("schema_version", "1"),
            ("generation", "5"),
            ("model_name", STAMP.name),
            ("model_fingerprint", STAMP.fingerprint),
            ("dim", str(DIM)),
            ("index_id", "abc"),
        ],
    )
    conn.commit()
    conn.close()
    old = vx.IndexInfo(4, 0, DIM, "flat", "Flat", manifest_id="abc")
    vx.write_sidecar(root / SIDECAR, {"audio": old, "visual": old})
    with IndexStore.create_or_open(root, STAMP) as store:
        assert store.manifest.deletions_logged_from() == 5
        store.sync_vectors()
        assert store.last_sync["audio"].mode == "full"
        assert "before the manifest logged" in store.last_sync["audio"].reason


def test_a_sidecar_of_format_2_counts_as_absent(lib: Library) -> None:
    lib.add(3)
    lib.sync()
    raw = json.loads((lib.root / SIDECAR).read_text())
    raw["format"] = 2
    (lib.root / SIDECAR).write_text(json.dumps(raw))
    assert vx.read_sidecar(lib.root / SIDECAR) == {}
    lib.sync()
    assert lib.store.last_sync["audio"].mode == "full"


def test_repair_restarts_the_log_after_resetting_the_generation(lib: Library) -> None:
    lib.add(5)
    lib.sync()
    lib.remove(1)
    lib.close()
    conn = sqlite3.connect(lib.root / "manifest.sqlite")
    conn.execute("UPDATE meta SET value = 'seven' WHERE key = 'generation'")
    conn.commit()
    conn.close()
    assert repair_index(lib.root).ok
    with IndexStore.create_or_open(lib.root, STAMP) as store:
        assert store.manifest.deletions_logged_from() == store.manifest.generation == 1
        lib.store = store
        lib.add(1)
        lib.sync()
        assert store.last_sync["audio"].mode == "incremental"
    assert check_index(lib.root).ok


def test_a_single_query_runs_on_one_thread_and_restores_the_setting() -> None:
    x = _vectors(np.random.default_rng(2), 100)
    index = vx.build_index(np.arange(100), x, vx.IndexSpec("flat", "Flat"))
    before = faiss.omp_get_max_threads()
    _, ids = vx.search(index, x[:1], 3)
    assert ids[0, 0] == 0 and faiss.omp_get_max_threads() == before


def test_build_time_tuning_raises_nprobe_while_recall_is_short() -> None:
    x = _vectors(np.random.default_rng(3), 4000)
    ids = np.arange(10, 4010)
    spec = vx.IndexSpec("ivf", "IVF64,Flat", nprobe=1)
    index = vx.build_index(ids, x, spec)
    low, _ = vx.measure_recall(index, ids, x)
    tuned = vx.tune_search(index, ids, x, spec)
    assert tuned.queries == vx.RECALL_QUERIES and tuned.nprobe > 1 and tuned.recall > low
    assert faiss.extract_index_ivf(index).nprobe == tuned.nprobe  # left set to the value kept
    assert tuned.recall >= vx.RECALL_TARGET or tuned.nprobe == 16  # (a quarter of the lists)
    assert vx.tune_search(index, ids, x, vx.IndexSpec("flat", "Flat")) == vx.Tuned(1.0, 0)
