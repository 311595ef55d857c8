"""The writer lock: one embed at a time, never stuck after a kill, readers never write under it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from avsearch.errors import IndexBusyError, ModelMismatchError
from avsearch.store import vectors as vx
from avsearch.store.index import IndexStore, ModelStamp
from avsearch.store.lock import WriterLock, holder, writer_active
from tests.store.conftest import STAMP, BuildIndex, add_file

REPO = Path(__file__).resolve().parents[2]

# A child that opens the index for writing as embed does, optionally commits one more file to
# the manifest without rewriting the FAISS files (as embed does between batches), then waits.
WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from avsearch.store.index import IndexStore, ModelStamp
    from tests.store.conftest import add_file

    root, commit = Path(sys.argv[1]), sys.argv[2] == "commit"
    store = IndexStore.create_or_open(root, ModelStamp("m1", "f" * 64, 8))
    if commit:
        add_file(store, "/media/late.mp4", np.random.default_rng(9))
    print("ready", flush=True)
    time.sleep(120)
    """
)


@pytest.fixture
def writer_process(tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[str]] = []

    def start(root: Path, commit: bool = False) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), "commit" if commit else "-"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_second_embed_is_refused_naming_the_first(
    build_index: BuildIndex, writer_process: object
) -> None:
    root = build_index()
    proc = writer_process(root)  # type: ignore[operator]
    assert writer_active(root) and holder(root) == (proc.pid, "embed")
    with pytest.raises(IndexBusyError) as info:
        IndexStore.create_or_open(root, STAMP)
    assert info.value.message == (
        f"another avsearch embed (pid {proc.pid}) is writing to {root}; wait for it or stop it"
    )
    assert info.value.exit_code == 1


def test_the_lock_is_released_when_the_writer_is_killed(
    build_index: BuildIndex, writer_process: object
) -> None:
    root = build_index()
    proc = writer_process(root)  # type: ignore[operator]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not writer_active(root)
    with IndexStore.create_or_open(root, STAMP) as store:  # not stuck
        assert store.manifest.file_count() == 4
        assert writer_active(root)
    assert not writer_active(root)


def test_a_reader_during_an_embed_sees_the_last_commit_and_writes_nothing(
    build_index: BuildIndex, writer_process: object
) -> None:
    root = build_index()
    files = {n: (root / n).read_bytes() for n in ("audio.faiss", "visual.faiss", "vectors.json")}
    proc = writer_process(root, commit=True)  # 5th file committed, FAISS files not rewritten
    with IndexStore.open_existing(root) as store:
        assert store.index_for("audio").ntotal == 10  # built in memory from the manifest
        assert store.index_for("visual").ntotal == 5
    assert {n: (root / n).read_bytes() for n in files} == files  # nothing written
    os.kill(proc.pid, signal.SIGKILL)  # killed before its own sync_vectors
    proc.wait()
    with IndexStore.open_existing(root) as store:  # no writer now: the reader saves
        assert store.index_for("audio").ntotal == 10
    info = vx.read_sidecar(root / "vectors.json")["audio"]
    assert info.count == 10
    assert vx.verify_index_file(root / "audio.faiss", info, checksum=True)[1] is None


def test_kill_then_rerun_equals_one_clean_run(
    build_index: BuildIndex, writer_process: object, tmp_path: Path
) -> None:
    root = build_index()
    proc = writer_process(root, commit=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with IndexStore.create_or_open(root, STAMP) as store:  # the re-run
        store.sync_vectors()
    clean = build_index(name="clean")
    with IndexStore.create_or_open(clean, STAMP) as store:
        add_file(store, "/media/late.mp4", np.random.default_rng(9))
        store.sync_vectors()

    def content(r: Path) -> list[tuple[object, ...]]:
        with IndexStore.open_existing(r) as store:
            rows = store.manifest.conn.execute(
                "SELECT f.path, s.modality, s.idx, s.vector FROM segments s "
                "JOIN files f ON f.id = s.file_id ORDER BY f.path, s.modality, s.idx"
            ).fetchall()
            return [tuple(x) for x in rows]

    assert content(root) == content(clean)
    for m in ("audio", "visual"):
        a = vx.read_sidecar(root / "vectors.json")[m]
        b = vx.read_sidecar(clean / "vectors.json")[m]
        assert (a.count, a.dim, a.bytes) == (b.count, b.dim, b.bytes)


def test_the_lock_is_released_on_errors_and_close(build_index: BuildIndex) -> None:
    root = build_index()
    with pytest.raises(ModelMismatchError):
        IndexStore.create_or_open(root, ModelStamp("m2", "e" * 64, 8))
    assert not writer_active(root)
    store = IndexStore.create_or_open(root, STAMP)
    with pytest.raises(IndexBusyError):  # a second writer, even in the same process
        WriterLock.acquire(root, "embed")
    store.close()
    assert not writer_active(root) and holder(root) == (None, None)


def test_a_writer_waits_for_a_reader_saving_a_rebuilt_index(
    build_index: BuildIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    import avsearch.store.lock as lockmod

    root = build_index()
    reader = WriterLock.try_acquire(root, "query")
    assert reader is not None
    monkeypatch.setattr(lockmod, "READER_WAIT_SECONDS", 0.3)
    with pytest.raises(IndexBusyError, match=r"another avsearch query \(pid \d+\)"):
        WriterLock.acquire(root, "embed")  # waited 0.3 s, then told who holds it
    reader.release()
    WriterLock.acquire(root, "embed").release()
