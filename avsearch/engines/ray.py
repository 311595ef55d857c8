"""``embed --engine ray``: a run's encoding sharded over Ray tasks, on this machine or a cluster.

The driver (the ``avsearch embed`` process) plans as always (mark and sweep, in
``avsearch.pipeline``) and stays the only writer of the index: the same ``IndexWriter`` and
``FeatureWriter``, the same per-file transactions every few seconds, so a killed driver loses
at most the files in flight, as a local run does. What changes is where the windows are mapped.
:meth:`RayEngine.stages` gives the runner two stand-ins:

- :class:`RemoteReader`, the source: packs the jobs into shards (:func:`plan_shards`, balanced
  by bytes, largest first), keeps one task per worker in flight, and yields each finished
  shard's windows as the local reader's events (PIECE... then DONE, or FAIL, per file). Files
  whose raw features are in the driver's feature cache are read from it on the driver, as in a
  local run.
- :class:`Relay`, the mapper: windows mapped by a task pass through; cached ones go through the
  heads here.

A task (``encode_shard`` in ``avsearch.engines.shards``, one CPU) runs the local stages over
its shard: the ``Reader`` (one decode thread) → the ``Mapper`` (the model read from its
directory, which must be at the same path on every node; its fingerprint is checked) → the
runner, into a writer that collects each file's windows (vectors, and the raw features when
the driver keeps them), which the task returns.

Faults. A worker process that dies takes its shard with it, and Ray runs the task again (up to
``retries`` times). A shard whose workers died on every attempt is split into one-file shards;
a file that still kills its worker is reported as failed (exit 4) and the rest is indexed.
An exception inside a task (a model missing on a node, a bug) stops the run, as it would
locally. Ctrl-C on the driver: the runner commits the finished files, the tasks in flight are
cancelled and Ray is shut down; a re-run skips what was committed.

Without ``address`` a local Ray instance is started for the run (every service on 127.0.0.1, a
small object store, no dashboard, ``workers`` CPUs) and stopped at the end; with it, the driver
connects to that cluster and disconnects at the end. A Ray session this process already has
open (a notebook's, a test's) is used as it is and left open.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from avsearch.engines.shards import (
    FaultHook,
    FileResult,
    ModelRef,
    Shard,
    Task,
    encode_shard,
    plan_shards,
)
from avsearch.errors import AvsearchError, ModelError, UsageError
from avsearch.stages.mapper import Mapped, Mapper
from avsearch.stages.reader import DONE, FAIL, PIECE, Event, Job

if TYPE_CHECKING:
    from avsearch.config import EmbedConfig
    from avsearch.encoders.model import AVModel
    from avsearch.media.decode import Piece
    from avsearch.media.segment import WindowSpec
    from avsearch.store.features import CachedWindow

log = logging.getLogger(__name__)

__all__ = ["FaultHook", "RayEngine", "Relay", "RemoteReader", "plan_shards", "start_local"]

INSTALL = 'pip install -e ".[ray]"'
OBJECT_STORE_MB = 128  # a local instance's object store (Ray spills to disk beyond it)


def require_ray() -> None:
    """``UsageError`` (exit 2) naming the install command when Ray is not installed."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # (a broken or half-removed install)
        found = False
    if not found:
        raise UsageError(f"--engine ray needs Ray, which is not installed: {INSTALL}")


# ------------------------------------------------------------------------------- the driver
@dataclass(frozen=True)
class RayEngine:
    """``address``: a running cluster's (``ray.init`` address: ``HOST:PORT``, ``auto``,
    ``ray://HOST:10001``); None starts a local instance. ``workers``: shards encoded at once
    (a local instance gets that many CPUs; None: this machine's cores, or the cluster's).
    ``retries``: Ray's retries of a shard whose worker died."""

    address: str | None = None
    workers: int | None = None
    retries: int = 3
    object_store_mb: int = OBJECT_STORE_MB
    fault: FaultHook | None = None  # tests only

    def stages(
        self,
        jobs: Sequence[Job],
        model: AVModel,
        spec: WindowSpec,
        cfg: EmbedConfig,
        *,
        features: bool,
        cached: Callable[[Job], list[CachedWindow] | None] | None,
        hits: Collection[int],
    ) -> tuple[RemoteReader, Relay]:
        directory = getattr(model, "directory", None)
        if directory is None:
            raise UsageError("--engine ray needs a model read from a model directory")
        weights = tuple(sorted((k, str(v)) for k, v in getattr(model, "user_weights", {}).items()))
        precision = getattr(model, "precision", "fp32")
        ref = ModelRef(str(Path(directory).resolve()), model.fingerprint, weights, precision)
        task = Task(spec, model.image_size, ref, cfg.batch_size, features, self.fault)
        reader = RemoteReader(self, jobs, task, cached=cached, hits=hits)
        return reader, Relay(model, cfg.batch_size)


