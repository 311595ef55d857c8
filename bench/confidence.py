"""Confidence: does one fixed threshold give similar precision across queries?

    python bench/confidence.py [--out bench/out/confidence] [--no-docs]

Data: the AV-Digits test split (``bench/avdigits.py --splits test``: FSDD takes 0-4 as wav and
as videos, the 1,000-image MNIST test gallery; labels = digit folders) and
``../shared/data/natural`` with the farm files it lists (labels = concepts of its index.csv;
13 concepts have sounds and no picture, so their sound queries have no right answer at all).
Each is indexed with ``avsearch embed`` (the shipped default model).

Every indexed file is a query against the other modality (a sound finds pictures and video
frames, a picture or a video frame finds sounds), as ``avsearch query`` runs it: the query
vector is the normalised mean of the file's window vectors, the gallery is grouped one hit per
file (its best segment), the query's own file is left out. The background is
``avsearch.calibrate``'s: the same seeded sample of the index's target segments that
``avsearch query`` draws. Relevant = same label.

Methods compared (each gives a number in 0-1 per hit):

- ``percentile``: the share of the background scoring below the hit;
- ``z (mean/std), logistic``: the plain z-score against the background through a logistic
  curve fitted here on both datasets pooled (each weighing the same);
- ``robust z, logistic`` (what ``avsearch query`` ships): the z-score against the background's
  median and MAD, through a curve fitted the same way; and the same with the curve fitted on
  the *other* dataset only, to show how it carries over to data it never saw.

For each method, threshold and dataset: the queries returning at least one hit, their mean
per-query precision, its spread across queries (standard deviation, 10th percentile), the
mean recall over queries that have relevant items, and the share of the queries without any
right answer that get "no good match" (nothing above the threshold). Writes
``<out>/confidence.json`` and the ``confidence`` section of docs/benchmarks.md; prints the
curve to ship in ``avsearch/calibrate.py`` (``CURVE_A``, ``CURVE_B``). Finally it runs
``avsearch query --json --min-confidence`` on a few queries and checks that the CLI reports the
confidences computed here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import OUT, REPO, machine_line, rel, run_avsearch, shared_data, write_section

from avsearch import calibrate
from avsearch.evaluate_index import _lookup, folder_label, read_labels_csv
from avsearch.store.index import IndexStore

THRESHOLDS = (0.5, 0.7, 0.9)
MODALITIES = ("audio", "visual")


@dataclass
class QueryScores:
    """One query: its label, the gallery files' best scores and labels, its background."""

    dataset: str
    path: str
    modality: str  # of the query vector
    label: str
    scores: np.ndarray  # per gallery file (own file left out)
    relevant: np.ndarray  # bool per gallery file
    background: calibrate.Background

    @property
    def n_relevant(self) -> int:
        return int(self.relevant.sum())


def other(modality: str) -> str:
    return "visual" if modality == "audio" else "audio"


def load_queries(dataset: str, index_dir: Path, labels: dict[str, str] | None) -> list[QueryScores]:
    """Every labelled file of the index as a query against the other modality (see module)."""
    out: list[QueryScores] = []
    per: dict[str, tuple[list[str], np.ndarray, np.ndarray, np.ndarray]] = {}
    backgrounds: dict[str, np.ndarray] = {}
    with IndexStore.open_existing(index_dir) as store:
        dim = store.dim
        for modality in MODALITIES:
            ids, vecs = store.manifest.vectors(modality, dim)
            rows = store.manifest.segments_by_ids(ids.tolist())
            paths = [rows[int(i)].path for i in ids]
            files = sorted(set(paths))
            number = {p: n for n, p in enumerate(files)}
            which = np.array([number[p] for p in paths], dtype=np.int64)
            file_labels = np.array(
                [(folder_label(p) if labels is None else _lookup(labels, p)) or "" for p in files]
            )
            per[modality] = (files, vecs, which, file_labels)
            backgrounds[modality] = calibrate.background_vectors(store.manifest, modality, dim)
    for modality in MODALITIES:
        files, vecs, which, file_labels = per[modality]
        target = other(modality)
        g_files, g_vecs, g_which, g_labels = per[target]
        for n, path in enumerate(files):
            if not file_labels[n]:
                continue
            q = vecs[which == n].mean(axis=0)
            q = q / max(float(np.linalg.norm(q)), 1e-12)
            best = np.full(len(g_files), -np.inf)
            np.maximum.at(best, g_which, g_vecs @ q)
            keep = np.array([f != path for f in g_files]) & (g_labels != "")
            out.append(
                QueryScores(
                    dataset,
                    path,
                    modality,
                    str(file_labels[n]),
                    best[keep],
                    g_labels[keep] == file_labels[n],
                    calibrate.background_for(q, backgrounds[target]),
                )
            )
    return out


