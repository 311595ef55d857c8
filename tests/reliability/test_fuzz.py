"""Fuzzing with hypothesis: damaged media through the decoders, hostile floats through the
windowing, damaged index files through the readers.

Only typed errors may escape: ``MediaError`` from decoding, ``AvsearchError`` from the index
readers; nothing may hang (each case runs under a watchdog) and every audio window that comes out
is finite float32 of the window length.

Bounded for the fast lane (the whole module in well under a minute). For a long local run::

    AVSEARCH_FUZZ_EXAMPLES=2000 python -m pytest -q tests/reliability/test_fuzz.py -s

which sets every target's ``max_examples`` and randomises the seed (the fast lane is
derandomised, so CI is repeatable). The number of cases each target ran is printed at the end of
the module and written as JSON to ``$AVSEARCH_FUZZ_REPORT`` when that is set (else to pytest's
temporary folder); docs/reliability.md records the figures of a long run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import shutil
import sqlite3
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import avsearch.media.decode as decode
from avsearch.config import QueryConfig
from avsearch.errors import AvsearchError, MediaError
from avsearch.media.decode import Piece, WindowSpec, audio_pieces, file_pieces
from avsearch.query import run_query
from avsearch.store.index import IndexStore, ModelStamp
from avsearch.store.manifest import NewSegment
from avsearch.store.stats import index_stats
from tests.brokenmedia import write_flac, write_float_wav, write_jpg, write_mp3, write_ogg
from tests.brokenmedia import write_webm as _write_webm
from tests.mediagen import write_mp4, write_png, write_wav
from tests.reliability.conftest import IMAGE_SIZE, FakeModel

T = TypeVar("T")

_ENV_EXAMPLES = int(os.environ.get("AVSEARCH_FUZZ_EXAMPLES", "0") or 0)
TIMEOUT = float(os.environ.get("AVSEARCH_FUZZ_TIMEOUT", "30"))  # seconds per case
MEMORY_HEADROOM = 3 << 30  # bytes a case may allocate on top of what the process holds


def fuzz_settings(fast_examples: int) -> settings:
    """The fast lane's count, derandomised; AVSEARCH_FUZZ_EXAMPLES=N raises it (random seed)."""
    return settings(
        max_examples=_ENV_EXAMPLES or fast_examples,
        deadline=None,
        derandomize=not _ENV_EXAMPLES,
        database=None,  # write nothing into the repository
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
        ],
    )


# ----------------------------------------------------------------------------------- counting

CASES: Counter[str] = Counter()
OUTCOMES: dict[str, Counter[str]] = {}


def record(target: str, outcome: str) -> None:
    CASES[target] += 1
    OUTCOMES.setdefault(target, Counter())[outcome] += 1


@pytest.fixture(scope="module", autouse=True)
def case_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    report = {
        "examples_setting": _ENV_EXAMPLES or "fast lane",
        "cases": dict(sorted(CASES.items())),
        "total": sum(CASES.values()),
        "outcomes": {k: dict(v.most_common()) for k, v in sorted(OUTCOMES.items())},
    }
    dest = os.environ.get("AVSEARCH_FUZZ_REPORT")
    path = Path(dest) if dest else tmp_path_factory.mktemp("fuzz") / "fuzz-cases.json"
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"\nfuzz cases: {json.dumps(report['cases'])} (total {report['total']}; {path})")


@pytest.fixture(scope="module", autouse=True)
def memory_guard() -> Iterator[None]:
    """A soft cap on this process's data segment for the module: a damaged length field that
    makes a reader or decoder allocate (and zero-fill) gigabytes fails that allocation here,
    instead of waking the kernel's OOM killer on a shared machine."""
    if not hasattr(resource, "RLIMIT_DATA"):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = _data_size() + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _data_size() -> int:
    """VmData of this process in bytes (0 where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def watchdog(fn: Callable[[], T], timeout: float = TIMEOUT) -> T:
    """Run ``fn`` in a thread; fail the case if it has not finished after ``timeout`` s.

    A thread (not SIGALRM) because a decoder stuck inside C code never returns to the
    interpreter to run a signal handler; a stuck thread is left behind, daemonic. The error is
    handed over without a reference cycle: a cycle would keep the failed case's PyAV container,
    and FFmpeg's worker threads with it, alive until a full garbage collection.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run, name="fuzz-case", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"case did not finish within {timeout:.0f} s (a hang)")
    error = box.pop("error", None)
    if error is not None:
        try:
            raise error
        finally:
            del error, box
    return box["value"]


