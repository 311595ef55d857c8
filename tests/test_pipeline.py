"""The planner (mark and sweep) on a real manifest and real files, without any model."""

from pathlib import Path

from avsearch.media.discover import discover, quick_hash
from avsearch.pipeline import plan
from avsearch.store.manifest import Manifest


def _file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _record(m: Manifest, path: Path) -> None:
    st = path.stat()
    m.put_file(
        path=str(path),
        kind="audio",
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        digest=quick_hash(path),
        segments=[],
    )


def test_plan_classifies_new_changed_unchanged_moved_removed(tmp_path: Path) -> None:
    root = tmp_path / "media"
    m = Manifest(tmp_path / "m.sqlite")
    m.ensure_schema()
    same = _file(root / "same.wav", b"a" * 100)
    changed = _file(root / "changed.wav", b"b" * 100)
    moved = _file(root / "old" / "moved.wav", b"c" * 100)
    gone = _file(root / "gone.wav", b"d" * 100)
    outside = _file(tmp_path / "elsewhere" / "keep.wav", b"e" * 100)
    for p in (same, changed, moved, gone, outside):
        _record(m, p)
    changed.write_bytes(b"B" * 120)
    moved.rename(root / "new-home.wav")
    gone.unlink()
    _file(root / "fresh.wav", b"f" * 100)

    result = plan(m, discover([root]), [root])
    assert result.unchanged == 1
    assert sorted((j.file.path.name, j.action) for j in result.jobs) == [
        ("changed.wav", "updated"),
        ("fresh.wav", "new"),
    ]
    assert [f.path.name for _, f in result.moved] == ["new-home.wav"]
    removed_paths = {r["path"] for r in m.files_under([root]).values() if r["id"] in result.removed}
    assert removed_paths == {str(gone)}  # the file outside the folder is left alone


def test_touched_but_identical_file_is_unchanged(tmp_path: Path) -> None:
    import os

    m = Manifest(tmp_path / "m.sqlite")
    m.ensure_schema()
    f = _file(tmp_path / "media" / "x.wav", b"x" * 50)
    _record(m, f)
    os.utime(f, ns=(1, 1))
    result = plan(m, discover([tmp_path / "media"]), [tmp_path / "media"])
    assert result.unchanged == 1 and not result.jobs
