"""Summary of an index directory (``avsearch index stats``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avsearch.relocate import pending_move
from avsearch.store import vectors as vx
from avsearch.store.index import MANIFEST, SIDECAR, IndexStore, slot_key
from avsearch.store.manifest import HEADS, SCHEMA_VERSION


def index_stats(root: Path) -> dict[str, Any]:
    """The summary (``docs/cli.md``); read only. ``moved``: when the index was moved with the
    folder it indexes since its last embed, where from and to and how many file paths the next
    ``query`` or ``embed`` makes follow it (until then the manifest holds the old paths)."""
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
            "spaces": spaces_status(store),
            "vector_indexes": {
                slot_key(sp, mod): _vector_status(store, mod, infos.get(slot_key(sp, mod)), sp)
                for sp, mod in store.slots()
            },
            "bytes_on_disk": size,
            "manifest": str(root / MANIFEST),
            "moved": None if (move := pending_move(store)) is None else move.to_json(),
        }


def spaces_status(store: IndexStore) -> dict[str, Any]:
    """The index's vector spaces: the heads' dimension; for each further space of the model its
    dimension per modality and how many segments hold a vector of it, or why it is off."""
    stamp = store.model_stamp()
    assert stamp is not None
    out: dict[str, Any] = {HEADS: {"dim": stamp.dim}}
    for space, info in stamp.spaces.items():
        dims = {m: d for m, d in info.items() if m in ("audio", "visual") and isinstance(d, int)}
        if not dims:
            out[space] = {"off": str(info.get("off", "the model has no such space"))}
            continue
        counts = {m: store.manifest.segment_count(m, space) for m in dims}
        out[space] = {"dim": dims, "vectors": counts}
        lacking = {m: store.manifest.segment_count(m) - n for m, n in counts.items()}
        if any(lacking.values()):
            out[space]["lacking"] = lacking  # made by the next embed over their folders
    return out


def _vector_status(
    store: IndexStore, modality: str, info: vx.IndexInfo | None, space: str = HEADS
) -> dict[str, Any]:
    """Count, type, search parameters and the recall@10 measured when it was built, from
    vectors.json, and whether the FAISS file is up to date and checks out (size, count, dim;
    ``avsearch index check`` also verifies its sha256)."""
    problem = store.vector_problem(modality, space=space)
    out: dict[str, Any] = {
        "count": None if info is None else info.count,
        "type": None if info is None else info.factory,
        "search": None if info is None else _search_params(info),
        "recall_at_10": None if info is None else info.recall,
        "recall_queries": None if info is None else info.recall_queries,
        "built_count": None if info is None else info.built_count,
        "masked": None if info is None else info.masked,
        "up_to_date": problem is None,
    }
    if problem is not None:
        reason, damaged = problem
        out["problem"] = f"{store.faiss_path(modality, space).name} {reason}"
        out["damaged"] = damaged
    return out


def _search_params(info: vx.IndexInfo) -> dict[str, int]:
    if info.kind == "ivf":
        return {"nprobe": info.nprobe}
    if info.kind == "hnsw":
        return {"ef_search": info.ef_search}
    return {}


def vector_index_line(modality: str, status: dict[str, Any]) -> str:
    """One line of ``avsearch index stats`` about a FAISS file (``modality``: its slot key,
    ``audio`` or ``native.audio``)."""
    if status["count"] is None:
        line = f"{modality}: no vector index yet"
    else:
        params = ", ".join(f"{k} {v}" for k, v in (status["search"] or {}).items())
        line = f"{modality}: {status['count']:,} vectors, {status['type']}"
        line += f" ({params})" if params else ""
        recall = status["recall_at_10"]
        if recall is not None:
            if status["recall_queries"]:
                line += (
                    f", recall@10 {recall:.3f} (measured at build: {status['recall_queries']} "
                    f"queries over {status['built_count']:,} vectors)"
                )
            else:
                line += f", recall@10 {recall:.3f} (exact search)"
        if status["masked"]:
            line += f", {status['masked']:,} removed vectors masked"
    if status["up_to_date"]:
        return line + ", up to date"
    return line + f"; {status['problem']}"