# ----------------------------------------------------------------------------------- mutations

# a position: half the time inside the first 512 bytes (headers), else anywhere (mod length)
_pos = st.one_of(st.integers(0, 511), st.integers(0, 1 << 31))
_op = st.one_of(
    st.tuples(st.just("flip"), _pos, st.integers(0, 7)),
    st.tuples(st.just("truncate"), _pos),
    st.tuples(st.just("insert"), _pos, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("overwrite"), _pos, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("zero"), _pos, st.integers(1, 4096)),
    st.tuples(st.just("repeat"), _pos, st.integers(1, 4096), _pos),
)
mutations = st.lists(_op, min_size=1, max_size=6)


def mutate(data: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    buf = bytearray(data)
    for op in ops:
        n = len(buf)
        if n == 0:
            buf += op[2] if op[0] in ("insert", "overwrite") else b""
            continue
        p = op[1] % n
        if op[0] == "flip":
            buf[p] ^= 1 << op[2]
        elif op[0] == "truncate":
            del buf[p:]
        elif op[0] == "insert":
            buf[p:p] = op[2]
        elif op[0] == "overwrite":
            buf[p : p + len(op[2])] = op[2]
        elif op[0] == "zero":
            end = min(n, p + op[2])
            buf[p:end] = bytes(end - p)
        else:  # repeat a span somewhere else (duplicated packets, headers)
            span = bytes(buf[p : p + op[2]])
            q = op[3] % n
            buf[q:q] = span
    return bytes(buf)


# ----------------------------------------------------------------------------------- 1. decode

SPEC = WindowSpec.from_seconds(0.25, 16000, min_tail=0.1)

SEEDS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "wav": ("audio", lambda p: write_wav(p, 440.0, 1.2)),
    "ogg": ("audio", lambda p: write_ogg(p, 440.0, 1.2)),
    "flac": ("audio", lambda p: write_flac(p, 440.0, 1.2)),
    "mp3": ("audio", lambda p: write_mp3(p, 440.0, 1.2)),
    "mp4": ("video", lambda p: write_mp4(p, seconds=1.5, size=(48, 32))),
    "webm": ("video", lambda p: _write_webm(p, seconds=1.5, size=(48, 32))),
    "png": ("image", lambda p: write_png(p, (200, 30, 30), size=(24, 16))),
    "jpg": ("image", lambda p: write_jpg(p)),
}


@functools.cache
def seed_bytes(ext: str) -> bytes:
    """The valid file that cases of ``ext`` mutate (kept out of hypothesis's arguments, so a
    falsifying example prints only its mutations)."""
    kind, make = SEEDS[ext]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"seed.{ext}"
        make(path)
        assert list(file_pieces(path, kind, SPEC, IMAGE_SIZE)), f"the {ext} seed does not decode"
        return path.read_bytes()


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cases")


def check_pieces(pieces: list[Piece], kind: str) -> None:
    audio = [p for p in pieces if p.modality == "audio"]
    visual = [p for p in pieces if p.modality == "visual"]
    for p in audio:
        assert p.data.dtype == np.float32 and p.data.shape == (SPEC.samples,), p
        assert np.all(np.isfinite(p.data)), f"audio window {p.index} holds NaN/inf"
    assert [p.index for p in audio] == list(range(len(audio)))
    for p in visual:
        assert p.data.dtype == np.uint8 and p.data.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    indices = [p.index for p in visual]
    assert indices == sorted(set(indices)), f"visual windows out of order: {indices}"
    for p in pieces:
        assert np.isfinite(p.start) and np.isfinite(p.end) and 0 <= p.start <= p.end, p
    if kind == "image":
        assert len(pieces) == 1 and not audio


@pytest.mark.parametrize("ext", list(SEEDS))
@fuzz_settings(60)
@given(ops=mutations)
def test_damaged_media_decodes_or_raises_media_error(
    ext: str, ops: list[tuple[Any, ...]], work_dir: Path
) -> None:
    kind = SEEDS[ext][0]
    fd, name = tempfile.mkstemp(dir=work_dir, suffix=f".{ext}")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(mutate(seed_bytes(ext), ops))
        try:
            pieces = watchdog(lambda: list(file_pieces(path, kind, SPEC, IMAGE_SIZE)))
        except MediaError as exc:
            assert exc.path == path and exc.reason
            record(f"decode-{ext}", f"typed:{type(exc).__name__}")
            return
        except BaseException:
            record(f"decode-{ext}", "UNTYPED")
            raise
        check_pieces(pieces, kind)
        record(f"decode-{ext}", "decoded" if pieces else "decoded-empty")
    finally:
        path.unlink(missing_ok=True)


