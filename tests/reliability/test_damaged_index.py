"""Damaged index files, named one by one, and concurrency (two writers, a reader during a write,
a writer killed with SIGKILL), with the fake model.

For every damage: readers (stats, open, search, query) either work or raise a typed
``AvsearchError`` -- never another exception; where only derived data (a FAISS file, the
sidecar) was damaged, every stored vector still finds itself (the damage was detected and the
file rebuilt, not used); and an ``embed`` afterwards either refuses with a typed error or leaves
the index equal to a fresh build of the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import avsearch.pipeline as pipeline
from avsearch.config import QueryConfig
from avsearch.errors import AvsearchError, IndexBusyError
from avsearch.query import run_query
from avsearch.store.index import IndexStore
from avsearch.store.stats import index_stats
from tests.brokenmedia import write_good
from tests.mediagen import write_wav
from tests.reliability.conftest import PEAK_RSS_SNIPPET, FakeModel, embed, index_contents
from tests.reliability.test_corpus import assert_same_index

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(media folder, intact index of it)."""
    root = tmp_path_factory.mktemp("built")
    media = (root / "media").resolve()
    write_good(media)
    write_wav(media / "extra" / "long.wav", 300.0, 3.2)
    embed([media], root / "index", FakeModel())
    return media, root / "index"


@pytest.fixture
def case(built: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the intact index (the media folder is shared, read-only by use)."""
    media, index = built
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    return media, copy


def stored_vectors(index: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    conn = sqlite3.connect(f"file:{index / 'manifest.sqlite'}?mode=ro", uri=True)
    try:
        out: dict[str, list[tuple[int, np.ndarray]]] = {"audio": [], "visual": []}
        for sid, modality, blob in conn.execute("SELECT id, modality, vector FROM segments"):
            out[modality].append((int(sid), np.frombuffer(blob, np.float32).copy()))
        return out
    finally:
        conn.close()


def read_all(index: Path, media: Path) -> str:
    """What readers do; returns "ok" or the typed error's class name."""
    model = FakeModel()
    try:
        index_stats(index)
        with IndexStore.open_existing(index) as store:
            for modality in ("audio", "visual"):
                store.search(modality, np.ones((1, model.dim), np.float32), 5)
        for query in (media / "good" / "tone.wav", media / "good" / "red.png"):
            run_query(query, index, QueryConfig(top=5), model=model)  # type: ignore[arg-type]
    except AvsearchError as exc:
        return type(exc).__name__
    return "ok"


def exact_lookups(index: Path, stored: dict[str, list[tuple[int, np.ndarray]]]) -> None:
    """Each stored vector, searched for, comes back first with a score of 1 and an id whose
    stored vector is that vector (ties between equal vectors are fine)."""
    with IndexStore.open_existing(index) as store:
        for modality, rows in stored.items():
            by_id = dict(rows)
            queries = np.stack([v for _, v in rows])
            scores, ids = store.search(modality, queries, 1)
            for q, sid in zip(queries, ids[:, 0], strict=True):
                assert int(sid) in by_id, f"{modality}: id {sid} is no segment"
                np.testing.assert_allclose(by_id[int(sid)], q, atol=1e-5, err_msg=modality)
            np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4, err_msg=modality)


def embed_after(index: Path, media: Path, tmp_path: Path) -> str:
    """Embed over the damaged index: a typed refusal, or an index equal to a fresh build."""
    try:
        embed([media], index, FakeModel())
    except AvsearchError as exc:
        return type(exc).__name__
    fresh = tmp_path / "fresh"
    embed([media], fresh, FakeModel())
    assert_same_index(index_contents(index), index_contents(fresh))
    return "ok"


# ------------------------------------------------------------------------- damage recipes


