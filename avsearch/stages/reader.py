"""The reader stage: which files to read (plan), and their windows, as a stream of events.

``plan`` compares the discovered files with the manifest (mark and sweep): unchanged files (size
+ mtime) are skipped, changed ones re-encoded, new ones hashed and, when their content hash
matches a file that is gone from disk, recorded as moved (no re-encoding); rows under the given
roots that were not seen are removed.

``Reader`` turns jobs into events: a job's windows come from the feature cache when the caller
says it holds them (read in the consumer's thread), else decode threads stream each file's
pieces into one bounded queue. PyAV, soundfile and Pillow release the GIL, so the threads overlap
with the encoder without pickling windows between processes. The decoders are imported on first
use: a run with nothing to read never loads them.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from avsearch.errors import MediaError
from avsearch.media.discover import MediaFile, content_hash, read_problem
from avsearch.media.paths import display_text, path_fields
from avsearch.store.manifest import Manifest

if TYPE_CHECKING:
    from avsearch.media.decode import Modality, Piece
    from avsearch.media.segment import WindowSpec
    from avsearch.store.features import CachedWindow

log = logging.getLogger(__name__)

PIECE, DONE, FAIL = "piece", "done", "fail"
REFRESH = "refreshed"  # a Job's action: unchanged, re-encoded for a vector space it lacks
# (PIECE, job, Piece | CachedWindow) | (DONE, job, None) | (FAIL, job, reason)
Event = tuple[str, int, Any]
DecodeFn = Callable[..., Iterable["Piece"]]  # (path, kind, spec, image_size) -> pieces


def file_pieces(path: Path, kind: str, spec: WindowSpec, image_size: int = 224) -> Iterator[Piece]:
    """``avsearch.media.decode.file_pieces``, imported on first use."""
    from avsearch.media.decode import file_pieces as decode

    return decode(path, kind, spec, image_size)


def range_pieces(
    path: Path,
    kind: str,
    spec: WindowSpec,
    start: float | None,
    end: float | None,
    modality: str,
    image_size: int = 224,
) -> Iterator[Piece]:
    """The pieces of ``modality`` in [start, end) of one file, read after a seek to ``start``
    (``avsearch.media.decode.decode_query``, imported on first use)."""
    from avsearch.media.decode import decode_query

    return decode_query(path, kind, spec, start, end, cast("Modality", modality), image_size)


@dataclass
class Failure:
    path: str  # as the file system gave it (a non-UTF-8 name holds surrogate escapes)
    reason: str

    def to_json(self) -> dict[str, str]:
        """``path`` printable (plus ``path_b64`` when the name is not UTF-8), ``reason``."""
        return {**path_fields(self.path), "reason": display_text(self.reason)}


@dataclass
class Job:
    file: MediaFile
    action: str  # "new" | "updated" | REFRESH
    digest: str
    replace_id: int | None = None


@dataclass
class Plan:
    jobs: list[Job]
    unchanged: int
    moved: list[tuple[int, MediaFile]]
    removed: list[int]
    failures: list[Failure] = field(default_factory=list)  # files that could not be read


def _digest(f: MediaFile, failures: list[Failure]) -> str | None:
    """The content hash of ``f``, or None with a failure when it cannot be read (a dangling
    link or FIFO that ``discover`` named, or a file that vanished or may not be read)."""
    if f.problem is not None:
        failures.append(Failure(str(f.path), f.problem))
        return None
    try:
        return content_hash(f.path)
    except OSError as exc:
        failures.append(Failure(str(f.path), read_problem(exc)))
        return None


def new_jobs(files: Iterable[MediaFile]) -> tuple[list[Job], list[Failure]]:
    """A job for every file whose content can be hashed; a failure for the others."""
    failures: list[Failure] = []
    jobs = [Job(f, "new", d) for f in files if (d := _digest(f, failures)) is not None]
    return jobs, failures


def plan(
    manifest: Manifest,
    files: Iterable[MediaFile],
    roots: list[Path],
    refresh: Collection[int] = (),
) -> Plan:
    """Compare the discovered files with the manifest (see the module docstring).

    Unchanged files whose id is in ``refresh`` (their segments lack a vector space the model
    has) are re-encoded all the same (``REFRESH`` jobs: from the feature cache when it holds
    them, so at the cost of the heads).

    Content is compared by its full hash (``content_hash``); a stored digest of another kind
    (the old quick hash) never matches, so such a file is re-encoded once when its size or mtime
    changed, and is not recognised as moved. Entries ``discover`` could not read, and files that
    vanish or cannot be read while hashing, become ``failures``; their old rows are removed.
    """
    existing = manifest.files_under(roots)
    unseen = {row["path"]: row for row in existing.values()}
    jobs: list[Job] = []
    moved: list[tuple[int, MediaFile]] = []
    failures: list[Failure] = []
    unchanged = 0
    claimed: set[int] = set()
    touched: list[tuple[int, int]] = []  # (file id, new mtime) of files touched, not changed
    for f in files:
        row = existing.get(str(f.path)) if f.problem is None else None
        if row is not None and row["size"] == f.size and row["mtime_ns"] == f.mtime_ns:
            unseen.pop(row["path"], None)
            if row["id"] in refresh:
                jobs.append(Job(f, REFRESH, row["hash"], replace_id=row["id"]))
            else:
                unchanged += 1
            continue
        digest = _digest(f, failures)
        if digest is None:
            continue
        if row is not None:
            unseen.pop(row["path"], None)
            if digest == row["hash"] and row["id"] in refresh:
                jobs.append(Job(f, REFRESH, digest, replace_id=row["id"]))
            elif digest == row["hash"]:  # touched, not changed
                touched.append((row["id"], f.mtime_ns))
                unchanged += 1
            else:
                jobs.append(Job(f, "updated", digest, replace_id=row["id"]))
            continue
        source = next(
            (
                r
                for r in manifest.files_by_hash(digest)
                if r["id"] not in claimed and not Path(r["path"]).exists()
            ),
            None,
        )
        if source is not None:
            claimed.add(source["id"])
            unseen.pop(source["path"], None)
            moved.append((source["id"], f))
        else:
            jobs.append(Job(f, "new", digest))
    if touched:  # one transaction, not one per file
        with manifest.transaction():
            for file_id, mtime_ns in touched:
                manifest.touch_file(file_id, mtime_ns)
    removed = [row["id"] for row in unseen.values() if row["id"] not in claimed]
    return Plan(jobs, unchanged, moved, removed, failures)


class Reader:
    """Events of ``jobs`` (see the module docstring), iterated in the consumer's thread: every
    job ends with exactly one DONE or FAIL; None means nothing arrived for a moment (time to
    flush a batch). Jobs in ``hits`` come from ``cached``; one it does not give after all is
    decoded in the consumer's thread."""

    IDLE = 0.05  # seconds without an event before yielding None

    def __init__(
        self,
        jobs: Sequence[Job],
        spec: WindowSpec,
        image_size: int,
        workers: int,
        *,
        decode: DecodeFn = file_pieces,
        cached: Callable[[Job], list[CachedWindow] | None] | None = None,
        hits: Collection[int] = (),
    ) -> None:
        self.jobs, self.spec, self.image_size, self.decode = jobs, spec, image_size, decode
        self.cached, self.hits = cached, sorted(hits) if cached is not None else []
        self.todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.out: queue.Queue[Event] = queue.Queue(maxsize=256)
        self.stop = threading.Event()
        decoded = len(jobs) - len(self.hits)
        self.threads = [
            threading.Thread(target=self._work, name=f"avsearch-decode-{n}", daemon=True)
            for n in range(min(workers, decoded) if decoded else 0)
        ]

    def __iter__(self) -> Iterator[Event | None]:
        hits = set(self.hits)
        for j in range(len(self.jobs)):
            if j not in hits:
                self.todo.put(j)
        for t in self.threads:
            t.start()
        left = len(self.jobs) - len(hits)  # jobs the threads end
        for j in self.hits:  # meanwhile the threads decode the rest
            windows = self.cached(self.jobs[j]) if self.cached is not None else None
            if windows is None:
                yield from self._events(j)
            else:
                yield from ((PIECE, j, w) for w in windows)
                yield DONE, j, None
            while left and (event := self._get(0)) is not None:
                left -= event[0] != PIECE
                yield event
        while left:
            event = self._get(self.IDLE)
            left -= event is not None and event[0] != PIECE
            yield event

    def _get(self, timeout: float) -> Event | None:
        try:
            return self.out.get(timeout=timeout) if timeout else self.out.get_nowait()
        except queue.Empty:
            return None

    def _events(self, j: int) -> Iterator[Event]:
        f = self.jobs[j].file
        try:
            count = 0
            for piece in self.decode(f.path, f.kind, self.spec, self.image_size):
                count += 1
                yield PIECE, j, piece
            if count == 0:
                raise MediaError(f.path, "no audio or video stream to index")
        except MediaError as exc:
            yield FAIL, j, exc.reason
            return
        except Exception as exc:  # a decoder bug must not take the whole run down
            log.debug("decoding %s failed", f.path, exc_info=True)
            yield FAIL, j, f"{type(exc).__name__}: {exc}"
            return
        yield DONE, j, None

    def _work(self) -> None:
        while not self.stop.is_set():
            try:
                j = self.todo.get_nowait()
            except queue.Empty:
                return
            for event in self._events(j):
                while not self.stop.is_set():
                    try:
                        self.out.put(event, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                else:
                    return

    def close(self) -> None:
        """Stop the threads (what they hold is dropped)."""
        self.stop.set()
        for t in self.threads:
            if t.is_alive():
                t.join(timeout=5)