def _found_id(case: Any) -> str:
    return str((case.values if hasattr(case, "values") else case)[2])


# Failing cases the fuzzer found, kept as fixed examples (the fast lane's derandomised run need
# not draw them again).
FOUND: list[Any] = [
    ("mp4", [("overwrite", 8, b"\x80")], "major brand not UTF-8: PyAV UnicodeDecodeError"),
    ("mp3", [("repeat", 0, 866, 101)], "format change mid-stream: resampler ValueError"),
    ("png", [("overwrite", 118, b"\xb3")], "chunk length of 3 GB: Pillow MemoryError"),
]


@pytest.mark.parametrize(("ext", "ops", "what"), FOUND, ids=[_found_id(f) for f in FOUND])
def test_found_by_fuzzing(ext: str, ops: list[tuple[Any, ...]], what: str, tmp_path: Path) -> None:
    path = tmp_path / f"found.{ext}"
    path.write_bytes(mutate(seed_bytes(ext), ops))
    with tight_memory(1 << 30):  # as on a machine with 1 GiB to spare
        try:
            pieces = watchdog(lambda: list(file_pieces(path, SEEDS[ext][0], SPEC, IMAGE_SIZE)))
        except MediaError:
            return
    check_pieces(pieces, SEEDS[ext][0])


@contextlib.contextmanager
def tight_memory(headroom: int) -> Iterator[None]:
    """Lower the soft data-segment cap to what the process holds plus ``headroom``."""
    if not hasattr(resource, "RLIMIT_DATA"):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = _data_size() + headroom
    resource.setrlimit(
        resource.RLIMIT_DATA, (cap if soft == resource.RLIM_INFINITY else min(cap, soft), hard)
    )
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


# ----------------------------------------------------------------------------------- windowing

_hostile_floats = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.sampled_from([0.0, -0.0, 1e-45, -1e-45, 1.17e-38, 3.4e38, -3.4e38, 1.0, -1.0]),
)


@st.composite
def chunk_lists(draw: st.DrawFn) -> list[np.ndarray]:
    """Chunks as a decoder yields them: float32, sizes 0..3 windows, hostile values."""
    out = []
    for _ in range(draw(st.integers(0, 6))):
        size = draw(
            st.sampled_from([0, 1, 7, SPEC.samples - 1, SPEC.samples, 2 * SPEC.samples + 3])
        )
        base = draw(st.sampled_from(["zeros", "noise", "const"]))
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        if base == "noise":
            chunk = rng.standard_normal(size).astype(np.float32)
        elif base == "const":
            chunk = np.full(size, draw(_hostile_floats), np.float32)
        else:
            chunk = np.zeros(size, np.float32)
        for _ in range(draw(st.integers(0, 4)) if size else 0):
            chunk[draw(st.integers(0, size - 1))] = draw(_hostile_floats)
        out.append(chunk)
    return out


@fuzz_settings(150)
@given(chunks=chunk_lists())
def test_windowing_of_hostile_samples(chunks: list[np.ndarray]) -> None:
    """audio_pieces over decoder output full of NaN/inf/huge/denormal values: the windows are
    finite float32 of the window length, numbered in order, cover every sample (the tail by the
    min_tail rule), and finite samples pass through unchanged."""
    original = decode.audio_chunks

    def fake_chunks(path: Path, rate: int, **kwargs: Any) -> Iterator[np.ndarray]:
        yield from (c.copy() for c in chunks)

    decode.audio_chunks = fake_chunks  # type: ignore[assignment]
    try:
        try:
            pieces = list(audio_pieces(Path("/nonexistent/fuzz.wav"), SPEC))
        except MediaError:
            assert sum(c.size for c in chunks) == 0, "samples were there, yet no audio"
            record("windowing", "typed:no-samples")
            return
    finally:
        decode.audio_chunks = original  # type: ignore[assignment]
    signal = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    n, total = SPEC.samples, signal.size
    full, rest = divmod(total, n)
    want = full + (1 if rest and (full == 0 or rest / SPEC.sample_rate >= SPEC.min_tail) else 0)
    assert len(pieces) == want
    for k, p in enumerate(pieces):
        assert p.index == k and p.modality == "audio"
        assert p.data.dtype == np.float32 and p.data.shape == (n,)
        assert np.all(np.isfinite(p.data)), f"window {k} holds NaN/inf"
        assert p.start == round(k * SPEC.seconds, 6) and p.start < p.end
        src = signal[k * n : (k + 1) * n]
        keep = np.isfinite(src)
        np.testing.assert_array_equal(p.data[: src.size][keep], src[keep])
        assert not np.any(p.data[src.size :]), "padding is not zeros"
    record("windowing", f"{len(pieces)}-windows" if pieces else "no-windows")