# ------------------------------------------------------------------------------------ methods
FEATURES = {
    "robust": lambda q: q.background.z(q.scores),  # shipped: (score - median) / MAD
    "mean-std": lambda q: q.background.z_mean_std(q.scores),
}


def feature(queries: Sequence[QueryScores], kind: str = "robust") -> list[np.ndarray]:
    return [FEATURES[kind](q) for q in queries]


def fit_logistic(
    xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], weights: Sequence[float], iters: int = 50
) -> tuple[float, float]:
    """(a, b) of P(y | x) = sigmoid(a x + b) by Newton's method on the weighted log-loss (a
    tiny ridge keeps it finite on separable data)."""
    x = np.concatenate(xs)
    y = np.concatenate(ys).astype(np.float64)
    w = np.concatenate([np.full(len(a), wt) for a, wt in zip(xs, weights, strict=True)])
    theta = np.zeros(2)
    design = np.stack([x, np.ones_like(x)], axis=1)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -60, 60)))
        grad = design.T @ (w * (p - y)) + 1e-6 * theta
        hess = (design * (w * p * (1 - p))[:, None]).T @ design + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(theta[0]), float(theta[1])


def method_values(
    queries: Sequence[QueryScores], method: str, curve: calibrate.Curve | None = None
) -> list[np.ndarray]:
    """Per query, each gallery file's value in 0-1: ``percentile``, or a z-score (``robust`` or
    ``mean-std``) through ``curve``."""
    if method == "percentile":
        return [q.background.percentile(q.scores) for q in queries]
    assert curve is not None
    return [curve(z) for z in feature(queries, method)]


def at_threshold(
    queries: Sequence[QueryScores], values: Sequence[np.ndarray], t: float
) -> dict[str, Any]:
    precisions: list[float] = []
    recalls: list[float] = []
    no_answer = no_answer_empty = 0
    tp = returned = 0
    for q, v in zip(queries, values, strict=True):
        hit = v >= t
        n_hit = int(hit.sum())
        right = int((hit & q.relevant).sum())
        tp += right
        returned += n_hit
        if q.n_relevant == 0:
            no_answer += 1
            no_answer_empty += n_hit == 0
            continue
        recalls.append(right / q.n_relevant)
        if n_hit:
            precisions.append(right / n_hit)
    p = np.array(precisions)
    answerable = sum(q.n_relevant > 0 for q in queries)
    return {
        "threshold": t,
        "queries": len(queries),
        "answerable": answerable,
        "with_hits": len(precisions),
        "precision_mean": float(p.mean()) if len(p) else None,
        "precision_std": float(p.std()) if len(p) else None,
        "precision_p10": float(np.percentile(p, 10)) if len(p) else None,
        "precision_micro": tp / returned if returned else None,
        "recall_mean": float(np.mean(recalls)) if recalls else None,
        "no_answer_queries": no_answer,
        "no_good_match": no_answer_empty / no_answer if no_answer else None,
    }


def evaluate(
    data: dict[str, list[QueryScores]], curves: dict[str, calibrate.Curve]
) -> dict[str, Any]:
    """Rows per (dataset, method, threshold). ``curves``: ``robust`` and ``mean-std`` (pooled
    fits) and ``robust:<dataset>`` (fitted on that dataset alone)."""
    rows: list[dict[str, Any]] = []
    names = list(data)
    for name in names:
        qs = data[name]
        others = [n for n in names if n != name]
        methods: dict[str, list[np.ndarray]] = {
            "percentile": method_values(qs, "percentile"),
            "z (mean/std), logistic": method_values(qs, "mean-std", curves["mean-std"]),
            "**robust z, logistic (shipped)**": method_values(qs, "robust", curves["robust"]),
        }
        if others:
            fitted = curves[f"robust:{others[0]}"]
            methods[f"robust z, fitted on {others[0]} only"] = method_values(qs, "robust", fitted)
        for method, values in methods.items():
            for t in THRESHOLDS:
                rows.append({"dataset": name, "method": method, **at_threshold(qs, values, t)})
    return {"rows": rows}


def fit_curves(data: dict[str, list[QueryScores]]) -> dict[str, calibrate.Curve]:
    """Pooled curves per feature (each dataset weighing the same), and the robust one fitted on
    each dataset alone (``robust:<name>``)."""
    curves: dict[str, calibrate.Curve] = {}
    for kind in FEATURES:
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        ws: list[float] = []
        for name, qs in data.items():
            x = feature(qs, kind)
            y = [q.relevant for q in qs]
            total = sum(len(v) for v in x)
            if kind == "robust":
                curves[f"robust:{name}"] = calibrate.Curve(*fit_logistic(x, y, [1.0] * len(x)))
            xs.extend(x)
            ys.extend(y)
            ws.extend([1.0 / total] * len(x))
        curves[kind] = calibrate.Curve(*fit_logistic(xs, ys, ws))
    return curves


