"""`avsearch index check` / `index repair` logic (avsearch.store.integrity)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from avsearch.errors import IndexBusyError, NoIndexError
from avsearch.media.discover import discover
from avsearch.pipeline import plan
from avsearch.store import vectors as vx
from avsearch.store.features import (
    FEATURES_SCHEMA_VERSION,
    FeatureCache,
    features_problem,
)
from avsearch.store.index import IndexStore
from avsearch.store.integrity import check_index, repair_index
from avsearch.store.lock import WriterLock
from avsearch.store.manifest import SCHEMA_VERSION, Manifest, NewSegment
from tests.store.conftest import DIM, STAMP, BuildIndex, set_vector, unit


def _problems(root: Path) -> dict[tuple[str, str], bool]:
    return {(p.file, p.what): p.repairable for p in check_index(root).problems}


def test_a_healthy_index_checks_ok(build_index: BuildIndex) -> None:
    root = build_index()
    FeatureCache(root / "features.sqlite").close()
    report = check_index(root)
    assert report.ok and report.problems == [] and not report.writer_active
    data = report.to_json()
    assert data["ok"] is True and data["problems"] == []
    assert any("sha256" in line for line in report.checked)


def test_no_index_is_no_index_error(tmp_path: Path) -> None:
    with pytest.raises(NoIndexError):
        check_index(tmp_path / "nothing")
    with pytest.raises(NoIndexError):
        repair_index(tmp_path / "nothing")


def test_check_reports_every_problem_at_once(build_index: BuildIndex) -> None:
    root = build_index()
    (root / "audio.faiss").write_bytes(b"")
    sidecar = json.loads((root / "vectors.json").read_text())
    sidecar["indexes"]["visual"]["sha256"] = "0" * 64
    (root / "vectors.json").write_text(json.dumps(sidecar))
    conn = sqlite3.connect(root / "features.sqlite")  # an old, unversioned cache
    conn.execute("CREATE TABLE features (hash TEXT)")
    conn.close()
    found = _problems(root)
    assert found == {
        ("audio.faiss", "vector index damaged"): True,
        ("visual.faiss", "vector index damaged"): True,
        ("features.sqlite", "feature cache"): True,
    }
    detail = {p.file: p.detail for p in check_index(root).problems}
    assert "0 bytes" in detail["audio.faiss"] and "sha256" in detail["visual.faiss"]
    assert "no schema version" in detail["features.sqlite"]

    report = repair_index(root)
    assert report.ok and report.after is not None and report.after.ok
    assert any("re-created features.sqlite" in a for a in report.actions)
    assert check_index(root).ok


def test_repair_drops_non_finite_rows_and_marks_their_files(build_index: BuildIndex) -> None:
    root = build_index()
    media = root.parent / "media"
    with IndexStore.create_or_open(root, STAMP) as store:  # real files, so plan() can hash them
        rng = np.random.default_rng(1)
        for i in range(3):
            f = media / f"clip{i}.wav"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(os.urandom(100))
            st = f.stat()
            store.manifest.put_file(
                path=str(f),
                kind="audio",
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                digest="sha256:whatever",
                segments=[NewSegment("audio", j, j, j + 1, unit(rng)) for j in range(2)],
            )
        store.sync_vectors()
        ids = [r[0] for r in store.manifest.conn.execute(
            "SELECT s.id FROM segments s JOIN files f ON f.id = s.file_id "
            "WHERE f.path LIKE '%clip0.wav' OR f.path LIKE '%clip1.wav' ORDER BY s.id"
        )]  # fmt: skip
    set_vector(root, ids[0], float("nan"))  # clip0: one of its two segments
    set_vector(root, ids[3], float("inf"))  # clip1
    found = _problems(root)
    assert found[("manifest.sqlite", "non-finite vectors")] is True

    report = repair_index(root)
    assert report.ok and report.reencode_files == 2
    assert any(
        "2 file(s) will be re-encoded by the next `avsearch embed`" in a for a in report.actions
    )
    m = Manifest(root / "manifest.sqlite")
    try:
        assert m.file_count() == 7  # no file row dropped
        assert len(m.vectors("audio", DIM)[0]) == 14 - 2
        the_plan = plan(m, list(discover([media])), [media])
        assert sorted(Path(j.file.path).name for j in the_plan.jobs) == ["clip0.wav", "clip1.wav"]
        assert all(j.action == "updated" for j in the_plan.jobs) and the_plan.unchanged == 1
    finally:
        m.close()
    info = vx.read_sidecar(root / "vectors.json")["audio"]
    assert info.count == 12


def test_repair_salvages_a_manifest_with_a_damaged_page(build_index: BuildIndex) -> None:
    root = build_index(files=60)
    conn = sqlite3.connect(root / "manifest.sqlite")
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    leaves = [
        r[0]
        for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'segments' AND pagetype = 'leaf' "
            "ORDER BY pageno"
        )
    ]
    total_files = conn.execute("SELECT count(*) FROM files").fetchone()[0]
    conn.close()
    with open(root / "manifest.sqlite", "r+b") as fh:
        fh.seek((leaves[len(leaves) // 2] - 1) * page + 8)
        fh.write(os.urandom(page - 8))
    assert _problems(root).get(("manifest.sqlite", "manifest damaged")) is True

    report = repair_index(root)
    assert report.ok, report.to_json()
    assert any(a.startswith("salvaged the damaged manifest.sqlite") for a in report.actions)
    assert list(root.glob("manifest.sqlite.damaged-*"))
    assert check_index(root).ok
    with IndexStore.open_existing(root) as store:
        assert store.manifest.file_count() == total_files  # the files table was intact
        marked = store.manifest.conn.execute("SELECT count(*) FROM files WHERE size = -1")
        assert marked.fetchone()[0] == report.reencode_files > 0
        ids, _ = store.manifest.vectors("audio", DIM)
        assert store.index_for("audio").ntotal == len(ids) < 120


def test_repair_moves_an_unreadable_manifest_aside(build_index: BuildIndex) -> None:
    root = build_index()
    junk = os.urandom(16384)
    (root / "manifest.sqlite").write_bytes(junk)
    assert _problems(root) == {("manifest.sqlite", "manifest unreadable"): False}
    report = repair_index(root)
    assert report.needs_embed and not report.ok
    assert any("run `avsearch embed PATH` again" in a for a in report.actions)
    (aside,) = root.glob("manifest.sqlite.damaged-*")
    assert aside.read_bytes() == junk
    assert not (root / "audio.faiss").exists() and not (root / "vectors.json").exists()
    with pytest.raises(NoIndexError):
        check_index(root)


def test_repair_fixes_a_garbage_schema_version_and_generation(build_index: BuildIndex) -> None:
    root = build_index()
    conn = sqlite3.connect(root / "manifest.sqlite")
    conn.execute("UPDATE meta SET value = 'x1' WHERE key = 'schema_version'")
    conn.execute("UPDATE meta SET value = 'seven' WHERE key = 'generation'")
    conn.commit()
    conn.close()
    assert _problems(root) == {
        ("manifest.sqlite", "schema version"): True,
        ("manifest.sqlite", "generation"): True,
    }
    report = repair_index(root)
    assert report.ok, report.to_json()
    with IndexStore.open_existing(root) as store:
        assert store.manifest.schema_version() == SCHEMA_VERSION
        assert store.manifest.generation == 1
        assert store.vector_problem("audio", checksum=True) is None


def test_a_newer_schema_is_not_repairable(build_index: BuildIndex) -> None:
    root = build_index()
    conn = sqlite3.connect(root / "manifest.sqlite")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    assert _problems(root) == {("manifest.sqlite", "schema version"): False}
    report = repair_index(root)
    assert not report.ok and report.after is not None and not report.after.ok


def test_stale_vectors_while_an_embed_runs_are_a_note_not_a_problem(
    build_index: BuildIndex,
) -> None:
    root = build_index()
    with IndexStore.create_or_open(root, STAMP) as store:
        from tests.store.conftest import add_file

        add_file(store, "/media/late.mp4", np.random.default_rng(5))
        report = check_index(root)
        assert report.ok and report.writer_active
        assert any("an embed is running" in n for n in report.notes)
        with pytest.raises(IndexBusyError):
            repair_index(root)
    assert _problems(root) == {
        ("audio.faiss", "stale vector index"): True,
        ("visual.faiss", "stale vector index"): True,
    }


def test_repair_removes_temp_files_left_by_a_killed_writer(build_index: BuildIndex) -> None:
    root = build_index()
    (root / ".audio.faiss.abc123.tmp").write_bytes(b"half")
    assert any("temp file" in n for n in check_index(root).notes)
    report = repair_index(root)
    assert report.ok and not (root / ".audio.faiss.abc123.tmp").exists()
    lock = WriterLock.try_acquire(root, "embed")  # repair released the lock
    assert lock is not None
    lock.release()


# -------------------------------------------------------------------------- features cache
def test_feature_cache_records_its_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "features.sqlite"
    FeatureCache(path).close()
    conn = sqlite3.connect(path)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert row == (str(FEATURES_SCHEMA_VERSION),)
    assert features_problem(path) is None


@pytest.mark.parametrize("damage", ["unversioned", "other version", "random bytes"])
def test_an_unusable_feature_cache_is_detected_and_recreated(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "features.sqlite"
    if damage == "random bytes":
        path.write_bytes(os.urandom(8192))
    else:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE done (hash TEXT NOT NULL, backbone TEXT NOT NULL)")
        if damage == "other version":
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute("INSERT INTO meta VALUES ('schema_version', '7')")
        conn.commit()
        conn.close()
    problem = features_problem(path)
    assert problem is not None
    assert {
        "unversioned": "no schema version",
        "other version": "schema version '7'",
        "random bytes": "not a SQLite database",
    }[damage] in problem
    cache = FeatureCache(path)  # it is only a cache: re-created empty, with a warning
    assert cache.count() == 0
    cache.close()
    assert "re-created empty" in caplog.text
    assert features_problem(path) is None
