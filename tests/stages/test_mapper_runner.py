"""The mapper (batches, silence, kept features, cached windows) and the runner (a job is written
once read and mapped whole; failures; an interrupted run commits what is finished)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from avsearch.media.decode import Piece
from avsearch.media.discover import MediaFile
from avsearch.stages.mapper import Mapped, Mapper
from avsearch.stages.reader import DONE, FAIL, PIECE, Event, Job
from avsearch.stages.runner import run
from avsearch.store.features import CachedWindow


class Tower:
    """features = the first 3 samples; project = features + 1 (each call recorded)."""

    def __init__(self, die_at: int = 0) -> None:
        self.calls: list[tuple[str, int]] = []
        self.die_at = die_at

    def _call(self, what: str, n: int) -> None:
        self.calls.append((what, n))
        if len(self.calls) == self.die_at:
            raise KeyboardInterrupt

    def features(self, modality: str, batch: np.ndarray) -> np.ndarray:
        self._call("features", len(batch))
        return np.asarray(batch, np.float32).reshape(len(batch), -1)[:, :3].copy()

    def project(self, modality: str, feats: np.ndarray) -> np.ndarray:
        self._call("project", len(feats))
        return feats + 1

    def embed(self, modality: str, batch: np.ndarray) -> np.ndarray:
        self._call("embed", len(batch))
        return np.asarray(batch, np.float32).reshape(len(batch), -1)[:, :3] + 1


def _piece(k: int, value: float, silent: bool = False) -> Piece:
    return Piece("audio", k, float(k), k + 1.0, np.full(4, value, np.float32), silent=silent)


def _mapper(tower: Tower, **kw: bool) -> tuple[Mapper, list[tuple[int, Mapped]]]:
    out: list[tuple[int, Mapped]] = []
    return Mapper(tower, 2, lambda j, m: out.append((j, m)), **kw), out


def test_batches_fill_then_flush_and_silence_costs_no_tower_call() -> None:
    tower = Tower()
    mapper, out = _mapper(tower)
    for k, value in enumerate((0.1, 0.2, 0.0, 0.3)):
        mapper.add(7, _piece(k, value, silent=value == 0.0))
    assert tower.calls == [("embed", 2)]  # the full batch; the silent window went straight out
    mapper.flush()
    assert tower.calls == [("embed", 2), ("embed", 1)]
    assert [(j, m.idx, m.silent, m.vector is None) for j, m in out] == [
        (7, 0, False, False),
        (7, 1, False, False),
        (7, 2, True, True),
        (7, 3, False, False),
    ]
    np.testing.assert_allclose(out[3][1].vector, [1.3] * 3)


def test_kept_features_cover_silence_and_cached_windows_only_take_the_heads() -> None:
    tower = Tower()
    mapper, out = _mapper(tower, features=True)
    mapper.add(1, _piece(0, 0.5))
    mapper.add(1, _piece(1, 0.0, silent=True))
    feat = np.array([2.0, 2.0, 2.0], np.float32)
    mapper.add(2, CachedWindow("audio", 0, 0.0, 1.0, feat, False))
    mapper.add(2, CachedWindow("audio", 1, 1.0, 2.0, feat, True))  # cached silence: out at once
    mapper.flush()
    assert tower.calls == [("features", 2), ("project", 1), ("project", 1)]
    got = {(j, m.idx): m for j, m in out}
    assert got[(1, 1)].silent and got[(1, 1)].vector is None
    np.testing.assert_allclose(got[(1, 1)].feature, [0.0] * 3)  # (silence is cached too)
    np.testing.assert_allclose(got[(1, 0)].vector, [1.5] * 3)
    np.testing.assert_allclose(got[(2, 0)].vector, [3.0] * 3)
    assert got[(2, 0)].feature is None and got[(2, 1)].silent
    assert got[(1, 0)].window() == CachedWindow("audio", 0, 0.0, 1.0, got[(1, 0)].feature, False)


def test_features_only_and_a_dropped_job() -> None:
    tower = Tower()
    mapper, out = _mapper(tower, features=True, heads=False)
    mapper.add(3, _piece(0, 0.7))
    mapper.drop(3)  # (job 3 failed: its waiting window goes)
    mapper.add(1, _piece(0, 0.5))
    mapper.flush()
    assert tower.calls == [("features", 1)]
    assert [(j, m.vector) for j, m in out] == [(1, None)]


class ContextTower(Tower):
    """Hears 3 consecutive audio windows together: records the run ids of each call; a
    window's feature is (its value, the sum of its run's values, the run's length)."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[list[int]] = []

    def context_windows(self, modality: str) -> int:
        return 3

    def features(  # type: ignore[override]
        self, modality: str, batch: np.ndarray, runs: Sequence[int] | None = None
    ) -> np.ndarray:
        assert runs is not None and len(runs) == len(batch)
        self.runs.append(list(runs))
        v = np.asarray(batch, np.float32)[:, 0]
        ids = np.asarray(runs)
        return np.stack(
            [[v[i], v[ids == ids[i]].sum(), (ids == ids[i]).sum()] for i in range(len(v))]
        ).astype(np.float32)

    def embed(  # type: ignore[override]
        self, modality: str, batch: np.ndarray, runs: Sequence[int] | None = None
    ) -> np.ndarray:
        return self.project(modality, self.features(modality, batch, runs))


