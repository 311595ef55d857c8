"""AV-Digits retrieval through the real product path: media folders → `embed` → `eval`.

    python bench/retrieval.py [--model default] [--seed 0] [--chance-seeds 5]

Builds the AV-Digits test folders with bench/avdigits.py (FSDD takes 0–4 as wav files, the
1,000-image MNIST test gallery as PNGs, and one H.264 + AAC video per clip), indexes (a) the
audio and image folders and (b) the video folder into temporary indexes with ``run_embed``,
evaluates each with ``evaluate_index`` (labels = class folder names), measures chance level
(the same labels on random embeddings, mean over seeds), and writes its section of
docs/benchmarks.md plus a per-class AP / precision-recall plot in docs/img/avdigits_eval.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import OUT, REPO, machine_line, shared_data, write_section
from avdigits import build_avdigits

from avsearch.config import EmbedConfig
from avsearch.encoders.model import AVModel
from avsearch.encoders.model_dir import resolve_model_dir
from avsearch.evaluate import RetrievalReport, evaluate_cross_modal
from avsearch.evaluate_index import IndexEvaluation, LabelledEmbeddings, evaluate_index
from avsearch.pipeline import EmbedSummary, run_embed
from avsearch.plot import plot_report
from avsearch.store.index import IndexStore

PLOT = REPO / "docs" / "img" / "avdigits_eval.png"
TRAIN_DEFAULT = OUT / "train_default"  # results.json per model of bench/train_default.py


def measured_by_cli(name: str, heads_sha256: str | None = None) -> dict | None:
    """What ``bench/train_default.py --model NAME`` measured through the CLI, when it measured
    these heads (``heads_sha256``; any when None)."""
    path = TRAIN_DEFAULT / name / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if heads_sha256 is not None and results["reproduction"]["heads_sha256"] != heads_sha256:
        return None
    return dict(results)


@dataclass(frozen=True)
class Run:
    name: str
    evaluation: IndexEvaluation
    summary: EmbedSummary
    seconds: float
    load: tuple[float, float]  # 1-minute load average before and after the embed (shared box)
    chance: RetrievalReport  # means over seeds
    chance_sd: float  # standard deviation of the mean MAP over seeds


def chance_level(data: LabelledEmbeddings, dim: int, seeds: int) -> tuple[RetrievalReport, float]:
    """Metrics of random Gaussian embeddings with the same labels, averaged over ``seeds``."""
    reports = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((len(data.audio_labels), dim))
        v = rng.standard_normal((len(data.visual_labels), dim))
        reports.append(evaluate_cross_modal(a, data.audio_labels, v, data.visual_labels))

    def mean(get: Callable[[RetrievalReport], float]) -> float:
        return float(np.mean([get(r) for r in reports]))

    first = reports[0]
    avg = RetrievalReport(
        a2v_map=mean(lambda r: r.a2v_map),
        v2a_map=mean(lambda r: r.v2a_map),
        map=mean(lambda r: r.map),
        a2v_map_at_r=mean(lambda r: r.a2v_map_at_r),
        v2a_map_at_r=mean(lambda r: r.v2a_map_at_r),
        recall_at={
            d: {k: mean(lambda r, d=d, k=k: r.recall_at[d][k]) for k in first.recall_at[d]}
            for d in ("a2v", "v2a")
        },
        per_class={},
        n_audio=first.n_audio,
        n_visual=first.n_visual,
        n_skipped_queries=first.n_skipped_queries,
    )
    return avg, float(np.std([r.map for r in reports]))


def run_setting(
    name: str, roots: list[Path], index: Path, model: AVModel, chance_seeds: int
) -> Run:
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    summary = run_embed(roots, index, EmbedConfig(), model=model)
    seconds = time.perf_counter() - t0
    load = (load_before, os.getloadavg()[0])
    for failure in summary.failures:
        print(f"  skipped {failure.path}: {failure.reason}")
    evaluation = evaluate_index(index)
    chance, sd = chance_level(evaluation.data, model.dim, chance_seeds)
    r = evaluation.report
    print(
        f"{name}: MAP a2v {r.a2v_map:.4f} v2a {r.v2a_map:.4f} mean {r.map:.4f} "
        f"(chance {chance.map:.4f}); {r.n_audio} audio, {r.n_visual} visual; embed {seconds:.1f} s"
    )
    return Run(name, evaluation, summary, seconds, load, chance, sd)


def vectors_by_path(index: Path, modality: str, root: Path) -> dict[str, np.ndarray]:
    """``{path relative to root: vector}`` of an index whose files have one segment each."""
    with IndexStore.open_existing(index) as store:
        ids, vecs = store.manifest.vectors(modality, store.dim)
        rows = store.manifest.segments_by_ids(ids.tolist())
    return {
        Path(rows[i].path).relative_to(root).as_posix(): v
        for i, v in zip(ids.tolist(), vecs, strict=True)
    }


def codec_check(media_index: Path, video_index: Path, root: Path) -> str:
    """Where the videos lose: the same content as a plain file and inside a video."""
    wav, png = (vectors_by_path(media_index, m, root) for m in ("audio", "visual"))
    aac, frame = (vectors_by_path(video_index, m, root) for m in ("audio", "visual"))
    pairs = json.loads((root / "avdigits.json").read_text(encoding="utf-8"))["test"]["pairs"]

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    def wav_of(video: str) -> str:
        return video.replace("/videos/", "/audio/", 1).removesuffix(".mp4") + ".wav"

    ca = np.array([cos(v, wav[wav_of(k)]) for k, v in aac.items()])
    cv = np.array([cos(v, png[pairs[k]]) for k, v in frame.items()])

    def report(audio: dict[str, np.ndarray], visual: dict[str, np.ndarray]) -> RetrievalReport:
        def label(k: str) -> str:
            return Path(k).parent.name

        a, v = sorted(audio), sorted(visual)
        return evaluate_cross_modal(
            np.stack([audio[k] for k in a]), np.array([label(k) for k in a]),
            np.stack([visual[k] for k in v]), np.array([label(k) for k in v]),
        )  # fmt: skip

    rows = [
        ("wav clips → PNG images (the first row's index)", report(wav, png)),
        ("AAC audio of the videos → PNG images", report(aac, png)),
        ("wav clips → video frames", report(wav, frame)),
        ("AAC audio → video frames (the videos row's index)", report(aac, frame)),
    ]
    table = "\n".join(
        f"| {name} | {r.a2v_map:.4f} | {r.v2a_map:.4f} | {r.map:.4f} |" for name, r in rows
    )
    return f"""Where the videos lose (same index vectors, mixed): the cosine between a clip's
