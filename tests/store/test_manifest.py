import os
from pathlib import Path

import numpy as np
import pytest

from avsearch.errors import SchemaError
from avsearch.store.manifest import SCHEMA_VERSION, Manifest, NewSegment


def _seg(modality: str, idx: int, value: float) -> NewSegment:
    return NewSegment(modality, idx, float(idx), float(idx + 1), np.full(4, value, np.float32))


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    m = Manifest(tmp_path / "m.sqlite")
    m.ensure_schema()
    return m


def test_schema_is_versioned(manifest: Manifest) -> None:
    assert manifest.schema_version() == SCHEMA_VERSION
    manifest.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    with pytest.raises(SchemaError, match="newer"):
        manifest.ensure_schema()


def test_put_move_remove_and_generation(manifest: Manifest) -> None:
    g0 = manifest.generation
    fid = manifest.put_file(
        path="/a/x.mp4",
        kind="video",
        size=1,
        mtime_ns=2,
        digest="h",
        segments=[_seg("audio", 0, 1.0), _seg("visual", 0, 2.0)],
    )
    assert manifest.generation == g0 + 1
    ids, vecs = manifest.vectors("visual", 4)
    assert len(ids) == 1 and vecs[0, 0] == 2.0
    manifest.move_file(fid, "/b/x.mp4", 1, 3)
    assert list(manifest.files_under([Path("/b")])) == ["/b/x.mp4"]
    assert manifest.files_under([Path("/a")]) == {}
    seg_ids = manifest.vectors("audio", 4)[0]
    assert manifest.segments_by_ids(seg_ids)[int(seg_ids[0])].path == "/b/x.mp4"
    manifest.remove_files([fid])
    assert manifest.segment_count() == 0  # cascade


def test_replacing_a_file_never_reuses_segment_ids(manifest: Manifest) -> None:
    fid = manifest.put_file(
        path="/x.wav",
        kind="audio",
        size=1,
        mtime_ns=1,
        digest="a",
        segments=[_seg("audio", 0, 1.0)],
    )
    first = manifest.vectors("audio", 4)[0].tolist()
    manifest.put_file(
        path="/x.wav",
        kind="audio",
        size=2,
        mtime_ns=2,
        digest="b",
        segments=[_seg("audio", 0, 3.0)],
        replace_id=fid,
    )
    second = manifest.vectors("audio", 4)[0].tolist()
    assert second[0] > first[0]
    assert manifest.file_count() == 1


def test_files_under_matches_folder_prefix_only(manifest: Manifest) -> None:
    for p in ("/data/a.wav", "/data2/b.wav", "/data/sub/c.wav"):
        manifest.put_file(path=p, kind="audio", size=1, mtime_ns=1, digest=p, segments=[])
    assert sorted(manifest.files_under([Path("/data")])) == ["/data/a.wav", "/data/sub/c.wav"]


def test_a_failed_transaction_leaves_nothing(manifest: Manifest) -> None:
    with pytest.raises(RuntimeError), manifest.transaction():
        manifest.put_file(
            path="/y.wav",
            kind="audio",
            size=1,
            mtime_ns=1,
            digest="y",
            segments=[_seg("audio", 0, 1.0)],
        )
        raise RuntimeError("crash in the middle")
    assert manifest.file_count() == 0 and manifest.segment_count() == 0


def test_non_utf8_paths_are_stored_losslessly_as_blobs(manifest: Manifest) -> None:
    bad = os.fsdecode(b"/data/bad\xff\xfe.webp")  # str with surrogate escapes
    good = "/data/ünï.wav"
    bad_dir = os.fsdecode(b"/d\xe9j\xe0")  # a Latin-1 folder name, not UTF-8
    fid = manifest.put_file(
        path=bad, kind="image", size=1, mtime_ns=1, digest="h1", segments=[_seg("visual", 0, 1.0)]
    )
    manifest.put_file(path=good, kind="audio", size=1, mtime_ns=1, digest="h2", segments=[])
    manifest.put_file(path=f"{bad_dir}/x.wav", kind="audio", size=1, mtime_ns=1, digest="h3",
                      segments=[])  # fmt: skip
    kinds = dict(manifest.conn.execute("SELECT hash, typeof(path) FROM files").fetchall())
    assert kinds == {"h1": "blob", "h2": "text", "h3": "blob"}
    # prefix matches work for TEXT and BLOB rows alike, and for a non-UTF-8 root
    assert sorted(manifest.files_under([Path("/data")])) == sorted([bad, good])
    assert list(manifest.files_under([Path(bad_dir)])) == [f"{bad_dir}/x.wav"]
    assert list(manifest.files_under([Path(bad)])) == [bad]
    assert manifest.files_by_hash("h1")[0]["path"] == bad
    seg_ids = manifest.vectors("visual", 4)[0]
    assert manifest.segments_by_ids(seg_ids)[int(seg_ids[0])].path == bad
    assert [s.path for s in manifest.labelled_segments()] == [bad]
    # UNIQUE holds: writing the same path again replaces the row
    manifest.put_file(path=bad, kind="image", size=2, mtime_ns=2, digest="h4", segments=[])
    assert manifest.file_count() == 3
    moved = os.fsdecode(b"/data/moved\xff.webp")
    new_id = manifest.files_by_hash("h4")[0]["id"]
    assert new_id != fid
    manifest.move_file(new_id, moved, 2, 3)
    assert manifest.files_by_hash("h4")[0]["path"] == moved
    assert bad not in manifest.files_under([Path("/data")])
