"""Natural sounds, leave concepts out: do the heads carry over to concepts they never saw?

    python bench/natural.py [--folds 5] [--seed 0] [--method infonce] [--audio-backbone B]
                            [--epochs N] [--sampler random|balanced] [--per-class M]
                            [--quick] [--out bench/out/natural] [--no-docs]
    python bench/natural.py --render bench/out/natural/natural.json   # docs section only

Data: ../shared/data/natural (67 concepts of real sounds and pictures of the same things,
listed in its index.csv). The 54 concepts with both sounds and pictures are split into
``--folds`` seeded folds; the 13 sound-only concepts always stay on the training side. The
farm animals of ../shared/data/farm enter only through natural/index.csv, which lists each farm
file under its concept (``../farm/sounds/dog.ogg`` is a ``dog`` sound): every file is counted
once, labelled by concept, and a held-out concept takes its farm files with it. Labels reach
``train`` and ``eval`` as ``--labels`` CSVs written into ``<out>`` (concepts from index.csv,
AV-Digits files by their digit folder): parent folder names would label the farm files
``sounds`` and ``images``. PATHS are real folders and files (each natural concept folder, and
the farm files of the concepts in use), no symbolic links.

For each fold, through the product's own path:

- **leave-out**: ``avsearch train`` (subprocess, ``--labeled-ratio 1``) on the AV-Digits train
  split as media folders (bench/avdigits.py: FSDD takes 5-49 as wav, the 5,000 MNIST train
  images as PNG, class folders = digits) plus every natural concept outside the fold;
- **zero-shot**: one ``avsearch train`` on AV-Digits train alone (no natural concept);
- **shipped**: the shipped model (``--shipped``, default ``default``), and the same model with
  the nine farm concepts left out of the evaluation, because its heads were fitted on the farm
  files (bench/train_default.py), so those concepts are not unseen for it.

Each model indexes the fold's held-out concepts with ``avsearch embed`` (one backbone feature
cache, ``<out>/cache/features.sqlite``, shared by every train and embed, so each file is decoded
once per backbone) and is evaluated with ``avsearch eval --json --labels`` (labels = concept
names). Chance = the same labels on random Gaussian embeddings, mean over ``--chance-seeds``
(bench/retrieval.py ``chance_level``). Same-modality MAP (sound→sound, picture→picture among
the held-out concepts) ranks the vectors the index stores, which are the ones a same-modality
query (``query --target audio`` with a sound) searches; the library has no public function for
it, so it is computed here from the index's stored vectors (``IndexStore``, the manifest) with
``avsearch.evaluate.rank_gallery`` and ``average_precision``: every segment is a query against
the segments of the *other* files of its modality (its own file's windows are left out).

Writes ``<out>/natural.json`` (every number) and the ``natural`` section of docs/benchmarks.md.
``--quick`` is a smoke run: 2 held-out concepts per fold, 3 epochs, 20 AV-Digits clips and
images per digit; it writes ``<out>/natural-quick.json`` and leaves docs/ alone.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import OUT, REPO, machine_line, shared_data, write_section
from avdigits import build_avdigits
from retrieval import chance_level

from avsearch.evaluate import average_precision, rank_gallery
from avsearch.evaluate_index import LabelledEmbeddings
from avsearch.store.index import IndexStore
from avsearch.train.config import DEFAULT_BRIDGE_MAP_ALPHA, DEFAULT_BRIDGE_MEMORY_K

MODALITY = {"audio": "audio", "image": "visual"}  # index.csv's modality → the index's
TARGET = 2.5  # MAP / chance on held-out concepts that the issue asks for
SETTINGS = ("leave-out", "zero-shot", "shipped", "shipped, farm concepts left out")


# ------------------------------------------------------------------------------ data and folds
@dataclass(frozen=True)
class Item:
    path: Path  # resolved
    concept: str
    modality: str  # "audio" | "visual"
    inside: bool  # lies in natural/<concept>/ (False: a farm/ file listed by index.csv)


def load_natural(natural: Path) -> list[Item]:
    """Every row of natural/index.csv (farm rows included), paths resolved."""
    items = []
    with (natural / "index.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            path = (natural / row["path"]).resolve()
            inside = path.parent == (natural / row["concept"]).resolve()
            items.append(Item(path, row["concept"], MODALITY[row["modality"]], inside))
    return items


def paired_concepts(items: Iterable[Item]) -> list[str]:
    """Concepts with both sounds and pictures, sorted."""
    seen: dict[str, set[str]] = {}
    for it in items:
        seen.setdefault(it.concept, set()).add(it.modality)
    return sorted(c for c, m in seen.items() if m == {"audio", "visual"})


def make_folds(concepts: Sequence[str], n_folds: int, seed: int) -> list[list[str]]:
    """``n_folds`` disjoint folds covering ``concepts``, sizes within one; seeded shuffle."""
    if not 2 <= n_folds <= len(concepts):
        raise ValueError(f"--folds must be in 2..{len(concepts)}, got {n_folds}")
    order = np.random.default_rng(seed).permutation(len(concepts))
    shuffled = [sorted(concepts)[i] for i in order]
    return [sorted(part.tolist()) for part in np.array_split(np.array(shuffled), n_folds)]


def media_paths(items: Iterable[Item], concepts: Iterable[str], natural: Path) -> list[Path]:
    """The CLI's PATHS for ``concepts``: each concept folder once, plus its files outside it."""
    wanted = set(concepts)
    out: set[Path] = set()
    for it in items:
        if it.concept in wanted:
            out.add((natural / it.concept).resolve() if it.inside else it.path)
    return sorted(out)