def _context_run(batch_size: int, keep: bool) -> dict[tuple[int, int], np.ndarray]:
    """Two files' audio windows, interleaved, one silent, through a context mapper."""
    tower = ContextTower()
    out: list[tuple[int, Mapped]] = []
    mapper = Mapper(tower, batch_size, lambda j, m: out.append((j, m)), features=keep)
    for k in range(7):
        mapper.add(1, _piece(k, 0.1 * (k + 1), silent=k == 4))
        if k < 2:
            mapper.add(2, _piece(k, 1.0 + k))
        mapper.flush()  # (an idle flush: open blocks wait)
    assert {j for j, _ in out} <= {1}
    mapper.done(2)
    mapper.done(1)
    mapper.flush()
    return {(j, m.idx): m.vector for j, m in out if m.vector is not None}


@pytest.mark.parametrize("keep", [False, True])
def test_windows_heard_together_come_in_whole_aligned_blocks(keep: bool) -> None:
    got = _context_run(batch_size=2, keep=keep)
    assert sorted(got) == [(1, k) for k in (0, 1, 2, 3, 5, 6)] + [(2, 0), (2, 1)]
    # (value, run sum, run length) + 1: blocks {0,1,2}, {3,4,5} with silent 4 breaking it, {6}
    np.testing.assert_allclose(got[(1, 1)], [1.2, 1.6, 4], rtol=1e-6)
    np.testing.assert_allclose(got[(1, 3)], [1.4, 1.4, 2], rtol=1e-6)
    np.testing.assert_allclose(got[(1, 5)], [1.6, 1.6, 2], rtol=1e-6)
    np.testing.assert_allclose(got[(1, 6)], [1.7, 1.7, 2], rtol=1e-6)
    np.testing.assert_allclose(got[(2, 1)], [3.0, 4.0, 3], rtol=1e-6)  # file 2: one run of 2
    other = _context_run(batch_size=100, keep=not keep)  # batching and keeping change nothing
    assert sorted(other) == sorted(got)
    for key, vec in got.items():
        np.testing.assert_allclose(other[key], vec)


# ------------------------------------------------------------------------------------ runner


class Events:
    def __init__(self, events: list[Event | None]) -> None:
        self.events, self.closed = events, False

    def __iter__(self) -> Iterator[Event | None]:
        return iter(self.events)

    def close(self) -> None:
        self.closed = True


class Recorder:
    def __init__(self) -> None:
        self.taken: dict[int, list[int]] = {}
        self.commits: list[list[int]] = []
        self.dropped: list[int] = []

    def take(self, job: int, m: Mapped) -> None:
        self.taken.setdefault(job, []).append(m.idx)

    def drop(self, job: int) -> None:
        self.dropped.append(job)
        self.taken.pop(job, None)

    def commit(self, jobs: Sequence[int]) -> None:
        self.commits.append(list(jobs))


JOBS = [Job(MediaFile(Path(f"/m/{n}.wav"), "audio", 1, 1), "new", n) for n in "abc"]


def test_a_job_is_written_once_read_and_mapped_whole_and_failures_are_dropped() -> None:
    events: list[Event | None] = [
        (PIECE, 0, _piece(0, 0.1)),
        (PIECE, 1, _piece(0, 0.2)),
        (PIECE, 0, _piece(1, 0.3)),
        (DONE, 0, None),
        (PIECE, 2, _piece(0, 0.4)),
        (FAIL, 2, "damaged"),
        None,
        (DONE, 1, None),
    ]
    writer, seen = Recorder(), []
    mapper = Mapper(Tower(), 8)
    failed = run(
        JOBS,
        Events(events),  # type: ignore[arg-type]
        mapper,
        [writer],
        report=lambda e, d: seen.append((d["path"], d["ok"])),
        commit_every=60.0,
    )
    assert failed == {2: "damaged"} and writer.dropped == [2]
    assert writer.commits == [[0, 1]] and writer.taken == {0: [0, 1], 1: [0]}
    assert seen == [("/m/a.wav", True), ("/m/c.wav", False), ("/m/b.wav", True)]


def test_an_interrupted_run_commits_the_finished_jobs_and_raises() -> None:
    events: list[Event | None] = [
        (PIECE, 0, _piece(0, 0.1)),
        (DONE, 0, None),
        None,  # job 0 is mapped here (tower call 1)
        (PIECE, 1, _piece(0, 0.2)),
        (DONE, 1, None),
        None,  # tower call 2: Ctrl-C
    ]
    writer, reader = Recorder(), Events(events)
    with pytest.raises(KeyboardInterrupt):
        run(
            JOBS,
            reader,
            Mapper(Tower(die_at=2), 8),
            [writer],
            report=lambda e, d: None,
            commit_every=60.0,
        )  # type: ignore[arg-type]
    assert reader.closed and writer.commits == [[0]]  # job 1's window was lost with the batch
