from pathlib import Path

from avsearch.media.discover import discover, media_kind, quick_hash


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_discover_walks_sorted_and_skips_hidden_nonmedia_and_index(tmp_path: Path) -> None:
    _touch(tmp_path / "b" / "clip.WAV")
    _touch(tmp_path / "a" / "photo.jpg")
    _touch(tmp_path / "a" / "notes.txt")
    _touch(tmp_path / ".hidden" / "x.mp4")
    _touch(tmp_path / "a" / ".dot.png")
    _touch(tmp_path / ".avsearch" / "y.png")
    _touch(tmp_path / "index" / "z.png")
    _touch(tmp_path / "ünïcode ☃" / "film.webm")
    found = list(discover([tmp_path], exclude=[tmp_path / "index"]))
    names = [f.path.relative_to(tmp_path).as_posix() for f in found]
    assert names == ["a/photo.jpg", "b/clip.WAV", "ünïcode ☃/film.webm"]
    assert [f.kind for f in found] == ["image", "audio", "video"]
    assert all(f.path.is_absolute() for f in found)


def test_a_file_root_is_yielded_once(tmp_path: Path) -> None:
    f = _touch(tmp_path / "s.ogg")
    assert [m.path for m in discover([f, tmp_path])] == [f]


def test_media_kind() -> None:
    assert media_kind(Path("x.M4A")) == "audio"
    assert media_kind(Path("x.mkv")) == "video"
    assert media_kind(Path("x.bmp")) == "image"
    assert media_kind(Path("x.gif")) is None


def test_quick_hash_follows_content_not_name(tmp_path: Path) -> None:
    a = _touch(tmp_path / "a.wav", b"0123" * 400_000)  # larger than the 1 MiB head
    digest = quick_hash(a)
    b = a.rename(tmp_path / "moved.wav")
    assert quick_hash(b) == digest
    data = bytearray(b.read_bytes())
    data[-10] ^= 0xFF  # change inside the 1 KiB tail
    b.write_bytes(bytes(data))
    assert quick_hash(b) != digest
