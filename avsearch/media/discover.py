"""Walk folders for media files; stat and content-hash them.

``discover`` yields every media file it finds, and also the entries named like media that cannot
be read as files (a dangling symbolic link, a FIFO, a socket, a device): those come with
``problem`` set, so the caller can name them as failures; they are never opened (a FIFO would
block). With ``follow_symlinks`` a folder reached twice (a link loop such as ``ln -s .. loop``)
is walked once, and a file reached through several links is yielded once.

``ignore`` holds the user's exclude globs (``embed --exclude``, :func:`excluded`): a file or folder
whose name, path relative to its root, or absolute path matches one is left out (a folder is not
entered).

``content_hash`` hashes the whole content (sha256, streamed in 1 MiB blocks); its digests carry
their kind (``sha256:…``), so a digest of another kind (the old quick hash) never matches one.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from avsearch.config import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from avsearch.media.paths import display_path

log = logging.getLogger(__name__)

MediaKind = Literal["video", "audio", "image"]

HASH_KIND = "sha256"  # the kind of digest content_hash writes (its prefix)
HASH_BLOCK = 1 << 20  # content_hash reads 1 MiB at a time
HASH_HEAD = 1 << 20  # quick_hash (legacy): first 1 MiB
HASH_TAIL = 1 << 10  # quick_hash (legacy): last 1 KiB


@dataclass(frozen=True)
class MediaFile:
    path: Path  # absolute
    kind: MediaKind
    size: int
    mtime_ns: int
    problem: str | None = None  # set: named like media but cannot be read (reason); not a file


def media_kind(path: Path) -> MediaKind | None:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return None


def excluded(path: Path, root: Path, patterns: Sequence[str]) -> bool:
    """True when ``path`` (under ``root``, or ``root`` itself) matches one of the glob
    ``patterns`` (fnmatch, case-sensitive; ``*`` also crosses ``/``): by its name
    (``drafts``, ``*.tmp.wav``), its path relative to ``root`` (``raw/2023-*``) or, for a
    pattern starting with ``/``, its absolute path."""
    if not patterns:
        return False
    name = path.name
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = name
    full = path.as_posix()
    for pattern in patterns:
        pat = pattern.rstrip("/") or pattern
        if pat.startswith("/"):
            if fnmatch.fnmatchcase(full, pat):
                return True
        elif fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(rel, pat):
            return True
    return False


def discover(
    roots: Iterable[Path],
    *,
    exclude: Iterable[Path] = (),
    follow_symlinks: bool = False,
    ignore: Sequence[str] = (),
) -> Iterator[MediaFile]:
    """Yield media files under ``roots`` (files or folders), sorted, skipping hidden entries.

    Folders in ``exclude`` (e.g. the index directory) are not entered. A root that is itself a
    file is yielded when its extension is a media one, hidden or not. Each real file is yielded
    once, under the first name the walk reaches it by; entries named like media that are not
    readable files are yielded with ``problem`` set (see the module docstring).
    """
    skipped = {os.path.realpath(p) for p in exclude}
    seen: set[str] = set()  # real paths of the files yielded
    visited: set[tuple[int, int]] = set()  # (st_dev, st_ino) of the folders walked

    def emit(path: Path, real_parent: str | None = None) -> Iterator[MediaFile]:
        found, link = _stat_one(path)
        if found is None:
            return
        if found.problem is None:
            # a name that is no link lies where its folder really is: no realpath per file
            real = (
                os.path.join(real_parent, path.name)
                if real_parent is not None and not link
                else os.path.realpath(path)
            )
            if real in seen:
                return
            seen.add(real)
        elif str(path) in seen:
            return
        else:
            seen.add(str(path))
        yield found

    def walk_error(exc: OSError) -> None:
        log.warning("cannot list %s: %s", display_path(exc.filename or "?"), exc.strerror)

    for root in roots:
        root = root.expanduser().resolve()
        if not root.is_dir():
            if not excluded(root, root.parent, ignore):
                yield from emit(root)
            continue
        for dirpath, dirnames, filenames in os.walk(
            root, onerror=walk_error, followlinks=follow_symlinks
        ):
            try:
                st = os.stat(dirpath)
            except OSError:
                dirnames[:] = []
                continue
            if (st.st_dev, st.st_ino) in visited:  # reached again through a link: a loop
                dirnames[:] = []
                continue
            visited.add((st.st_dev, st.st_ino))
            here = Path(dirpath)
            real_here = os.path.realpath(dirpath)
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".")
                and os.path.realpath(here / d) not in skipped
                and not excluded(here / d, root, ignore)
            )
            for name in sorted(filenames):
                if not name.startswith(".") and not excluded(here / name, root, ignore):
                    yield from emit(here / name, real_here)


def _one(path: Path) -> MediaFile | None:
    """The MediaFile for ``path``; None when it is not named like media. Never opens it."""
    return _stat_one(path)[0]


def _stat_one(path: Path) -> tuple[MediaFile | None, bool]:
    """``_one``, and whether ``path`` is a symbolic link (one lstat; a stat more for a link)."""
    kind = media_kind(path)
    if kind is None:
        return None, False
    link = False
    try:
        st = os.lstat(path)
        link = stat.S_ISLNK(st.st_mode)
        if link:
            st = path.stat()
    except OSError as exc:
        return MediaFile(path, kind, 0, 0, problem=_stat_problem(path, exc)), link
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            return None, link  # a folder named like media (only as a root; the walk enters it)
        problem = f"not a regular file ({_file_type(st.st_mode)})"
        return MediaFile(path, kind, 0, 0, problem=problem), link
    return MediaFile(path=path, kind=kind, size=st.st_size, mtime_ns=st.st_mtime_ns), link


def _stat_problem(path: Path, exc: OSError) -> str:
    if path.is_symlink():
        if isinstance(exc, FileNotFoundError):
            return "dangling symbolic link (its target does not exist)"
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
    if isinstance(exc, FileNotFoundError):
        return "disappeared before it could be read"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"cannot be read: {exc.strerror or exc}"


def _file_type(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a file"


def read_problem(exc: OSError) -> str:
    """Why a file found by ``discover`` could not be read (for a failure entry)."""
    if isinstance(exc, FileNotFoundError):
        return "disappeared before it could be read"
    if isinstance(exc, PermissionError):
        return "permission denied: cannot read it"
    if isinstance(exc, IsADirectoryError):
        return "became a folder before it could be read"
    return f"cannot be read: {exc.strerror or exc}"


def content_hash(path: Path) -> str:
    """``sha256:<hex>`` of the whole content, read in 1 MiB blocks (stable when a file moves).

    Opens without blocking and refuses anything but a regular file, so a FIFO put in a file's
    place is never waited on. Raises OSError (FileNotFoundError, PermissionError, ...).
    """
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb", buffering=0) as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file", os.fspath(path))
        while block := fh.read(HASH_BLOCK):
            h.update(block)
    return f"{HASH_KIND}:{h.hexdigest()}"


def quick_hash(path: Path) -> str:
    """Legacy (indexes written before the content hash): sha256 of (size, first 1 MiB, last
    1 KiB). Misses edits in the middle of a file, so it no longer decides anything; kept for
    ``bench/hash_cost.py``. Its digests are bare hex, so they never equal a ``content_hash``."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as fh:
        h.update(fh.read(HASH_HEAD))
        if size > HASH_HEAD:
            fh.seek(max(HASH_HEAD, size - HASH_TAIL))
            h.update(fh.read(HASH_TAIL))
    return h.hexdigest()
