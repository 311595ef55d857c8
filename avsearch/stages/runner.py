"""Wire a reader into a mapper and writers: a job's windows are written once the reader is done
with the job and the mapper has mapped them all; the writers commit the finished jobs every
``commit_every`` seconds (or every 256 files), so a killed run loses at most the files in
flight. Interrupted (KeyboardInterrupt), it stops reading, commits what is finished and
re-raises."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from avsearch.stages.mapper import Mapped
from avsearch.stages.reader import DONE, PIECE, Event, Job
from avsearch.stages.writers import Writer

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, dict[str, Any]], None]
COMMIT_FILES = 256


class Source(Protocol):
    """What ``run`` reads events from: a ``Reader``, or an engine's (``avsearch.engines``)."""

    def __iter__(self) -> Iterator[Event | None]: ...
    def close(self) -> None: ...


class Stage(Protocol):
    """What maps the windows: a ``Mapper``, or an engine's (``avsearch.engines``)."""

    emit: Callable[[int, Mapped], None]

    def add(self, job: int, w: Any) -> None: ...
    def done(self, job: int) -> None: ...
    def drop(self, job: int) -> None: ...
    def flush(self, modality: str | None = None) -> None: ...


def run(
    jobs: Sequence[Job],
    reader: Source,
    mapper: Stage,
    writers: Sequence[Writer],
    *,
    report: ProgressFn,
    commit_every: float,
) -> dict[int, str]:
    """Run the stages over ``jobs``; returns the jobs that failed, with the reason. Reports a
    ``file`` event per job."""
    pending: dict[int, int] = {}  # windows given to the mapper and not mapped yet, per job
    read: set[int] = set()  # jobs the reader is done with
    ready: list[int] = []
    failed: dict[int, str] = {}
    last = time.monotonic()

    def mapped(j: int, m: Mapped) -> None:
        for w in writers:
            w.take(j, m)
        pending[j] -= 1
        if pending[j] == 0 and j in read:
            ready.append(j)

    def commit() -> None:
        nonlocal last
        mapper.flush()
        if ready:
            for w in writers:
                w.commit(ready)
            ready.clear()
        last = time.monotonic()

    mapper.emit = mapped
    try:
        for event in reader:
            if event is None:  # nothing came for a moment: map what waits
                mapper.flush()
            elif event[0] == PIECE:
                pending[event[1]] = pending.get(event[1], 0) + 1
                mapper.add(event[1], event[2])
            elif event[0] == DONE:
                read.add(event[1])
                if not pending.get(event[1]):
                    ready.append(event[1])
                mapper.done(event[1])
                report("file", {"path": str(jobs[event[1]].file.path), "ok": True})
            else:
                _, j, reason = event
                failed[j] = reason
                mapper.drop(j)
                pending.pop(j, None)
                for w in writers:
                    w.drop(j)
                log.warning("skipping %s: %s", jobs[j].file.path, reason)
                report("file", {"path": str(jobs[j].file.path), "ok": False, "reason": reason})
            if len(ready) >= COMMIT_FILES or time.monotonic() - last > commit_every:
                commit()
        commit()
    except KeyboardInterrupt:
        reader.close()
        commit()
        raise
    finally:
        reader.close()
    return failed
