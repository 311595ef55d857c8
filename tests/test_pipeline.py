"""The planner (mark and sweep) on a real manifest and real files, without any model."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avsearch import pipeline
from avsearch.config import EmbedConfig
from avsearch.media.decode import WindowSpec
from avsearch.media.discover import MediaFile, content_hash, discover
from avsearch.media.paths import display_path, path_from_b64
from avsearch.pipeline import Failure, plan, run_embed
from avsearch.stages import reader
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
        digest=content_hash(path),
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


# ------------------------------------------------------------------ content hash, unreadable files


def _manifest(tmp_path: Path) -> Manifest:
    m = Manifest(tmp_path / "m.sqlite")
    m.ensure_schema()
    return m


def test_same_size_edit_in_place_with_a_new_mtime_is_updated(tmp_path: Path) -> None:
    """Overwriting seconds 12-18 of a 20 s 16-bit wav keeps its size; it must be re-encoded."""
    import soundfile as sf

    from tests.mediagen import tone

    rate = 44100  # 1.76 MB: the edit lies past the first MiB the old quick hash looked at
    f = tmp_path / "media" / "x.wav"
    f.parent.mkdir()
    sf.write(str(f), tone(440.0, 20.0, rate), rate, subtype="PCM_16")
    m = _manifest(tmp_path)
    _record(m, f)
    size, mtime = f.stat().st_size, f.stat().st_mtime_ns
    with sf.SoundFile(str(f), "r+") as fh:
        fh.seek(12 * rate)
        fh.write(tone(880.0, 6.0, rate))
    os.utime(f, ns=(mtime + 10**9, mtime + 10**9))
    assert f.stat().st_size == size
    result = plan(m, discover([f.parent]), [f.parent])
    assert [(j.file.path.name, j.action) for j in result.jobs] == [("x.wav", "updated")]
    assert result.unchanged == 0


def test_rows_hashed_with_the_old_quick_hash_never_match(tmp_path: Path) -> None:
    from avsearch.media.discover import quick_hash

    root = tmp_path / "media"
    m = _manifest(tmp_path)
    touched = _file(root / "touched.wav", b"t" * 100)
    moved = _file(root / "moved.wav", b"m" * 100)
    for p in (touched, moved):
        st = p.stat()
        m.put_file(path=str(p), kind="audio", size=st.st_size, mtime_ns=st.st_mtime_ns,
                   digest=quick_hash(p), segments=[])  # fmt: skip
    untouched = plan(m, discover([root]), [root])
    assert untouched.unchanged == 2 and not untouched.jobs  # size + mtime equal: not even hashed
    os.utime(touched, ns=(1, 1))
    moved.rename(root / "elsewhere.wav")
    result = plan(m, discover([root]), [root])
    # an old-kind digest is not compared: the touched file is re-encoded once, the moved one
    # is encoded as new (its old row removed)
    assert sorted((j.file.path.name, j.action) for j in result.jobs) == [
        ("elsewhere.wav", "new"),
        ("touched.wav", "updated"),
    ]
    assert not result.moved and len(result.removed) == 1


def test_a_file_that_disappears_before_hashing_is_a_failure(tmp_path: Path) -> None:
    root = tmp_path / "media"
    m = _manifest(tmp_path)
    _file(root / "a.wav", b"a" * 10)
    gone = _file(root / "b.wav", b"b" * 10)
    files = list(discover([root]))
    gone.unlink()
    result = plan(m, files, [root])
    assert [j.file.path.name for j in result.jobs] == ["a.wav"]
    assert result.failures == [Failure(str(gone), "disappeared before it could be read")]


def test_an_unreadable_file_is_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "media"
    m = _manifest(tmp_path)
    _file(root / "a.wav", b"a" * 10)
    locked = _file(root / "locked.wav", b"b" * 10)
    real_hash = reader.content_hash

    def denying(path: Path) -> str:  # (tests may run as root, where chmod 000 still reads)
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_hash(path)

    monkeypatch.setattr(reader, "content_hash", denying)  # (plan is the reader stage's)
    result = plan(m, discover([root]), [root])
    assert [j.file.path.name for j in result.jobs] == ["a.wav"]
    assert result.failures == [Failure(str(locked), "permission denied: cannot read it")]


def test_dangling_links_and_fifos_become_failures_and_their_old_rows_go(tmp_path: Path) -> None:
    root = tmp_path / "media"
    m = _manifest(tmp_path)
    was_file = _file(root / "x.wav", b"x" * 10)
    _record(m, was_file)
    was_file.unlink()
    was_file.symlink_to(root / "nowhere.wav")
    os.mkfifo(root / "pipe.ogg")
    result = plan(m, discover([root]), [root])
    assert not result.jobs and result.unchanged == 0
    assert sorted((Path(f.path).name, f.reason) for f in result.failures) == [
        ("pipe.ogg", "not a regular file (a FIFO)"),
        ("x.wav", "dangling symbolic link (its target does not exist)"),
    ]
    assert len(result.removed) == 1


def test_non_utf8_names_plan_store_and_stay_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "media"
    m = _manifest(tmp_path)
    bad = _file(root / os.fsdecode(b"bad\xff\xfe.wav"), b"x" * 10)
    first = plan(m, discover([root]), [root])
    assert [j.file.path for j in first.jobs] == [bad]
    _record(m, bad)
    again = plan(m, discover([root]), [root])
    assert again.unchanged == 1 and not again.jobs and not again.removed


# ------------------------------------------------------------------ run_embed, with a fake model


class _TinyModel:
    """Duck-typed AVModel for run_embed: constant unit vectors, no weights."""

    name = "tiny"
    dim = 4
    fingerprint = "tiny-1"
    image_size = 32
    directory = Path("/nonexistent/tiny-model")

    def window_spec(self, window: float | None = None, min_tail: float = 0.5) -> WindowSpec:
        return WindowSpec.from_seconds(window or 1.0, 16000, min_tail)

    def embed(self, modality: str, batch: np.ndarray) -> np.ndarray:
        return np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (len(batch), 1))


def test_run_embed_reports_unreadable_inputs_and_indexes_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.mediagen import write_png, write_wav

    root = tmp_path / "m"
    write_wav(root / "a.wav", seconds=1.0)
    write_png(root / "b.png")
    bad = root / os.fsdecode(b"bad\xff\xfe.wav")
    bad.write_bytes((root / "a.wav").read_bytes())
    (root / os.fsdecode(b"dangling\xff.wav")).symlink_to(root / "nowhere.wav")
    os.mkfifo(root / "pipe.wav")
    vanishing = write_wav(root / "vanishing.wav", seconds=1.0)
    real_discover = pipeline.discover

    def discover_then_delete(*args: Any, **kwargs: Any) -> Iterator[MediaFile]:
        found = list(real_discover(*args, **kwargs))
        vanishing.unlink()  # gone between the walk and hashing
        return iter(found)

    monkeypatch.setattr(pipeline, "discover", discover_then_delete)
    summary = run_embed([root], tmp_path / "index", EmbedConfig(), model=_TinyModel())  # type: ignore[arg-type]
    assert (summary.new, summary.failed) == (3, 3)
    reasons = {display_path(Path(f.path).name): f.reason for f in summary.failures}
    assert reasons == {
        "dangling\\xff.wav": "dangling symbolic link (its target does not exist)",
        "pipe.wav": "not a regular file (a FIFO)",
        "vanishing.wav": "disappeared before it could be read",
    }
    m = Manifest(tmp_path / "index" / "manifest.sqlite")
    try:
        assert str(bad) in m.files_under([root])  # the non-UTF-8 name is indexed, exactly
    finally:
        m.close()
    data = summary.to_json()
    text = json.dumps(data, ensure_ascii=False)
    text.encode("utf-8")  # valid UTF-8: no surrogate left in it
    (dangling,) = (f for f in data["failures"] if f["path"].endswith("\\xff.wav"))
    assert path_from_b64(dangling["path_b64"]) == str(root / os.fsdecode(b"dangling\xff.wav"))