class Relay(Mapper):
    """The driver's mapper: windows a task mapped pass through; windows from the driver's
    feature cache go through the heads, as in a local run."""

    def add(self, job: int, w: Piece | CachedWindow | Mapped) -> None:
        if isinstance(w, Mapped):
            self.emit(job, w)
        else:
            super().add(job, w)


class RemoteReader:
    """The runner's source of events under Ray (see the module docstring): every job ends with
    exactly one DONE or FAIL; None means nothing arrived for a moment."""

    IDLE = 0.05  # seconds to wait for a shard before yielding None

    def __init__(
        self,
        engine: RayEngine,
        jobs: Sequence[Job],
        task: Task,
        *,
        cached: Callable[[Job], list[CachedWindow] | None] | None = None,
        hits: Collection[int] = (),
    ) -> None:
        self.engine, self.jobs, self.task = engine, jobs, task
        self.cached, self.hits = cached, sorted(hits) if cached is not None else []
        self.todo: deque[Shard] = deque()
        self.inflight: dict[Any, Shard] = {}
        self.shards = 0  # shards made so far (their numbers)
        self.workers = 1
        self._ray: Any = None
        self._remote: Any = None
        self._own = False  # this reader started (or connected) the Ray session: it ends it
        self._closed = False

    # -------------------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[Event | None]:
        hits = set(self.hits)
        remote = [j for j in range(len(self.jobs)) if j not in hits]
        if remote:
            self._start()
            self._plan(remote)
        for j in self.hits:  # the driver reads these while the workers encode the rest
            windows = self.cached(self.jobs[j]) if self.cached is not None else None
            if windows is None:  # not in the cache after all: decode it remotely
                self._start()
                self._plan([j])
                continue
            yield from ((PIECE, j, w) for w in windows)
            yield DONE, j, None
            if self.inflight:
                yield from self._finished(0)
                self._submit()
        while self.todo or self.inflight:
            self._submit()
            events = list(self._finished(self.IDLE))
            yield from events if events else [None]

    def _plan(self, positions: list[int]) -> None:
        sizes = [self.jobs[j].file.size for j in positions]
        for shard in plan_shards(sizes, self.workers):
            self._add_shard([positions[k] for k in shard])
        self._submit()

    def _add_shard(self, jobs: list[int]) -> None:
        entries = tuple((j, self.jobs[j]) for j in jobs)
        self.todo.append(Shard(self.shards, entries, self.task))
        self.shards += 1

    def _submit(self) -> None:
        while self.todo and len(self.inflight) < self.workers:
            shard = self.todo.popleft()
            self.inflight[self._remote.remote(shard)] = shard

    def _finished(self, timeout: float) -> Iterator[Event]:
        """The events of a shard that is finished, after waiting up to ``timeout`` s."""
        ray = self._ray
        rx = ray.exceptions  # a worker (or its node) that died on every attempt:
        lost = (rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError, rx.OutOfMemoryError)
        ready, _ = ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        for ref in ready:
            shard = self.inflight.pop(ref)
            try:
                results: list[FileResult] = ray.get(ref)
            except rx.RayTaskError as exc:
                raise _task_error(exc) from None
            except lost as exc:
                yield from self._lost(shard, exc)
                continue
            except rx.RayError as exc:
                raise AvsearchError(
                    f"Ray failed on a shard of {len(shard.jobs)} files: {exc}"
                ) from exc
            for r in results:
                if r.reason is not None:
                    yield FAIL, r.job, r.reason
                    continue
                yield from ((PIECE, r.job, _own(m)) for m in r.windows)
                yield DONE, r.job, None

    def _lost(self, shard: Shard, exc: Exception) -> Iterator[Event]:
        attempts = self.engine.retries + 1
        if len(shard.jobs) > 1:  # one of its files may kill its worker: try them one by one
            log.warning(
                "a shard of %d files lost its worker %d times (%s); retrying its files one by one",
                len(shard.jobs),
                attempts,
                type(exc).__name__,
            )
            for j, _ in shard.jobs:
                self._add_shard([j])
            return
        j = shard.jobs[0][0]
        yield FAIL, j, f"its Ray worker died on each of {attempts} attempts ({type(exc).__name__})"

    # ---------------------------------------------------------------------------- session
    def _start(self) -> None:
        if self._ray is not None:
            return
        import ray

        self._ray = ray
        if not ray.is_initialized():
            where = self.engine.address or "a local Ray instance"
            self._own = True  # (close() shuts down what an interrupted start left behind)
            try:
                if self.engine.address is not None:
                    ray.init(
                        address=self.engine.address, configure_logging=False, log_to_driver=False
                    )
                else:
                    start_local(
                        self.engine.workers or os.cpu_count() or 1, self.engine.object_store_mb
                    )
            except Exception as exc:
                raise AvsearchError(
                    f"cannot start Ray ({where}): {exc}",
                    hint="see docs/scaling.md for running on a cluster",
                ) from exc
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.workers = min(cpus, self.engine.workers) if self.engine.workers else cpus
        self._remote = ray.remote(encode_shard).options(
            num_cpus=1, max_retries=self.engine.retries, retry_exceptions=False
        )

    def close(self) -> None:
        """Cancel the tasks in flight; end the Ray session when this reader began it."""
        if self._closed or self._ray is None:
            return
        self._closed = True
        ray = self._ray
        for ref in list(self.inflight):
            try:
                ray.cancel(ref, force=True)
            except Exception:  # (the session may already be gone: Ctrl-C reaches Ray too)
                log.debug("cannot cancel a Ray task", exc_info=True)
        self.inflight.clear()
        self.todo.clear()
        if self._own:
            try:
                ray.shutdown()
            except Exception:
                log.debug("ray.shutdown failed", exc_info=True)


