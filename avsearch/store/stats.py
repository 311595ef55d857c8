"""Summary of an index directory (``avsearch index stats``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avsearch.store import vectors as vx
from avsearch.store.index import MANIFEST, MODALITIES, SIDECAR, IndexStore
from avsearch.store.manifest import SCHEMA_VERSION


def index_stats(root: Path) -> dict[str, Any]:
    with IndexStore.open_existing(root) as store:
        stamp = store.model_stamp()
        assert stamp is not None
        m = store.manifest
        kinds = dict(m.conn.execute("SELECT kind, count(*) FROM files GROUP BY kind").fetchall())
        infos = vx.read_sidecar(root / SIDECAR)
        size = sum(p.stat().st_size for p in root.iterdir() if p.is_file())
        return {
            "index": str(root),
            "schema_version": m.schema_version(),
            "supported_schema_version": SCHEMA_VERSION,
            "model": stamp.name,
            "model_fingerprint": stamp.fingerprint,
            "dim": stamp.dim,
            "files": m.file_count(),
            "files_by_kind": kinds,
            "segments": {"audio": m.segment_count("audio"), "visual": m.segment_count("visual")},
            "vector_indexes": {k: _vector_status(store, k, infos.get(k)) for k in MODALITIES},
            "bytes_on_disk": size,
            "manifest": str(root / MANIFEST),
        }


def _vector_status(store: IndexStore, modality: str, info: vx.IndexInfo | None) -> dict[str, Any]:
    """Count and type from vectors.json, and whether the FAISS file is up to date and checks out
    (size, count, dim; ``avsearch index check`` also verifies its sha256)."""
    problem = store.vector_problem(modality)
    out: dict[str, Any] = {
        "count": None if info is None else info.count,
        "type": None if info is None else info.factory,
        "up_to_date": problem is None,
    }
    if problem is not None:
        reason, damaged = problem
        out["problem"] = f"{store.faiss_path(modality).name} {reason}"
        out["damaged"] = damaged
    return out