def faiss_layout(path: Path) -> dict[str, int]:
    """Offsets in an IndexIDMap2(IndexFlat) file: "IxM2" + header, "IxFI" + header, the codes
    (a length in floats, then the floats), then the ids (a length, then int64s)."""
    data = path.read_bytes()
    header = 4 + 8 + 8 + 8 + 1 + 4  # d, ntotal, two dummies, is_trained, metric type
    d, ntotal = struct.unpack_from("<iq", data, 4)
    sub = 4 + header
    assert data[:4] == b"IxM2" and data[sub : sub + 4] in (b"IxFI", b"IxF2", b"IxFl"), data[:48]
    codes_len_at = sub + 4 + header
    (codes_len,) = struct.unpack_from("<Q", data, codes_len_at)
    assert codes_len == ntotal * d, (codes_len, ntotal, d)
    ids_at = len(data) - 8 * ntotal
    assert struct.unpack_from("<Q", data, ids_at - 8)[0] == ntotal
    return {"d": d, "ntotal": ntotal, "codes_len_at": codes_len_at, "ids_at": ids_at}


def _patch(path: Path, at: int, new: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[at : at + len(new)] = new
    path.write_bytes(bytes(data))


def _sql(index: Path, statement: str) -> None:
    conn = sqlite3.connect(str(index / "manifest.sqlite"))
    try:
        conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def _negate_a_vector(path: Path) -> None:
    """Negate (same size, still unit length) one row of the codes whose vector no other row
    repeats, so no twin can answer for it."""
    lay = faiss_layout(path)
    data = path.read_bytes()
    start = lay["codes_len_at"] + 8
    rows = np.frombuffer(data, np.float32, lay["ntotal"] * lay["d"], start).reshape(-1, lay["d"])
    unique = [
        r for r in range(len(rows)) if sum(np.allclose(rows[r], other) for other in rows) == 1
    ]
    assert unique, "every vector has a twin"
    at = start + 4 * lay["d"] * unique[0]
    _patch(path, at, (-rows[unique[0]]).astype(np.float32).tobytes())


def _flip_id(path: Path) -> None:
    lay = faiss_layout(path)
    (first,) = struct.unpack_from("<q", path.read_bytes(), lay["ids_at"])
    _patch(path, lay["ids_at"], struct.pack("<q", first ^ 0x40))


Damage = Callable[[Path], None]
MANIFEST_DAMAGE: dict[str, Damage] = {
    "manifest zero bytes": lambda i: (i / "manifest.sqlite").write_bytes(b""),
    "manifest replaced by text": lambda i: (i / "manifest.sqlite").write_text("hello\n" * 99),
    "manifest truncated to half": lambda i: (i / "manifest.sqlite").write_bytes(
        (i / "manifest.sqlite").read_bytes()[: (i / "manifest.sqlite").stat().st_size // 2]
    ),
    "manifest header zeroed": lambda i: _patch(i / "manifest.sqlite", 0, bytes(100)),
    "manifest deleted (FAISS files left)": lambda i: (i / "manifest.sqlite").unlink(),
    "schema version from the future": lambda i: _sql(
        i, "UPDATE meta SET value='99' WHERE key='schema_version'"
    ),
    "model name erased": lambda i: _sql(i, "DELETE FROM meta WHERE key='model_name'"),
}
DERIVED_DAMAGE: dict[str, Damage] = {
    "audio.faiss deleted": lambda i: (i / "audio.faiss").unlink(),
    "audio.faiss zero bytes": lambda i: (i / "audio.faiss").write_bytes(b""),
    "audio.faiss truncated": lambda i: (i / "audio.faiss").write_bytes(
        (i / "audio.faiss").read_bytes()[:100]
    ),
    "audio.faiss garbage of the same size": lambda i: (i / "audio.faiss").write_bytes(
        np.random.default_rng(0).bytes((i / "audio.faiss").stat().st_size)
    ),
    "visual.faiss holds the audio index": lambda i: shutil.copy(
        i / "audio.faiss", i / "visual.faiss"
    ),
    "vectors.json deleted": lambda i: (i / "vectors.json").unlink(),
    "vectors.json garbage": lambda i: (i / "vectors.json").write_text("{not json"),
    "vectors.json is a list": lambda i: (i / "vectors.json").write_text("[1, 2, 3]"),
    "every derived file deleted": lambda i: [
        (i / n).unlink() for n in ("audio.faiss", "visual.faiss", "vectors.json")
    ],
}
SILENT_DAMAGE: dict[str, Damage] = {
    "a vector inside audio.faiss changed (same size)": lambda i: _negate_a_vector(
        i / "audio.faiss"
    ),
    "an id inside visual.faiss changed (same size)": lambda i: _flip_id(i / "visual.faiss"),
}


@pytest.mark.parametrize("name", list(MANIFEST_DAMAGE))
def test_damaged_manifest(name: str, case: tuple[Path, Path], tmp_path: Path) -> None:
    media, index = case
    MANIFEST_DAMAGE[name](index)
    outcome = read_all(index, media)
    assert outcome != "ok" or name == "model name erased", f"{name}: read as if intact"
    print(f"\n{name}: readers -> {outcome}, embed -> {embed_after(index, media, tmp_path)}")


@pytest.mark.parametrize("name", list(DERIVED_DAMAGE))
def test_damaged_derived_file_is_rebuilt(
    name: str, case: tuple[Path, Path], tmp_path: Path
) -> None:
    media, index = case
    stored = stored_vectors(index)
    DERIVED_DAMAGE[name](index)
    assert read_all(index, media) == "ok", f"{name}: derived data should be rebuilt"
    exact_lookups(index, stored)
    assert embed_after(index, media, tmp_path) == "ok"


@pytest.mark.parametrize("name", list(SILENT_DAMAGE))
def test_same_size_damage_of_a_faiss_file_is_not_used(name: str, case: tuple[Path, Path]) -> None:
    media, index = case
    stored = stored_vectors(index)
    SILENT_DAMAGE[name](index)
    assert read_all(index, media) in ("ok", "IndexCorruptError")
    exact_lookups(index, stored)


_RSS_PROBE = PEAK_RSS_SNIPPET + textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from avsearch.store.index import IndexStore
    index = Path(sys.argv[1])
    start = peak_start()
    outcome = "ok"
    try:
        with IndexStore.open_existing(index) as store:
            store.search("audio", np.ones((1, store.dim), np.float32), 3)
    except Exception as exc:
        outcome = type(exc).__name__
    grew, _ = peak_growth_kib(start)
    print(json.dumps({"outcome": outcome, "grew_kib": grew}))
    """
)


def test_faiss_length_field_does_not_make_readers_allocate_it(case: tuple[Path, Path]) -> None:
    """A same-size FAISS file whose codes length field claims 512 MiB: opening and searching
    the index must not allocate that (in a child process, peak RSS measured from after the
    imports; at 2**34 it would be 16 GiB, zero-filled, on any machine). The rebuild from the
    manifest that follows may use its own memory (under 400 MiB here)."""
    _, index = case
    assert_length_field_is_not_allocated(index)


def assert_length_field_is_not_allocated(index: Path) -> None:
    lay = faiss_layout(index / "audio.faiss")
    _patch(index / "audio.faiss", lay["codes_len_at"], struct.pack("<Q", (512 << 20) // 4))
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(index)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["outcome"] in ("ok", "IndexCorruptError"), out
    assert out["grew_kib"] < 400 * 1024, f"peak RSS grew by {out['grew_kib'] // 1024} MiB"


# ------------------------------------------------------------------------- concurrency


def _hold_decoding(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make the next embed stop inside its first decode until ``release`` is set."""
    started, release = threading.Event(), threading.Event()
    original = pipeline.file_pieces

    def held(path: Path, *args: Any, **kwargs: Any) -> Any:
        started.set()
        release.wait(60)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "file_pieces", held)
    return started, release


def test_second_writer_is_refused_and_readers_work_during_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    media = (tmp_path / "media").resolve()
    write_good(media)
    index = tmp_path / "index"
    embed([media / "good"], index, FakeModel())  # something to read meanwhile
    write_wav(media / "more" / "new.wav", 900.0, 1.0)
    started, release = _hold_decoding(monkeypatch)
    errors: list[BaseException] = []

    def first() -> None:
        try:
            embed([media], index, FakeModel())
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=first)
    writer.start()
    try:
        assert started.wait(30), "the first embed never started decoding"
        t0 = time.monotonic()
        with pytest.raises(IndexBusyError):
            embed([media], index, FakeModel())
        assert time.monotonic() - t0 < 15, "the second writer waited instead of being told"
        # a reader during the write sees the last committed state, with no error
        result = run_query(media / "good" / "tone.wav", index, QueryConfig(), model=FakeModel())  # type: ignore[arg-type]
        assert result.results and all(Path(h.path).exists() for h in result.results)
    finally:
        release.set()
        writer.join(60)
    assert not errors, errors
    monkeypatch.undo()
    fresh = tmp_path / "fresh"
    embed([media], fresh, FakeModel())
    assert_same_index(index_contents(index), index_contents(fresh))


