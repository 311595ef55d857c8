"""One FAISS index per modality, ids = segment ids, chosen by size (autofaiss-style).

Index files are derived from the manifest and written with temp file + atomic rename, with a
sidecar ``vectors.json`` recording the manifest generation each was built from, its size and
type. A reader whose sidecar generation differs from the manifest's rebuilds (see IndexStore).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_index(index: faiss.Index, path: Path) -> None:
    atomic_write_bytes(path, faiss.serialize_index(index).tobytes())


def load_index(path: Path) -> faiss.Index:
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError:
        return faiss.read_index(str(path))


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


def read_sidecar(path: Path) -> dict[str, IndexInfo]:
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {k: IndexInfo(**v) for k, v in raw.items()}
    except (ValueError, TypeError) as exc:
        log.warning("%s is unreadable (%s); the vector indexes will be rebuilt", path, exc)
        return {}


def write_sidecar(path: Path, infos: dict[str, IndexInfo]) -> None:
    text = json.dumps({k: asdict(v) for k, v in infos.items()}, indent=2, sort_keys=True)
    atomic_write_bytes(path, text.encode("utf-8"))