def write_labels(path: Path, rows: Iterable[tuple[Path, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows((str(p), label) for p, label in rows)
    return path


def folder_rows(roots: Iterable[Path]) -> list[tuple[Path, str]]:
    """(file, parent folder name) of every media file under class-folder ``roots``."""
    return [
        (p.resolve(), p.parent.name)
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    ]


# ------------------------------------------------------------------------------ metrics
def same_modality_map(
    emb: np.ndarray, labels: np.ndarray, groups: np.ndarray
) -> tuple[float | None, int, int]:
    """(MAP, queries, skipped): each item ranked against the items of the other groups (files);
    relevant = same label. A query without a relevant item is skipped; MAP None if all are."""
    order = rank_gallery(emb, emb)
    aps = []
    for i, ranked in enumerate(order):
        ranked = ranked[groups[ranked] != groups[i]]
        rel = labels[ranked] == labels[i]
        if rel.any():
            aps.append(average_precision(rel))
    skipped = len(labels) - len(aps)
    return (float(np.mean(aps)) if aps else None), len(aps), skipped


def same_modality_chance(
    labels: np.ndarray, groups: np.ndarray, dim: int, seeds: int
) -> float | None:
    """Mean over seeds of :func:`same_modality_map` on random Gaussian embeddings."""
    maps = []
    for seed in range(seeds):
        emb = np.random.default_rng(seed).standard_normal((len(labels), dim))
        value = same_modality_map(emb, labels, groups)[0]
        if value is None:
            return None
        maps.append(value)
    return float(np.mean(maps))


def ratio(value: float | None, chance: float | None) -> float | None:
    return None if value is None or not chance else value / chance


def mean_of(rows: Sequence[dict[str, Any]], get: Callable[[dict[str, Any]], Any]) -> float | None:
    """Mean of ``get(row)`` over the rows where it is a number (None when none is)."""
    values = [v for v in (get(r) for r in rows) if v is not None]
    return float(np.mean(values)) if values else None


METRICS = {
    "a2v_map": lambda r: r["a2v_map"],
    "v2a_map": lambda r: r["v2a_map"],
    "map": lambda r: r["map"],
    "a2v_r1": lambda r: r["recall"]["a2v"]["1"],
    "v2a_r1": lambda r: r["recall"]["v2a"]["1"],
    "a2v_r5": lambda r: r["recall"]["a2v"]["5"],
    "v2a_r5": lambda r: r["recall"]["v2a"]["5"],
}


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Fold means of one setting; ratios are of the means (mean MAP / mean chance MAP)."""
    out: dict[str, Any] = {"folds": len(rows)}
    for key, get in METRICS.items():
        out[key] = mean_of(rows, get)
        out[f"chance_{key}"] = mean_of(rows, lambda r, get=get: get(r["chance"]))
    for key in ("map", "a2v_map", "v2a_map"):
        out[f"ratio_{key}"] = ratio(out[key], out[f"chance_{key}"])
    if rows and all(r.get("heads_only") for r in rows):
        out["heads_only_map"] = float(np.mean([r["heads_only"]["map"] for r in rows]))
        out["heads_only_ratio"] = ratio(out["heads_only_map"], out["chance_map"])
    for m in ("audio", "visual"):
        s = {
            k: mean_of(rows, lambda r, m=m, k=k: r["same"][m][k])
            for k in ("map", "chance", "queries")
        }
        s["ratio"] = ratio(s["map"], s["chance"])
        out[f"same_{m}"] = s
    return out


# ------------------------------------------------------------------------------ the CLI
class CliError(RuntimeError):
    pass


def avsearch(args: list[str], log: Path, cwd: Path) -> dict[str, Any]:
    """Run ``python -m avsearch --json ARGS`` (this checkout first on the path); its JSON.

    stderr goes to ``log``. Exit 4 (some input unreadable) is accepted: the summary names the
    files."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path)
    env.pop("AVSEARCH_INDEX", None)
    cmd = [sys.executable, "-m", "avsearch", "--json", *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as err:
        err.write(" ".join(cmd) + "\n")
        err.flush()
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    if proc.returncode not in (0, 4):
        tail = "".join(log.read_text(encoding="utf-8").splitlines(keepends=True)[-15:])
        raise CliError(f"{log.name}: avsearch exited {proc.returncode}:\n{tail}")
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


@dataclass(frozen=True)
class Bench:
    out: Path
    method: str
    seed: int
    audio_backbone: str | None
    epochs: int | None
    chance_seeds: int
    sampler: str | None = None  # `train --sampler` (None: the CLI's default)
    per_class: int | None = None  # `train --per-class`
    audio_head_parts: str | None = None  # `train --audio-head-parts`
    bridge_map_alpha: float | None = None  # `train --bridge-map-alpha` (None: the CLI's)
    bridge_memory_k: int | None = None  # `train --bridge-memory-k` (None: the CLI's)
    precision: str = "fp32"  # `embed --precision` of every evaluated index (training: float32)

    @property
    def cache(self) -> Path:
        return self.out / "cache"  # `train --index`: its features.sqlite is the shared cache

    @property
    def config(self) -> Path:
        return self.out / "avsearch.yaml"

    def prepare(self) -> None:
        """One feature cache for every train (``--index cache``) and every embed (the config)."""
        self.cache.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"embed:\n  feature_cache: {json.dumps(str(self.cache / 'features.sqlite'))}\n"
            f"  precision: {self.precision}\n",
            encoding="utf-8",
        )

    def train(self, name: str, paths: list[Path], labels: Path) -> tuple[Path, dict[str, Any]]:
        model = self.out / "models" / name
        shutil.rmtree(model, ignore_errors=True)
        args = ["--index", str(self.cache), "--config", str(self.config), "train"]
        args += [str(p) for p in paths]
        args += ["--labels", str(labels), "--labeled-ratio", "1", "--method", self.method]
        args += ["--seed", str(self.seed), "--out", str(model)]
        if self.audio_backbone:
            args += ["--audio-backbone", self.audio_backbone]
        if self.audio_head_parts:
            args += ["--audio-head-parts", self.audio_head_parts]
        if self.bridge_map_alpha is not None:
            args += ["--bridge-map-alpha", repr(self.bridge_map_alpha)]
        if self.bridge_memory_k is not None:
            args += ["--bridge-memory-k", str(self.bridge_memory_k)]
        if self.epochs:
            args += ["--epochs", str(self.epochs)]
        if self.sampler:
            args += ["--sampler", self.sampler]
        if self.per_class is not None:
            args += ["--per-class", str(self.per_class)]
        t0 = time.perf_counter()
        summary = avsearch(args, self.out / "logs" / f"train-{name}.log", self.out)
        summary["wall_seconds"] = time.perf_counter() - t0
        return model, summary

    def embed_eval(
        self, name: str, model: str, paths: list[Path], labels: list[Path]
    ) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
        index = self.out / "indexes" / name
        shutil.rmtree(index, ignore_errors=True)
        base = ["--index", str(index), "--config", str(self.config)]
        logs = self.out / "logs"
        embed_args = [*base, "embed", *map(str, paths), "--model", model]
        embed = avsearch(embed_args, logs / f"embed-{name}.log", self.out)
        evals = []
        for csv_path in labels:
            log = logs / f"eval-{name}-{csv_path.stem}.log"
            report = avsearch([*base, "eval", "--labels", str(csv_path)], log, self.out)
            if report.get("space") == "heads+bridge":  # the same index ranked by the heads alone
                log = logs / f"eval-{name}-{csv_path.stem}-heads.log"
                args = [*base, "eval", "--labels", str(csv_path), "--no-bridge"]
                heads = avsearch(args, log, self.out)
                report["heads_only"] = {k: heads[k] for k in ("a2v_map", "v2a_map", "map")}
            evals.append(report)
        return index, embed, evals


# ------------------------------------------------------------------------------ one evaluation
def stored_segments(
    index: Path, labels: dict[str, str]
) -> tuple[int, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """(dim, {modality: (vectors, labels, file ids)}) of the index's labelled segments."""
    out = {}
    with IndexStore.open_existing(index) as store:
        dim = store.dim
        for modality in ("audio", "visual"):
            ids, vecs = store.manifest.vectors(modality, dim)
            rows = store.manifest.segments_by_ids(ids.tolist())
            segs = [rows[i] for i in ids.tolist()]
            found = [labels.get(os.path.realpath(s.path)) for s in segs]
            keep = np.array([lab is not None for lab in found], dtype=bool)
            out[modality] = (
                vecs[keep],
                np.array([lab for lab in found if lab is not None], dtype=str),
                np.array([s.file_id for s in segs], dtype=np.int64)[keep],
            )
    return dim, out


def score(
    index: Path, report: dict[str, Any], labels: dict[str, str], chance_seeds: int
) -> dict[str, Any]:
    """The eval JSON's numbers + measured chance + same-modality MAP of one index."""
    dim, segs = stored_segments(index, labels)
    (a, al, af), (v, vl, vf) = segs["audio"], segs["visual"]
    if (len(al), len(vl)) != (report["n_audio"], report["n_visual"]):
        raise RuntimeError(
            f"{index}: eval counted {report['n_audio']}/{report['n_visual']} labelled segments, "
            f"the store read gives {len(al)}/{len(vl)}"
        )
    chance, chance_sd = chance_level(LabelledEmbeddings(a, al, v, vl), dim, chance_seeds)
    pick = {d: {k: report["recall_at"][d][k] for k in ("1", "5", "10")} for d in ("a2v", "v2a")}
    same = {}
    for m, (emb, lab, files) in (("audio", (a, al, af)), ("visual", (v, vl, vf))):
        value, queries, skipped = same_modality_map(emb, lab, files)
        same[m] = {
            "map": value,
            "chance": same_modality_chance(lab, files, dim, chance_seeds) if queries else None,
            "queries": queries,
            "skipped": skipped,
        }
    return {
        "a2v_map": report["a2v_map"],
        "v2a_map": report["v2a_map"],
        "map": report["map"],
        "recall": pick,
        "n_audio": report["n_audio"],
        "n_visual": report["n_visual"],
        "dim": dim,
        "concepts": sorted(set(al.tolist()) | set(vl.tolist())),
        "chance": {
            "a2v_map": chance.a2v_map,
            "v2a_map": chance.v2a_map,
            "map": chance.map,
            "map_sd": chance_sd,
            "recall": {
                d: {str(k): chance.recall_at[d][k] for k in (1, 5, 10)} for d in ("a2v", "v2a")
            },
        },
        "ratio": ratio(report["map"], chance.map),
        "heads_only": report.get("heads_only"),  # `eval --no-bridge` when the eval fused
        "same": same,
    }


def training_info(summary: dict[str, Any], zero_shot: dict[str, Any] | None) -> dict[str, Any]:
    """What ``train --json`` says about a run; natural pairs = pairs beyond the zero-shot run's
    (the same AV-Digits pairs: pairing is seeded per label)."""
    media = summary.get("media", {})
    pairs = int(summary.get("pairs", 0))
    return {
        "pairs": pairs,
        "natural_pairs": None if zero_shot is None else pairs - int(zero_shot.get("pairs", 0)),
        "classes": len(summary.get("classes", [])),
        "unpaired_windows": media.get("unpaired_windows"),
        "decoded": media.get("decoded"),
        "from_cache": media.get("from_cache"),
        "epochs_run": summary.get("epochs_run"),
        "best_epoch": summary.get("best_epoch"),
        "best_val_map": summary.get("best_val_map"),
        "seconds_per_epoch": summary.get("seconds_per_epoch"),
        "wall_seconds": summary.get("wall_seconds"),
    }


# ------------------------------------------------------------------------------ markdown
def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _x(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _pair(a: float | None, b: float | None) -> str:
    return f"{_f(a)} · {_f(b)}"


def markdown(result: dict[str, Any]) -> str:
    args, folds = result["args"], result["folds"]
    summary = result["summary"]
    head = (
        "| setting | MAP a→v | MAP v→a | MAP mean | chance MAP | **MAP / chance** "
        "| R@1 a→v · v→a | R@5 a→v · v→a |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = []
    for name in SETTINGS:
        s = summary[name]
        rows.append(
            f"| {name} | {_f(s['a2v_map'])} | {_f(s['v2a_map'])} | {_f(s['map'])} "
            f"| {_f(s['chance_map'])} | **{_x(s['ratio_map'])}** "
            f"| {_pair(s['a2v_r1'], s['v2a_r1'])} | {_pair(s['a2v_r5'], s['v2a_r5'])} |"
        )
    for name, label in ((SETTINGS[0], "all held-out concepts"), (SETTINGS[3], "farm left out")):
        s = summary[name]
        rows.append(
            f"| chance ({label}) | {_f(s['chance_a2v_map'])} | {_f(s['chance_v2a_map'])} "
            f"| {_f(s['chance_map'])} | | | {_pair(s['chance_a2v_r1'], s['chance_v2a_r1'])} "
            f"| {_pair(s['chance_a2v_r5'], s['chance_v2a_r5'])} |"
        )
    same_head = (
        "| setting | sound→sound MAP | chance | ratio | picture→picture MAP | chance | ratio "
        "| queries s / p |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    same_rows = []
    for name in SETTINGS:
        sa, sv = summary[name]["same_audio"], summary[name]["same_visual"]
        same_rows.append(
            f"| {name} | {_f(sa['map'])} | {_f(sa['chance'])} | {_x(sa['ratio'])} "
            f"| {_f(sv['map'])} | {_f(sv['chance'])} | {_x(sv['ratio'])} "
            f"| {_f(sa['queries'], 0)} / {_f(sv['queries'], 0)} |"
        )
    fold_head = (
        "| fold | setting | MAP a→v | MAP v→a | MAP mean | chance | ratio | R@1 a→v · v→a "
        "| R@5 a→v · v→a | n_audio / n_visual | s→s | p→p |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    fold_rows, concept_rows = [], []
    for k, fold in enumerate(folds):
        concept_rows.append(f"| {k} | {len(fold['held_out'])} | {', '.join(fold['held_out'])} |")
        for name in SETTINGS:
            r = fold["settings"].get(name)
            if r is None:
                fold_rows.append(f"| {k} | {name} | – | – | – | – | – | – | – | – | – | – |")
                continue
            sa, sv = r["same"]["audio"], r["same"]["visual"]
            fold_rows.append(
                f"| {k} | {name} | {_f(r['a2v_map'])} | {_f(r['v2a_map'])} | {_f(r['map'])} "
                f"| {_f(r['chance']['map'])} | {_x(r['ratio'])} "
                f"| {_pair(r['recall']['a2v']['1'], r['recall']['v2a']['1'])} "
                f"| {_pair(r['recall']['a2v']['5'], r['recall']['v2a']['5'])} "
                f"| {r['n_audio']} / {r['n_visual']} | {_f(sa['map'])} ({_f(sa['chance'])}) "
                f"| {_f(sv['map'])} ({_f(sv['chance'])}) |"
            )
    lo = summary[SETTINGS[0]]["ratio_map"]
    verdict = "met" if lo is not None and lo >= TARGET else "not met"
    trained = result["training"]
    zs, tf = trained["zero_shot"], trained["folds"]
    share = [t["natural_pairs"] / t["pairs"] for t in tf if t["pairs"]]
    epochs = sorted({t["epochs_run"] for t in [zs, *tf]})
    fold_secs = [t["wall_seconds"] for t in tf]
    backbone = args["audio_backbone"] or "the CLI default (aisfx-words)"
    if args.get("audio_head_parts"):
        backbone += f", heads reading its {args['audio_head_parts']} part"
    sampler = args.get("sampler") or "random"  # (older natural.json: the CLI's default then)
    batches = (
        f"; class-balanced batches, `--sampler balanced --per-class {args.get('per_class') or 4}`"
        if sampler == "balanced"
        else "; batches drawn in proportion (`--sampler random`)"
    )
    heads_rows = [
        f"{name} {_f(summary[name]['heads_only_map'])} ({_x(summary[name]['heads_only_ratio'])})"
        for name in SETTINGS
        if summary.get(name, {}).get("heads_only_map") is not None
    ]
    heads_line = (
        "The same indexes ranked by the heads alone (`avsearch eval --no-bridge`), mean MAP (× "
        f"chance): {'; '.join(heads_rows)}.\n"
        if heads_rows
        else ""
    )
    for base in result.get("baselines") or []:
        base_rows = [
            f"{name} {_f(s['map'])} ({_x(s['ratio_map'])})"
            for name, s in base["summary"].items()
            if s.get("map") is not None
        ]
        b_args = base["args"]
        off = (
            " (the bridge map off)"
            if b_args.get("bridge_map_alpha") == 0
            else " (the map without the memory of training sounds)"
            if b_args.get("bridge_memory_k") == 0
            else " (indexes embedded with `--precision bf16`)"
            if b_args.get("precision") == "bf16"
            else ""
        )
        heads_line += (
            f"Baseline{off}, `python bench/natural.py {base['command']}` (`{base['json']}`), mean "
            f"MAP (× chance): {'; '.join(base_rows)}.\n"
        )
    alpha = args.get("bridge_map_alpha")
    mapped = (
        "; the bridge's audio side uncorrected (`--bridge-map-alpha 0`)"
        if alpha == 0
        else "; the bridge's audio side corrected by the map `train` learns from each model's "
        "training pairs (`avsearch.encoders.bridge_map`, "
        f"`--bridge-map-alpha {alpha if alpha is not None else DEFAULT_BRIDGE_MAP_ALPHA}`"
        + (
            "; no memory of training sounds, `--bridge-memory-k 0`)"
            if args.get("bridge_memory_k") == 0
            else ", and each sound leaning towards the pictures of its "
            f"{args.get('bridge_memory_k') or DEFAULT_BRIDGE_MEMORY_K} nearest training sounds)"
        )
    )
    fused = (
        " (ranked by the heads fused with the zero-shot bridge, as `eval` does for a model whose "
        f"audio tower includes soundnet{mapped})"
        if "soundnet" in (args["audio_backbone"] or "")
        else ""
    )
    t = result["timings"]
    farm = result["farm_concepts"]
    n_sound_only = len(result["sound_only_concepts"])
    n_paired = sum(len(f["fold"]) for f in folds)
    return f"""## Natural sounds, leave concepts out (`python bench/natural.py {result["command"]}`)

`python bench/natural.py {result["command"]}` — {result["date"]}, {result["machine"]};
total {result["seconds"] / 60:.1f} min: training {t["train"]:.0f} s, of which the zero-shot run
{zs["wall_seconds"]:.0f} s (it decodes what the feature cache lacks: {zs["decoded"]:,} files
this time) and each fold's run {min(fold_secs):.0f}–{max(fold_secs):.0f} s; embed + eval
{t["embed_eval"]:.0f} s; AV-Digits build/check {t["avdigits"]:.0f} s. The machine is shared.

Leave concepts out on `../shared/data/natural` (issue #19, item 1): its {n_paired} concepts with
sounds and pictures in {len(folds)} seeded folds (seed {args["seed"]}). For each fold,
`avsearch train --method {args["method"]} --labeled-ratio 1` (audio backbone {backbone};
{"/".join(map(str, epochs))} epochs run{batches}) on AV-Digits train (FSDD takes 5–49 as wav +
the 5,000 MNIST train images as PNG, class folders = digits, built by `bench/avdigits.py`:
{zs["pairs"]:,} pairs) plus every natural concept outside the fold, the {n_sound_only} sound-only
ones included (`train` pairs sounds with pictures of the same label, so their windows stay unpaired:
{tf[0]["unpaired_windows"]} windows); natural pairs are {min(share):.0%}–{max(share):.0%} of a
fold's training pairs ({min(x["natural_pairs"] for x in tf)}–{max(x["natural_pairs"] for x in tf)}).
Then `avsearch embed` of the held-out concepts and `avsearch eval --json` with labels =
concept names{fused}. **zero-shot**: one model trained on AV-Digits train alone, evaluated on each
fold's held-out concepts; **shipped**: `models/{args["shipped"]}` on the same held-out sets.
The farm animals of `../shared/data/farm` enter only through natural/index.csv, which lists
each farm file under its concept, so every file counts once and a held-out concept takes its
farm files with it. The shipped model's heads were fitted on those farm files
(`bench/train_default.py`), so its last row evaluates without the {len(farm)} farm concepts
({", ".join(farm)}): that is its leave-concepts-out number.

Mean over folds (ratios are mean MAP / mean chance MAP). Chance: the same labels on random
{result["dim"]}-d Gaussian embeddings, mean of {args["chance_seeds"]} seeds, per fold and setting.
{heads_line}**Target: MAP ≥ {TARGET}× chance on held-out concepts — leave-out {_x(lo)}: {verdict}.**

{head}
{chr(10).join(rows)}

Same modality among the held-out concepts (sound→sound, picture→picture), in the heads' space
(same-modality queries now rank in the model's native space when it has one: "Vector spaces"
below; these are the stored head vectors, computed from the index's
stored vectors through the store, as `eval` has no same-modality mode): every segment queries
the segments of the other files of its modality (its own file's windows left out); queries
whose concept has no other file of that modality are skipped. Mean over folds; queries = mean
per fold.

{same_head}
{chr(10).join(same_rows)}

Held-out concepts:

| fold | n | concepts |
|---:|---:|---|
{chr(10).join(concept_rows)}

Per fold (same-modality: MAP (chance)):

{fold_head}
{chr(10).join(fold_rows)}

Segments are the product's windows (2.32 s): a 61 s piece of music gives 26 audio queries, a
picture one; MAP is over segments, as `avsearch eval` computes it. Held-out sets are small
(about 11 concepts, a few files each), so fold-to-fold spread is large. All numbers:
`{result["json"]}`.
"""


# ------------------------------------------------------------------------------ main
def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    data = shared_data()
    natural = data / "natural"
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(
        out,
        args.method,
        args.seed,
        args.audio_backbone,
        args.epochs,
        args.chance_seeds,
        args.sampler,
        args.per_class,
        args.audio_head_parts,
        args.bridge_map_alpha,
        args.bridge_memory_k,
        args.precision,
    )
    bench.prepare()

    t0 = time.perf_counter()
    av_out = args.avdigits or (out / "avdigits-quick" if args.quick else OUT / "avdigits")
    av = build_avdigits(data, av_out, ["train"], 0, per_class=20 if args.quick else None)
    av_roots = [av["train/audio"], av["train/images"]]
    t_avdigits = time.perf_counter() - t0

    items = load_natural(natural)
    concepts = paired_concepts(items)
    folds = make_folds(concepts, args.folds, args.seed)
    held = [f[:2] for f in folds] if args.quick else folds
    farm = sorted({it.concept for it in items if not it.inside})
    all_concepts = sorted({it.concept for it in items})
    train_csv = write_labels(
        out / "labels-train.csv",
        folder_rows(av_roots) + [(it.path, it.concept) for it in items],
    )
    eval_csv = write_labels(out / "labels-natural.csv", [(it.path, it.concept) for it in items])
    unseen_csv = write_labels(
        out / "labels-natural-no-farm.csv",
        [(it.path, it.concept) for it in items if it.concept not in farm],
    )
    label_of = {os.path.realpath(it.path): it.concept for it in items}
    label_unseen = {p: c for p, c in label_of.items() if c not in farm}

    timings = {"avdigits": t_avdigits, "train": 0.0, "embed_eval": 0.0}
    t0 = time.perf_counter()
    print("zero-shot: training on AV-Digits train only", flush=True)
    zs_model, zs_summary = bench.train("zero-shot", av_roots, train_csv)
    timings["train"] += time.perf_counter() - t0
    fold_results, fold_training = [], []
    for k, fold in enumerate(folds):
        train_concepts = [c for c in all_concepts if c not in fold]
        t0 = time.perf_counter()
        print(f"fold {k}: training on AV-Digits + {len(train_concepts)} concepts", flush=True)
        paths = av_roots + media_paths(items, train_concepts, natural)
        model, summary = bench.train(f"fold{k}", paths, train_csv)
        timings["train"] += time.perf_counter() - t0
        fold_training.append(training_info(summary, zs_summary))

        t0 = time.perf_counter()
        held_paths = media_paths(items, held[k], natural)
        runs = [("leave-out", str(model)), ("zero-shot", str(zs_model)), ("shipped", args.shipped)]
        results: dict[str, Any] = {}
        for name, ref in runs:
            unseen = name == "shipped" and bool(set(held[k]) - set(farm))
            csvs = [eval_csv, unseen_csv] if unseen else [eval_csv]
            index, embed, reports = bench.embed_eval(f"fold{k}-{name}", ref, held_paths, csvs)
            results[name] = score(index, reports[0], label_of, args.chance_seeds)
            results[name]["embed"] = {
                "files": embed.get("files"),
                "segments": embed.get("segments"),
                "failures": embed.get("failures"),
                "seconds": embed.get("seconds"),
            }
            if unseen:
                results[SETTINGS[3]] = score(index, reports[1], label_unseen, args.chance_seeds)
        timings["embed_eval"] += time.perf_counter() - t0
        for name, r in results.items():
            line = f"MAP {r['map']:.3f} (chance {r['chance']['map']:.3f}, {r['ratio']:.2f}x)"
            print(f"  {name}: {line}", flush=True)
        fold_results.append({"held_out": held[k], "fold": fold, "settings": results})

    summary_rows = {
        name: summarise([f["settings"][name] for f in fold_results if name in f["settings"]])
        for name in SETTINGS
    }
    command = " ".join(sys.argv[1:])
    return {
        "command": command,
        "date": dt.date.today().isoformat(),
        "machine": machine_line(),
        "args": {
            "folds": args.folds,
            "seed": args.seed,
            "method": args.method,
            "audio_backbone": args.audio_backbone,
            "epochs": args.epochs,
            "sampler": args.sampler,
            "per_class": args.per_class,
            "audio_head_parts": args.audio_head_parts,
            "bridge_map_alpha": args.bridge_map_alpha,
            "bridge_memory_k": args.bridge_memory_k,
            "precision": args.precision,
            "quick": args.quick,
            "chance_seeds": args.chance_seeds,
            "shipped": args.shipped,
        },
        "dim": fold_results[0]["settings"]["leave-out"]["dim"],
        "farm_concepts": farm,
        "sound_only_concepts": sorted(set(all_concepts) - set(concepts)),
        "training": {
            "zero_shot": training_info(zs_summary, None),
            "folds": fold_training,
        },
        "folds": fold_results,
        "summary": summary_rows,
        "timings": timings,
        "seconds": time.perf_counter() - t_start,
        "json": "",
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="seed of the folds and of training")
    ap.add_argument("--method", default="infonce", help="avsearch train --method [infonce]")
    ap.add_argument(
        "--audio-backbone",
        default=None,
        help="aisfx | aisfx-cepstra | aisfx-words | soundnet [the CLI's default]",
    )
    ap.add_argument(
        "--audio-head-parts",
        default=None,
        help="avsearch train --audio-head-parts (e.g. aisfx of aisfx+soundnet) [all parts]",
    )
    ap.add_argument("--epochs", type=int, default=None, help="[the CLI's default; 3 with --quick]")
    ap.add_argument(
        "--sampler", default=None, help="avsearch train --sampler random|balanced [the CLI's]"
    )
    ap.add_argument(
        "--per-class", type=int, default=None, help="avsearch train --per-class M [the CLI's]"
    )
    ap.add_argument(
        "--bridge-map-alpha",
        type=float,
        default=None,
        help="avsearch train --bridge-map-alpha (0: no learned bridge map) [the CLI's]",
    )
    ap.add_argument(
        "--bridge-memory-k",
        type=int,
        default=None,
        help="avsearch train --bridge-memory-k (0: no memory of training sounds) [the CLI's]",
    )
    ap.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="avsearch embed --precision of every evaluated index (training reads float32 "
        "features) [fp32]",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        action="append",
        default=None,
        help="a natural.json of another run whose mean ratios the docs section shows beside "
        "(repeatable)",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 concepts per fold")
    ap.add_argument("--out", type=Path, default=OUT / "natural")
    ap.add_argument(
        "--avdigits", type=Path, default=None, help="AV-Digits folders [bench/out/avdigits]"
    )
    ap.add_argument("--shipped", default="default", help="shipped model to compare [default]")
    ap.add_argument("--chance-seeds", type=int, default=20)
    ap.add_argument("--no-docs", action="store_true", help="leave docs/ alone")
    ap.add_argument(
        "--render",
        type=Path,
        default=None,
        help="only rewrite the docs section from a saved natural.json",
    )
    args = ap.parse_args(argv)
    if args.render is not None:
        saved = json.loads(args.render.read_text(encoding="utf-8"))
        if args.baseline:
            saved["baselines"] = [baseline_of(p) for p in args.baseline]
        text = markdown(saved)
        print(text if args.no_docs else f"wrote {write_section('natural', text)}")
        return
    if args.quick and args.epochs is None:
        args.epochs = 3
    try:
        result = run(args)
    except (CliError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    if args.baseline:
        result["baselines"] = [baseline_of(p) for p in args.baseline]
    name = "natural-quick.json" if args.quick else "natural.json"
    docs = not (args.quick or args.no_docs)
    publish(result, args.out.resolve() / name, "natural", markdown, docs)


def baseline_of(path: Path) -> dict[str, Any]:
    """What the docs section shows of another run (``--baseline``): its command, arguments and
    per-setting mean MAP and ratio, fused and heads alone."""
    other = json.loads(path.read_text(encoding="utf-8"))
    return {
        "json": os.path.relpath(path.resolve(), REPO),
        "command": other.get("command"),
        "args": other.get("args", {}),
        "summary": {
            name: {k: s.get(k) for k in ("map", "ratio_map", "heads_only_map", "heads_only_ratio")}
            for name, s in other.get("summary", {}).items()
        },
    }


def publish(
    result: dict[str, Any],
    path: Path,
    section: str,
    render: Callable[[dict[str, Any]], str],
    docs: bool,
) -> None:
    """Write ``result`` to ``path`` (it records that path), and its rendering into
    docs/benchmarks.md's ``section`` when ``docs``, else to stdout."""
    result["json"] = os.path.relpath(path, REPO)
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    text = render(result)
    if not docs:
        print(text)
        print(f"wrote {path}")
        return
    print(f"wrote {path} and {write_section(section, text)}")


if __name__ == "__main__":
    main()
