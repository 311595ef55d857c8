"""``embed --engine ray`` with real Ray, the default model and the shared media: the result equals
a local run's; a worker killed mid-run has its shard retried; a file that kills its worker
every time fails alone; Ctrl-C on the driver leaves what a local interrupted run leaves, and a
re-run skips what was committed. Skipped without Ray or without ../shared."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from avsearch.config import EmbedConfig
from avsearch.encoders.model import AVModel
from avsearch.engines.ray import FaultHook, RayEngine, start_local
from avsearch.pipeline import run_embed
from tests.conftest import REPO, shared_path

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')

Rows = dict[tuple[Any, ...], np.ndarray]


def segments(index: Path, under: Path | None = None) -> Rows:
    """(path, modality, idx, start, end) -> vector, of the files under ``under``."""
    with sqlite3.connect(index / "manifest.sqlite") as conn:
        rows = conn.execute(
            'SELECT f.path, s.modality, s.idx, s.start, s."end", s.vector FROM segments s '
            "JOIN files f ON f.id = s.file_id"
        ).fetchall()
    return {
        tuple(r[:5]): np.frombuffer(r[5], np.float32)
        for r in rows
        if under is None or Path(r[0]).is_relative_to(under)
    }


def features(index: Path) -> Rows:
    with sqlite3.connect(index / "features.sqlite") as conn:
        rows = conn.execute(
            'SELECT hash, backbone, modality, idx, start, "end", silent, vector FROM features'
        ).fetchall()
    return {tuple(r[:7]): np.frombuffer(r[7], np.float32) for r in rows}


def files(index: Path) -> set[str]:
    with sqlite3.connect(index / "manifest.sqlite") as conn:
        return {r[0] for r in conn.execute("SELECT path FROM files")}


def assert_same(got: Rows, want: Rows, atol: float = 1e-5) -> None:
    assert sorted(got) == sorted(want)
    for key, vector in want.items():
        np.testing.assert_allclose(got[key], vector, rtol=1e-4, atol=atol, err_msg=str(key))


@pytest.fixture(scope="module")
def model() -> AVModel:
    return AVModel.load("default")


@pytest.fixture(scope="module")
def media() -> tuple[Path, Path]:
    return shared_path("fixtures").resolve(), shared_path("data", "farm").resolve()


@pytest.fixture(scope="module")
def local_index(
    tmp_path_factory: pytest.TempPathFactory, model: AVModel, media: tuple[Path, Path]
) -> Path:
    """The local engine's index of fixtures + farm: what every Ray run must equal."""
    index = tmp_path_factory.mktemp("local") / "index"
    summary = run_embed(list(media), index, EmbedConfig(), model=model)
    assert summary.new == 25 and not summary.failures
    return index


