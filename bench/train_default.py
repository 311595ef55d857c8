"""Measure a shipped model from the command that made it: reproduction, AV-Digits, farm, LOSO.

A thin driver of the product. It trains nothing with a recipe of its own: every model it
trains comes from the command the shipped model recorded (``training.command`` in
``models/<name>/config.yaml``, run from the repository root) with ``--out`` pointing into its
work folder, and every figure comes from ``avsearch embed`` + ``avsearch eval``.

    python bench/train_default.py --model default          # (a) + (b) + (c)
    python bench/train_default.py --model speech --loso    # ... + (d)
    python bench/train_default.py --model default --quick  # smoke run, 2 epochs, no docs

(a) **reproduction**: the recorded command again, ``--out`` in the work folder; its
    ``heads.safetensors`` must be byte-identical to the shipped one;
(b) **AV-Digits test**: ``avsearch embed bench/out/avdigits/test/{audio,images} --model
    models/<name>`` then ``avsearch eval --labels bench/out/avdigits/test/labels.csv`` (FSDD
    takes 0–4 against the class-balanced 1,000-image MNIST test gallery);
(c) **farm**: every window of the 9 farm sounds against the 9 farm photos, R@1 and MAP
    (labels from the file stems, ``chickens`` → ``chicken``; the farm is in both models'
    training data, so this checks the product path, not generalisation);
(d) ``--loso`` **leave-one-speaker-out**: for each of the 5 FSDD speakers, the recorded command
    with its AV-Digits labels CSV replaced by a copy without that speaker's clips (written into
    the work folder; the clips stay in the folder as unlabeled loose sounds, which are never
    paired), then all 500 of that speaker's clips (takes 5–49 from the train split, 0–4 from
    the test split) are ranked against the 1,000-image test gallery and back.

AV-Digits must be built (``python bench/avdigits.py --splits test,train``). Backbone features
come from a feature cache: the work folder's ``index/features.sqlite``, seeded once (an SQLite
backup) from ``--cache`` (by default the cache of the audio tower's training files:
``bench/out/natural-aisfx/cache`` for aisfx, ``bench/out/natural/cache`` for aisfx-words);
``avsearch train --index`` and ``avsearch embed`` (through an ``avsearch.yaml`` with
``embed: {feature_cache: ...}``) both read it, so only files it lacks are decoded.

Each run writes ``bench/out/train_default/<model>/results.json``; the "default_loso" section
of docs/benchmarks.md shows every model with such a file side by side. ``--quick`` runs the
command with ``--epochs 2`` (no byte check), holds out 2 speakers, works under
``bench/out/train_default-quick`` and writes no docs. Nothing is written into ``models/``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import os
import shlex
import shutil
import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avdigits_data
import yaml
from _common import (
    OUT,
    REPO,
    machine_line,
    rel,
    run_avsearch,
    shared_data,
    write_labels_csv,
    write_section,
)
from avdigits import DEFAULT_OUT as AVDIGITS

from avsearch.encoders.registry import backbone_name

FARM_ALIASES = {"chickens": "chicken"}
SECTION = "default_loso"
MODELS = ("default", "speech")
SEED_CACHES = {  # where the training files' backbone features already are, per audio tower
    "aisfx": OUT / "natural-aisfx" / "cache",
    "aisfx-words": OUT / "natural" / "cache",
    "aisfx+soundnet": OUT / "natural-as" / "cache",
}
TARGETS = {"default": ("avdigits_test_map", 0.95), "speech": ("loso_map_mean", 0.90)}


@dataclass(frozen=True)
class Clip:
    path: Path
    digit: str
    speaker: str
    take: int


def clips_under(folder: Path) -> list[Clip]:
    out = []
    for path in sorted(folder.rglob("*.wav")):
        m = avdigits_data.FSDD_NAME.match(path.name)
        if m:
            out.append(Clip(path, path.parent.name, m.group(2), int(m.group(3))))
    return out


def images_under(folder: Path) -> dict[Path, str]:
    return {p: p.parent.name for p in sorted(folder.rglob("*.png"))}


def first_per_label(files: dict[Path, str], n: int) -> set[Path]:
    by_label: dict[str, list[Path]] = {}
    for path, label in sorted(files.items()):
        by_label.setdefault(label, []).append(path)
    return {p for paths in by_label.values() for p in paths[:n]}


def clip_labels(clips: list[Clip]) -> dict[Path, str]:
    return {c.path: c.digit for c in clips}


def farm_labels(farm: Path) -> dict[Path, str]:
    files = sorted((farm / "sounds").glob("*.ogg")) + sorted((farm / "images").glob("*.webp"))
    return {p: FARM_ALIASES.get(p.stem, p.stem) for p in files}


# ------------------------------------------------------------------------ the recorded command
def recorded_command(model_dir: Path) -> list[str]:
    """``training.command`` of a model's config.yaml, as arguments after ``avsearch``."""
    config = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    command = (config.get("training") or {}).get("command")
    if not command:
        raise SystemExit(f"{rel(model_dir)}/config.yaml records no training.command")
    args = shlex.split(command)
    if args[:2] != ["avsearch", "train"]:
        raise SystemExit(f"{rel(model_dir)}: the recorded command is not `avsearch train`")
    return args[1:]