_KILLED = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import avsearch.pipeline as pipeline
    from tests.reliability.conftest import FakeModel, embed
    media, index, marker = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    original = pipeline.file_pieces
    seen = []
    def slow(path, *args, **kwargs):
        seen.append(path)
        if len(seen) == 6:
            marker.write_text("stuck")
            time.sleep(120)
        return original(path, *args, **kwargs)
    pipeline.file_pieces = slow
    embed([media], index, FakeModel(), workers=1, batch_size=2, commit_every=0.0)
    """
)


def test_embed_killed_mid_run_resumes_cleanly(tmp_path: Path) -> None:
    """SIGKILL in the middle of an embed: the lock dies with the process, the committed files
    stay, and the next embed finishes the job (index equal to a fresh build)."""
    media = (tmp_path / "media").resolve()
    write_good(media)
    for i in range(6):
        write_wav(media / "more" / f"tone{i}.wav", 200.0 + 90 * i, 1.2)
    index, marker = tmp_path / "index", tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED, str(media), str(index), str(marker)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "the child embed never reached its 6th file"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    partial = index_contents(index)
    assert 0 < len(partial) < 11, f"expected a partial index, got {len(partial)} files"
    summary = embed([media], index, FakeModel())
    assert summary.failures == [] and summary.new == 11 - len(partial)
    fresh = tmp_path / "fresh"
    embed([media], fresh, FakeModel())
    assert_same_index(index_contents(index), index_contents(fresh))


# ------------------------------------------------------------------------- large FAISS files


@pytest.fixture(scope="module")
def large_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index whose audio.faiss is over 64 MiB (70,000 vectors of 256 floats)."""
    from avsearch.store.index import ModelStamp
    from avsearch.store.manifest import NewSegment

    root = tmp_path_factory.mktemp("large") / "index"
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((70_000, 256)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store = IndexStore.create_or_open(root, ModelStamp("big", "big-1", 256, "big"))
    try:
        segs = [NewSegment("audio", k, float(k), float(k + 1), v) for k, v in enumerate(vecs)]
        store.manifest.put_file(
            path="/media/long.wav", kind="audio", size=1, mtime_ns=1, digest="x", segments=segs
        )
        store.sync_vectors()
    finally:
        store.close()
    assert (root / "audio.faiss").stat().st_size > 64 << 20
    return root


def _sample(index: Path, n: int = 64) -> dict[str, list[tuple[int, np.ndarray]]]:
    rows = stored_vectors(index)["audio"]
    step = max(1, len(rows) // n)
    return {"audio": rows[::step]}


@pytest.mark.slow
def test_same_size_damage_of_a_large_faiss_file_is_not_used(
    large_index: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    shutil.copytree(large_index, index)
    sample = _sample(index)
    lay = faiss_layout(index / "audio.faiss")
    first_sampled = sample["audio"][0][0]  # segment ids start at 1, in order
    at = lay["codes_len_at"] + 8 + 4 * lay["d"] * (first_sampled - 1)
    _patch(index / "audio.faiss", at, struct.pack("<4f", 9.0, -9.0, 9.0, -9.0))
    exact_lookups(index, sample)


@pytest.mark.slow
def test_large_faiss_length_field_does_not_make_readers_allocate_it(
    large_index: Path, tmp_path: Path
) -> None:
    index = tmp_path / "index"
    shutil.copytree(large_index, index)
    assert_length_field_is_not_allocated(index)
