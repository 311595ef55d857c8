"""Vector spaces beyond the heads (issue #19, items 3 and 6): native spaces for same-modality
search, the zero-shot bridge fused with the heads for cross-modal search.

    python bench/spaces.py [--folds 5] [--seed 0] [--epochs N] [--quick] [--out bench/out/spaces]
                           [--no-docs]
    python bench/spaces.py --render bench/out/spaces/spaces.json   # docs section only

Data and protocol as ``bench/natural.py`` (leave concepts out on ../shared/data/natural, its
54 concepts with sounds and pictures in seeded folds; the farm files enter through
natural/index.csv): per fold, ``avsearch train --method infonce --labeled-ratio 1
--audio-backbone aisfx+soundnet`` on AV-Digits train + every concept outside the fold (train
fits the model's native spaces on those windows too; its audio tower includes soundnet, so the
model has a bridge space), then ``avsearch embed`` of the held-out concepts and:

- **cross-modal**: ``avsearch eval --json`` (per segment; heads + bridge by the model's fusion
  rule) and ``avsearch eval --json --no-bridge``; and per file, as ``avsearch query`` returns
  (a sound file queries with the normalised mean of its windows' vectors, hits are files by
  their best segment), fused and heads alone;
- **same modality** per file as ``query --target`` returns: every sound file against the other
  sound files (every picture against the other pictures) in the heads' space, the native space,
  and both fused by the gate (``heads+native``, what ``query`` does by default: the native
  space weighs in when the query's best heads cosine with the other modality is low).

Per-file rankings are computed from the index's stored vectors (identical to what ``query``
computes from the decoded file: the same windows give the same vectors; the script checks
``run_query`` against them on a few queries per fold). Chance per file: the gallery in random
order (``--chance-seeds`` permutations). Per segment: ``eval``'s own numbers and the same labels
on random Gaussian vectors (bench/retrieval.py ``chance_level``).

Two more indexes: the shipped ``default`` model (aisfx: no bridge; its native spaces fitted on
its training data, which includes natural/, as its heads were trained on it) over all of
natural/; and AV-Digits test (FSDD takes 0-4 vs 1,000 MNIST images, where heads are strong and
ImageNet classes have nothing to say) with the fold-0 soundnet model (fused vs heads) and the
shipped model. Last, the choices behind the native space (which parts, centring, dimension,
fitted on which collection) measured on the feature cache.

Writes ``<out>/spaces.json`` and the ``spaces`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import sys
import textwrap
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import OUT, REPO, machine_line, shared_data, write_section
from avdigits import build_avdigits
from natural import (
    Bench,
    avsearch,
    folder_rows,
    load_natural,
    make_folds,
    media_paths,
    paired_concepts,
    write_labels,
)
from retrieval import chance_level

from avsearch.config import QueryConfig
from avsearch.encoders import bridge as br
from avsearch.evaluate import average_precision
from avsearch.evaluate_index import LabelledEmbeddings
from avsearch.spaces import fuse
from avsearch.store.index import IndexStore

AUDIO_BACKBONE = "aisfx+soundnet"
SAME_SPACES = ("heads", "native", "heads+native")
MODS = ("audio", "visual")
SECTION = "spaces"
CHECKED_QUERIES = 3  # per fold: run_query against the stored-vector ranking
SAME_HEAD = (
    "| query → gallery | space | held out MAP | chance | × chance | zero-shot, natural/ "
    "| shipped, natural/ | AV-Digits test, fold-0 model | AV-Digits test, shipped |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|"
)
CROSS_HEAD = (
    "| ranking | per file a→v | per file v→a | per file × chance | per segment a→v "
    "| per segment v→a | per segment × chance | AV-Digits a→v | AV-Digits v→a | gated |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)
FOLD_HEAD = (
    "| fold | concepts | files s / p | s→s heads | s→s native | s→s gated | p→p heads "
    "| p→p native | p→p gated | cross heads | cross fused | cross chance |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


# ------------------------------------------------------------------------------ per file
@dataclass
class Gallery:
    """One modality of an index: every labelled segment's vectors per space, its file and the
    file's label."""

    spaces: dict[str, np.ndarray]  # space -> [n, d]
    files: np.ndarray  # [n] file id
    labels: dict[int, str]  # file id -> label
    paths: dict[int, str]


