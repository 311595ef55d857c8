"""embed: discover → plan (mark and sweep) → read → map → write, with the stages of
:mod:`avsearch.stages` (reader: plan and decode threads; mapper: towers and heads in batches;
writers: the manifest and the feature cache; runner: commits every few seconds, so a killed run
loses at most the files in flight and a re-run finishes the job). The FAISS files are brought
up to the manifest at the end.

Nothing heavy happens before the plan says there is work: the model is read lazily (its config
and fingerprint, with the model files' hashes cached in the index directory by size and mtime),
so an unchanged folder loads no backbone, no head, no torch and no decoder.

The index records its window (samples, rate, shortest tail kept): a run asking for another one
is refused (``WindowMismatchError``), one that names none uses the index's.

The raw backbone features of every encoded file are kept in the feature cache
(``features.sqlite``, shared with ``avsearch train``; ``EmbedConfig.write_features``), keyed by
content hash and backbones: a file whose features are there is not decoded at all, only put
through the heads, so re-embedding with a retrained model costs the heads alone.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from avsearch.config import EmbedConfig, exclude_patterns
from avsearch.encoders.model import AVModel
from avsearch.encoders.model_dir import HashCache
from avsearch.errors import UsageError
from avsearch.media.discover import discover
from avsearch.media.segment import WindowSpec
from avsearch.relocate import follow_move, record_base
from avsearch.stages import mapper as mp
from avsearch.stages.reader import Failure, Job, Plan, Reader, file_pieces, plan
from avsearch.stages.runner import ProgressFn, Source, Stage, run
from avsearch.stages.writers import EmbedSummary, FeatureWriter, IndexWriter, Writer
from avsearch.store.features import FEATURES_DB
from avsearch.store.index import MANIFEST, IndexStore, ModelStamp

if TYPE_CHECKING:
    from avsearch.engines import Engine

__all__ = ["EmbedSummary", "Failure", "Job", "Plan", "plan"]  # (the stages', as before)

MODEL_HASHES = "model-hashes.json"  # the model files' sha256 (encoders.model_dir.HashCache)


def run_embed(
    paths: list[Path],
    index_dir: Path,
    cfg: EmbedConfig,
    *,
    progress: ProgressFn | None = None,
    model: AVModel | None = None,
    engine: Engine | None = None,
) -> EmbedSummary:
    """``engine``: where to encode (``avsearch.engines``; None: here, the local stages);
    ``model``: already loaded (its own precision holds, not ``cfg.precision``)."""
    t0 = time.perf_counter()
    report = progress or (lambda event, data: None)
    roots = [p.expanduser().resolve() for p in paths]
    for root in roots:
        if not root.exists():
            raise UsageError(f"{root} does not exist", hint="check the path you gave to embed")
    hashes = HashCache(index_dir / MODEL_HASHES) if model is None else None
    # lazy: config and fingerprint only; heads and backbones load when something is encoded
    if model is None:
        model = AVModel.load(cfg.model, lazy=True, hashes=hashes, precision=cfg.precision)
        if cfg.rebuild or not (index_dir / MANIFEST).is_file():
            getattr(model, "heads", None)  # a new index is stamped with it: fail now if broken
    ref = str(model.directory) if Path(cfg.model).expanduser().exists() else cfg.model
    spaces = model.spaces_stamp() if hasattr(model, "spaces_stamp") else {}  # native, bridge
    stamp = ModelStamp(model.name, model.fingerprint, model.dim, ref, spaces)
    store = IndexStore.create_or_open(index_dir, stamp, rebuild=cfg.rebuild)
    if hashes is not None:
        hashes.save()
    summary = EmbedSummary(index=str(index_dir), model=model.name)
    try:
        follow_move(store, writer=True)  # an index moved with its folder: paths follow it
        record_base(store)
        spec = index_window(store, model, cfg)
        files = list(
            discover(
                roots,
                exclude=[index_dir],
                follow_symlinks=cfg.follow_symlinks,
                ignore=exclude_patterns(cfg.exclude),  # (rows of such files are swept out)
            )
        )
        report("discovered", {"files": len(files)})
        # files whose segments lack a vector space the model has are re-encoded (from the cache)
        lacking = store.manifest.files_lacking(store.slots())
        the_plan = plan(store.manifest, files, roots, lacking)
        summary.failures.extend(the_plan.failures)  # unreadable: dangling links, FIFOs, gone
        summary.failed += len(the_plan.failures)
        summary.unchanged = the_plan.unchanged
        for file_id, f in the_plan.moved:
            store.manifest.move_file(file_id, str(f.path), f.size, f.mtime_ns)
        summary.moved = len(the_plan.moved)
        summary.removed = store.manifest.remove_files(the_plan.removed)
        report(
            "plan",
            {
                "jobs": len(the_plan.jobs),
                "unchanged": summary.unchanged,
                "moved": summary.moved,
                "removed": summary.removed,
            },
        )
        if the_plan.jobs:
            _encode(the_plan.jobs, store, model, spec, cfg, summary, report, engine)
        report("finalising", {})
        store.sync_vectors()
        summary.total_files = store.manifest.file_count()
        summary.total_segments = store.manifest.segment_count()
    finally:
        store.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def index_window(store: IndexStore, model: AVModel, cfg: EmbedConfig) -> WindowSpec:
    """The window this run cuts with: the index's (``WindowMismatchError`` when ``cfg`` asks for
    another). A new index records ``cfg``'s; one from before windows were recorded, the model's
    default (what it was built with)."""
    if store.window() is None:
        asked = cfg.window if store.manifest.file_count() == 0 else None
        store.record_window(model.window_spec(asked, cfg.min_tail))
    return store.check_window(cfg.window, cfg.min_tail)


def _encode(
    jobs: list[Job],
    store: IndexStore,
    model: AVModel,
    spec: WindowSpec,
    cfg: EmbedConfig,
    summary: EmbedSummary,
    report: ProgressFn,
    engine: Engine | None = None,
) -> None:
    writers: list[Writer] = [IndexWriter(store.manifest, jobs, summary)]
    cache = cached = None
    hits: set[int] = set()
    if all(hasattr(model, a) for a in ("feature_key", "features", "project")):  # (not a stand-in)
        path = (
            Path(cfg.feature_cache).expanduser() if cfg.feature_cache else store.root / FEATURES_DB
        )
        cache = mp.open_feature_cache(path, create=cfg.write_features)
    if cache is not None:
        key = model.feature_key(spec)
        cached = partial(mp.cached_windows, cache, key)
        held = mp.complete_in_cache(cache, [j.digest for j in jobs], key)
        hits = {i for i, j in enumerate(jobs) if j.digest in held}
        if cfg.write_features:  # before the manifest: a file it holds is never missing here
            writers.insert(0, FeatureWriter(cache, key, jobs))
    keep = len(writers) > 1  # the raw features too
    reader: Source
    mapper: Stage
    if engine is None:
        # (file_pieces is looked up now, not imported by the reader: tests and benchmarks wrap it)
        reader = Reader(
            jobs, spec, model.image_size, cfg.workers, decode=file_pieces, cached=cached, hits=hits
        )
        mapper = mp.Mapper(model, cfg.batch_size, features=keep)
    else:  # the same stages elsewhere (Ray tasks); this process still writes
        reader, mapper = engine.stages(
            jobs, model, spec, cfg, features=keep, cached=cached, hits=hits
        )
    try:
        failed = run(jobs, reader, mapper, writers, report=report, commit_every=cfg.commit_every)
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        if cache is not None:
            cache.close()
    for j, reason in failed.items():
        summary.failures.append(Failure(str(jobs[j].file.path), reason))
    summary.failed += len(failed)
