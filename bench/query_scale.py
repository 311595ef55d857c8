"""Vector index at scale: every index type the chooser can pick, at 10k, 100k and 1M segments,
on clustered synthetic vectors and on real ones; then incremental updates at 1M.

    python bench/query_scale.py [--sizes 10k,100k,1m] [--data synthetic,real]
                                [--incremental 1m | --incremental none] [--no-doc]

Vectors are L2-normalised, dim 128 (the default model's):

- ``synthetic``: a seeded Gaussian mixture: 4,096 clusters around 64 topics (a centre is a
  topic plus an offset of the same norm), lognormal cluster weights, each cluster with its own
  spread (noise norm 0.35-0.8 of the unit centre, so two members have cosine ~0.6-0.9);
  queries are 200 new draws of the same mixture;
- ``real``: the vectors of an index embedded once from ``../shared/data/natural`` (``avsearch
  embed ../shared/data/natural --index /tmp/qs-real``; both modalities, 384 vectors), each
  repeated with noise (norm 0.3, cosine ~0.96 to its original) up to the size; queries are 200
  new noisy copies.

For each index type and search parameter: build time (``build_index``, the product code, 2
threads), file size, the resident memory the index takes when a fresh process reads the file
(RSS delta), p50/p95 latency of single queries at top 10 with 1 FAISS thread and with the
default threads, and recall@10 against exact search (ties counted as hits, as in
``vectors.recall_at_k``). Latency and memory are measured in a child process per index file.
HNSW is not built for ``real`` at 1M unless ``--real-hnsw-1m`` (its build alone takes minutes
here; the synthetic 1M row shows it).

``--incremental`` builds a manifest of that many synthetic segments (files of 10) through
``IndexStore``, syncs it (a full build), then adds 1,000 segments, removes 1,000, and syncs after
each, timing every phase (``IndexStore.last_sync``).

Writes its section of docs/benchmarks.md (unless ``--no-doc``) and bench/out/query_scale.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import OUT, write_section

DIM = 128
K = 10
SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000}
REAL_INDEX = Path("/tmp/qs-real")
TOPICS, CLUSTERS = 64, 4096
REAL_NOISE = 0.3


# ----------------------------------------------------------------------------------- data
def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _noisy(base: np.ndarray, scale: np.ndarray | float, rng: np.random.Generator) -> np.ndarray:
    """``base`` rows plus Gaussian noise of norm ~``scale``, normalised (in blocks, float32)."""
    out = np.empty_like(base)
    scale = np.broadcast_to(np.asarray(scale, np.float32), (len(base),))
    for i in range(0, len(base), 1 << 16):
        sl = slice(i, i + (1 << 16))
        noise = rng.standard_normal(base[sl].shape, dtype=np.float32)
        out[sl] = base[sl] + noise * (scale[sl, None] / np.sqrt(DIM))
    return _unit(out)


@dataclass(frozen=True)
class Mixture:
    centers: np.ndarray
    weights: np.ndarray
    spread: np.ndarray

    @classmethod
    def make(cls, seed: int = 0) -> Mixture:
        rng = np.random.default_rng(seed)
        topics = _unit(rng.standard_normal((TOPICS, DIM), dtype=np.float32))
        offsets = _unit(rng.standard_normal((CLUSTERS, DIM), dtype=np.float32))
        centers = _unit(topics[rng.integers(TOPICS, size=CLUSTERS)] + offsets)
        weights = rng.lognormal(0.0, 1.0, CLUSTERS)
        spread = rng.uniform(0.35, 0.8, CLUSTERS).astype(np.float32)
        return cls(centers, weights / weights.sum(), spread)

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        label = rng.choice(CLUSTERS, n, p=self.weights)
        return _noisy(self.centers[label], self.spread[label], rng)


def real_base(index: Path) -> np.ndarray:
    from avsearch.store.index import IndexStore

    if not (index / "manifest.sqlite").exists():
        sys.exit(
            f"{index} holds no index: run `avsearch embed ../shared/data/natural --index {index}`"
            " once (or pass --data synthetic)"
        )
    with IndexStore.open_existing(index) as store:
        parts = [store.manifest.vectors(m, store.dim)[1] for m in ("audio", "visual")]
    base = np.concatenate(parts)
    if base.shape[1] != DIM:
        sys.exit(f"{index} holds {base.shape[1]}-d vectors, not {DIM}")
    return base


def dataset(kind: str, n: int, mix: Mixture, base: np.ndarray | None) -> tuple[Any, Any]:
    """(vectors, queries) of a dataset, seeded."""
    if kind == "synthetic":
        return mix.sample(n, seed=1), mix.sample(200, seed=2)
    assert base is not None
    rng = np.random.default_rng(3)
    tiled = base[np.arange(n) % len(base)]
    queries = base[rng.integers(len(base), size=200)]
    return _noisy(tiled, REAL_NOISE, rng), _noisy(queries, REAL_NOISE, rng)


# ----------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class Config:
    label: str
    kind: str
    factory: str
    param: str  # "" | "efSearch" | "nprobe"
    values: tuple[int, ...]


def configs(n: int) -> list[Config]:
    from avsearch.store.vectors import ivf_nlist

    nlist = ivf_nlist(n)
    probes = (8, 16, 32)
    return [
        Config("Flat", "flat", "Flat", "", (0,)),
        Config("HNSW32", "hnsw", "HNSW32", "efSearch", (32, 64, 128)),
        Config(f"IVF{nlist},Flat", "ivf", f"IVF{nlist},Flat", "nprobe", probes),
        Config(f"IVF{nlist},SQ8", "ivf", f"IVF{nlist},SQ8", "nprobe", probes),
        Config(f"IVF{nlist},PQ32x4fs", "ivf", f"IVF{nlist},PQ32x4fs", "nprobe", (32,)),
    ]


# ----------------------------------------------------------------------------------- measure
def _rss() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure_child(args: argparse.Namespace) -> None:
    """In a fresh process: read the index, then time single queries per parameter value."""
    import faiss

    from avsearch.store import vectors as vx

    queries = np.load(args.queries)
    before = _rss()
    index = vx.load_index(Path(args.measure), writable=True)
    rss = _rss() - before
    default_threads = faiss.omp_get_max_threads()
    out: dict[str, Any] = {"rss": rss, "threads": default_threads, "runs": []}
    for value in [int(v) for v in args.values.split(",")]:
        if args.param == "efSearch":
            faiss.downcast_index(index.index).hnsw.efSearch = value
        elif args.param == "nprobe":
            faiss.extract_index_ivf(index).nprobe = value
        run: dict[str, Any] = {"value": value}
        for threads in (1, default_threads):
            faiss.omp_set_num_threads(threads)
            vx.SINGLE_QUERY_THREADS = None  # measure FAISS as set here
            for q in queries[:10]:  # warm-up
                vx.search(index, q[None], K)
            times = []
            found = []
            for q in queries:
                t0 = time.perf_counter()
                _, ids = vx.search(index, q[None], K)
                times.append(time.perf_counter() - t0)
                found.append(ids[0])
            run[f"p50_{threads}"] = float(np.percentile(times, 50)) * 1e3
            run[f"p95_{threads}"] = float(np.percentile(times, 95)) * 1e3
            run["found"] = np.stack(found).tolist()
        out["runs"].append(run)
    print(json.dumps(out))


@dataclass
class Row:
    data: str
    n: int
    label: str
    param: str
    build_s: float
    bytes: int
    rss: int
    p50_1: float
    p95_1: float
    p50_d: float
    p95_d: float
    recall: float
    threads: int
    notes: list[str] = field(default_factory=list)


def bench_config(
    cfg: Config,
    data: str,
    x: np.ndarray,
    q: np.ndarray,
    kth: np.ndarray,
    work: Path,
) -> list[Row]:
    from avsearch.store import vectors as vx

    ids = np.arange(len(x), dtype=np.int64)
    spec = vx.IndexSpec(cfg.kind, cfg.factory, nprobe=cfg.values[0], ef_search=cfg.values[0])
    t0 = time.perf_counter()
    index = vx.build_index(ids, x, spec)
    build_s = time.perf_counter() - t0
    path = work / "index.faiss"
    size, _ = vx.save_index(index, path)
    del index
    gc.collect()
    qfile = work / "queries.npy"
    np.save(qfile, q)
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--measure",
            str(path),
            "--queries",
            str(qfile),
            "--param",
            cfg.param,
            "--values",
            ",".join(map(str, cfg.values)),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    path.unlink()
    result = json.loads(child.stdout.strip().splitlines()[-1])
    rows = []
    for run in result["runs"]:
        found = np.asarray(run["found"], np.int64)
        recall = vx.recall_at_k(found, q, ids, x, kth)
        param = f"{cfg.param} {run['value']}" if cfg.param else "–"
        d = result["threads"]
        rows.append(
            Row(
                data,
                len(x),
                cfg.label,
                param,
                build_s,
                size,
                result["rss"],
                run["p50_1"],
                run["p95_1"],
                run[f"p50_{d}"],
                run[f"p95_{d}"],
                recall,
                d,
            )
        )
        print(
            f"{data:9s} {len(x):>8} {cfg.label:16s} {param:12s} build {build_s:7.1f}s "
            f"{size / 2**20:7.1f} MiB rss {result['rss'] / 2**20:7.1f} MiB "
            f"p50 {run['p50_1']:7.3f}/{run[f'p50_{d}']:7.3f} ms "
            f"p95 {run['p95_1']:7.3f}/{run[f'p95_{d}']:7.3f} ms recall {recall:.3f}",
            flush=True,
        )
    return rows


# ----------------------------------------------------------------------------------- incremental
def bench_incremental(n: int, mix: Mixture) -> dict[str, Any]:
    """A manifest of ``n`` synthetic segments through IndexStore: full sync, +1,000, -1,000."""
    import faiss

    from avsearch.store import vectors as vx
    from avsearch.store.index import IndexStore, ModelStamp
    from avsearch.store.integrity import check_index
    from avsearch.store.manifest import NewSegment

    per_file = 10
    work = Path(tempfile.mkdtemp(prefix="avsearch-qs-inc-"))
    out: dict[str, Any] = {"n": n}
    try:
        root = work / "index"
        x = mix.sample(n + 1000, seed=5)
        rng = np.random.default_rng(6)
        with IndexStore.create_or_open(root, ModelStamp("bench", "0" * 64, DIM)) as store:

            def put(first: int, count: int) -> None:
                with store.manifest.transaction():
                    for f in range(first, first + count):
                        segs = [
                            NewSegment("audio", j, 2.0 * j, 2.0 * j + 2, x[f * per_file + j])
                            for j in range(per_file)
                        ]
                        store.manifest.put_file(
                            path=f"/bench/{f}.wav",
                            kind="audio",
                            size=1,
                            mtime_ns=1,
                            digest=f"sha256:{f}",
                            segments=segs,
                        )

            t0 = time.perf_counter()
            put(0, n // per_file)
            out["manifest_s"] = time.perf_counter() - t0
            steps: list[tuple[str, Any]] = [
                ("full build", None),
                ("add 1,000", lambda: put(n // per_file, 1000 // per_file)),
                (
                    "remove 1,000",
                    lambda: store.manifest.remove_files(
                        int(i) + 1
                        for i in rng.choice(n // per_file, 1000 // per_file, replace=False)
                    ),
                ),
            ]
            for name, change in steps:
                if change is not None:
                    change()
                t0 = time.perf_counter()
                store.sync_vectors()
                total = time.perf_counter() - t0
                stats = store.last_sync["audio"]
                out[name] = {"total_s": total, **stats.to_json()}
                print(f"incremental {n}: {name}: {total:.2f} s {stats.to_json()}", flush=True)
            index = store.index_for("audio")
            t0 = time.perf_counter()
            writer = faiss.PyCallbackIOWriter(len, 1 << 22)  # serialise, write nowhere
            faiss.write_index(index, writer)
            del writer
            out["serialise_s"] = time.perf_counter() - t0
            out["info"] = vx.read_sidecar(root / "vectors.json")["audio"].__dict__
        t0 = time.perf_counter()
        report = check_index(root)
        out["check_s"] = time.perf_counter() - t0
        out["check_ok"] = report.ok
        print(f"index check after the updates: ok={report.ok} ({out['check_s']:.1f} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------------- report
def _mib(b: int) -> str:
    return f"{b / 2**20:,.1f}"


def table(rows: list[Row]) -> str:
    lines = [
        "| data | n | index | search param | build s | file MiB | RSS MiB | "
        "p50 ms (1 thr) | p95 ms (1 thr) | p50 ms (default) | p95 ms (default) | recall@10 |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.data} | {r.n:,} | {r.label} | {r.param} | {r.build_s:.1f} | {_mib(r.bytes)} | "
            f"{_mib(r.rss)} | {r.p50_1:.2f} | {r.p95_1:.2f} | {r.p50_d:.2f} | {r.p95_d:.2f} | "
            f"{r.recall:.3f} |"
        )
    return "\n".join(lines)


def incremental_md(inc: dict[str, Any]) -> str:
    full = inc["full build"]
    lines = [
        f"Through `IndexStore.sync_vectors` on a manifest of {inc['n']:,} synthetic segments "
        f"(audio, files of 10; writing the manifest took {inc['manifest_s']:.0f} s), index type "
        f"as chosen: `{full['factory']}`.",
        "",
        "| sync after | how | total s | read manifest s | update s | recall s | "
        "write file s | file MiB | × full build |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("full build", "add 1,000", "remove 1,000"):
        s = inc[name]
        lines.append(
            f"| {name} | {s['mode']} | {s['total_s']:.2f} | {s['read_s']:.2f} | "
            f"{s['update_s']:.2f} | {s['recall_s']:.2f} | {s['save_s']:.2f} | {_mib(s['bytes'])} |"
            f" {s['total_s'] / full['total_s']:.3f} |"
        )
    add, rem = inc["add 1,000"], inc["remove 1,000"]
    info = inc["info"]
    lines.append("")
    lines.append(
        f"Read = the manifest rows needed (full: all {full['count']:,} vectors; in place: the "
        "deletion log, the new rows, and the FAISS file itself, read into memory to be "
        "changed); update = build (k-means + add) or `add_with_ids`/`remove_ids`; recall = "
        f"build-time recall@10 tuning ({info['recall_queries']} queries, recall "
        f"{info['recall']:.3f} at nprobe {info['nprobe']}); write = serialise the whole index "
        "through sha256 into a temp file, fsync, rename. Serialising alone (to nowhere) takes "
        f"{inc['serialise_s']:.2f} s of the {add['save_s']:.2f} s write after the addition."
    )
    lines.append("")
    lines.append(
        f"`avsearch index check` afterwards (every id against the manifest, sha256): "
        f"{'ok' if inc['check_ok'] else 'FAILED'} in {inc['check_s']:.1f} s."
    )
    lines.append("")
    share_add = add["save_s"] / add["total_s"]
    share_rem = rem["save_s"] / rem["total_s"]
    biggest = max(("read", "update", "save"), key=lambda k: add[f"{k}_s"])
    lines.append(
        f"An update in place takes {add['total_s'] / full['total_s']:.0%} (add) and "
        f"{rem['total_s'] / full['total_s']:.0%} (remove) of the full build's time. Writing the "
        f"whole file atomically is {share_add:.0%} and {share_rem:.0%} of those updates "
        f"({_mib(add['bytes'])} MiB each time); the largest phase of the addition is "
        f"{'the write' if biggest == 'save' else biggest}. "
        + (
            "The write dominates an update in place: at this size, avoiding it would need an "
            "index kept in several files (e.g. a base file plus a small delta file merged now "
            "and then), which FAISS does not do for us."
            if share_add >= 0.5
            else "The write does not dominate it."
        )
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10k,100k,1m", help="of 10k, 100k, 1m")
    ap.add_argument("--data", default="synthetic,real", help="synthetic and/or real")
    ap.add_argument("--real-index", type=Path, default=REAL_INDEX)
    ap.add_argument("--real-hnsw-1m", action="store_true", help="also build HNSW on real at 1M")
    ap.add_argument("--incremental", default="1m", help="size for the update timings, or none")
    ap.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--queries", help=argparse.SUPPRESS)
    ap.add_argument("--param", default="", help=argparse.SUPPRESS)
    ap.add_argument("--values", default="0", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        measure_child(args)
        return
    import faiss

    from avsearch.store import vectors as vx

    started = time.perf_counter()
    sizes = [SIZES[s.strip().lower()] for s in args.sizes.split(",") if s.strip()]
    kinds = [d.strip() for d in args.data.split(",") if d.strip()]
    mix = Mixture.make()
    base = real_base(args.real_index) if "real" in kinds else None
    rows: list[Row] = []
    skipped: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="avsearch-qs-"))
    try:
        for n in sizes:
            for data in kinds:
                x, q = dataset(data, n, mix, base)
                kth = vx.exact_knn(x, q, K)[0][:, -1]
                for cfg in configs(n):
                    big = data == "real" and n >= 1_000_000
                    if big and cfg.kind == "hnsw" and not args.real_hnsw_1m:
                        skipped.append(f"HNSW32 on real at {n:,} (its build takes minutes)")
                        continue
                    rows.extend(bench_config(cfg, data, x, q, kth, work))
                del x
                gc.collect()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    inc = None
    if args.incremental.lower() != "none":
        inc = bench_incremental(SIZES[args.incremental.lower()], mix)
    elapsed = time.perf_counter() - started
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "query_scale.json").write_text(
        json.dumps(
            {"rows": [r.__dict__ for r in rows], "incremental": inc, "skipped": skipped},
            indent=1,
        )
    )
    command = "python bench/query_scale.py" + (
        "" if args.sizes == "10k,100k,1m" else f" --sizes {args.sizes}"
    )
    if args.data != "synthetic,real":
        command += f" --data {args.data}"
    base_n = 0 if base is None else len(base)
    md = f"""## Vector index at scale (`python bench/query_scale.py`)