# ------------------------------------------------------------------------------------ CLI check
def cli_check(index_dir: Path, queries: Sequence[QueryScores], n: int = 3) -> list[dict[str, Any]]:
    """``avsearch query --json`` on ``n`` sound queries: the confidences it reports against
    those computed here (same background, the shipped curve)."""
    out: list[dict[str, Any]] = []
    picks = [q for q in queries if q.modality == "audio" and q.path.endswith(".wav")][::97][:n]
    for q in picks:
        res = run_avsearch(
            ["--index", str(index_dir), "query", q.path, "--top", "5", "--min-confidence", "0.5"]
        )
        mine = q.background.confidence(np.sort(q.scores)[::-1][:5])
        got = [r["confidence"] for r in res["results"]]
        out.append(
            {
                "query": rel(Path(q.path)),
                "cli": got,
                "bench": [round(float(c), 4) for c in mine if c >= 0.5],
                "note": res.get("note"),
            }
        )
    return out


def cli_agrees(check: dict[str, Any], tol: float = 2e-3) -> bool:
    """The CLI re-encodes the query file: its scores match the stored vectors' up to float
    noise, so confidences agree within ``tol``."""
    cli, bench = check["cli"], check["bench"]
    if len(cli) != len(bench):
        return False
    return all(abs(a - b) <= tol for a, b in zip(cli, bench, strict=True))


# ------------------------------------------------------------------------------------ report
def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render(result: dict[str, Any]) -> str:
    a, b = result["curve"]["robust"]
    lines = [
        "## Confidence (`bench/confidence.py`)",
        "",
        f"{result['date']}, {result['machine']}; model `{result['model']}`. Every indexed "
        "file queries the other modality (one hit per file, its own file left out); a hit is "
        "right when its label matches. Background: "
        f"{calibrate.BACKGROUND_SIZE} seeded target segments per query "
        "(`avsearch/calibrate.py`). Precision is per query (over queries with at least one hit "
        "above the threshold): its mean, standard deviation and 10th percentile across "
        "queries; recall is the mean over queries that have a right answer; *no good match* is "
        "the share of queries without any right answer that return nothing.",
        "",
        "| data | queries (no right answer) | method | threshold | queries with hits | "
        "precision mean | std | p10 | recall | no good match |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['dataset']} | {r['queries']} ({r['no_answer_queries']}) | {r['method']} | "
            f"{r['threshold']} | {r['with_hits']} | {_f(r['precision_mean'])} | "
            f"{_f(r['precision_std'])} | {_f(r['precision_p10'])} | {_f(r['recall_mean'])} | "
            f"{_f(r['no_good_match'], 2)} |"
        )
    lines += [
        "",
        f"Shipped curve (pooled fit): confidence = 1 / (1 + exp(-({a:.3f} z + {b:.3f}))); "
        + "; ".join(
            f"fitted on {k.removeprefix('robust:')} alone: a = {c[0]:.3f}, b = {c[1]:.3f}"
            for k, c in result["curve"].items()
            if k.startswith("robust:")
        )
        + ".",
        "",
        result["verdict"],
    ]
    if result.get("seen"):
        lines += [
            "",
            "Caveat: the model's own training data include "
            + ", ".join(f"`{p}`" for p in result["seen"])
            + " (its config.yaml, `training.data.paths`), so on those queries it answers from "
            "what it was fitted on; the AV-Digits test split is held out (the model saw the "
            "train split). The curve is the model's: a retrained model needs this script run "
            "again and its `CURVE_A`/`CURVE_B` copied into `avsearch/calibrate.py`.",
        ]
    if result.get("cli_check"):
        ok = all(cli_agrees(c) for c in result["cli_check"])
        lines += [
            "",
            f"CLI check: `avsearch query --json --min-confidence 0.5` on "
            f"{len(result['cli_check'])} queries reports "
            + ("the same confidences as computed here." if ok else "OTHER confidences (bug)."),
        ]
    return "\n".join(lines)