embedding from its wav and from its video's AAC track is {ca.mean():.3f} on average (min
{ca.min():.3f}); between an image's embedding from its PNG and from its video frame
(112×112, H.264) it is {cv.mean():.3f} (min {cv.min():.3f}).

Ranked by the heads' vectors alone (the rows above fuse the bridge when the model has one):

| audio → visual gallery | MAP a→v | MAP v→a | MAP mean |
|---|---:|---:|---:|
{table}"""


def _row(name: str, r: RetrievalReport, extra: list[str], *, bold: bool = False) -> str:
    cells = [
        name,
        f"{r.a2v_map:.4f}",
        f"{r.v2a_map:.4f}",
        f"**{r.map:.4f}**" if bold else f"{r.map:.4f}",
        f"{r.a2v_map_at_r:.4f} / {r.v2a_map_at_r:.4f}",
    ]
    cells += [" · ".join(f"{r.recall_at[d][k]:.3f}" for k in (1, 5, 10)) for d in ("a2v", "v2a")]
    return "| " + " | ".join(cells + extra) + " |"


def markdown(
    runs: list[Run],
    model: AVModel,
    build_seconds: float,
    chance_seeds: int,
    codec: str,
    heads_sha256: str | None = None,
) -> str:
    head = (
        "| setting | MAP a→v | MAP v→a | MAP mean | MAP@R a→v / v→a | R@1·5·10 a→v "
        "| R@1·5·10 v→a | n_audio / n_visual | embed time |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = []
    for run in runs:
        r = run.evaluation.report
        load = f"load {run.load[0]:.1f} → {run.load[1]:.1f}"
        when = f"{run.seconds:.0f} s ({run.summary.new:,} files, {load})"
        extra = [f"{r.n_audio} / {r.n_visual}", when]
        rows.append(_row(run.name, r, extra, bold=True))
    for run in runs:
        c = run.chance
        name = f"chance, {run.name} (sd of mean MAP {run.chance_sd:.4f})"
        rows.append(_row(name, c, [f"{c.n_audio} / {c.n_visual}", "–"]))
    failures = sum(run.summary.failed for run in runs)
    workers = EmbedConfig().workers
    cli = measured_by_cli(model.name, heads_sha256) if heads_sha256 else None
    feature_note = ""
    if cli is not None:
        cli_map = cli["avdigits"]["map"]
        same = abs(runs[0].evaluation.report.map - cli_map) < 5e-4
        feature_note = (
            "\n\nThrough the CLI (`avsearch embed` of the same folders, `avsearch eval --labels "
            "bench/out/avdigits/test/labels.csv`), `bench/train_default.py` measured MAP "
            f"{cli_map:.4f} with these heads; the audio files + images row "
            f"{'reproduces it' if same else 'differs from it'} through the library "
            "(`run_embed`, `evaluate_index`, labels = folder names). The videos row is a "
            "different gallery (250 frames paired with the clips instead of 1,000 images) seen "
            "through an encoder (112×112 H.264 frames, AAC audio), so it is not expected to match."
        )
    unseen = 'the "default_loso" section measures it'
    precision = "" if model.precision == "fp32" else f" --precision {model.precision}"
    loso = {n: measured_by_cli(n) for n in ("default", "speech")}
    if all(r is not None and r.get("loso") for r in loso.values()):
        unseen = (
            "with each speaker left out of training in turn, leave-one-speaker-out MAP is "
            f"{loso['default']['loso']['map_mean']:.3f} for `default` (aisfx) and "
            f"{loso['speech']['loso']['map_mean']:.3f} for `speech` (aisfx-words), the "
            '"default_loso" section'
        )
    return f"""## AV-Digits retrieval (media → `embed` → `eval`)

`python bench/retrieval.py{precision}` — {dt.date.today().isoformat()}, model `{model.name}`
(fingerprint `{model.fingerprint[:12]}`), {machine_line()}.

The AV-Digits test split built as media folders by `bench/avdigits.py` (seeded,
{build_seconds:.1f} s to build or check): 250 spoken digits (FSDD takes 0–4, 5 speakers, wav),
the class-balanced 1,000-image MNIST test gallery (28×28 PNG), and 250 short videos (H.264
112×112 + AAC) in which a handwritten test digit is shown while a spoken test digit of the same
class plays. Each setting is indexed from scratch with `run_embed` (default options, {workers}
decode threads) and evaluated with `avsearch eval` semantics: labels = class folder names,
every segment of one modality ranked against all segments of the other, relevance = same
digit. Every clip is shorter than one 2.32 s window, so each wav, image and video gives one
segment per modality. Files that failed to decode: {failures}. Embed times are wall time on a
2-core machine shared with other jobs, with the 1-minute load average before and after each
embed (the embed itself adds to it); under contention they grow several-fold (up to ~10× in
our runs), so use `bench/embed_throughput.py` for speed.

{head}
{chr(10).join(rows)}

Chance level: the same labels on random {model.dim}-d Gaussian embeddings, mean of
{chance_seeds} seeds. With 10 balanced classes a random ranking's AP is a little above the
share of relevant items (0.10), and the more so the fewer relevant items a query has (R = 100
for audio → 1,000 images, R = 25 for the other directions), so chance is measured rather than
assumed.{feature_note}

{codec}

![per-class AP and precision-recall, audio files + images](img/{PLOT.name})

**Published reference numbers (not the same task).** The papers of this research line report
average MAP on precomputed features: AVE ≈ 0.37–0.55 (15 event classes) and VEGAS ≈
0.89–0.93 (10 classes), e.g. DCLMA 0.508 / 0.932. They are not comparable with the table
above: they rank fixed VGGish/Inception feature vectors of in-the-wild YouTube videos
(events of many looks and sounds, noisy labels), while AV-Digits ranks media files decoded
by avsearch, with 10 clean digit classes and digits read by the 5 speakers whose other takes
(FSDD 5–49) the model was trained on; the images are other MNIST digits than the training
ones. AV-Digits checks the whole product path and the heads; it is much easier than AVE and
says nothing about unseen speakers: {unseen}.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="model name or directory")
    ap.add_argument("--out", type=Path, default=OUT / "avdigits", help="AV-Digits folders")
    ap.add_argument("--seed", type=int, default=0, help="seed of the AV-Digits build")
    ap.add_argument("--chance-seeds", type=int, default=5)
    ap.add_argument("--no-docs", action="store_true", help="print only; leave docs/ alone")
    ap.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="embed --precision [fp32]"
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    paths = build_avdigits(shared_data(), args.out, ["test"], args.seed)
    build_seconds = time.perf_counter() - t0
    heads = resolve_model_dir(args.model) / "heads.safetensors"
    sha = hashlib.sha256(heads.read_bytes()).hexdigest()  # the heads measured
    model = AVModel.load(args.model, precision=args.precision)
    _ = model.audio_backbone, model.visual_backbone  # load the weights outside the timings
    settings = [
        ("audio files + images", [paths["test/audio"], paths["test/images"]]),
        ("videos", [paths["test/videos"]]),
    ]
    runs = []
    with tempfile.TemporaryDirectory(prefix="avsearch-retrieval-") as tmp:
        for i, (name, roots) in enumerate(settings):
            runs.append(run_setting(name, roots, Path(tmp) / f"index{i}", model, args.chance_seeds))
        codec = codec_check(Path(tmp) / "index0", Path(tmp) / "index1", args.out.resolve())
    text = markdown(runs, model, build_seconds, args.chance_seeds, codec, sha)
    if args.no_docs:
        print(text)
        return
    plot_report(
        runs[0].evaluation,
        PLOT,
        title=f"AV-Digits test, audio files + images, model {model.name}: "
        f"MAP {runs[0].evaluation.report.map:.3f}",
    )
    print(f"wrote {write_section('retrieval', text)} and {PLOT}")


if __name__ == "__main__":
    main()