@fuzz_settings(60)
@given(
    samples=arrays(np.float32, st.integers(1, 9000), elements=_hostile_floats),
    rate=st.sampled_from([16000, 8000, 44100]),
)
def test_hostile_float_wav_gives_finite_windows_and_vectors(
    samples: np.ndarray, rate: int, work_dir: Path
) -> None:
    """The same through the real decoders: a float wav (soundfile, resampled when its rate is
    not the window's) with hostile samples; windows and the fake model's vectors are finite."""
    fd, name = tempfile.mkstemp(dir=work_dir, suffix=".wav")
    os.close(fd)
    path = Path(name)
    try:
        write_float_wav(path, samples, rate)
        try:
            pieces = watchdog(lambda: list(audio_pieces(path, SPEC)))
        except MediaError:
            # a clip of a few samples at another rate may resample to nothing: tolerated
            # (a typed error) below 5 ms, a fault above
            assert len(samples) / rate < 0.005, f"{len(samples)} samples at {rate} Hz lost"
            record("float-wav", "typed:too-short")
            return
        assert pieces
        check_pieces(pieces, "audio")
        vecs = FakeModel().embed("audio", np.stack([p.data for p in pieces]))
        assert np.all(np.isfinite(vecs))
        record("float-wav", "windows")
    finally:
        path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------- 2. index

INDEX_FILES = ("manifest.sqlite", "audio.faiss", "visual.faiss", "vectors.json")
FAISS_FILES = ("audio.faiss", "visual.faiss")


@dataclass(frozen=True)
class Pristine:
    root: Path
    clip: Path
    stored: dict[str, list[tuple[int, np.ndarray]]]  # modality -> (segment id, vector)


_PRISTINE: list[Pristine] = []


def pristine() -> Pristine:
    """The intact index the index cases damage (a module global, not a hypothesis argument, so
    a falsifying example prints only its mutations)."""
    return _PRISTINE[0]


