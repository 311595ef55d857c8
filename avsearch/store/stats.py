"""Summary of an index directory (``avsearch index stats``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avsearch.store import vectors as vx
from avsearch.store.index import MANIFEST, SIDECAR, IndexStore
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
            "vector_indexes": {
                k: {"count": v.count, "type": v.factory, "up_to_date": v.generation == m.generation}
                for k, v in infos.items()
            },
            "bytes_on_disk": size,
            "manifest": str(root / MANIFEST),
        }