`{command}` on {dt.date.today().isoformat()}; {platform.machine()}, {os.cpu_count()} cores,
faiss {faiss.__version__}, Python {platform.python_version()}; whole run {elapsed / 60:.1f} min.

Vectors: L2-normalised, dim 128 (the default model's). `synthetic`: a seeded Gaussian mixture,
{CLUSTERS:,} clusters around {TOPICS} topics (a centre is a topic plus an offset of the same
norm), lognormal cluster weights, each cluster with its own spread (noise of norm 0.35-0.8 on
its unit centre); queries are 200 new draws. `real`: the {base_n} vectors (audio and visual) of
`avsearch embed ../shared/data/natural --index {args.real_index}`, repeated to the size, each copy
with noise of norm {REAL_NOISE} (cosine ~0.96 to its original); queries are 200 new noisy copies.

Build: `vectors.build_index` (IVF: k-means on 64 points per list, seeded). Memory: RSS growth
of a fresh process reading the file. Latency: 200 single queries (top 10) after 10 warm-up ones,
1 FAISS thread, then the default threads ({rows[0].threads if rows else "?"}). recall@10: against
exact search, ties counted as hits. Other jobs shared the machine, so compare within the table;
the p95 column catches their interference (and the default-threads columns much more: one
query is never split across threads, yet each search waits at an OpenMP barrier for all of
them, which is why `vectors.search` runs a single query on one thread).

{table(rows)}
"""
    if skipped:
        md += "\nSkipped: " + "; ".join(skipped) + ".\n"
    chosen = ", ".join(
        f"{n:,}: `{vx.choose_index_spec(n, DIM).factory}`"
        + (f" (nprobe {vx.choose_index_spec(n, DIM).nprobe})" if n >= vx.FLAT_MAX else "")
        for n in sorted({*sizes, 2_000_000, 10_000_000})
    )
    md += (
        f"\n`choose_index_spec` (set from this table, see its docstring and "
        f"docs/index-format.md) picks: {chosen}; nprobe is then raised at build while recall@10 "
        f"on 200 of the indexed vectors is under {vx.RECALL_TARGET}.\n"
    )
    if inc is not None:
        md += "\n### Incremental updates\n\n" + incremental_md(inc) + "\n"
    print(md)
    if not args.no_doc:
        print(f"wrote {write_section('query_scale', md)}")


if __name__ == "__main__":
    main()