@pytest.fixture(scope="module", autouse=True)
def pristine_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A small real index (manifest + FAISS + sidecar) of the fake model's dimension, with
    random unit vectors, and a query clip."""
    root = tmp_path_factory.mktemp("pristine") / "index"
    model = FakeModel()
    stamp = ModelStamp(model.name, model.fingerprint, model.dim, "fake-model")
    rng = np.random.default_rng(3)
    store = IndexStore.create_or_open(root, stamp)
    try:
        for i in range(12):
            segs = []
            for modality in ("audio", "visual"):
                for k in range(int(rng.integers(1, 4))):
                    v = rng.standard_normal(model.dim).astype(np.float32)
                    segs.append(
                        NewSegment(modality, k, float(k), float(k + 1), v / np.linalg.norm(v))
                    )
            store.manifest.put_file(
                path=f"/media/file-{i}.mp4",
                kind="video",
                size=1000 + i,
                mtime_ns=i,
                digest=f"sha256:{i:064x}",
                segments=segs,
            )
        store.sync_vectors()
    finally:
        store.close()
    assert set(INDEX_FILES) <= {p.name for p in root.iterdir()}, list(root.iterdir())
    clip = write_wav(root.parent / "query.wav", 440.0, 0.6)
    conn = sqlite3.connect(str(root / "manifest.sqlite"))
    try:
        stored: dict[str, list[tuple[int, np.ndarray]]] = {"audio": [], "visual": []}
        for sid, modality, blob in conn.execute("SELECT id, modality, vector FROM segments"):
            stored[modality].append((int(sid), np.frombuffer(blob, np.float32).copy()))
    finally:
        conn.close()
    _PRISTINE[:] = [Pristine(root, clip, stored)]
    yield
    _PRISTINE.clear()


def read_index(root: Path, clip: Path) -> None:
    """What readers do: stats, open, search both modalities, look the hits up, run a query."""
    index_stats(root)
    rng = np.random.default_rng(0)
    with IndexStore.open_existing(root) as store:
        for modality in ("audio", "visual"):
            q = rng.standard_normal((2, store.dim)).astype(np.float32)
            _, ids = store.search(modality, q, 5)
            store.manifest.segments_by_ids(int(i) for i in ids.ravel() if i >= 0)
    model = FakeModel()
    run_query(clip, root, QueryConfig(top=5), model=model)  # type: ignore[arg-type]
    run_query(clip, root, QueryConfig(top=5, target="audio"), model=model)  # type: ignore[arg-type]


def exact_lookups(root: Path, stored: dict[str, list[tuple[int, np.ndarray]]]) -> None:
    """Each stored vector, searched for, comes back first with its own id and a score of 1."""
    with IndexStore.open_existing(root) as store:
        for modality, rows in stored.items():
            want = np.array([sid for sid, _ in rows])
            scores, ids = store.search(modality, np.stack([v for _, v in rows]), 1)
            assert np.array_equal(ids[:, 0], want), f"{modality}: wrong ids {ids[:, 0]}"
            np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4, err_msg=modality)


def damaged_copy(target: str, ops: list[tuple[Any, ...]], work_dir: Path) -> Path:
    case = Path(tempfile.mkdtemp(dir=work_dir)) / "index"
    shutil.copytree(pristine().root, case)
    victim = case / target
    victim.write_bytes(mutate(victim.read_bytes(), ops))
    return case


@pytest.mark.parametrize("target", INDEX_FILES)
@fuzz_settings(30)
@given(ops=mutations)
def test_damaged_index_file_raises_only_typed_errors(
    target: str, ops: list[tuple[Any, ...]], work_dir: Path
) -> None:
    case = damaged_copy(target, ops, work_dir)
    try:
        try:
            watchdog(lambda: read_index(case, pristine().clip))
        except AvsearchError as exc:
            record(f"index-{target}", f"typed:{type(exc).__name__}")
            return
        except BaseException as exc:
            record(f"index-{target}", f"UNTYPED:{type(exc).__name__}")
            raise
        record(f"index-{target}", "read")
    finally:
        shutil.rmtree(case.parent, ignore_errors=True)


@pytest.mark.parametrize("target", FAISS_FILES)
@fuzz_settings(30)
@given(ops=mutations)
def test_damaged_faiss_file_is_never_used_silently(
    target: str, ops: list[tuple[Any, ...]], work_dir: Path
) -> None:
    """The FAISS files are derived data: a damaged one is detected and rebuilt from the
    manifest (or refused with a typed error), so every stored vector still finds itself."""
    case = damaged_copy(target, ops, work_dir)
    try:
        try:
            watchdog(lambda: exact_lookups(case, pristine().stored))
        except AvsearchError as exc:
            record(f"faiss-exact-{target}", f"typed:{type(exc).__name__}")
            return
        except BaseException as exc:
            record(f"faiss-exact-{target}", f"WRONG:{type(exc).__name__}")
            raise
        record(f"faiss-exact-{target}", "exact")
    finally:
        shutil.rmtree(case.parent, ignore_errors=True)


FOUND_INDEX: list[Any] = [
    (
        "manifest.sqlite",
        [("overwrite", 15015, b"\x80")],
        "a stored path not UTF-8: sqlite3.OperationalError",
    ),
    (
        "manifest.sqlite",
        [("overwrite", 15020, bytes(13) + b"\x80")],
        "a stored kind not UTF-8: sqlite3.OperationalError",
    ),
    (
        "manifest.sqlite",
        [("insert", 39, bytes(8) + b"\x05")],
        "header shifted: sqlite3.OperationalError unsupported file format",
    ),
]


@pytest.mark.parametrize(
    ("target", "ops", "what"), FOUND_INDEX, ids=[_found_id(f) for f in FOUND_INDEX]
)
def test_found_by_fuzzing_index(
    target: str, ops: list[tuple[Any, ...]], what: str, work_dir: Path
) -> None:
    case = damaged_copy(target, ops, work_dir)
    try:
        with contextlib.suppress(AvsearchError):
            watchdog(lambda: read_index(case, pristine().clip))
    finally:
        shutil.rmtree(case.parent, ignore_errors=True)
