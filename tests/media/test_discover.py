import hashlib
import os
import socket
from pathlib import Path

import pytest

from avsearch.media.discover import content_hash, discover, media_kind, quick_hash


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


def test_content_hash_follows_content_not_name(tmp_path: Path) -> None:
    a = _touch(tmp_path / "a.wav", b"0123" * 400_000)  # larger than one 1 MiB block
    digest = content_hash(a)
    assert digest == "sha256:" + hashlib.sha256(a.read_bytes()).hexdigest()
    b = a.rename(tmp_path / "moved.wav")
    assert content_hash(b) == digest
    data = bytearray(b.read_bytes())
    data[-10] ^= 0xFF  # change inside the last KiB
    b.write_bytes(bytes(data))
    assert content_hash(b) != digest


def test_content_hash_sees_a_same_size_edit_in_the_middle(tmp_path: Path) -> None:
    """The old quick hash (size, first 1 MiB, last 1 KiB) missed this; the content hash not."""
    data = bytearray(b"0123" * 600_000)  # 2.4 MB
    f = _touch(tmp_path / "a.wav", bytes(data))
    before, before_quick = content_hash(f), quick_hash(f)
    data[1_500_000:1_500_100] = b"x" * 100  # past the head, before the tail; same size
    f.write_bytes(bytes(data))
    assert quick_hash(f) == before_quick  # the fault the content hash fixes
    assert content_hash(f) != before
    assert not before_quick.startswith("sha256:")  # old digests never equal new ones


def test_content_hash_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "x.wav"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        content_hash(fifo)  # a blocking open would hang here: no writer ever comes


def test_follow_symlinks_survives_link_loops_and_yields_each_file_once(tmp_path: Path) -> None:
    root = tmp_path / "m"
    _touch(root / "horse.webp")
    _touch(root / "sub" / "a.wav")
    (root / "sub" / "loop").symlink_to("..")  # m/sub/loop -> m
    (root / "sub" / "loop2").symlink_to("../sub")  # a second loop, -> m/sub
    (root / "alias.wav").symlink_to("sub/a.wav")  # one file reached by two names
    found = list(discover([root], follow_symlinks=True))
    names = [f.path.relative_to(root).as_posix() for f in found]
    assert names == ["alias.wav", "horse.webp"]  # sub/a.wav is the same real file as alias.wav
    assert all(f.problem is None for f in found)
    assert len(list(discover([root]))) == 2  # without following: the same two files


def test_follow_symlinks_enters_a_linked_folder_once(tmp_path: Path) -> None:
    _touch(tmp_path / "elsewhere" / "x.png")
    root = tmp_path / "m"
    root.mkdir()
    (root / "l1").symlink_to(tmp_path / "elsewhere")
    (root / "l2").symlink_to(tmp_path / "elsewhere")
    found = [f.path.relative_to(root).as_posix() for f in discover([root], follow_symlinks=True)]
    assert found == ["l1/x.png"]
    assert list(discover([root])) == []  # links to folders are not followed by default


def test_dangling_links_and_special_files_named_like_media_are_reported(tmp_path: Path) -> None:
    _touch(tmp_path / "ok.wav")
    (tmp_path / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    (tmp_path / "self.mp4").symlink_to(tmp_path / "self.mp4")
    os.mkfifo(tmp_path / "pipe.flac")
    os.mkfifo(tmp_path / "pipe.txt")  # not named like media: not an input file, not reported
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock.png"))
        found = {f.path.name: f for f in discover([tmp_path])}
    assert sorted(found) == ["gone.wav", "ok.wav", "pipe.flac", "self.mp4", "sock.png"]
    assert found["ok.wav"].problem is None
    assert found["gone.wav"].problem == "dangling symbolic link (its target does not exist)"
    assert found["self.mp4"].problem == "symbolic link loop"
    assert found["pipe.flac"].problem == "not a regular file (a FIFO)"
    assert found["sock.png"].problem == "not a regular file (a socket)"
    assert found["pipe.flac"].kind == "audio"
    fifo_root = list(discover([tmp_path / "pipe.flac"]))  # a root that is a FIFO
    assert [f.problem for f in fifo_root] == ["not a regular file (a FIFO)"]


def test_non_utf8_names_are_found(tmp_path: Path) -> None:
    name = os.fsdecode(b"bad\xff\xfe.webp")
    _touch(tmp_path / name)
    (found,) = discover([tmp_path])
    assert found.path.name == name and found.problem is None
    assert os.fsencode(found.path).endswith(b"bad\xff\xfe.webp")