def read_gallery(index: Path, modality: str, label_of: dict[str, str]) -> Gallery:
    with IndexStore.open_existing(index) as store:
        slots = store.slots()
        ids, _ = store.manifest.vectors(modality, store.dim)
        rows = store.manifest.segments_by_ids(ids.tolist())
        keep = np.array([os.path.realpath(rows[i].path) in label_of for i in ids.tolist()])
        spaces = {}
        for (space, m), dim in slots.items():
            if m != modality:
                continue
            s_ids, vecs = store.manifest.vectors(modality, dim, space=space)
            if np.array_equal(s_ids, ids):
                spaces[space] = vecs[keep]
        files = np.array([rows[i].file_id for i in ids.tolist()], np.int64)[keep]
        paths = {rows[i].file_id: rows[i].path for i in ids.tolist()}
    labels = {f: label_of[os.path.realpath(paths[f])] for f in set(files.tolist())}
    return Gallery(spaces, files, labels, {f: paths[f] for f in labels})


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def file_queries(g: Gallery, space: str) -> tuple[np.ndarray, np.ndarray]:
    """(file ids, query vectors): each file's normalised mean of its windows' vectors."""
    fids = np.array(sorted(g.labels), np.int64)
    x = g.spaces[space].astype(np.float64)
    return fids, _unit(np.stack([_unit(x[g.files == f].mean(axis=0)) for f in fids]))