def substitute(args: list[str], option: str, old: Path | None, new: str) -> list[str]:
    """``args`` with the value of ``option`` replaced by ``new``: the one occurrence whose value
    resolves (from the repository root) to ``old``, or the only one when ``old`` is None."""
    hits = [
        i
        for i, a in enumerate(args[:-1])
        if a == option and (old is None or (REPO / args[i + 1]).resolve() == old.resolve())
    ]
    if len(hits) != 1:
        what = option if old is None else f"{option} {rel(old)}"
        raise SystemExit(f"the recorded command has {len(hits)} `{what}`, expected one")
    out = list(args)
    out[hits[0] + 1] = new
    return out


def with_option(args: list[str], option: str, value: str) -> list[str]:
    """``args`` with ``option`` set to ``value`` (replaced, or appended)."""
    if option in args:
        return substitute(args, option, None, value)
    return [*args, option, value]


def labels_without_speaker(src: Path, speaker: str, dst: Path) -> Path:
    """A copy of the ``path,label`` CSV ``src`` without the FSDD clips of ``speaker``, at ``dst``
    (paths rewritten relative to ``dst``'s folder, as ``--labels`` reads them)."""
    base = src.resolve().parent
    labels: dict[Path, str] = {}
    with src.open(encoding="utf-8", newline="") as fh:
        for row in csv.reader(fh):
            if not row or row == ["path", "label"]:
                continue
            path, label = row[0], row[1]
            m = avdigits_data.FSDD_NAME.match(Path(path).name)
            if m and m.group(2) == speaker:
                continue
            labels[base / path] = label
    return write_labels_csv(dst, labels)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ the product
def seed_cache(index: Path, source: Path | None) -> None:
    """``index/features.sqlite`` as a copy of ``source/features.sqlite`` (once)."""
    target = index / "features.sqlite"
    if target.exists() or source is None or not (source / "features.sqlite").is_file():
        return
    index.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name("features.sqlite.part")
    tmp.unlink(missing_ok=True)
    with sqlite3.connect(source / "features.sqlite") as src, sqlite3.connect(tmp) as dst:
        src.backup(dst)
    os.replace(tmp, target)
    print(f"feature cache: copied {rel(source / 'features.sqlite')} to {rel(target)}", flush=True)


def train(args: list[str], out: Path, index: Path, log: Path) -> float:
    """``avsearch --index INDEX train ... --out OUT``; returns the wall time."""
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run_avsearch(["--index", rel(index), *with_option(args, "--out", rel(out))], log=log)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)  # resumable state, not the model
    return time.perf_counter() - t0


def measure(
    model: Path,
    roots: list[Path],
    labels: dict[Path, str] | Path,
    work: Path,
    cache: Path | None = None,
) -> dict:
    """``avsearch embed ROOTS --model MODEL`` into a fresh index, then ``avsearch eval --labels
    LABELS`` (a CSV, or ``{path: label}`` written to one). Backbone features come from the cache
    ``cache`` (default: that of the training index ``work/index``) and new ones go into it."""
    index = work / "eval-index"
    shutil.rmtree(index, ignore_errors=True)
    config = work / "avsearch.yaml"
    cache = (cache or work / "index" / "features.sqlite").resolve()
    config.write_text(
        f"embed:\n  feature_cache: {cache}\n  precision: {PRECISION}\n", encoding="utf-8"
    )
    base = ["--index", rel(index), "--config", rel(config)]
    run_avsearch([*base, "embed", *map(rel, roots), "--model", rel(model)], quiet=True)
    if not isinstance(labels, Path):
        labels = write_labels_csv(work / "eval-labels.csv", labels)
    return run_avsearch([*base, "eval", "--labels", rel(labels)], quiet=True)