def verdict(rows: list[dict[str, Any]]) -> str:
    def get(ds: str, method: str, t: float, key: str) -> float | None:
        for r in rows:
            if (r["dataset"], r["method"], r["threshold"]) == (ds, method, t):
                return r[key]  # type: ignore[no-any-return]
        return None

    datasets = sorted({r["dataset"] for r in rows})
    parts = []
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if "only" not in m]
    for method in methods:
        gaps = []
        for t in THRESHOLDS:
            ps = [get(d, method, t, "precision_mean") for d in datasets]
            if all(p is not None for p in ps):
                gaps.append(max(ps) - min(ps))  # type: ignore[type-var,operator]
        stds = [get(d, method, t, "precision_std") for d in datasets for t in THRESHOLDS]
        stds = [s for s in stds if s is not None]
        parts.append(
            f"{method}: mean precision differs between the datasets by "
            f"{', '.join(f'{g:.2f}' for g in gaps)} at {', '.join(map(str, THRESHOLDS))}; "
            f"mean per-query standard deviation {np.mean(stds):.2f}"
        )
    shipped = next(m for m in methods if "shipped" in m)
    reading = []
    for d in datasets:
        t = THRESHOLDS[-1]
        row = next(
            r for r in rows if (r["dataset"], r["method"], r["threshold"]) == (d, shipped, t)
        )
        ngm = row["no_good_match"]
        reading.append(
            f"{d}: {row['with_hits']} of {row['queries']} queries return hits at {t}, with "
            f"precision {_f(row['precision_mean'], 2)} and recall {_f(row['recall_mean'], 2)}"
            + (
                ""
                if ngm is None
                else f"; {ngm:.0%} of the queries without a right answer say no good match"
            )
        )
    return "Verdict: " + "; ".join(parts) + ". Shipped: the robust z. " + "; ".join(reading) + "."


def built_with_other_model(index_dir: Path, model: str = "default") -> bool:
    """True when ``index_dir`` holds an index of another model than ``model`` as it is now (the
    shipped model was retrained): it must be rebuilt, and the curve fitted anew."""
    from avsearch.encoders.model import AVModel

    if not (index_dir / "manifest.sqlite").is_file():
        return False
    with IndexStore.open_existing(index_dir) as store:
        stamp = store.model_stamp()
    return stamp is None or stamp.fingerprint != AVModel.load(model, lazy=True).fingerprint


def training_overlap(model: str, data_paths: list[Path]) -> list[str]:
    """Which of ``data_paths`` the model's config.yaml lists under ``training.data.paths``."""
    import yaml

    from avsearch.encoders.model_dir import resolve_model_dir

    config = yaml.safe_load((resolve_model_dir(model) / "config.yaml").read_text())
    listed = ((config.get("training") or {}).get("data") or {}).get("paths") or []
    seen = {(REPO / p).resolve() for p in listed}
    return [rel(p) for p in data_paths if p.resolve() in seen]


def natural_paths(data: Path) -> list[Path]:
    natural = data / "natural"
    farm = data / "farm"
    return [natural, farm]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT / "confidence")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--no-cli-check", action="store_true")
    args = ap.parse_args(argv)
    data = shared_data()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    avd = OUT / "avdigits"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "avdigits.py"),
            "--splits",
            "test",
            "--out",
            str(avd),
        ],
        check=True,
    )
    sets = {
        "AV-Digits test": (out / "avdigits-test", [avd / "test"], None),
        "natural": (
            out / "natural",
            natural_paths(data),
            read_labels_csv(data / "natural" / "index.csv"),
        ),
    }
    queries: dict[str, list[QueryScores]] = {}
    model = ""
    for name, (index_dir, paths, labels) in sets.items():
        rebuild = ["--rebuild"] if built_with_other_model(index_dir) else []
        summary = run_avsearch(
            ["--index", str(index_dir), "embed", *map(str, paths), *rebuild], quiet=True
        )
        model = summary["model"]
        queries[name] = load_queries(name, index_dir, labels)
        print(f"{name}: {len(queries[name])} queries", file=sys.stderr)
    curves = fit_curves(queries)
    result: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": machine_line(),
        "model": model,
        "curve": {k: [round(c.a, 4), round(c.b, 4)] for k, c in curves.items()},
        **evaluate(queries, curves),
    }
    result["verdict"] = verdict(result["rows"])
    result["seen"] = training_overlap("default", [p for _, ps, _ in sets.values() for p in ps])
    shipped = calibrate.Curve()
    print(
        f"pooled curve: CURVE_A = {curves['robust'].a:.4f}, CURVE_B = {curves['robust'].b:.4f} "
        f"(shipped: {shipped.a}, {shipped.b})",
        file=sys.stderr,
    )
    if not args.no_cli_check:
        result["cli_check"] = cli_check(out / "avdigits-test", queries["AV-Digits test"])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "confidence.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    text = render(result)
    print(text if args.no_docs else f"wrote {write_section('confidence', text)}")


if __name__ == "__main__":
    main()
