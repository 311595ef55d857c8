"""What a Ray shard is and what its task runs (``avsearch.engines.ray`` drives them).

:func:`plan_shards` packs a run's files into shards on the driver; a :class:`Shard` carries its
jobs and the run's :class:`Task` (windowing, image size, where the model is, batch size, whether
to return raw features) to a worker, where :func:`encode_shard` runs the local stages over it:
the ``Reader`` (one decode thread) → the ``Mapper`` → the runner, into a writer that collects
each file's windows. Nothing here imports Ray: a worker process imports this module, and the
tests run it in-process.
"""

from __future__ import annotations

import functools
import heapq
import math
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avsearch.errors import AvsearchError, ModelError
from avsearch.stages.mapper import Mapped, Mapper
from avsearch.stages.reader import Job, Reader
from avsearch.stages.runner import run

if TYPE_CHECKING:
    from avsearch.encoders.model import AVModel
    from avsearch.media.segment import WindowSpec

DECODE_THREADS = 1  # per task: a task holds one CPU, its decode thread runs ahead of its encoder
SHARDS_PER_WORKER = 4  # at least this many shards per worker when there are files enough
MAX_SHARD_FILES = 64
MAX_SHARD_BYTES = 1 << 30  # ~1 h of 2 Mbit/s video: what a task holds (and a lost one redoes)


# ------------------------------------------------------------------------------ what travels
@dataclass(frozen=True)
class ModelRef:
    """The model as a worker finds it: its directory (the same path on every node), the
    fingerprint the driver stamped the index with, the weights files the user gave."""

    directory: str
    fingerprint: str
    user_weights: tuple[tuple[str, str], ...] = ()
    precision: str = "fp32"  # what the towers run their networks at (AVModel.load)


@dataclass(frozen=True)
class FaultHook:
    """Test hook: the worker given a shard that holds a file named in ``names`` exits at once
    (``os._exit``, as a killed process) on the first ``attempts`` such shards; files in
    ``marker_dir`` count the attempts across worker processes."""

    marker_dir: str
    names: tuple[str, ...]
    attempts: int = 1

    def strike(self, shard: Shard) -> None:
        marks = Path(self.marker_dir)
        for name in sorted(set(self.names) & {job.file.path.name for _, job in shard.jobs}):
            done = sum(p.name.startswith(f"{name}.") for p in marks.iterdir())
            if done < self.attempts:
                (marks / f"{name}.{done}").touch()
                os._exit(1)


@dataclass(frozen=True)
class Task:
    """What every shard of a run shares."""

    spec: WindowSpec
    image_size: int
    model: ModelRef
    batch_size: int
    features: bool  # return the raw backbone features too (the driver keeps them)
    fault: FaultHook | None = None


@dataclass(frozen=True)
class Shard:
    number: int
    jobs: tuple[tuple[int, Job], ...]  # (the job's index in the run, the job)
    task: Task

    @property
    def size(self) -> int:
        return sum(job.file.size for _, job in self.jobs)


@dataclass
class FileResult:
    job: int  # its index in the run
    windows: list[Mapped]
    reason: str | None = None  # set: the file failed (``windows`` is empty)


# ------------------------------------------------------------------------------- the worker
def encode_shard(shard: Shard) -> list[FileResult]:
    """A Ray task: the local reader → mapper → runner over the shard's files; returns each
    file's mapped windows (or why it failed), in the shard's order."""
    task = shard.task
    if task.fault is not None:
        task.fault.strike(shard)
    model = _worker_model(task.model)
    jobs = [job for _, job in shard.jobs]
    collector = Collector()
    reader = Reader(jobs, task.spec, task.image_size, DECODE_THREADS)
    mapper = Mapper(model, task.batch_size, features=task.features)
    failed = run(jobs, reader, mapper, [collector], report=_silent, commit_every=math.inf)
    return [
        FileResult(j, [], failed[k]) if k in failed else FileResult(j, collector.done.pop(k, []))
        for k, (j, _) in enumerate(shard.jobs)
    ]


def _silent(event: str, data: dict[str, Any]) -> None:
    pass


class Collector:
    """The task's writer: each finished file's windows, in order."""

    def __init__(self) -> None:
        self.windows: dict[int, list[Mapped]] = {}
        self.done: dict[int, list[Mapped]] = {}

    def take(self, job: int, m: Mapped) -> None:
        self.windows.setdefault(job, []).append(m)

    def drop(self, job: int) -> None:
        self.windows.pop(job, None)

    def commit(self, jobs: Sequence[int]) -> None:
        for j in jobs:
            windows = self.windows.pop(j, [])
            self.done[j] = sorted(windows, key=lambda m: (m.modality, m.idx))


def _worker_model(ref: ModelRef) -> AVModel:
    return _load_model(ref.directory, ref.fingerprint, ref.user_weights, ref.precision)


@functools.lru_cache(maxsize=2)  # a worker process runs many shards: load the model once
def _load_model(
    directory: str,
    fingerprint: str,
    user_weights: tuple[tuple[str, str], ...],
    precision: str = "fp32",
) -> AVModel:
    from avsearch.encoders.model import AVModel

    try:
        model = AVModel.load(
            directory,
            lazy=True,
            user_weights={k: Path(v) for k, v in user_weights},
            precision=precision,  # type: ignore[arg-type]
        )
    except AvsearchError as exc:
        raise ModelError(f"on node {socket.gethostname()}: {exc.message}") from exc
    if model.fingerprint != fingerprint:
        raise ModelError(
            f"the model at {directory} on node {socket.gethostname()} is not the driver's "
            f"(fingerprint {model.fingerprint[:12]}, the index's {fingerprint[:12]})"
        )
    return model


def plan_shards(
    sizes: Sequence[int],
    workers: int,
    *,
    per_worker: int = SHARDS_PER_WORKER,
    max_files: int = MAX_SHARD_FILES,
    max_bytes: int = MAX_SHARD_BYTES,
) -> list[list[int]]:
    """Positions of ``sizes`` (file sizes in bytes) packed into shards: at least ``per_worker``
    shards per worker when there are files enough, none over ``max_files`` files, enough of
    them that they average at most ``max_bytes``, balanced by bytes (largest file first, each
    into the lightest shard with room). Shards come largest first, each in position order."""
    n = len(sizes)
    if n == 0:
        return []
    least = max(workers * per_worker, math.ceil(n / max_files), math.ceil(sum(sizes) / max_bytes))
    count = min(n, least)
    heap = [(0, 0, s) for s in range(count)]  # (bytes, files, shard)
    shards: list[list[int]] = [[] for _ in range(count)]
    totals = [0] * count
    for i in sorted(range(n), key=lambda i: (-sizes[i], i)):
        size, files, s = heapq.heappop(heap)
        shards[s].append(i)
        totals[s] = size + sizes[i]
        if files + 1 < max_files:
            heapq.heappush(heap, (totals[s], files + 1, s))
    order = sorted(range(count), key=lambda s: (-totals[s], s))
    return [sorted(shards[s]) for s in order if shards[s]]
