"""The Ray engine without Ray: shard planning, the driver's source of events against a stand-in
``ray`` module (tasks run at once, in this process; workers that die; exceptions in tasks),
the worker's stages over real decoded files with a stand-in model, the fingerprint check, and
the CLI's answers when the engine cannot be used."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from avsearch.cli import app
from avsearch.config import EmbedConfig
from avsearch.engines import make_engine
from avsearch.engines import ray as rayengine
from avsearch.engines import shards as shardmod
from avsearch.engines.ray import RayEngine, Relay, RemoteReader
from avsearch.engines.shards import FileResult, ModelRef, Shard, Task, encode_shard, plan_shards
from avsearch.errors import AvsearchError, ModelError, UsageError
from avsearch.media.discover import MediaFile
from avsearch.media.segment import WindowSpec
from avsearch.stages.mapper import Mapped
from avsearch.stages.reader import DONE, FAIL, PIECE, Job
from avsearch.stages.runner import run
from avsearch.store.features import CachedWindow
from tests.mediagen import write_png, write_wav

SPEC = WindowSpec(4410, 44100, 0.05)  # 0.1 s windows
TASK = Task(SPEC, 32, ModelRef("/models/m", "f" * 64), 4, features=False)


def _jobs(*names: str, sizes: Sequence[int] | None = None) -> list[Job]:
    sizes = sizes or [100] * len(names)
    return [
        Job(MediaFile(Path("/m") / n, "audio", s, 1), "new", f"d{k}")
        for k, (n, s) in enumerate(zip(names, sizes, strict=True))
    ]


# ------------------------------------------------------------------------------- plan_shards
def test_shards_cover_every_file_once_balanced_by_bytes_largest_first() -> None:
    sizes = [900, 10, 10, 500, 400, 10, 10, 300, 200, 100]
    shards = plan_shards(sizes, workers=1, per_worker=3)
    assert sorted(i for s in shards for i in s) == list(range(len(sizes)))
    assert len(shards) == 3 and all(s == sorted(s) for s in shards)
    totals = [sum(sizes[i] for i in s) for s in shards]
    assert totals == sorted(totals, reverse=True)  # the largest shard is submitted first
    # largest first, each into the lightest shard: 900 | 500 200 100 | 400 300 10 10 10 10 -
    # the 900-byte file alone bounds the largest shard, and the others come within 10% of it
    assert totals == [900, 800, 740]
    assert [sorted(sizes[i] for i in s) for s in shards][1] == [100, 200, 500]


def test_shards_hold_at_most_max_files_and_never_outnumber_the_files() -> None:
    shards = plan_shards([1] * 10, workers=2, per_worker=4, max_files=3)
    assert len(shards) == 8 and max(len(s) for s in shards) <= 3
    shards = plan_shards([1] * 100, workers=1, per_worker=1, max_files=7)
    assert len(shards) == 15 and max(len(s) for s in shards) == 7  # ceil(100 / 7)
    assert plan_shards([5, 6], workers=4) == [[1], [0]]
    shards = plan_shards([300, 300, 200, 100, 100], workers=1, per_worker=1, max_bytes=400)
    assert shards == [[0, 4], [1], [2, 3]]  # 1,000 bytes, at most 400 on average: 3 shards
    assert plan_shards([], workers=4) == []


# ---------------------------------------------------------------------- a stand-in ray module
class _Errors:
    class RayError(Exception):
        pass

    class RayTaskError(RayError):
        def __init__(self, cause: BaseException) -> None:
            super().__init__(str(cause))
            self.cause = cause

    class WorkerCrashedError(RayError):
        pass

    class NodeDiedError(RayError):
        pass

    class ObjectLostError(RayError):
        pass

    class OutOfMemoryError(RayError):
        pass


class FakeRay:
    """Tasks run when fetched, by ``work(shard)``; the shards each call saw are recorded."""

    exceptions = _Errors

    def __init__(self, work: Callable[[Shard], list[FileResult]]) -> None:
        self.work = work
        self.calls: list[tuple[int, ...]] = []  # the jobs of each task started
        self.most = 0  # the most tasks in flight at once
        self.cancelled = 0
        self.shut = False
        self.inflight: list[Any] = []

    def remote(self, shard: Shard) -> Callable[[], list[FileResult]]:
        self.calls.append(tuple(j for j, _ in shard.jobs))
        ref = lambda: self.work(shard)  # noqa: E731
        self.inflight.append(ref)
        self.most = max(self.most, len(self.inflight))
        return ref

    def wait(self, refs: list[Any], num_returns: int, timeout: float) -> tuple[list, list]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: Callable[[], list[FileResult]]) -> list[FileResult]:
        self.inflight.remove(ref)
        return ref()

    def cancel(self, ref: Any, force: bool) -> None:
        self.cancelled += 1

    def shutdown(self) -> None:
        self.shut = True


def _window(j: int, k: int = 0) -> Mapped:
    return Mapped("audio", k, k * 0.1, (k + 1) * 0.1, False, vector=np.full(3, j, np.float32))


def _fine(shard: Shard) -> list[FileResult]:
    return [FileResult(j, [_window(j, 0), _window(j, 1)]) for j, _ in shard.jobs]


def _reader(
    jobs: list[Job], fake: FakeRay, *, workers: int = 2, retries: int = 1, **kw: Any
) -> RemoteReader:
    reader = RemoteReader(RayEngine(workers=workers, retries=retries), jobs, TASK, **kw)
    reader._ray, reader._remote, reader.workers = fake, fake, workers  # (a session, started)
    return reader


def _outcome(events: list[Any]) -> dict[int, list[str]]:
    """Per job, the kinds of its events, in order (None events left out)."""
    out: dict[int, list[str]] = {}
    for e in events:
        if e is not None:
            out.setdefault(e[1], []).append(e[0])
    return out


def test_every_job_ends_once_with_its_windows_and_workers_bound_the_tasks_in_flight() -> None:
    jobs = _jobs(*(f"f{k}.wav" for k in range(11)), sizes=[100 + k for k in range(11)])
    fake = FakeRay(_fine)
    events = list(_reader(jobs, fake, workers=2))
    assert _outcome(events) == {j: [PIECE, PIECE, DONE] for j in range(11)}
    assert len(fake.calls) == 8 and sorted(j for c in fake.calls for j in c) == list(range(11))
    assert fake.most <= 2
    piece = next(e for e in events if e is not None and e[0] == PIECE and e[1] == 4)
    assert piece[2].vector.tolist() == [4.0, 4.0, 4.0]


def test_a_shard_whose_worker_always_dies_is_split_and_only_the_killer_fails(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _jobs("a.wav", "b.wav", "kills.wav", "c.wav")

    def work(shard: Shard) -> list[FileResult]:
        if any(job.file.path.name == "kills.wav" for _, job in shard.jobs):
            raise _Errors.WorkerCrashedError("the worker died")
        return _fine(shard)

    fake = FakeRay(work)
    with caplog.at_level(logging.WARNING):
        events = list(_reader(jobs, fake, workers=1))  # 4 shards of one file: no split needed
    outcome = _outcome(events)
    assert outcome[2] == [FAIL] and all(outcome[j] == [PIECE, PIECE, DONE] for j in (0, 1, 3))
    reason = next(e[2] for e in events if e is not None and e[0] == FAIL)
    assert reason == "its Ray worker died on each of 2 attempts (WorkerCrashedError)"

    fake = FakeRay(work)  # one shard of all four: lost, then tried file by file
    monkeypatch.setattr(rayengine, "plan_shards", lambda sizes, workers: [list(range(len(sizes)))])
    with caplog.at_level(logging.WARNING):
        outcome = _outcome(list(_reader(jobs, fake, workers=1)))
    assert fake.calls == [(0, 1, 2, 3), (0,), (1,), (2,), (3,)]
    assert outcome[2] == [FAIL] and all(outcome[j] == [PIECE, PIECE, DONE] for j in (0, 1, 3))
    assert "retrying its files one by one" in caplog.text


def test_windows_are_copied_out_of_the_object_store() -> None:
    stored = np.arange(6, dtype=np.float32)
    stored.flags.writeable = False  # as Ray hands out an array of its object store
    m = Mapped("audio", 0, 0.0, 0.1, False, stored[:3], stored[3:], {"native": stored})
    own = rayengine._own(m)
    for got, was in ((own.feature, m.feature), (own.vector, m.vector)):
        assert got is not None and was is not None
        assert not np.shares_memory(got, stored) and np.array_equal(got, was)
    assert not np.shares_memory(own.spaces["native"], stored)
    assert np.array_equal(own.spaces["native"], stored)


def test_an_error_inside_a_task_stops_the_run_as_it_would_locally() -> None:
    def model_missing(shard: Shard) -> list[FileResult]:
        raise _Errors.RayTaskError(ModelError("on node n2: model directory /models/m is missing"))

    with pytest.raises(ModelError, match="on node n2") as info:
        list(_reader(_jobs("a.wav"), FakeRay(model_missing)))
    assert info.value.hint and "same path on every node" in info.value.hint

    def bug(shard: Shard) -> list[FileResult]:
        raise _Errors.RayTaskError(ModuleNotFoundError("No module named 'avsearch'"))

    with pytest.raises(AvsearchError, match="a Ray task failed: ModuleNotFoundError") as info:
        list(_reader(_jobs("a.wav"), FakeRay(bug)))
    assert info.value.hint and "same avsearch" in info.value.hint


def test_cached_files_are_read_on_the_driver_and_a_cache_miss_goes_to_a_worker() -> None:
    jobs = _jobs("a.wav", "b.wav", "c.wav")
    cache = {"d1": [CachedWindow("audio", 0, 0.0, 0.1, np.ones(3, np.float32))]}
    fake = FakeRay(_fine)
    reader = _reader(jobs, fake, cached=lambda job: cache.get(job.digest), hits={1, 2})
    outcome = _outcome(list(reader))
    assert outcome == {0: [PIECE, PIECE, DONE], 1: [PIECE, DONE], 2: [PIECE, PIECE, DONE]}
    assert sorted(fake.calls) == [(0,), (2,)]  # job 1 never left the driver

    only_cached = _reader(jobs[1:2], fake, cached=lambda job: cache.get(job.digest), hits={0})
    only_cached._ray = None  # (no session: none is needed)
    assert _outcome(list(only_cached)) == {0: [PIECE, DONE]}


def test_close_cancels_the_tasks_in_flight_and_ends_only_its_own_session() -> None:
    fake = FakeRay(_fine)
    reader = _reader(_jobs("a.wav", "b.wav", "c.wav"), fake, workers=2)
    events = iter(reader)
    assert next(events)[0] == PIECE  # the first shard is back, the second still in flight
    assert len(reader.inflight) == 1 and len(reader.todo) == 1
    reader.close()
    reader.close()  # (the runner closes twice when interrupted)
    assert fake.cancelled == 1 and not fake.shut and not reader.inflight and not reader.todo
    fake = FakeRay(_fine)
    reader = _reader(_jobs("a.wav"), fake)
    reader._own = True
    reader.close()
    assert fake.shut


class Heads:
    """A stand-in model: features = the first 3 samples, project = features + 1."""

    image_size = 32

    def features(self, modality: str, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch, np.float32).reshape(len(batch), -1)[:, :3].copy()

    def project(self, modality: str, feats: np.ndarray) -> np.ndarray:
        return np.asarray(feats, np.float32) + 1

    def embed(self, modality: str, batch: np.ndarray) -> np.ndarray:
        return self.project(modality, self.features(modality, batch))


def test_the_driver_runner_writes_remote_windows_and_projects_cached_ones() -> None:
    jobs = _jobs("a.wav", "b.wav")
    cache = {"d1": [CachedWindow("audio", 0, 0.0, 0.1, np.zeros(3, np.float32))]}
    reader = _reader(jobs, FakeRay(_fine), cached=lambda job: cache.get(job.digest), hits={1})
    written: dict[int, list[Mapped]] = {}

    class Writer:
        def take(self, job: int, m: Mapped) -> None:
            written.setdefault(job, []).append(m)

        def drop(self, job: int) -> None: ...
        def commit(self, jobs: Sequence[int]) -> None: ...

    failed = run(
        jobs, reader, Relay(Heads(), 4), [Writer()], report=lambda e, d: None, commit_every=0.0
    )
    assert failed == {}
    assert [m.vector.tolist() for m in written[0]] == [[0.0] * 3, [0.0] * 3]  # as the task gave
    assert [m.vector.tolist() for m in written[1]] == [[1.0] * 3]  # the heads, here


# ---------------------------------------------------------------------------------- worker
def test_a_task_runs_the_local_stages_over_real_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wav = write_wav(tmp_path / "tone.wav", seconds=0.35, rate=44100)
    png = write_png(tmp_path / "red.png")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    files = [
        MediaFile(wav, "audio", wav.stat().st_size, 1),
        MediaFile(bad, "audio", bad.stat().st_size, 1),
        MediaFile(png, "image", png.stat().st_size, 1),
    ]
    monkeypatch.setattr(shardmod, "_worker_model", lambda ref: Heads())
    task = Task(SPEC, 32, ModelRef("/models/m", "f" * 64), 2, features=True)
    shard = Shard(0, tuple((10 + k, Job(f, "new", f"d{k}")) for k, f in enumerate(files)), task)
    results = encode_shard(shard)
    assert [r.job for r in results] == [10, 11, 12]
    tone, broken, image = results
    assert broken.reason and not broken.windows
    assert [(m.modality, m.idx) for m in tone.windows] == [("audio", 0), ("audio", 1), ("audio", 2)]
    assert all(m.feature is not None and m.vector is not None for m in tone.windows)
    np.testing.assert_allclose(tone.windows[0].vector, tone.windows[0].feature + 1)
    assert [(m.modality, m.idx) for m in image.windows] == [("visual", 0)]


def test_a_worker_refuses_a_model_that_is_not_the_drivers() -> None:
    from avsearch.encoders.model_dir import resolve_model_dir

    directory = str(resolve_model_dir("default"))
    shardmod._load_model.cache_clear()
    with pytest.raises(ModelError, match="is not the driver's"):
        shardmod._load_model(directory, "0" * 64, ())
    with pytest.raises(ModelError, match="on node"):
        shardmod._load_model("/nowhere/model", "0" * 64, ())


def test_a_worker_loads_the_model_at_the_drivers_precision() -> None:
    from avsearch.encoders.model import AVModel

    driver = AVModel.load("default", lazy=True, precision="bf16")
    reader, _ = RayEngine().stages(
        [], driver, SPEC, EmbedConfig(), features=False, cached=None, hits=()
    )
    ref = reader.task.model
    assert ref.precision == "bf16" and ref.fingerprint == driver.fingerprint
    shardmod._load_model.cache_clear()
    worker = shardmod._worker_model(ref)
    assert worker.precision == "bf16"
    assert worker.feature_key(SPEC) == driver.feature_key(SPEC)


def test_a_stand_in_model_without_a_directory_is_refused() -> None:
    with pytest.raises(UsageError, match="model directory"):
        RayEngine().stages([], Heads(), SPEC, EmbedConfig(), features=False, cached=None, hits=())  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------- CLI
runner = CliRunner()


def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find(name, *a)
    )


def test_without_ray_the_engine_is_one_line_naming_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, index_env: Path
) -> None:
    _no_ray(monkeypatch)
    with pytest.raises(UsageError) as info:
        make_engine("ray")
    assert info.value.exit_code == 2 and 'pip install -e ".[ray]"' in info.value.message
    write_wav(tmp_path / "media" / "a.wav")
    result = runner.invoke(app, ["embed", str(tmp_path / "media"), "--engine", "ray"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and 'pip install -e ".[ray]"' in lines[0], result.stderr
    assert not index_env.exists()  # refused before anything was done


def test_engine_options_that_do_not_apply_are_refused(tmp_path: Path, index_env: Path) -> None:
    media = tmp_path / "media"
    write_wav(media / "a.wav")
    result = runner.invoke(app, ["embed", str(media), "--engine", "spark"])
    assert result.exit_code == 2 and "--engine must be one of local, ray" in result.stderr
    result = runner.invoke(app, ["embed", str(media), "--address", "10.0.0.1:6379"])
    assert result.exit_code == 2 and "--address applies to --engine ray only" in result.stderr
    assert make_engine("local") is None
    if importlib.util.find_spec("ray") is not None:
        assert make_engine("ray", address="auto", workers=3) == RayEngine("auto", 3)