PRECISION = "fp32"  # `embed --precision` of the evaluated indexes (main sets it from --precision)


# ------------------------------------------------------------------------------ the measures
def snapshot(model_dir: Path, dst: Path) -> Path:
    """A copy of the shipped model to measure: the one in models/ may be replaced meanwhile."""
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for path in [model_dir / "config.yaml", *sorted(model_dir.glob("*.safetensors"))]:
        shutil.copy2(path, dst / path.name)  # heads, and the native spaces when it has them
    return dst


def reproduce(model_dir: Path, args: list[str], work: Path, quick: bool) -> dict[str, Any]:
    out = work / "reproduction"
    seconds = train(args, out, work / "index", work / "train.log")
    shipped, again = sha256(model_dir / "heads.safetensors"), sha256(out / "heads.safetensors")
    if quick:
        verdict = "not checked (--quick: --epochs 2)"
    else:
        verdict = "byte-identical" if shipped == again else "DIFFERS"
    print(f"(a) reproduction: {verdict} ({seconds:.0f} s)", flush=True)
    return {
        "heads_sha256": shipped,
        "reproduced_sha256": again,
        "verdict": verdict,
        "identical": shipped == again,
        "seconds": round(seconds, 1),
    }


def avdigits_test(model_dir: Path, work: Path) -> dict[str, Any]:
    test = AVDIGITS / "test"
    t0 = time.perf_counter()
    r = measure(model_dir, [test / "audio", test / "images"], test / "labels.csv", work)
    out = {k: r[k] for k in ("a2v_map", "v2a_map", "map", "n_audio", "n_visual")}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(
        f"(b) AV-Digits test: MAP a2v {r['a2v_map']:.4f} v2a {r['v2a_map']:.4f} "
        f"mean {r['map']:.4f} ({r['n_audio']} audio, {r['n_visual']} visual)",
        flush=True,
    )
    return out


