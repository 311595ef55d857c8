"""Walk folders for media files; stat and content-hash them (rclip-style quick hash)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from avsearch.config import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

MediaKind = Literal["video", "audio", "image"]

HASH_HEAD = 1 << 20  # first 1 MiB
HASH_TAIL = 1 << 10  # last 1 KiB


@dataclass(frozen=True)
class MediaFile:
    path: Path  # absolute
    kind: MediaKind
    size: int
    mtime_ns: int


def media_kind(path: Path) -> MediaKind | None:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return None


def discover(
    roots: Iterable[Path], *, exclude: Iterable[Path] = (), follow_symlinks: bool = False
) -> Iterator[MediaFile]:
    """Yield media files under ``roots`` (files or folders), sorted, skipping hidden entries.

    Folders in ``exclude`` (e.g. the index directory) are not entered. A root that is itself a
    file is yielded when its extension is a media one, hidden or not.
    """
    excluded = {p.resolve() for p in exclude}
    seen: set[Path] = set()
    for root in roots:
        root = root.expanduser().resolve()
        if root.is_file():
            found = _one(root)
            if found is not None and root not in seen:
                seen.add(root)
                yield found
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks):
            here = Path(dirpath)
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and (here / d) not in excluded
            )
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = here / name
                if path in seen:
                    continue
                found = _one(path)
                if found is not None:
                    seen.add(path)
                    yield found


def _one(path: Path) -> MediaFile | None:
    kind = media_kind(path)
    if kind is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return MediaFile(path=path, kind=kind, size=st.st_size, mtime_ns=st.st_mtime_ns)


def quick_hash(path: Path) -> str:
    """sha256 of (size, first 1 MiB, last 1 KiB): cheap, and stable when a file is moved."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as fh:
        h.update(fh.read(HASH_HEAD))
        if size > HASH_HEAD:
            fh.seek(max(HASH_HEAD, size - HASH_TAIL))
            h.update(fh.read(HASH_TAIL))
    return h.hexdigest()