def _task_error(exc: Any) -> AvsearchError:
    """An exception raised inside a task, as the driver reports it."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, AvsearchError):
        if isinstance(cause, ModelError) and cause.hint is None:
            cause.hint = "put the same model directory at the same path on every node"
        return cause
    what = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
    return AvsearchError(
        f"a Ray task failed: {what}",
        hint="every node needs the same avsearch installed (docs/scaling.md)",
    )


def _own(m: Mapped) -> Mapped:
    """``m`` with its arrays (vector, features, further spaces') copied out of Ray's object
    store, whose memory is gone once the session ends while the writers may still hold them."""
    changes: dict[str, Any] = {}
    for f in fields(m):
        value = getattr(m, f.name)
        if isinstance(value, np.ndarray):
            changes[f.name] = np.array(value)
        elif isinstance(value, dict):
            changes[f.name] = {k: np.array(v) for k, v in value.items()}
    return replace(m, **changes)


def start_local(workers: int, object_store_mb: int = OBJECT_STORE_MB) -> None:
    """Start a Ray instance on this machine for this process: ``workers`` CPUs, every service
    on 127.0.0.1, a small object store, no dashboard, workers' output not relayed here."""
    import ray

    constants: Any = None
    try:  # Ray's own switch for a one-machine instance (its default on macOS and Windows):
        from ray._private import ray_constants  # the node's address is then 127.0.0.1

        constants, saved = ray_constants, ray_constants.ENABLE_RAY_CLUSTER
    except (ImportError, AttributeError):
        log.warning("this version of Ray cannot be kept to the loopback interface")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            address="local",  # a new instance, even when RAY_ADDRESS names a cluster
            num_cpus=workers,
            include_dashboard=False,
            object_store_memory=object_store_mb * 1024 * 1024,
            configure_logging=False,
            log_to_driver=False,
        )
    finally:
        if constants is not None:
            constants.ENABLE_RAY_CLUSTER = saved