def farm(model_dir: Path, work: Path, farm_dir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    r = measure(model_dir, [farm_dir], farm_labels(farm_dir), work)
    out = {k: r[k] for k in ("a2v_map", "v2a_map", "map", "n_audio", "n_visual")}
    out["r1_a2v"] = r["recall_at"]["a2v"]["1"]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(
        f"(c) farm: {r['n_audio']} sound windows vs {r['n_visual']} photos: R@1 "
        f"{out['r1_a2v']:.3f}, MAP a2v {r['a2v_map']:.4f} (mean {r['map']:.4f})",
        flush=True,
    )
    return out


def loso(args: list[str], work: Path, speakers: tuple[str, ...]) -> dict[str, Any]:
    """The recorded command without each speaker's labels; that speaker's 500 clips ranked."""
    train_csv = AVDIGITS / "train" / "labels.csv"
    pool = clips_under(AVDIGITS / "train" / "audio") + clips_under(AVDIGITS / "test" / "audio")
    gallery = images_under(AVDIGITS / "test" / "images")
    per: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    for speaker in speakers:
        folder = work / "loso" / speaker
        folder.mkdir(parents=True, exist_ok=True)
        csv_path = labels_without_speaker(train_csv, speaker, folder / "labels-train.csv")
        fold = substitute(args, "--labels", train_csv, rel(csv_path))
        secs = train(fold, folder / "model", work / "index", work / "train.log")
        held = [c for c in pool if c.speaker == speaker]
        files = [c.path for c in held]
        roots = [*files, AVDIGITS / "test" / "images"]
        r = measure(folder / "model", roots, clip_labels(held) | gallery, work)
        per[speaker] = {k: r[k] for k in ("map", "a2v_map", "v2a_map", "n_audio", "n_visual")}
        per[speaker]["train_seconds"] = round(secs, 1)
        print(
            f"(d) held out {speaker}: {len(held)} clips, MAP {r['map']:.4f} "
            f"(a2v {r['a2v_map']:.4f}, v2a {r['v2a_map']:.4f})",
            flush=True,
        )
    maps = [v["map"] for v in per.values()]
    return {
        "per_speaker": per,
        "map_mean": statistics.fmean(maps),
        "map_std": statistics.pstdev(maps),
        "seconds": round(time.perf_counter() - t0, 1),
    }


# ------------------------------------------------------------------------------ the docs
def _f(value: Any, fmt: str = ".3f") -> str:
    return "–" if value is None else format(value, fmt)


def _get(results: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(results, dict) or key not in results:
            return None
        results = results[key]
    return results


def cells(r: dict[str, Any]) -> dict[str, str]:
    """One model's column of the table, by row name."""
    d, f, rep = r["avdigits"], r["farm"], r["reproduction"]
    loso = r.get("loso")
    out = {
        "audio tower": f"`{r['audio_backbone']}`",
        "AV-Digits test MAP a→v / v→a / **mean**": (
            f"{d['a2v_map']:.3f} / {d['v2a_map']:.3f} / **{d['map']:.3f}**"
        ),
        "farm: sound windows → the 9 photos, R@1 / MAP": (
            f"{f['r1_a2v']:.3f} / {f['a2v_map']:.3f} ({f['n_audio']} windows)"
        ),
        "AV-Digits LOSO MAP, mean ± std of the speakers": (
            "not measured" if loso is None else f"{loso['map_mean']:.3f} ± {loso['map_std']:.3f}"
        ),
    }
    for s in avdigits_data.SPEAKERS:
        out[f"LOSO, {s} held out"] = _f(_get(r, "loso", "per_speaker", s, "map"))
    out["reproduction: `heads.safetensors` of the recorded command"] = (
        f"{rep['verdict']} (sha256 `{rep['heads_sha256'][:12]}`)"
    )
    out["wall s: reproduction / test / farm / LOSO / total"] = (
        f"{rep['seconds']:.0f} / {d['seconds']:.0f} / {f['seconds']:.0f} / "
        f"{_f(_get(r, 'loso', 'seconds'), '.0f')} / {r['seconds']:.0f}"
    )
    out["measured on"] = r["date"]
    return out


def section(results: dict[str, dict[str, Any]]) -> str:
    names = [m for m in MODELS if m in results] + sorted(set(results) - set(MODELS))
    columns = [cells(results[n]) for n in names]
    rows = [
        "| | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    rows += [f"| {k} | " + " | ".join(c.get(k, "–") for c in columns) + " |" for k in columns[0]]
    targets = []
    for name, (key, floor) in TARGETS.items():
        if name not in results:
            targets.append(f"`{name}`: not measured")
            continue
        r = results[name]
        value = r["avdigits"]["map"] if key == "avdigits_test_map" else _get(r, "loso", "map_mean")
        what = "AV-Digits test MAP" if key == "avdigits_test_map" else "LOSO mean MAP"
        met = "not measured" if value is None else ("met" if value >= floor else "**NOT met**")
        targets.append(f"`{name}` {what} ≥ {floor:.2f}: {_f(value)}, {met}")
    differs = (
        " A reproduction that DIFFERS was made on another CPU than the shipped heads: the "
        "same command gives byte-identical heads on one machine (tests/test_cli_train.py), "
        "and on another machine the same best epoch and validation MAP, heads equal to about "
        "1e-4."
        if any(not results[n]["reproduction"].get("identical", True) for n in names)
        else ""
    )
    commands = "\n".join(f"# {n}\n" + " \\\n    ".join(_wrap(results[n]["command"])) for n in names)
    bench = "\n".join(
        f"python bench/train_default.py --model {n}{' --loso' if results[n].get('loso') else ''}"
        for n in names
    )
    return f"""## The shipped models from their recorded commands (`bench/train_default.py`)

{machine_line()}. Each model is measured from the command it recorded
(`training.command` in `models/<name>/config.yaml`, run from the repository root with `--out`
in the work folder and `--index` on a copy of the training files' feature cache, so no
training file is decoded again; `embed` reads and fills the same cache):

- **reproduction**: that command again; its `heads.safetensors` compared byte for byte with
  the shipped one;
- **AV-Digits test**: `avsearch embed bench/out/avdigits/test/audio bench/out/avdigits/test/images
  --model models/<name>`, `avsearch eval --labels bench/out/avdigits/test/labels.csv`: the
  250 FSDD test takes (0–4) against the class-balanced 1,000-image MNIST test gallery; the
  same 5 speakers' takes 5–49 trained the models;
- **farm**: every window of the 9 farm sounds against the 9 farm photos (labels from the file
  stems, `chickens` → `chicken`). The farm is in both models' training data, so this is a
  check of the product path, not of generalisation;
- **LOSO** (leave one speaker out): the same command with its AV-Digits labels CSV replaced
  by a copy without one FSDD speaker's clips (they stay in the folder as unlabeled sounds,
  which are never paired), then all 500 clips of that speaker (takes 0–49) ranked against
  the 1,000-image test gallery and back; MAP is the mean of both directions.

{chr(10).join(rows)}

Targets: {"; ".join(targets)}. `default` is the general-sound model: its aisfx tower pools
time away, so it reads the digit of a voice it was not trained on poorly (its LOSO row; its
cross-modal ranking also fuses the zero-shot bridge, which knows no digits);
spoken content is `speech`'s job (aisfx-words).{differs} Wall times are seconds of the last run on a
machine shared with other jobs, with the test files' features already in the work cache
(a first run also decodes the 1,250 AV-Digits test files, a few minutes here).

```bash
{bench}
```

The recorded commands:

```bash
{commands}
```
"""


def _wrap(command: str, width: int = 88) -> list[str]:
    """``command`` in lines of at most ``width`` characters (an option beside its value)."""
    words: list[str] = []
    for word in shlex.split(command):
        if words and words[-1].startswith("--") and not word.startswith("--"):
            words[-1] += " " + shlex.quote(word)
        else:
            words.append(shlex.quote(word))
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line]


def load_results(root: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(root.glob("*/results.json")):
        out[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
    return out


# ------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="shipped model name [default]")
    ap.add_argument("--loso", action="store_true", help="also leave-one-speaker-out (5 trainings)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, 2 speakers")
    ap.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="folder of a features.sqlite to seed the work cache from "
        "[the audio tower's training cache under bench/out]",
    )
    ap.add_argument("--no-write", action="store_true", help="leave docs/ alone")
    ap.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="avsearch embed --precision of every evaluated index (training reads float32 "
        "features); bf16 works under bench/out/train_default-bf16 and writes no docs [fp32]",
    )
    args = ap.parse_args()
    global PRECISION
    PRECISION = args.precision
    farm_dir = shared_data() / "farm"
    model_dir = REPO / "models" / args.model
    if not (model_dir / "heads.safetensors").is_file():
        raise SystemExit(f"no shipped model {rel(model_dir)}")
    for split in ("train", "test"):
        if not (AVDIGITS / split / "labels.csv").is_file():
            hint = "python bench/avdigits.py --splits test,train"
            raise SystemExit(f"{rel(AVDIGITS / split)} is not built: {hint}")
    root = OUT / ("train_default-quick" if args.quick else "train_default")
    if args.precision != "fp32":  # apart from the float32 runs the docs section reads
        root = root.with_name(f"{root.name}-{args.precision}")
    work = root / args.model
    work.mkdir(parents=True, exist_ok=True)
    shipped = snapshot(model_dir, work / "shipped")
    command = recorded_command(shipped)
    config = yaml.safe_load((shipped / "config.yaml").read_text(encoding="utf-8"))
    backbone = backbone_name(config["audio"]["backbone"])  # (a composite is a YAML list)
    (work / "train.log").unlink(missing_ok=True)
    seed_cache(work / "index", args.cache or SEED_CACHES.get(backbone))
    if args.quick:
        command = with_option(command, "--epochs", "2")

    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "model": args.model,
        "audio_backbone": backbone,
        "command": shlex.join(["avsearch", *command]),
        "date": dt.date.today().isoformat(),
        "precision": args.precision,
        "reproduction": reproduce(shipped, command, work, args.quick),
        "avdigits": avdigits_test(shipped, work),
        "farm": farm(shipped, work, farm_dir),
        "loso": None,
    }
    if args.loso:
        speakers = avdigits_data.SPEAKERS[:2] if args.quick else avdigits_data.SPEAKERS
        results["loso"] = loso(command, work, speakers)
        done = results["loso"]
        print(f"(d) LOSO MAP {done['map_mean']:.4f} ± {done['map_std']:.4f}")
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["machine"] = machine_line()
    if sha256(model_dir / "heads.safetensors") != results["reproduction"]["heads_sha256"]:
        raise SystemExit(f"{rel(model_dir)} was replaced during the run: measure it again")
    (work / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"wall time {results['seconds']:.0f} s; wrote {rel(work / 'results.json')}")
    if args.quick or args.no_write or args.precision != "fp32":
        print(section(load_results(root)))
        return
    print(f"wrote {write_section(SECTION, section(load_results(root)))}")


if __name__ == "__main__":
    main()
