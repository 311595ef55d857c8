"""Damage that readers and writers must detect: FAISS files, sidecar, manifest, vectors."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import faiss
import numpy as np
import pytest

from avsearch.errors import IndexCorruptError
from avsearch.store import vectors as vx
from avsearch.store.index import IndexStore
from avsearch.store.manifest import Manifest
from tests.store.conftest import DIM, STAMP, BuildIndex, add_file, set_vector


# ------------------------------------------------------------------------ FAISS file + sidecar
def test_sidecar_records_size_checksum_and_format(build_index: BuildIndex) -> None:
    root = build_index()
    raw = json.loads((root / "vectors.json").read_text())
    assert raw["format"] == vx.SIDECAR_FORMAT
    audio = raw["indexes"]["audio"]
    data = (root / "audio.faiss").read_bytes()
    assert audio["bytes"] == len(data) and audio["count"] == 8 and audio["dim"] == DIM
    assert audio["sha256"] == vx.file_sha256(root / "audio.faiss") and audio["kind"] == "flat"


def test_old_sidecar_without_format_counts_as_absent(build_index: BuildIndex) -> None:
    root = build_index()
    old = {
        m: {k: v for k, v in info.items() if k in ("generation", "count", "dim", "kind", "factory")}
        for m, info in json.loads((root / "vectors.json").read_text())["indexes"].items()
    }
    (root / "vectors.json").write_text(json.dumps(old))
    assert vx.read_sidecar(root / "vectors.json") == {}
    assert "format 1" in (vx.sidecar_problem(root / "vectors.json") or "")
    with IndexStore.create_or_open(root, STAMP) as store:  # embed rewrites it
        store.sync_vectors()
    assert json.loads((root / "vectors.json").read_text())["format"] == vx.SIDECAR_FORMAT


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "missing"])
def test_readers_rebuild_a_damaged_faiss_file(
    build_index: BuildIndex, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = build_index()
    path = root / "audio.faiss"
    data = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":  # same size: only FAISS (or the checksum) can tell
        path.write_bytes(os.urandom(len(data)))
    else:
        path.unlink()
    with IndexStore.open_existing(root) as store:
        assert store.vector_problem("audio") is not None  # what `index stats` shows
        index = store.index_for("audio")  # no faiss RuntimeError, ever
        assert index.ntotal == 8
        _, ids = store.search("audio", np.ones((1, DIM), np.float32), 3)
        assert (ids >= 0).all()
    if damage != "missing":
        assert "rebuilding it from the manifest" in caplog.text
    info = vx.read_sidecar(root / "vectors.json")["audio"]  # saved (no writer running)
    assert vx.verify_index_file(path, info, checksum=True)[1] is None


def test_a_same_size_content_change_is_caught_by_the_checksum(
    build_index: BuildIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    from avsearch.store.integrity import check_index

    root = build_index()
    path = root / "audio.faiss"
    with IndexStore.open_existing(root) as store:
        ids, vecs = store.manifest.vectors("audio", DIM)
    swapped = vx.build_index(ids, vecs[::-1].copy())  # same ids, count and size; vectors moved
    vx.save_index(swapped, path)
    monkeypatch.setattr(vx, "CHECKSUM_ON_OPEN_MAX_BYTES", 0)  # as for a big file
    with IndexStore.open_existing(root) as store:  # rewritten since recorded: hashed on open
        assert "sha256" in (store.vector_problem("audio") or ("", False))[0]
    recorded = vx.read_sidecar(root / "vectors.json")["audio"].mtime_ns
    os.utime(path, ns=(recorded, recorded))  # bit rot: same size, same mtime
    with IndexStore.open_existing(root) as store:  # not hashed on open: that is index check's job
        assert store.vector_problem("audio") is None
    assert [p.what for p in check_index(root).problems] == ["vector index damaged"]
    monkeypatch.undo()  # a small file: hashed on every open
    with IndexStore.open_existing(root) as store:
        assert "sha256" in (store.vector_problem("audio") or ("", False))[0]
        _, found = store.search("audio", vecs[:3], 1)
        assert found[:, 0].tolist() == ids[:3].tolist()  # rebuilt from the manifest


def test_embed_rebuilds_a_damaged_file_though_the_sidecar_generation_matches(
    build_index: BuildIndex,
) -> None:
    root = build_index()
    (root / "visual.faiss").write_bytes(b"")
    with IndexStore.create_or_open(root, STAMP) as store:
        store.sync_vectors()  # what embed runs at its end
    info = vx.read_sidecar(root / "vectors.json")["visual"]
    index, problem = vx.verify_index_file(root / "visual.faiss", info, checksum=True)
    assert problem is None and index is not None and index.ntotal == 4


def test_sidecar_disagreeing_with_the_manifest_is_rebuilt(build_index: BuildIndex) -> None:
    root = build_index()
    raw = json.loads((root / "vectors.json").read_text())
    raw["indexes"]["visual"]["count"] = 3  # the generation still matches
    (root / "vectors.json").write_text(json.dumps(raw))
    with IndexStore.open_existing(root) as store:
        reason, damaged = store.vector_problem("visual") or ("", False)
        assert damaged and "disagrees with the manifest" in reason
        assert store.index_for("visual").ntotal == 4


def test_a_sidecar_left_by_another_manifest_is_not_trusted(build_index: BuildIndex) -> None:
    root = build_index(files=4)
    for name in ("manifest.sqlite", "manifest.sqlite-wal", "manifest.sqlite-shm"):
        (root / name).unlink(missing_ok=True)
    rng = np.random.default_rng(7)
    with IndexStore.create_or_open(root, STAMP) as store:  # a new manifest, same generation
        for i in range(4):
            add_file(store, f"/other/file{i}.mp4", rng)
        assert store.vector_problem("audio") == ("was built from another manifest", False)


def test_load_index_wraps_faiss_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.faiss"
    path.write_bytes(b"not a faiss index at all")
    with pytest.raises(IndexCorruptError) as info:
        vx.load_index(path)
    assert str(path) in info.value.message and "Error in" not in info.value.message
    assert info.value.exit_code == 3


def test_verify_index_file_checks_count_and_dim(tmp_path: Path) -> None:
    path = tmp_path / "a.faiss"
    index = vx.build_index(np.arange(3), np.eye(3, 4, dtype=np.float32))
    size, digest = vx.save_index(index, path)
    good = vx.IndexInfo(1, 3, 4, "flat", "Flat", size, digest)
    assert vx.verify_index_file(path, good, checksum=True)[1] is None
    wrong = vx.IndexInfo(1, 5, 4, "flat", "Flat", size, digest)
    assert "holds 3 vectors" in (vx.verify_index_file(path, wrong)[1] or "")
    assert vx.verify_index_file(path, None)[1] == "has no record in vectors.json"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_faiss_files_and_sidecar_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        vx.save_index(faiss.IndexIDMap2(faiss.IndexFlatIP(4)), tmp_path / "a.faiss")
        vx.write_sidecar(tmp_path / "vectors.json", {})
    finally:
        os.umask(old)
    for name in ("a.faiss", "vectors.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask
    assert not list(tmp_path.glob("*.tmp"))


def test_index_files_are_0644_under_umask_022(tmp_path: Path, build_index: BuildIndex) -> None:
    old = os.umask(0o022)
    try:
        root = build_index()
    finally:
        os.umask(old)
    for name in ("audio.faiss", "visual.faiss", "vectors.json", "manifest.sqlite", "embed.lock"):
        assert (root / name).stat().st_mode & 0o777 == 0o644, name


# ------------------------------------------------------------------------------- manifest
def test_random_bytes_manifest_is_index_corrupt_error(tmp_path: Path) -> None:
    root = tmp_path / "index"
    root.mkdir()
    (root / "manifest.sqlite").write_bytes(os.urandom(8192))
    with pytest.raises(IndexCorruptError) as info:
        IndexStore.open_existing(root)
    assert "manifest.sqlite is not a SQLite database or is damaged" in info.value.message
    assert "index repair" in (info.value.hint or "") and info.value.exit_code == 3


def test_embed_never_overwrites_a_damaged_manifest(tmp_path: Path) -> None:
    root = tmp_path / "index"
    root.mkdir()
    junk = os.urandom(8192)
    (root / "manifest.sqlite").write_bytes(junk)
    with pytest.raises(IndexCorruptError) as info:
        IndexStore.create_or_open(root, STAMP)
    assert "--rebuild" in (info.value.hint or "")
    assert (root / "manifest.sqlite").read_bytes() == junk
    with IndexStore.create_or_open(root, STAMP, rebuild=True) as store:  # moved aside
        assert store.manifest.file_count() == 0
    (aside,) = root.glob("manifest.sqlite.damaged-*")
    assert aside.read_bytes() == junk


def test_a_damaged_page_read_later_is_index_corrupt_error(build_index: BuildIndex) -> None:
    root = build_index(files=40)
    conn = sqlite3.connect(root / "manifest.sqlite")
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    leaves = conn.execute(
        "SELECT pageno FROM dbstat WHERE name = 'segments' AND pagetype = 'leaf'"
    ).fetchall()
    conn.close()
    with open(root / "manifest.sqlite", "r+b") as fh:
        fh.seek((leaves[len(leaves) // 2][0] - 1) * page + 8)
        fh.write(os.urandom(page - 8))
    with IndexStore.open_existing(root) as store, pytest.raises(IndexCorruptError) as info:
        store.manifest.vectors("audio", DIM)
    assert "is not a SQLite database or is damaged" in info.value.message


@pytest.mark.parametrize("value", ["banana", "-3", ""])
def test_garbage_schema_version_is_index_corrupt_error(build_index: BuildIndex, value: str) -> None:
    root = build_index()
    conn = sqlite3.connect(root / "manifest.sqlite")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (value,))
    conn.commit()
    conn.close()
    with pytest.raises(IndexCorruptError, match="unreadable schema version"):
        IndexStore.open_existing(root)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_vectors_never_enter_faiss(build_index: BuildIndex, value: float) -> None:
    root = build_index()
    set_vector(root, 1, value)
    set_vector(root, 5, value)
    with IndexStore.open_existing(root) as store:
        with pytest.raises(IndexCorruptError, match="2 audio vector"):
            store.index_for("audio")  # stale: the rebuild meets the NaN rows
        with pytest.raises(IndexCorruptError, match="NaN or infinite"):
            store.manifest.vectors("audio", DIM)  # what eval reads
    with IndexStore.create_or_open(root, STAMP) as store, pytest.raises(IndexCorruptError):
        store.sync_vectors()


def test_malformed_vector_rows_are_index_corrupt_error(build_index: BuildIndex) -> None:
    root = build_index()
    conn = sqlite3.connect(root / "manifest.sqlite")
    conn.execute("UPDATE segments SET vector = x'00' WHERE id = 2")
    conn.commit()
    conn.close()
    m = Manifest(root / "manifest.sqlite")
    try:
        with pytest.raises(IndexCorruptError, match="not 8 float32 values"):
            m.vectors("audio", DIM)
    finally:
        m.close()


def test_read_snapshot_sees_one_committed_state(build_index: BuildIndex) -> None:
    root = build_index()
    reader = Manifest(root / "manifest.sqlite")
    with reader.read_snapshot():
        before = reader.generation
        rng = np.random.default_rng(3)
        with IndexStore.create_or_open(root, STAMP) as writer:
            add_file(writer, "/media/new.mp4", rng)
        assert reader.generation == before  # the writer committed meanwhile
        assert len(reader.vectors("audio", DIM)[0]) == 8
    assert reader.generation == before + 1
    reader.close()