def file_scores(g: Gallery, seg_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[Q, n]`` segment scores -> (file ids, ``[Q, F]`` scores: each file's best segment)."""
    fids = np.array(sorted(g.labels), np.int64)
    return fids, np.stack([seg_scores[:, g.files == f].max(axis=1) for f in fids], axis=1)


def aps(scores: np.ndarray, q_labels: Sequence[str], g_labels: Sequence[str],
        exclude: np.ndarray | None = None) -> list[float]:  # fmt: skip
    """AP of each query row over its gallery ranking (``exclude[i]``: a gallery column left out
    for query i, its own file); queries without a relevant item are skipped."""
    gl = np.asarray(g_labels)
    out = []
    for i, row in enumerate(scores):
        order = np.argsort(-row, kind="stable")
        if exclude is not None:
            order = order[order != exclude[i]]
        rel = gl[order] == q_labels[i]
        if rel.any():
            out.append(average_precision(rel))
    return out


def chance_aps(q_labels: Sequence[str], g_labels: Sequence[str], seeds: int,
               exclude: np.ndarray | None = None) -> float:  # fmt: skip
    vals = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        vals.append(np.mean(aps(rng.random((len(q_labels), len(g_labels))), q_labels, g_labels,
                                exclude)))  # fmt: skip
    return float(np.mean(vals))


def same_modality(g: Gallery, space: str, seeds: int, other: Gallery | None = None,
                  rule: br.FusionRule | None = None) -> dict[str, Any]:  # fmt: skip
    """Every file of the gallery against the others, in ``space`` (per file, as query):
    ``heads``, ``native``, or ``heads+native`` (gated by each query's best heads cosine with
    the ``other`` modality, as ``query`` does)."""
    if space == "heads+native":
        assert other is not None and rule is not None
        fids, qh = file_queries(g, "heads")
        _, qn = file_queries(g, "native")
        sh = qh @ _unit(g.spaces["heads"].astype(np.float64)).T
        sn = qn @ _unit(g.spaces["native"].astype(np.float64)).T
        tops = (qh @ _unit(other.spaces["heads"].astype(np.float64)).T).max(axis=1)
        w = rule.gate(tops)
        seg = np.stack([fuse(sh[i], sn[i], (sh[i].mean(), sh[i].std()),
                             (sn[i].mean(), sn[i].std()), float(w[i]))
                        for i in range(len(fids))])  # fmt: skip
        _, s = file_scores(g, seg)
    else:
        fids, q = file_queries(g, space)
        _, s = file_scores(g, q @ _unit(g.spaces[space].astype(np.float64)).T)
    labels = [g.labels[f] for f in fids]
    own = np.arange(len(fids))
    values = aps(s, labels, labels, own)
    return {
        "map": float(np.mean(values)) if values else None,
        "queries": len(values),
        "chance": chance_aps(labels, labels, seeds, own) if values else None,
    }


def cross_modal(audio: Gallery, visual: Gallery, fused: bool, rule: br.FusionRule,
                seeds: int, space: str = "heads") -> dict[str, Any]:  # fmt: skip
    """Sound files -> pictures and pictures -> sound files, per file as query returns; in
    ``space`` (the heads, or the bridge alone), or the heads fused with the bridge (z over the
    gallery per query, the gated weight)."""
    out: dict[str, Any] = {}
    for name, q_g, g_g in (("a2v", audio, visual), ("v2a", visual, audio)):
        fids, qh = file_queries(q_g, space)
        sh = qh @ _unit(g_g.spaces[space].astype(np.float64)).T
        weights = np.zeros(len(fids))
        if fused:
            _, qb = file_queries(q_g, "bridge")
            sb = qb @ _unit(g_g.spaces["bridge"].astype(np.float64)).T
            rows = []
            for i in range(len(fids)):
                w = float(rule.weight_for(sh[i].max()))
                weights[i] = w
                stats_h = (sh[i].mean(), sh[i].std())
                stats_b = (sb[i].mean(), sb[i].std())
                rows.append(fuse(sh[i], sb[i], stats_h, stats_b, w))
            sh = np.stack(rows)
        g_fids, s = file_scores(g_g, sh)
        q_labels = [q_g.labels[f] for f in fids]
        g_labels = [g_g.labels[f] for f in g_fids]
        values = aps(s, q_labels, g_labels)
        out[name] = float(np.mean(values)) if values else None
        out[f"chance_{name}"] = chance_aps(q_labels, g_labels, seeds) if values else None
        out[f"weight_{name}"] = float(weights.mean())
        out[f"gated_{name}"] = float((weights > 0).mean())
    out["map"] = _mean(out["a2v"], out["v2a"])
    out["chance"] = _mean(out["chance_a2v"], out["chance_v2a"])
    return out


def _mean(*xs: float | None) -> float | None:
    vals = [x for x in xs if x is not None]
    return float(np.mean(vals)) if vals else None


def stored_ranking(q_g: Gallery, g_g: Gallery, space: str, file_id: int,
                   rule: br.FusionRule, other: Gallery | None = None) -> list[float]:  # fmt: skip
    """The scores of the files ``query`` would list for the indexed file ``file_id`` of ``q_g``
    searching ``g_g``, best first, from the stored vectors (``space``: native, heads or
    heads+bridge), distinct values only (``query`` lists identical files once)."""
    fused = space.startswith("heads+")
    fids, qh = file_queries(q_g, "heads" if fused else space)
    row = int(np.flatnonzero(fids == file_id)[0])
    sh = qh[row] @ _unit(g_g.spaces["heads" if fused else space]).T
    if fused:
        part = space.removeprefix("heads+")
        _, qo = file_queries(q_g, part)
        so = qo[row] @ _unit(g_g.spaces[part].astype(np.float64)).T
        if part == "native":  # gated by the best heads cosine with the other modality
            assert other is not None
            w = float(rule.gate((qh[row] @ _unit(other.spaces["heads"]).T).max()))
        else:
            w = float(rule.weight_for(sh.max()))
        sh = fuse(sh, so, (sh.mean(), sh.std()), (so.mean(), so.std()), w)
    _, s = file_scores(g_g, sh[None])
    return sorted({round(float(x), 4) for x in s[0]}, reverse=True)


def check_against_query(index: Path, q_g: Gallery, g_g: Gallery, space: str, target: str,
                        n: int, rule: br.FusionRule,
                        other: Gallery | None = None) -> int:  # fmt: skip
    """``run_query`` on ``n`` indexed files of ``q_g`` (decoded again) answers in ``space`` with
    the scores the stored-vector ranking gives (its first three); RuntimeError otherwise."""
    from avsearch.query import run_query

    checked = 0
    for f in sorted(q_g.labels)[:n]:
        path = Path(q_g.paths[f])
        cfg = QueryConfig(top=3, target=target, space="native" if space == "native" else None,
                          no_bridge=space == "heads")  # fmt: skip
        result = run_query(path, index, cfg)
        got = [round(h.score, 4) for h in result.results]
        want = stored_ranking(q_g, g_g, space, f, rule, other)[: len(got)]
        if result.space != space or not np.allclose(got, want, atol=2e-3):
            raise RuntimeError(f"{path}: query gave {result.space} {got}, stored {space} {want}")
        checked += 1
    return checked


# ------------------------------------------------------------------------------ the run
def eval_pair(bench: Bench, index: Path, labels: Path, name: str) -> dict[str, Any]:
    base = ["--index", str(index), "--config", str(bench.config), "eval", "--labels", str(labels)]
    logs = bench.out / "logs"
    fused = avsearch(base, logs / f"eval-{name}.log", bench.out)
    heads = avsearch([*base, "--no-bridge"], logs / f"eval-{name}-heads.log", bench.out)
    return {"fused": _eval_numbers(fused), "heads": _eval_numbers(heads)}


def _eval_numbers(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("a2v_map", "v2a_map", "map", "n_audio", "n_visual", "space")
    return {k: report.get(k) for k in keys}


def segment_chance(index: Path, label_of: dict[str, str], seeds: int) -> float:
    a = read_gallery(index, "audio", label_of)
    v = read_gallery(index, "visual", label_of)
    al = np.array([a.labels[f] for f in a.files.tolist()])
    vl = np.array([v.labels[f] for f in v.files.tolist()])
    dim = a.spaces["heads"].shape[1]
    report, _ = chance_level(LabelledEmbeddings(a.spaces["heads"], al, v.spaces["heads"], vl),
                             dim, seeds)  # fmt: skip
    return report.map


def score_index(index: Path, label_of: dict[str, str], seeds: int, rule: br.FusionRule,
                check: int = 0) -> dict[str, Any]:  # fmt: skip
    a = read_gallery(index, "audio", label_of)
    v = read_gallery(index, "visual", label_of)
    out: dict[str, Any] = {"files": {"audio": len(a.labels), "visual": len(v.labels)}}
    for m, g, o in (("audio", a, v), ("visual", v, a)):
        out[f"same_{m}"] = {sp: same_modality(g, sp, seeds, o, rule) for sp in SAME_SPACES
                            if "native" in g.spaces or sp == "heads"}  # fmt: skip
    out["cross_heads"] = cross_modal(a, v, False, rule, seeds)
    if "bridge" in a.spaces and "bridge" in v.spaces:
        out["cross_fused"] = cross_modal(a, v, True, rule, seeds)
        out["cross_bridge"] = cross_modal(a, v, False, rule, seeds, space="bridge")
    if check:
        n = check_against_query(index, a, a, "native", "audio", check, rule)
        n += check_against_query(index, a, a, "heads+native", "audio", check, rule, v)
        if "bridge" in a.spaces:
            n += check_against_query(index, a, v, "heads+bridge", "visual", check, rule)
        out["checked_queries"] = n
    return out


def native_choices(cache: Path, key: str, items: list[Any], av_roots: list[Path],
                   seeds: int) -> list[dict[str, Any]]:  # fmt: skip
    """Same-modality per file on natural/ from cached features, for the choices of the native
    space: which parts of aisfx+soundnet, centred or not, its dimension, fitted on natural/, on
    AV-Digits train, or both."""
    from avsearch.encoders.native import fit_native
    from avsearch.media.discover import content_hash

    conn = sqlite3.connect(cache)

    def windows(path: Path, modality: str) -> list[np.ndarray]:
        digest = content_hash(path)
        rows = conn.execute(
            "SELECT vector, dim, silent FROM features WHERE hash = ? AND backbone = ? "
            "AND modality = ? ORDER BY idx",
            (digest, key, modality),
        ).fetchall()
        return [np.frombuffer(r[0], np.float32).reshape(r[1]) for r in rows if not r[2]]

    out: list[dict[str, Any]] = []
    for modality, backbone, parts_options in (
        ("audio", AUDIO_BACKBONE, (("aisfx",), ("soundnet",), ("aisfx", "soundnet"))),
        ("visual", "efficientnet-lite0", (("efficientnet-lite0",),)),
    ):
        nat_rows, files, labels = [], [], {}
        for k, it in enumerate(i for i in items if i.modality == modality):
            ws = windows(it.path, modality)
            nat_rows += ws
            files += [k] * len(ws)
            labels[k] = it.concept
        nat = np.stack(nat_rows)
        ref = [w for root in av_roots for p in sorted(root.rglob("*")) if p.is_file()
               for w in windows(p, modality)]  # fmt: skip
        dig = np.stack(ref) if ref else nat[:0]
        for parts in parts_options:
            for fit_name, fx in (("natural/", nat), ("AV-Digits train", dig),
                                 ("both", np.concatenate([nat, dig]))):  # fmt: skip
                if len(fx) < 2:
                    continue
                for centred in (False, True):
                    for dim in (64, 128, 256):
                        space = fit_native({modality: fx}, {modality: backbone},
                                           parts={modality: parts}, dim=dim,
                                           centred=centred)  # fmt: skip
                        g = Gallery({"native": space.towers[modality].vectors(nat)},
                                    np.array(files), labels, {})  # fmt: skip
                        r = same_modality(g, "native", seeds)
                        out.append({"modality": modality, "parts": "+".join(parts),
                                    "fit": fit_name, "centred": centred, "dim": dim,
                                    "map": r["map"], "chance": r["chance"]})  # fmt: skip
    conn.close()
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    data = shared_data()
    natural = data / "natural"
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(
        out,
        "infonce",
        args.seed,
        AUDIO_BACKBONE,
        args.epochs,
        args.chance_seeds,
        audio_head_parts=args.audio_head_parts or None,
    )
    bench.prepare()
    av_out = out / "avdigits-quick" if args.quick else OUT / "avdigits"
    av = build_avdigits(data, av_out, ["train", "test"], 0, per_class=20 if args.quick else None)
    av_train = [av["train/audio"], av["train/images"]]
    av_test = [av["test/audio"], av["test/images"]]
    items = load_natural(natural)
    concepts = paired_concepts(items)
    folds = make_folds(concepts, args.folds, args.seed)
    held = [f[:2] for f in folds] if args.quick else folds
    all_concepts = sorted({it.concept for it in items})
    train_csv = write_labels(
        out / "labels-train.csv", folder_rows(av_train) + [(it.path, it.concept) for it in items]
    )
    nat_csv = write_labels(out / "labels-natural.csv", [(it.path, it.concept) for it in items])
    test_rows = folder_rows(av_test)
    test_csv = write_labels(out / "labels-avdigits-test.csv", test_rows)
    label_of = {os.path.realpath(it.path): it.concept for it in items}
    digit_of = {os.path.realpath(p): lab for p, lab in test_rows}
    rule = br.FusionRule()
    timings: dict[str, float] = {"train": 0.0, "embed_eval": 0.0}

    fold_results = []
    models = []
    for k, fold in enumerate(folds):
        t0 = time.perf_counter()
        train_concepts = [c for c in all_concepts if c not in fold]
        print(f"fold {k}: training on AV-Digits + {len(train_concepts)} concepts", flush=True)
        paths = av_train + media_paths(items, train_concepts, natural)
        model, _ = bench.train(f"fold{k}", paths, train_csv)
        models.append(model)
        timings["train"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        held_paths = media_paths(items, held[k], natural)
        index, _, _ = bench.embed_eval(f"fold{k}", str(model), held_paths, [])
        result = {
            "held_out": held[k],
            "eval": eval_pair(bench, index, nat_csv, f"fold{k}"),
            "chance_segment": segment_chance(index, label_of, args.chance_seeds),
            **score_index(index, label_of, args.chance_seeds, rule, check=CHECKED_QUERIES),
        }
        timings["embed_eval"] += time.perf_counter() - t0
        fold_results.append(result)
        print(f"  {json.dumps({x: result[x] for x in ('eval', 'same_audio')})[:300]}", flush=True)

    t0 = time.perf_counter()
    every = sorted({p for c in all_concepts for p in media_paths(items, [c], natural)})
    print("zero-shot: aisfx heads trained on AV-Digits train alone, over natural/", flush=True)
    zs_bench = Bench(out, "infonce", args.seed, "aisfx", args.epochs, args.chance_seeds)
    zs_model, _ = zs_bench.train("zero-shot-aisfx", av_train, train_csv)
    timings["train"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    zs_index, _, _ = zs_bench.embed_eval("zero-shot-natural", str(zs_model), every, [])
    zero_shot = score_index(zs_index, label_of, args.chance_seeds, rule)
    print("shipped default over natural/ and AV-Digits test", flush=True)
    shipped_index, _, _ = bench.embed_eval("shipped-natural", args.shipped, every, [])
    shipped = score_index(shipped_index, label_of, args.chance_seeds, rule)
    digits_index, _, _ = bench.embed_eval("fold0-avdigits", str(models[0]), av_test, [])
    digits = {
        "eval": eval_pair(bench, digits_index, test_csv, "fold0-avdigits"),
        **score_index(digits_index, digit_of, args.chance_seeds, rule),
    }
    shipped_digits_index, _, _ = bench.embed_eval("shipped-avdigits", args.shipped, av_test, [])
    shipped_digits = score_index(shipped_digits_index, digit_of, args.chance_seeds, rule)
    timings["embed_eval"] += time.perf_counter() - t0

    from avsearch.encoders.model import AVModel

    fold0 = AVModel.load(str(models[0]), lazy=True)
    key = fold0.feature_key(fold0.window_spec())
    choices = native_choices(bench.cache / "features.sqlite", key, items, av_train,
                             args.chance_seeds)  # fmt: skip
    return {
        "command": " ".join(sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "machine": machine_line(),
        "args": {
            "folds": args.folds,
            "seed": args.seed,
            "epochs": args.epochs,
            "audio_head_parts": args.audio_head_parts,
            "quick": args.quick,
            "chance_seeds": args.chance_seeds,
            "shipped": args.shipped,
        },
        "folds": fold_results,
        "shipped_natural": shipped,
        "zero_shot_natural": zero_shot,
        "avdigits_fold0": digits,
        "avdigits_shipped": shipped_digits,
        "native_choices": choices,
        "timings": timings,
        "seconds": time.perf_counter() - t_start,
    }


def rescore(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """``result`` with the per-file measures of its indexes computed again (this code)."""
    out: Path = args.out.resolve()
    items = load_natural(shared_data() / "natural")
    label_of = {os.path.realpath(it.path): it.concept for it in items}
    av = OUT / "avdigits" if not result["args"]["quick"] else out / "avdigits-quick"
    test_rows = folder_rows([av / "test" / "audio", av / "test" / "images"])
    digit_of = {os.path.realpath(p): lab for p, lab in test_rows}
    rule, seeds = br.FusionRule(), result["args"]["chance_seeds"]
    for k, fold in enumerate(result["folds"]):
        fold.update(score_index(out / "indexes" / f"fold{k}", label_of, seeds, rule))
    for key, name, labels in (
        ("zero_shot_natural", "zero-shot-natural", label_of),
        ("shipped_natural", "shipped-natural", label_of),
        ("avdigits_fold0", "fold0-avdigits", digit_of),
        ("avdigits_shipped", "shipped-avdigits", digit_of),
    ):
        result[key].update(score_index(out / "indexes" / name, labels, seeds, rule))
    return result


# ------------------------------------------------------------------------------ markdown
def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _x(x: float | None, c: float | None) -> str:
    return "–" if x is None or not c else f"{x / c:.2f}×"


def _fold_mean(folds: Iterable[dict[str, Any]], *path: str) -> float | None:
    vals = []
    for f in folds:
        v: Any = f
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if v is not None:
            vals.append(v)
    return float(np.mean(vals)) if vals else None


def markdown(r: dict[str, Any]) -> str:
    folds = r["folds"]
    same_rows = []
    for label, m in (("sound→sound", "audio"), ("picture→picture", "visual")):
        for sp in SAME_SPACES:
            v, c = _fold_mean(folds, f"same_{m}", sp, "map"), _fold_mean(folds, f"same_{m}", sp,
                                                                           "chance")  # fmt: skip
            zv = r["zero_shot_natural"][f"same_{m}"][sp]
            sv = r["shipped_natural"][f"same_{m}"][sp]
            dv = r["avdigits_fold0"][f"same_{m}"][sp]
            ds = r["avdigits_shipped"][f"same_{m}"][sp]
            same_rows.append(
                f"| {label} | {sp} | {_f(v)} | {_f(c)} | {_x(v, c)} "
                f"| {_f(zv['map'])} ({_x(zv['map'], zv['chance'])}) "
                f"| {_f(sv['map'])} ({_x(sv['map'], sv['chance'])}) "
                f"| {_f(dv['map'])} ({_x(dv['map'], dv['chance'])}) "
                f"| {_f(ds['map'])} ({_x(ds['map'], ds['chance'])}) |"
            )
    cross_rows = []
    for name, key in (("heads", "cross_heads"), ("bridge alone", "cross_bridge"),
                      ("heads + bridge (gated)", "cross_fused")):  # fmt: skip
        a, v = _fold_mean(folds, key, "a2v"), _fold_mean(folds, key, "v2a")
        ca, cv = _fold_mean(folds, key, "chance_a2v"), _fold_mean(folds, key, "chance_v2a")
        mean, chance = _mean(a, v), _mean(ca, cv)
        if a is None:  # (a result written before this row existed)
            continue
        seg = {"cross_fused": "fused", "cross_heads": "heads"}.get(key)
        sa = _fold_mean(folds, "eval", seg, "a2v_map") if seg else None
        sv = _fold_mean(folds, "eval", seg, "v2a_map") if seg else None
        sc = _fold_mean(folds, "chance_segment")
        d = r["avdigits_fold0"]["eval"][seg] if seg else {"a2v_map": None, "v2a_map": None}
        gated = _fold_mean(folds, key, "gated_a2v")
        cross_rows.append(
            f"| {name} | {_f(a)} | {_f(v)} | {_x(mean, chance)} | {_f(sa)} | {_f(sv)} "
            f"| {_x(_mean(sa, sv), sc)} | {_f(d['a2v_map'])} | {_f(d['v2a_map'])} "
            f"| {_f(gated, 2) if key == 'cross_fused' else ''} |"
        )
    fold_rows = []
    for k, f in enumerate(folds):
        ch, fu = f["cross_heads"], f.get("cross_fused", {})
        same = " | ".join(
            _f(f[f"same_{m}"][sp]["map"]) for m in ("audio", "visual") for sp in SAME_SPACES
        )
        fold_rows.append(
            f"| {k} | {len(f['held_out'])} | {f['files']['audio']} / {f['files']['visual']} "
            f"| {same} | {_f(ch['map'])} | {_f(fu.get('map'))} | {_f(ch['chance'])} |"
        )
    choice_rows = []
    for c in r["native_choices"]:
        if c["dim"] == 256 or (c["fit"] == "AV-Digits train" and not c["centred"]):
            choice_rows.append(
                f"| {c['modality']} | {c['parts']} | {c['fit']} | "
                f"{'yes' if c['centred'] else 'no'} | {c['dim']} | {_f(c['map'])} "
                f"| {_x(c['map'], c['chance'])} |"
            )
    t = r["timings"]
    cmd = f"python bench/spaces.py {r['command']}".strip()

    def maps(x: dict[str, Any]) -> dict[str, dict[str, float | None]]:
        return {m: {sp: v["map"] for sp, v in x[f"same_{m}"].items()} for m in MODS}

    zs, sh, ad = (
        maps(r["zero_shot_natural"]),
        maps(r["shipped_natural"]),
        maps(r["avdigits_shipped"]),
    )
    held = {m: {sp: _fold_mean(folds, f"same_{m}", sp, "map") for sp in SAME_SPACES} for m in MODS}
    short = []
    for k, f in enumerate(folds):
        for m, label in (("audio", "sounds"), ("visual", "pictures")):
            vals = {sp: f[f"same_{m}"][sp]["map"] for sp in SAME_SPACES}
            best = max(v for v in (vals["heads"], vals["native"]) if v is not None)
            if vals["heads+native"] is not None and best - vals["heads+native"] > 0.1:
                short.append(f"fold {k} {label}: {_f(vals['heads+native'])} against {_f(best)}")
    worst = f" (but {'; '.join(short)})" if short else ""

    def ratio(key: str) -> str:
        a, v = _fold_mean(folds, key, "a2v"), _fold_mean(folds, key, "v2a")
        return _x(_mean(a, v), _fold_mean(folds, key, "chance"))

    cross_h, cross_f = ratio("cross_heads"), ratio("cross_fused")
    bridge_ratio = ratio("cross_bridge")
    mean_weight = _f(_fold_mean(folds, "cross_fused", "weight_a2v"), 2)
    d_h, d_f = r["avdigits_fold0"]["eval"]["heads"], r["avdigits_fold0"]["eval"]["fused"]
    gap = max(abs(d_f[k] - d_h[k]) for k in ("a2v_map", "v2a_map"))

    def vs(x: dict[str, dict[str, float | None]], m: str, a: str, b: str) -> str:
        return f"{_f(x[m][a])} against {_f(x[m][b])}"

    parts = r["args"].get("audio_head_parts")  # (older spaces.json: the heads read both)
    head_parts = f" --audio-head-parts {parts}" if parts else ""
    reading = (
        "- Same modality, the native space alone beats the heads only where the heads never "
        "saw anything like the query: zero-shot heads (AV-Digits alone) on natural/, sounds "
        f"{vs(zs, 'audio', 'native', 'heads')}, pictures {vs(zs, 'visual', 'native', 'heads')}. "
        "Where they did, the heads win by far: on their own concepts (shipped on natural/ "
        f"{vs(sh, 'audio', 'heads', 'native')}; AV-Digits test "
        f"{vs(ad, 'audio', 'heads', 'native')}) and, less, on natural concepts held out of heads "
        f"trained on the other ones ({vs(held, 'audio', 'heads', 'native')}). Fused by the gate "
        "(`heads+native`: the native space weighs in when the query's best heads cosine with "
        f"the other modality is low) the search keeps most of both{worst}. That is the default "
        "for same-modality queries; `--space native|heads` ranks in one alone.\n"
        f"- Cross-modal, the bridge fused by the gate lifts held-out concepts from {cross_h} to "
        f"{cross_f} chance per file and keeps AV-Digits within {gap:.3f} of the heads."
    )
    reading = "\n".join(textwrap.fill(par, 95, subsequent_indent="  ")
                         for par in reading.split("\n"))  # fmt: skip
    return f"""## Vector spaces: native and bridge (`{cmd}`)

`{cmd}` — {r["date"]}, {r["machine"]}; {r["seconds"] / 60:.0f} min
(training {t["train"] / 60:.0f} min, embed + eval {t["embed_eval"] / 60:.0f} min). The machine is
shared.

Leave concepts out on `../shared/data/natural` as in "Natural sounds, leave concepts out"
({len(folds)} seeded folds, seed {r["args"]["seed"]}): per fold `avsearch train --method infonce
--labeled-ratio 1 --audio-backbone aisfx+soundnet{head_parts}` on AV-Digits train + the concepts
outside the fold (train also fits the model's native spaces on those windows: uncentred, 256-d,
aisfx part only for sounds; its audio tower includes soundnet, so it has a bridge space),
`avsearch embed` of the held-out concepts. **Per file** = what `avsearch query` returns (a file
queries with the normalised mean of its windows' vectors; hits are files by their best segment;
same modality: the query's own file left out), computed from the index's stored vectors (checked
against `run_query` on {CHECKED_QUERIES} queries per fold and space); chance = the gallery in random
order ({r["args"]["chance_seeds"]} seeds). **Per segment** = `avsearch eval --json` and
`--no-bridge`; chance = random Gaussian vectors with the same labels. Mean over folds.
**zero-shot** = `avsearch train` (same recipe, audio backbone aisfx) on AV-Digits train alone,
over all of natural/: heads that never saw a natural concept, native spaces fitted on AV-Digits.
**shipped** = `models/{r["args"]["shipped"]}` over all of natural/: its heads
were trained on these concepts and its native spaces fitted on windows that include them, so
its row is not held out. **AV-Digits test** (FSDD takes 0-4 vs the 1,000 MNIST test images,
labels = digits): the fold-0 model and the shipped model.

Same modality, per file (MAP and × chance):

{SAME_HEAD}
{chr(10).join(same_rows)}

Cross-modal, aisfx+soundnet models, held-out concepts (and AV-Digits test, per segment, with
the fold-0 model); "gated" = share of sound-file queries whose bridge weight was above 0:

{CROSS_HEAD}
{chr(10).join(cross_rows)}

Per fold (per file MAP):

{FOLD_HEAD}
{chr(10).join(fold_rows)}

Choices of the native space (same modality per file over all of natural/, from the feature
cache; sounds in the aisfx+soundnet features, pictures in EfficientNet-Lite0's): which parts
enter, fitted on natural/ itself (optimistic), on AV-Digits train, or both; centred or not; the
dimension kept:

| modality | parts | fitted on | centred | dim | MAP | × chance |
|---|---|---|---|---:|---:|---:|
{chr(10).join(choice_rows)}

Reading:
{reading}
- Centring helps only with a mean fitted on the collection searched; fitted elsewhere (the
  default's training data is mostly spoken digits and MNIST) it hurts, and for pictures it hurt
  everywhere. Uncentred 256-d projections keep the raw features' cosines whatever they were
  fitted on: the native spaces are uncentred, 256-d, and a composite's audio space holds its
  general sound part (aisfx; soundnet's features did worse alone and added nothing to it).
- The bridge vectors of the index come from soundnet's features, which hear up to 16
  consecutive windows (37 s) of a file in one pass (as `embed` computes them; "Zero-shot bridge"
  runs the network over each whole file). Alone they score {bridge_ratio} chance per file on
  the held-out concepts; on natural/ the gate gives the bridge weight {mean_weight} of 4 on
  average.
- Held-out sets are small (about 11 concepts, 13-23 sound files per fold): fold-to-fold spread
  is large.
- All numbers: `{r.get("json", "bench/out/spaces/spaces.json")}`.
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="[the CLI's; 3 with --quick]")
    ap.add_argument(
        "--audio-head-parts",
        default="aisfx",
        help="avsearch train --audio-head-parts: the parts of aisfx+soundnet the heads read "
        "('' = both) [aisfx]",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 concepts per fold")
    ap.add_argument("--out", type=Path, default=OUT / "spaces")
    ap.add_argument("--shipped", default="default")
    ap.add_argument("--chance-seeds", type=int, default=20)
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--render", type=Path, default=None)
    ap.add_argument(
        "--rescore",
        type=Path,
        default=None,
        help="recompute the per-file measures of a run's JSON from its indexes (still in "
        "<out>/indexes), keep its eval numbers, rewrite it and the docs section",
    )
    args = ap.parse_args(argv)
    if args.rescore is not None:
        result = rescore(json.loads(args.rescore.read_text(encoding="utf-8")), args)
        args.rescore.write_text(json.dumps(result, indent=1), encoding="utf-8")
        text = markdown(result)
        print(text if args.no_docs else f"wrote {write_section(SECTION, text)}")
        return
    if args.render is not None:
        text = markdown(json.loads(args.render.read_text(encoding="utf-8")))
        print(text if args.no_docs else f"wrote {write_section(SECTION, text)}")
        return
    if args.quick and args.epochs is None:
        args.epochs = 3
    result = run(args)
    name = "spaces-quick.json" if args.quick else "spaces.json"
    path = args.out.resolve() / name
    result["json"] = os.path.relpath(path, REPO)
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    text = markdown(result)
    if args.quick or args.no_docs:
        print(text)
        print(f"wrote {path}")
        return
    print(f"wrote {path} and {write_section(SECTION, text)}")


if __name__ == "__main__":
    main()
