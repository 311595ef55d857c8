"""One FAISS index per modality, ids = segment ids, chosen by size (autofaiss-style).

Index files are derived from the manifest and written with temp file + atomic rename, with a
sidecar ``vectors.json`` recording, per modality, the manifest generation the file was built
from, its vector count, dim and type, and the file's byte size and sha256, under a format
version (``SIDECAR_FORMAT``; a sidecar of another format counts as absent, so the files are
rebuilt). A reader whose sidecar generation differs from the manifest's rebuilds (see
IndexStore); ``verify_index_file`` checks a file against its record: size, then (on load) vector
count and dim, and with ``checksum=True`` the sha256 too. Files are created with the mode the
umask gives a normal file (``0666 & ~umask``), like any file the user makes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from avsearch.errors import IndexCorruptError

log = logging.getLogger(__name__)

SIDECAR_FORMAT = 2  # 1 (implicit): no format key, no bytes/sha256 per file
# verify_index_file hashes files up to this size on every open (a few ms); larger ones only by
# size, count and dim there, and by sha256 in `avsearch index check` / `doctor`
CHECKSUM_ON_OPEN_MAX_BYTES = 64 << 20

FLAT_MAX = 100_000
HNSW_MAX = 5_000_000


@dataclass(frozen=True)
class IndexSpec:
    kind: str  # "flat" | "hnsw" | "ivf"
    factory: str
    nprobe: int = 0
    ef_search: int = 0


def choose_index_spec(n: int, dim: int) -> IndexSpec:
    """Pure function of (count, dim): exact search while it is cheap, graph/IVF beyond."""
    if n < FLAT_MAX:
        return IndexSpec("flat", "Flat")
    if n < HNSW_MAX:
        return IndexSpec("hnsw", "HNSW32", ef_search=128)
    nlist = 1 << max(10, min(16, round(math.log2(4 * math.sqrt(n)))))
    return IndexSpec("ivf", f"IVF{nlist},SQ8", nprobe=max(16, nlist // 64))


def build_index(ids: np.ndarray, vectors: np.ndarray, spec: IndexSpec | None = None) -> faiss.Index:
    dim = vectors.shape[1]
    spec = spec or choose_index_spec(len(ids), dim)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if spec.kind == "ivf":
        index = faiss.index_factory(dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(len(vectors), min(len(vectors), 256 * 1024), replace=False)]
        index.train(sample)
        index.nprobe = spec.nprobe
        index.add_with_ids(vectors, ids)
        return index
    base = faiss.index_factory(dim, spec.factory, faiss.METRIC_INNER_PRODUCT)
    if spec.kind == "hnsw":
        base.hnsw.efSearch = spec.ef_search
    index = faiss.IndexIDMap2(base)
    if len(ids):
        index.add_with_ids(vectors, ids)
    return index


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, rename over ``path``, fsync the dir.

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
            fh.write(data)
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
    """Write the index atomically; returns (byte size, sha256 hex) of what was written."""
    data = faiss.serialize_index(index).tobytes()
    atomic_write_bytes(path, data)
    return len(data), hashlib.sha256(data).hexdigest()


def faiss_error_text(exc: BaseException) -> str:
    """FAISS's message without its C++ function signature and source location."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^Error in .*? at \S+:\d+: ", "", text)


def load_index(path: Path) -> faiss.Index:
    """Read a FAISS file (memory-mapped when FAISS can); IndexCorruptError if it cannot."""
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
    scores, ids = index.search(queries, k)
    return scores, ids


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
    path: Path, info: IndexInfo | None, *, checksum: bool | None = None, load: bool = True
) -> tuple[faiss.Index | None, str | None]:
    """Check a FAISS file against its sidecar record: (loaded index or None, problem or None).

    Always the byte size (cheap); with ``load`` FAISS reads it and its vector count and dim are
    compared; with ``checksum`` the sha256 of the whole file too (``None``: when the file is at
    most ``CHECKSUM_ON_OPEN_MAX_BYTES``). ``problem`` says what is wrong in words (the file's
    name is for the caller to add)."""
    if info is None:
        return None, "has no record in vectors.json"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None, "is missing"
    if size != info.bytes:
        how = "empty" if size == 0 else "truncated" if size < info.bytes else "longer"
        return None, f"is {size} bytes, vectors.json records {info.bytes} ({how})"
    if checksum is None:
        checksum = size <= CHECKSUM_ON_OPEN_MAX_BYTES
    if checksum and file_sha256(path) != info.sha256:
        return None, "does not match its sha256 in vectors.json (its content changed)"
    if not load:
        return None, None
    try:
        index = load_index(path)
    except IndexCorruptError as exc:
        return None, exc.message.removeprefix(f"{path} ")
    if index.ntotal != info.count or index.d != info.dim:
        return None, (
            f"holds {index.ntotal} vectors of dim {index.d}, vectors.json records "
            f"{info.count} of dim {info.dim}"
        )
    return index, None


def index_ids(index: faiss.Index) -> np.ndarray | None:
    """The segment ids an IDMap index holds (None for index types that keep them elsewhere)."""
    if not hasattr(index, "id_map"):
        return None
    return np.asarray(faiss.vector_to_array(index.id_map), dtype=np.int64)
