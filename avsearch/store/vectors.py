"""One FAISS index per modality, ids = segment ids, chosen by size (autofaiss-style).

Index files are derived from the manifest and written with temp file + atomic rename, with a
sidecar ``vectors.json`` recording, per modality, the manifest generation the file was built
from, its vector count, dim and type, the file's byte size and sha256, the largest segment id
it holds, how many removed vectors it still masks (HNSW), and the recall@10 measured when it was
built, under a format version (``SIDECAR_FORMAT``; a sidecar of another format counts as absent,
so the files are rebuilt). A reader whose sidecar generation differs from the manifest's
rebuilds; the writer updates a file in place instead when it can (see IndexStore.sync_vectors:
new segment ids are added, removed ones taken out with ``remove_ids``, or masked in an HNSW
graph, which cannot remove). ``verify_index_file`` checks a file against its record: size, then
(on load) vector count and dim, and with ``checksum=True`` the sha256 too. Files are created with
the mode the umask gives a normal file (``0666 & ~umask``), like any file the user makes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np

from avsearch.errors import IndexCorruptError

log = logging.getLogger(__name__)

SIDECAR_FORMAT = 3  # 1 (implicit): no bytes/sha256 per file; 2: no max_id/masked/recall
# verify_index_file hashes files up to this size on every open (a few ms); larger ones only by
# size, count and dim there, and by sha256 in `avsearch index check` / `doctor`
CHECKSUM_ON_OPEN_MAX_BYTES = 64 << 20

# Thresholds from docs/benchmarks.md, "Vector index at scale" (bench/query_scale.py): see
# choose_index_spec.
FLAT_MAX = 100_000
IVF_FLAT_MAX = 2_000_000
RECALL_TARGET = 0.95  # build-time tuning raises nprobe / efSearch until recall@10 reaches it
IVF_TRAIN_PER_LIST = 64  # k-means training points per list (FAISS warns below 39)
IVF_TRAIN_MIN = 10_000  # and at least this many (a PQ's 256 centroids want 39 x 256)
RECALL_K = 10
RECALL_QUERIES = 200  # indexed vectors searched for at build time to measure recall@10
# an HNSW graph cannot remove a vector: removed segments are masked out of searches until they
# are more than this share of the vectors in the file, then the file is rebuilt (compacted)
COMPACT_DELETED_SHARE = 0.10
_ALL_IDS = faiss.IDSelectorRange(0, np.iinfo(np.int64).max)  # masks the -1 of removed vectors
# FAISS threads for a single query: one query is never split across threads (they divide
# queries), but every search still opens an OpenMP region whose barrier waits for all threads;
# on a busy machine that wait costs milliseconds (docs/benchmarks.md, "Vector index at scale").
# None: FAISS's default.
SINGLE_QUERY_THREADS: int | None = 1


@dataclass(frozen=True)
class IndexSpec:
    kind: str  # "flat" | "hnsw" | "ivf"
    factory: str
    nprobe: int = 0
    ef_search: int = 0


def ivf_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: the power of two nearest sqrt(n), 64..65536."""
    return 1 << max(6, min(16, round(math.log2(max(1.0, math.sqrt(n))))))


def ivf_nprobe(nlist: int) -> int:
    """The nprobe an IVF index starts from (``tune_search`` may raise it): 1/32 of the lists,
    at least 16."""
    return min(nlist, max(16, nlist // 32))


def choose_index_spec(n: int, dim: int) -> IndexSpec:
    """Pure function of (count, dim), set from docs/benchmarks.md "Vector index at scale"
    (``bench/query_scale.py``: 10k, 100k and 1M vectors of dim 128, clustered synthetic ones and
    real ones repeated with noise; single queries, top 10, 2-core machine):

    - below ``FLAT_MAX`` (100k) exact ``Flat``: its p50 grows linearly, 0.11 ms at 10k, 2.4 ms
      at 100k, 23 ms at 1M (1 thread), so it stays within a few ms up to 100k; it is exact,
      needs no training and is updated in place exactly;
    - up to ``IVF_FLAT_MAX`` (2M) ``IVF{nlist},Flat`` (nlist the power of two nearest sqrt(n);
      nprobe ``ivf_nprobe``: 32 at 1M, four times the 8 that already reached recall@10 1.000 on
      both data sets, as margin for data less clustered than these): at 1M recall@10 1.000, p50
      0.7-1.1 ms at nprobe 32, built in ~4 s, 496 MiB (the vectors themselves), and it removes
      vectors in place. HNSW32 measured no better: recall@10 0.94-0.97 at efSearch 32-128 on
      the synthetic set, a ~30x longer build (127 s at 1M), 1.5x the memory (755 MiB), and it
      cannot remove;
    - from 2M ``IVF{nlist},SQ8`` (a byte per dimension; IVF-Flat would pass 1 GB at 2M):
      recall@10 0.94-0.98 in the table, capped by the 8-bit codes rather than nprobe; beyond the
      measured sizes, an extrapolation, so the recall measured at its build is recorded and
      shown by ``avsearch index stats``.

    IVF-PQ (PQ32x4fs) reached only 0.02-0.63 recall@10 and is not chosen. Every approximate
    index gets its nprobe (efSearch) raised at build while recall@10 on a sample of its own
    vectors is under ``RECALL_TARGET`` (``tune_search``)."""
    if n < FLAT_MAX:
        return IndexSpec("flat", "Flat")
    nlist = ivf_nlist(n)
    codec = "Flat" if n < IVF_FLAT_MAX else "SQ8"
    return IndexSpec("ivf", f"IVF{nlist},{codec}", nprobe=ivf_nprobe(nlist))


def build_index(ids: np.ndarray, vectors: np.ndarray, spec: IndexSpec | None = None) -> faiss.Index:
    """A FAISS index of ``vectors`` with ``ids``: Flat in an IndexIDMap2, HNSW in an IndexIDMap
    (its id map doubles as the mask of removed vectors, see ``remove_ids``), IVF with its own
    ids (trained on ``IVF_TRAIN_PER_LIST`` points per list, at least ``IVF_TRAIN_MIN``, seeded)."""
    dim = vectors.shape[1]
    spec = spec or choose_index_spec(len(ids), dim)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if spec.kind == "ivf":
        index = faiss.index_factory(dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        rng = np.random.default_rng(0)
        n_train = min(len(vectors), max(IVF_TRAIN_MIN, IVF_TRAIN_PER_LIST * ivf.nlist))
        sample = vectors[np.sort(rng.choice(len(vectors), n_train, replace=False))]
        ivf.cp.seed = 1234
        index.train(sample)
        ivf.nprobe = spec.nprobe
        if len(ids):
            index.add_with_ids(vectors, ids)
        return index
    base = faiss.index_factory(dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
    if spec.kind == "hnsw":
        faiss.downcast_index(base).hnsw.efSearch = spec.ef_search
        index = faiss.IndexIDMap(base)
    else:
        index = faiss.IndexIDMap2(base)
    if len(ids):
        index.add_with_ids(vectors, ids)
    return index


def _hnsw_of(index: faiss.Index) -> faiss.Index | None:
    """The HNSW index inside an IndexIDMap, or None."""
    if not isinstance(index, faiss.IndexIDMap):
        return None
    inner = faiss.downcast_index(index.index)
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def masked_count(index: faiss.Index) -> int:
    """Removed vectors an HNSW index still holds, masked (id -1 in its id map)."""
    if _hnsw_of(index) is None:
        return 0
    return int(np.count_nonzero(_id_map_view(index) < 0))


def _id_map_view(index: faiss.Index) -> np.ndarray:
    """The id map of an IndexIDMap/IndexIDMap2 as a writable numpy view (no copy)."""
    n = index.id_map.size()
    if n == 0:
        return np.zeros(0, np.int64)
    return faiss.rev_swig_ptr(index.id_map.data(), n)


def remove_ids(index: faiss.Index, ids: np.ndarray) -> int:
    """Take segment ``ids`` out of ``index``; returns how many it held.

    Flat (IndexIDMap2) and IVF remove them (``remove_ids``: Flat moves the rows after each one
    up, keeping their order, so the index equals a fresh build of what is left); an HNSW graph
    cannot remove a node, so its id in the id map becomes -1: every search passes a selector
    that excludes -1 (``search``), and a file whose masked share exceeds
    ``COMPACT_DELETED_SHARE`` is rebuilt (``needs_compaction``)."""
    ids = np.ascontiguousarray(np.unique(ids), dtype=np.int64)
    if not len(ids) or index.ntotal == 0:
        return 0
    if _hnsw_of(index) is not None:
        view = _id_map_view(index)
        hit = np.isin(view, ids)
        view[hit] = -1
        return int(np.count_nonzero(hit))
    return int(index.remove_ids(faiss.IDSelectorBatch(ids)))


def add_vectors(index: faiss.Index, ids: np.ndarray, vectors: np.ndarray) -> None:
    if len(ids):
        index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, np.int64)
        )


def needs_compaction(masked: int, ntotal: int) -> bool:
    """Whether an HNSW file with ``masked`` removed vectors of ``ntotal`` is to be rebuilt."""
    return ntotal > 0 and masked > COMPACT_DELETED_SHARE * ntotal


def exact_knn(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top ``k`` of ``queries`` among ``vectors``: (scores, row numbers)."""
    k = min(k, len(vectors))
    return faiss.knn(
        np.ascontiguousarray(queries, np.float32),
        np.ascontiguousarray(vectors, np.float32),
        k,
        metric=faiss.METRIC_INNER_PRODUCT,
    )


def recall_at_k(
    found: np.ndarray,
    queries: np.ndarray,
    ids: np.ndarray,
    vectors: np.ndarray,
    kth_exact: np.ndarray,
) -> float:
    """recall@k of search results ``found`` (segment ids, -1 = none; k = its width) against
    exact search, ties counted as hits: a returned id is right when its exact score reaches the
    k-th exact score of its query (``kth_exact``, less 1e-5), so equal vectors do not count as
    misses. ``ids`` (sorted) and ``vectors`` are what the index holds."""
    if found.size == 0:
        return 1.0
    k = found.shape[1]
    pos = np.clip(np.searchsorted(ids, found), 0, len(ids) - 1)
    valid = (found >= 0) & (ids[pos] == found)
    scores = np.einsum("qd,qkd->qk", queries, vectors[pos])
    hits = valid & (scores >= kth_exact[:, None] - 1e-5)
    return float(np.mean(np.minimum(hits.sum(axis=1), k) / k))


@dataclass(frozen=True)
class RecallProbe:
    """Indexed vectors used as queries, with the k-th best exact score of each among the other
    indexed vectors (leave-one-out: a query does not count finding itself)."""

    queries: np.ndarray
    query_ids: np.ndarray
    kth_exact: np.ndarray
    k: int

    @classmethod
    def sample(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        *,
        k: int = RECALL_K,
        n_queries: int = RECALL_QUERIES,
        seed: int = 0,
    ) -> RecallProbe:
        k = max(1, min(k, len(ids) - 1))
        rows = np.sort(
            np.random.default_rng(seed).choice(len(ids), min(n_queries, len(ids)), replace=False)
        )
        queries = np.ascontiguousarray(vectors[rows], np.float32)
        exact, _ = exact_knn(vectors, queries, k + 1)
        # the others' k-th best is the (k+1)-th best of all: the query itself scores highest
        return cls(queries, ids[rows], exact[:, k], k)

    def recall(self, index: faiss.Index, ids: np.ndarray, vectors: np.ndarray) -> float:
        """recall@k of ``index`` (searched for k+1, each query's own id dropped, else the last)."""
        _, found = search(index, self.queries, self.k + 1)
        rest = [row[row != qid][: self.k] for qid, row in zip(self.query_ids, found, strict=True)]
        return recall_at_k(np.stack(rest), self.queries, ids, vectors, self.kth_exact)


def measure_recall(
    index: faiss.Index,
    ids: np.ndarray,
    vectors: np.ndarray,
    *,
    k: int = RECALL_K,
    n_queries: int = RECALL_QUERIES,
    seed: int = 0,
) -> tuple[float, int]:
    """(recall@k, queries): ``n_queries`` of the indexed vectors (seeded sample) searched for in
    ``index`` and exactly, each query's own id left out (``ids`` sorted, the rows of
    ``vectors``)."""
    if len(ids) < 2:
        return 1.0, 0
    probe = RecallProbe.sample(ids, vectors, k=k, n_queries=n_queries, seed=seed)
    return probe.recall(index, ids, vectors), len(probe.queries)


@dataclass(frozen=True)
class Tuned:
    recall: float
    queries: int
    nprobe: int = 0
    ef_search: int = 0


def tune_search(index: faiss.Index, ids: np.ndarray, vectors: np.ndarray, spec: IndexSpec) -> Tuned:
    """Measure recall@10 (``RecallProbe``) and, while it is below ``RECALL_TARGET``, double the
    IVF nprobe (up to a quarter of the lists) or the HNSW efSearch (up to 1024), as long as a
    doubling still gains (0.002: an SQ8 code caps recall whatever the nprobe); leaves the index
    set to the value kept. Exact search: 1.0, nothing measured."""
    if spec.kind == "flat" or len(ids) < 2:
        return Tuned(1.0, 0)
    probe = RecallProbe.sample(ids, vectors)
    hnsw = _hnsw_of(index)
    ivf = None if hnsw is not None else faiss.extract_index_ivf(index)

    def get() -> int:
        return int(hnsw.hnsw.efSearch) if hnsw is not None else int(ivf.nprobe)

    def put(value: int) -> None:
        if hnsw is not None:
            hnsw.hnsw.efSearch = value
        else:
            ivf.nprobe = value

    limit = 1024 if hnsw is not None else max(get(), ivf.nlist // 4)
    value, recall = get(), probe.recall(index, ids, vectors)
    while recall < RECALL_TARGET and value < limit:
        put(min(limit, value * 2))
        better = probe.recall(index, ids, vectors)
        if better < recall + 0.002:
            put(value)
            break
        value, recall = get(), better
    queries = len(probe.queries)
    if hnsw is not None:
        return Tuned(recall, queries, ef_search=value)
    return Tuned(recall, queries, nprobe=value)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, rename over ``path``, fsync the dir."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` with a temp file beside ``path``, fsync, rename over ``path``, fsync the
    dir.

    The temp file is created with ``os.open(..., 0o666)`` so the umask decides its mode, as for
    any file the user makes (``tempfile.mkstemp`` would make it 0600)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(dir_fd)


def save_index(index: faiss.Index, path: Path) -> tuple[int, str]:
    """Write the whole index atomically (temp file + rename), streamed from FAISS's writer
    through sha256 into the file (no copy of it in memory); returns (byte size, sha256 hex)."""
    digest = hashlib.sha256()
    size = 0

    def write(fh: BinaryIO) -> None:
        def chunk(data: bytes) -> int:
            nonlocal size
            fh.write(data)
            digest.update(data)
            size += len(data)
            return len(data)

        writer = faiss.PyCallbackIOWriter(chunk, 1 << 22)
        try:
            faiss.write_index(index, writer)
        finally:
            del writer

    atomic_write(path, write)
    return size, digest.hexdigest()


def faiss_error_text(exc: BaseException) -> str:
    """FAISS's message without its C++ function signature and source location."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", text)


def load_index(path: Path, *, writable: bool = False) -> faiss.Index:
    """Read a FAISS file (memory-mapped when FAISS can, unless ``writable``: an index to update
    in place is read into memory); IndexCorruptError if it cannot."""
    if not writable:
        try:
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError:
            pass
    try:
        return faiss.read_index(str(path))
    except (RuntimeError, MemoryError) as exc:
        raise IndexCorruptError(
            f"{path} is damaged: FAISS cannot read it ({faiss_error_text(exc)})"
        ) from exc


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Inner-product search; returns (scores, ids) with ids == -1 where fewer than k exist."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(k, index.ntotal)) if index.ntotal else 1
    if index.ntotal == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    if len(queries) == 1 and SINGLE_QUERY_THREADS:
        before = faiss.omp_get_max_threads()  # (a per-thread setting in OpenMP)
        faiss.omp_set_num_threads(SINGLE_QUERY_THREADS)
        try:
            return _search(index, queries, k)
        finally:
            faiss.omp_set_num_threads(before)
    return _search(index, queries, k)


def _search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    hnsw = _hnsw_of(index)
    if hnsw is None:
        return index.search(queries, k)
    # removed vectors stay in an HNSW graph with id -1: the selector keeps them out of results
    params = faiss.SearchParametersHNSW()
    params.efSearch = hnsw.hnsw.efSearch
    params.sel = _ALL_IDS
    return index.search(queries, k, params=params)


@dataclass(frozen=True)
class IndexInfo:
    generation: int
    count: int
    dim: int
    kind: str
    factory: str
    bytes: int = -1  # size of the FAISS file as written
    sha256: str = ""  # of the FAISS file as written
    manifest_id: str = ""  # meta.index_id of the manifest it was built from
    max_id: int = -1  # the largest segment id the file holds (-1: none); new ones are above it
    masked: int = 0  # removed vectors still in the file, masked out of searches (HNSW only)
    nprobe: int = 0  # IVF lists searched per query (0: not IVF)
    ef_search: int = 0  # HNSW search breadth (0: not HNSW)
    recall: float | None = None  # recall@10 against exact search, measured at the last build
    recall_queries: int = 0  # how many indexed vectors were searched for to measure it
    built_count: int = 0  # vectors at the last full build (later ones were added in place)
    mtime_ns: int = -1  # the FAISS file's mtime as written: a file changed since is checksummed


def read_sidecar(path: Path) -> dict[str, IndexInfo]:
    """The records of ``vectors.json``; {} when absent, unreadable or of another format (so the
    FAISS files are rebuilt from the manifest)."""
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("format") != SIDECAR_FORMAT:
            log.info("%s is of an older format; the vector indexes will be rebuilt", path)
            return {}
        return {k: IndexInfo(**v) for k, v in raw["indexes"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("%s is unreadable (%s); the vector indexes will be rebuilt", path, exc)
        return {}


def sidecar_problem(path: Path) -> str | None:
    """Why ``vectors.json`` cannot be used (for ``avsearch index check``), or None."""
    if not path.exists():
        return "missing"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"
    if not isinstance(raw, dict) or raw.get("format") != SIDECAR_FORMAT:
        found = raw.get("format", 1) if isinstance(raw, dict) else "?"
        return f"format {found}, not {SIDECAR_FORMAT} (written by an older avsearch)"
    try:
        {k: IndexInfo(**v) for k, v in raw["indexes"].items()}
    except (TypeError, KeyError, AttributeError) as exc:
        return f"malformed ({type(exc).__name__}: {exc})"
    return None


def write_sidecar(path: Path, infos: dict[str, IndexInfo]) -> None:
    raw = {"format": SIDECAR_FORMAT, "indexes": {k: asdict(v) for k, v in infos.items()}}
    atomic_write_bytes(path, json.dumps(raw, indent=2, sort_keys=True).encode("utf-8"))


def verify_index_file(
    path: Path,
    info: IndexInfo | None,
    *,
    checksum: bool | None = None,
    load: bool = True,
    writable: bool = False,
) -> tuple[faiss.Index | None, str | None]:
    """Check a FAISS file against its sidecar record: (loaded index or None, problem or None).

    Always the byte size (cheap); with ``load`` FAISS reads it and its vector count and dim are
    compared; with ``checksum`` the sha256 of the whole file too (``None``: when the file is at
    most ``CHECKSUM_ON_OPEN_MAX_BYTES``, or when its mtime is not the one recorded as it was
    written: a larger file that something rewrote is checksummed whatever its size).
    ``problem`` says what is wrong in words (the file's name is for the caller to add)."""
    if info is None:
        return None, "has no record in vectors.json"
    try:
        st = path.stat()
    except FileNotFoundError:
        return None, "is missing"
    size = st.st_size
    if size != info.bytes:
        how = "empty" if size == 0 else "truncated" if size < info.bytes else "longer"
        return None, f"is {size} bytes, vectors.json records {info.bytes} ({how})"
    if checksum is None:
        checksum = size <= CHECKSUM_ON_OPEN_MAX_BYTES or st.st_mtime_ns != info.mtime_ns
    if checksum and file_sha256(path) != info.sha256:
        return None, "does not match its sha256 in vectors.json (its content changed)"
    if not load:
        return None, None
    try:
        index = load_index(path, writable=writable)
    except IndexCorruptError as exc:
        return None, exc.message.removeprefix(f"{path} ")
    if index.ntotal != info.count + info.masked or index.d != info.dim:
        masked = f" (+{info.masked} masked)" if info.masked else ""
        return None, (
            f"holds {index.ntotal} vectors of dim {index.d}, vectors.json records "
            f"{info.count}{masked} of dim {info.dim}"
        )
    return index, None


def index_ids(index: faiss.Index) -> np.ndarray | None:
    """The segment ids an index holds, masked (removed) ones left out, in storage order; None
    for an index type that keeps them in neither an id map nor inverted lists."""
    if hasattr(index, "id_map"):
        ids = np.asarray(faiss.vector_to_array(index.id_map), dtype=np.int64)
        return ids[ids >= 0]
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    lists = ivf.invlists
    parts = [
        faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
        for i in range(lists.nlist)
        if lists.list_size(i)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