def test_cli_ray_run_equals_a_local_run(
    tmp_path: Path, local_index: Path, media: tuple[Path, Path], model: AVModel
) -> None:
    index = tmp_path / "ray"
    cmd = [sys.executable, "-m", "avsearch", "--index", str(index), "--json", "-q", "embed"]
    proc = subprocess.run(
        [*cmd, *map(str, media), "--engine", "ray", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # (Ray wrote nothing on stdout)
    assert out["files"]["new"] == 25 and out["files"]["failed"] == 0
    assert_same(segments(index), segments(local_index))
    assert_same(features(index), features(local_index), atol=1e-4)
    # a re-run has nothing to encode: no Ray session is even started
    again = run_embed(list(media), index, EmbedConfig(), model=model, engine=RayEngine(workers=2))
    assert again.unchanged == 25 and again.new == 0 and not ray.is_initialized()


@pytest.fixture(scope="module")
def session() -> Any:
    """One local instance of 2 workers for the fault tests (the engine uses it as it is)."""
    start_local(2)
    yield ray
    ray.shutdown()


def test_a_local_instance_is_kept_to_loopback(session: Any) -> None:
    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]
    assert ray.cluster_resources()["CPU"] == 2
    assert ray.cluster_resources()["object_store_memory"] <= 128 * 1024 * 1024


def test_a_worker_killed_mid_run_has_its_shard_retried(
    session: Any, tmp_path: Path, local_index: Path, media: tuple[Path, Path], model: AVModel
) -> None:
    farm = media[1]
    marks = tmp_path / "marks"
    marks.mkdir()
    engine = RayEngine(workers=2, fault=FaultHook(str(marks), ("dog.ogg",), attempts=1))
    summary = run_embed([farm], tmp_path / "index", EmbedConfig(), model=model, engine=engine)
    assert [p.name for p in marks.iterdir()] == ["dog.ogg.0"]  # its worker did die once
    assert summary.new == 18 and not summary.failures and ray.is_initialized()
    assert_same(segments(tmp_path / "index"), segments(local_index, farm))


def test_a_file_that_kills_every_worker_fails_alone_and_a_rerun_finishes(
    session: Any, tmp_path: Path, local_index: Path, media: tuple[Path, Path], model: AVModel
) -> None:
    farm = media[1]
    marks = tmp_path / "marks"
    marks.mkdir()
    hook = FaultHook(str(marks), ("cow.ogg",), attempts=100)
    engine = RayEngine(workers=2, retries=1, fault=hook)
    index = tmp_path / "index"
    summary = run_embed([farm], index, EmbedConfig(), model=model, engine=engine)
    assert [(Path(f.path).name, f.reason) for f in summary.failures] == [
        ("cow.ogg", "its Ray worker died on each of 2 attempts (WorkerCrashedError)")
    ]
    assert summary.new == 17 and len(list(marks.iterdir())) == 4  # shard ×2, then cow.ogg ×2
    again = run_embed([farm], index, EmbedConfig(), model=model, engine=RayEngine(workers=2))
    assert again.new == 1 and again.unchanged == 17 and not again.failures
    assert_same(segments(index), segments(local_index, farm))


def test_ctrl_c_on_the_driver_keeps_the_finished_files_and_a_rerun_completes(
    session: Any, tmp_path: Path, local_index: Path, media: tuple[Path, Path], model: AVModel
) -> None:
    farm = media[1]
    index = tmp_path / "index"
    seen: list[str] = []

    def ctrl_c(event: str, data: dict[str, Any]) -> None:
        if event == "file":
            seen.append(data["path"])
            if len(seen) == 6:
                raise KeyboardInterrupt

    cfg = EmbedConfig(commit_every=0.0)
    with pytest.raises(KeyboardInterrupt):
        run_embed([farm], index, cfg, model=model, engine=RayEngine(workers=2), progress=ctrl_c)
    # as a local run: the files read before Ctrl-C are committed, each whole, nothing else
    assert files(index) == set(seen)
    want = segments(local_index, farm)
    assert_same(segments(index), {k: v for k, v in want.items() if k[0] in set(seen)})
    again = run_embed([farm], index, cfg, model=model, engine=RayEngine(workers=2))
    assert again.unchanged == 6 and again.new == 12
    assert_same(segments(index), want)


def test_ctrl_c_on_the_cli_exits_130_and_stops_its_ray_instance(
    tmp_path: Path, local_index: Path, media: tuple[Path, Path]
) -> None:
    natural = shared_path("data", "natural").resolve()  # (more files: still running at Ctrl-C)
    config = tmp_path / "avsearch.yaml"
    config.write_text("embed:\n  commit_every: 0.01\n")  # each file committed at once
    index = tmp_path / "index"
    cmd = [sys.executable, "-m", "avsearch", "--index", str(index), "--config", str(config)]
    proc = subprocess.Popen(
        [*cmd, "-q", "embed", *map(str, media), str(natural), "--engine", "ray", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if files_committed(index) >= 1:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1]
    children = child_pids(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole group, Ray's processes too
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    time.sleep(1.0)
    assert children and [p for p in children if alive(p)] == []
    kept = files(index)  # each committed file whole, as a local run leaves it
    assert 1 <= len(kept) < 25 + len(files_under(natural))
    want = {k: v for k, v in segments(local_index).items() if k[0] in kept}
    assert_same(
        {k: v for k, v in segments(index).items() if not k[0].startswith(str(natural))}, want
    )


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def files_committed(index: Path) -> int:
    if not (index / "manifest.sqlite").exists():
        return 0
    try:
        with sqlite3.connect(f"file:{index / 'manifest.sqlite'}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM files").fetchone()[0])
    except sqlite3.Error:
        return 0


def child_pids(pid: int) -> list[int]:
    """The processes below ``pid`` (Ray's services and workers), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    below, frontier = [], [pid]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier]
        below += frontier
    return below


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited
