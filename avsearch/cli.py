"""The avsearch command line: parse, call the library, print. Nothing else.

Results go to stdout (a table, or JSON with --json); progress and logs always go to stderr.
Library errors are typed (avsearch.errors) and mapped here to messages and exit codes.
"""

from __future__ import annotations

import json
import logging
import os
import sys

# numpy's BLAS on one thread in the CLI (unless the user set it; numpy is not imported yet):
# torch runs the networks on every core, and OpenBLAS's threads, spinning after each numpy
# product (the native and bridge spaces' projections), took those cores: `embed` of the default
# model (with SoundNet) ran 1.3x slower with them (docs/benchmarks.md, "Embed throughput")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# and torch's OpenMP threads sleep when they have no work instead of spinning (unless the user
# set it; torch is not imported yet): spinning between two layers took the cores `embed`'s
# decode threads needed, 3 of 13 CPU s on the fixture videos, and `embed` of the default model
# ran about 1.2x slower; `train` runs as fast either way (docs/benchmarks.md, "Embed throughput")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from avsearch import config as cfgmod
from avsearch.cli_progress import EmbedProgress, TrainProgress
from avsearch.errors import AvsearchError
from avsearch.media.paths import display_path, display_text, json_safe

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Cross-modal audio-visual search: a sound finds pictures and moments, a picture finds "
    "sounds.",
)
index_app = typer.Typer(help="Inspect, check and repair the index.", no_args_is_help=True)
app.add_typer(index_app, name="index")

stderr = Console(stderr=True, soft_wrap=True)  # never break a path in a message
EXIT_PARTIAL = 4


@dataclass
class State:
    index: Path
    json: bool
    quiet: bool
    verbose: bool
    file_config: dict[str, Any]


def _state(ctx: typer.Context) -> State:
    return ctx.ensure_object(State)  # type: ignore[no-any-return]


def _emit_json(data: Any) -> None:
    # json_safe: a non-UTF-8 file name left anywhere in data is written with \xNN escapes, so
    # the output is always valid UTF-8 (the exact bytes travel in the *_b64 fields)
    sys.stdout.write(json.dumps(json_safe(data), indent=2, ensure_ascii=False) + "\n")


def _printable_log_record(record: logging.LogRecord) -> bool:
    """A logging filter: file names in messages that are not UTF-8 get \\xNN escapes."""
    message = record.getMessage()
    clean = display_text(message)
    if clean != message:
        record.msg, record.args = clean, None
    return True


def _fail(exc: AvsearchError, as_json: bool) -> typer.Exit:
    if as_json:
        _emit_json({"error": exc.message, "hint": exc.hint, "exit_code": exc.exit_code})
    stderr.print(f"[bold red]error:[/] {escape(display_text(exc.message))}", highlight=False)
    if exc.hint:
        stderr.print(f"  [dim]hint:[/] {escape(display_text(exc.hint))}", highlight=False)
    return typer.Exit(exc.exit_code)


@app.callback()
def main_options(
    ctx: typer.Context,
    index: Annotated[
        Path | None,
        typer.Option("--index", help="Index dir [$AVSEARCH_INDEX, ./.avsearch]"),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON result on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors on stderr.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="More detail.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="Config file [./avsearch.yaml].")
    ] = None,
) -> None:
    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    handler = RichHandler(console=stderr, show_time=False, show_path=False, markup=False)
    handler.addFilter(_printable_log_record)
    logging.basicConfig(level=level, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("libav").setLevel(logging.ERROR)
    try:
        file_config = cfgmod.load_config_file(config)
        index_dir = cfgmod.resolve_index_dir(index, file_config)
    except AvsearchError as exc:
        raise _fail(exc, json_out) from exc
    ctx.obj = State(index_dir, json_out, quiet, verbose, file_config)


# ------------------------------------------------------------------------------------ embed
@app.command()
def embed(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Folders or files to index.")],
    model: Annotated[str | None, typer.Option(help="Model name or directory [default].")] = None,
    window: Annotated[
        float | None,
        typer.Option(help="Window length in seconds [the index's; new: audio backbone's ≈2.32 s]."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Decode threads [2]; --engine ray: Ray workers, one CPU each [all]."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Encoder batch size [32].")] = None,
    rebuild: Annotated[
        bool | None,
        typer.Option("--rebuild", help="Drop an index built with another model and re-encode."),
    ] = None,
    engine: Annotated[
        str, typer.Option(help='Encode here (local) or over Ray (ray; pip install -e ".[ray]").')
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="--engine ray: a Ray cluster's address [a local instance].")
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude",
            help="Glob of files/folders to keep out of the index and remove from it (by name, "
            "path under the root, or /absolute path); repeatable.",
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="fp32, or bf16: the audio and image networks in bfloat16, faster on CPUs "
            "with bfloat16 units (Intel AMX), features a few percent apart [fp32]."
        ),
    ] = None,
) -> None:
    """Index media: decode, cut into windows, encode audio and visual vectors, store them."""
    from avsearch.engines import make_engine
    from avsearch.pipeline import run_embed

    st = _state(ctx)
    try:
        where = make_engine(engine, address=address, workers=workers)
        cfg = cfgmod.build(
            cfgmod.EmbedConfig,
            cfgmod.section(st.file_config, "embed"),
            {
                "model": model,
                "window": window,
                "workers": workers,
                "batch_size": batch_size,
                "rebuild": rebuild,
                "exclude": exclude or None,
                "precision": precision,
            },
        )
        with EmbedProgress(stderr, enabled=not st.quiet) as progress:
            summary = run_embed(paths, st.index, cfg, progress=progress.update, engine=where)
    except AvsearchError as exc:
        raise _fail(exc, st.json) from exc
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/]: finished files are saved; run embed again to resume")
        raise typer.Exit(130) from None
    for failure in summary.failures:
        stderr.print(
            f"[yellow]skipped[/] {escape(display_path(failure.path))}: "
            f"{escape(display_text(failure.reason))}",
            highlight=False,
        )
    if st.json:
        _emit_json(summary.to_json())
    elif not st.quiet:
        _print_embed_summary(summary)
    if summary.failures:
        raise typer.Exit(EXIT_PARTIAL)


def _print_embed_summary(s: Any) -> None:
    out = Console(soft_wrap=True)
    out.print(
        f"files: {s.new} new, {s.updated} updated, {s.unchanged} unchanged, {s.moved} moved, "
        f"{s.removed} removed, {s.failed} failed"
    )
    if s.refreshed:
        out.print(
            f"spaces: {s.refreshed} unchanged file(s) re-encoded for vector spaces the model "
            "has and their segments lacked (from the feature cache when it held them)"
        )
    out.print(
        f"segments: {s.segments} encoded ({s.audio_segments} audio, {s.visual_segments} visual); "
        f"index now holds {s.total_files} files, {s.total_segments} segments"
    )
    if s.silent_segments:
        whole = f", {len(s.silent_files)} file(s) wholly silent" if s.silent_files else ""
        out.print(
            f"silence: {s.silent_segments} audio windows of digital silence have no audio "
            f"vector (nothing to find in them){whole}"
        )
    if s.segments:
        rate = s.media_seconds / s.seconds if s.seconds else 0.0
        out.print(f"time: {s.seconds:.1f} s for {s.media_seconds:.1f} s of media ({rate:.1f}x)")
    else:
        out.print(f"time: {s.seconds:.1f} s (nothing to encode)")
    out.print(f"index: {escape(display_path(s.index))} (model {escape(s.model)})", highlight=False)


# ------------------------------------------------------------------------------------ query
@app.command()
def query(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="An audio clip, an image, or a video.")],
    top: Annotated[int | None, typer.Option("--top", "-k", help="How many hits [10].")] = None,
    start: Annotated[float | None, typer.Option(help="Video/audio query: start (s).")] = None,
    end: Annotated[float | None, typer.Option(help="Video/audio query: end (s).")] = None,
    target: Annotated[
        str | None, typer.Option(help="Modality to search: audio|visual [the other one].")
    ] = None,
    segments: Annotated[
        bool | None, typer.Option("--segments", help="List raw segment hits, not one per file.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model [the index's own].")] = None,
    min_confidence: Annotated[
        float | None,
        typer.Option(
            "--min-confidence",
            help="Drop hits below this confidence, 0..1 (none left: 'no good match').",
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Also write a self-contained results page (HTML) here."),
    ] = None,
    open_page: Annotated[
        bool,
        typer.Option("--open", help="Open the results page in the browser [a temp file]."),
    ] = False,
    export: Annotated[
        Path | None,
        typer.Option("--export", help="Also write each hit as a playable file into this folder."),
    ] = None,
    pad: Annotated[
        float | None, typer.Option("--pad", help="--export: seconds around each hit [1].")
    ] = None,
    space: Annotated[
        str | None,
        typer.Option(
            "--space",
            help="Rank in one space alone: heads|native [a sound searching sounds, a picture "
            "pictures: heads fused with the model's native space when it has one].",
        ),
    ] = None,
    no_bridge: Annotated[
        bool | None,
        typer.Option("--no-bridge", help="Cross-modal: the heads alone, no zero-shot bridge."),
    ] = None,
) -> None:
    """Find the items of the other modality nearest to an audio clip, image or video moment."""
    from avsearch.cli_outputs import QueryOutputs
    from avsearch.query import run_query

    st = _state(ctx)
    outputs = QueryOutputs(html, open_page, export, pad_flag=pad is not None)
    try:
        cfg = cfgmod.build(
            cfgmod.QueryConfig,
            cfgmod.section(st.file_config, "query"),
            {
                "top": top,
                "start": start,
                "end": end,
                "target": target,
                "segments": segments,
                "model": model,
                "min_confidence": min_confidence,
                "pad": pad,
                "space": space,
                "no_bridge": no_bridge,
            },
        )
        outputs.check()
        result = run_query(file, st.index, cfg)
        written = outputs.write(result, file, cfg)
    except AvsearchError as exc:
        raise _fail(exc, st.json) from exc
    if not st.quiet:
        for line in written.lines:
            stderr.print(escape(line), highlight=False)
    if st.json:
        _emit_json({**result.to_json(), **written.json})
    else:
        _print_query_result(result)
    if written.partial:
        raise typer.Exit(EXIT_PARTIAL)  # a hit's file could not be read for the page/export


def _print_query_result(result: Any) -> None:
    if result.note:
        label = "no good match" if result.no_good_match else "no results"
        note = result.note.removeprefix("no good match: ")
        stderr.print(f"[yellow]{label}[/]: {escape(note)}", highlight=False)
        return
    if result.space_note:
        stderr.print(f"note: {escape(result.space_note)}", highlight=False)
    from avsearch.spaces import score_meaning

    title = f"{result.query_modality} → {result.target} ({result.space} space)"
    caption = f"score: {score_meaning(result.space)}"
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    heads_cos = any(h.heads_cosine is not None for h in result.results)
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    if heads_cos:
        table.add_column("heads cos.", justify="right")
    table.add_column("conf.", justify="right")
    table.add_column("path", overflow="fold")
    table.add_column("time", no_wrap=True)
    for h in result.results:
        span = "" if h.start is None else f"{h.start:.2f}–{h.end:.2f} s"
        conf = "–" if h.confidence is None else f"{h.confidence:.2f}"
        cos = ["–" if h.heads_cosine is None else f"{h.heads_cosine:.3f}"] if heads_cos else []
        table.add_row(str(h.rank), f"{h.score:.3f}", *cos, conf, Text(_short(h.path)), span)
    Console(soft_wrap=True).print(table)


def _short(path: str) -> str:
    """A hit's path for the table: relative to the current folder when inside it; printable."""
    try:
        return display_path(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return display_path(path)


# ------------------------------------------------------------------------------------ others
@app.command()
def models(ctx: typer.Context) -> None:
    """List shipped models and the registered backbones (dimension, input, weight licence,
    whether their weights are installed)."""
    from avsearch.encoders.model import describe_spaces
    from avsearch.encoders.model_dir import list_model_dirs, load_config
    from avsearch.encoders.registry import catalogue

    st = _state(ctx)
    rows = []
    for d in list_model_dirs():
        try:
            c = load_config(d)
            spaces = describe_spaces(c)
        except AvsearchError as exc:
            stderr.print(f"[yellow]unreadable model[/] {d}: {exc.message}")
            continue
        rows.append(
            {
                "name": c.name,
                "path": str(d),
                "dim": c.embedding_dim,
                "audio": c.audio.backbone,
                "visual": c.visual.backbone,
                "description": c.description,
                "spaces": spaces,
            }
        )
    backbones = catalogue()
    if st.json:
        _emit_json({"models": rows, "backbones": backbones})
        return
    out = Console()
    t = Table(title="models", title_justify="left")
    for col in ("name", "dim", "audio", "visual", "native", "bridge", "description"):
        t.add_column(col)
    for r in rows:
        native, bridge = r["spaces"]["native"], r["spaces"]["bridge"]
        native_text = (
            "off" if "off" in native else ", ".join(f"{m} {v['dim']}-d" for m, v in native.items())
        )
        bridge_text = "off" if "off" in bridge else f"on ({bridge['bridge']})"
        if "audio_map" in bridge:
            bridge_text += ", learned audio map"
        t.add_row(
            r["name"], str(r["dim"]), r["audio"], r["visual"], native_text, bridge_text,
            r["description"],
        )  # fmt: skip
    out.print(t)
    for r in rows:  # (why the bridge is off: --json has it per model too)
        if "off" in r["spaces"]["bridge"]:
            out.print(f"{r['name']}: no zero-shot bridge: {r['spaces']['bridge']['off']}")
    b = Table(title="backbones", title_justify="left")
    for col in ("name", "modality", "dim", "input", "licence", "weights", "description"):
        b.add_column(col)
    for r in backbones:
        missing = [w["backbone"] for w in r["weights"] if not w["present"]]
        weights = "none needed" if not r["weights"] else "missing: " + ", ".join(missing)
        b.add_row(
            r["name"],
            r["modality"],
            str(r["dim"]),
            r["input_text"],
            r["licence"],
            "present" if r["weights"] and not missing else weights,
            (f"= {' + '.join(r['parts'])}: " if r["parts"] else "") + r["description"],
        )
    out.print(b)


@index_app.command("stats")
def index_stats(ctx: typer.Context) -> None:
    """Files, segments and vector indexes of the index."""
    from avsearch.store.stats import index_stats as compute
    from avsearch.store.stats import vector_index_line

    st = _state(ctx)
    try:
        stats = compute(st.index)
    except AvsearchError as exc:
        raise _fail(exc, st.json) from exc
    if st.json:
        _emit_json(stats)
        return
    out = Console(soft_wrap=True)
    for key, value in stats.items():
        if key == "vector_indexes":
            out.print("vector_indexes:")
            for modality, status in value.items():
                out.print(f"  {vector_index_line(modality, status)}", markup=False)
        elif key == "moved":
            if value is not None:
                out.print(
                    f"moved: from {display_path(value['from'])} to {display_path(value['to'])}; "
                    f"{value['files']} file path(s) recorded under the old folder follow it at "
                    "the next `avsearch query` or `avsearch embed`",
                    markup=False,
                    highlight=False,
                )
        else:
            out.print(f"{key}: {value}")


@index_app.command("check")
def index_check(ctx: typer.Context) -> None:
    """Check every file of the index (manifest, vectors, FAISS checksums, feature cache);
    exit 0 when healthy, 3 when damaged."""
    from avsearch.store.integrity import check_index

    st = _state(ctx)
    try:
        report = check_index(st.index)
    except AvsearchError as exc:
        raise _fail(exc, st.json) from exc
    if st.json:
        _emit_json(report.to_json())
    elif not st.quiet or report.problems:
        out = Console(soft_wrap=True)
        out.print(f"index: {report.index}", markup=False, highlight=False)
        if st.verbose:
            for line in report.checked:
                out.print(f"ok       {line}", markup=False, highlight=False)
        for p in report.problems:
            fix = "repairable" if p.repairable else "not repairable"
            out.print(f"PROBLEM  {p.file}: {p.what}: {p.detail} ({fix})", markup=False)
        for note in report.notes:
            out.print(f"note     {note}", markup=False, highlight=False)
        if report.ok:
            out.print(f"ok: {len(report.checked)} checks passed", highlight=False)
        else:
            n = len(report.problems)
            fixable = sum(p.repairable for p in report.problems)
            out.print(
                f"damaged: {n} problem(s), {fixable} repairable by `avsearch index repair`",
                markup=False,
                highlight=False,
            )
    if not report.ok:
        raise typer.Exit(3)


@index_app.command("repair")
def index_repair(ctx: typer.Context) -> None:
    """Rebuild what can be rebuilt from the manifest, drop broken vectors (their files are
    re-encoded by the next embed), salvage or move aside a damaged manifest."""
    from avsearch.store.integrity import repair_index

    st = _state(ctx)
    try:
        report = repair_index(st.index)
    except AvsearchError as exc:
        raise _fail(exc, st.json) from exc
    if st.json:
        _emit_json(report.to_json())
    else:
        out = Console(soft_wrap=True)
        if not report.before.problems and not report.actions:
            out.print(f"nothing to repair: the index at {report.index} is healthy", markup=False)
        for p in report.before.problems:
            out.print(f"found    {p.file}: {p.what}: {p.detail}", markup=False)
        for action in report.actions:
            out.print(f"repaired {action}", markup=False, highlight=False)
        remaining = [] if report.after is None else report.after.problems
        for p in remaining:
            out.print(f"REMAINS  {p.file}: {p.what}: {p.detail}", markup=False)
        if report.needs_embed:
            out.print("next: run `avsearch embed PATH` to re-create the index", markup=False)
        elif report.reencode_files:
            out.print(
                f"next: {report.reencode_files} file(s) will be re-encoded by the next "
                "`avsearch embed`",
                markup=False,
            )
        if report.ok and (report.before.problems or report.actions):
            out.print("ok: the index is healthy", highlight=False)
    if not report.ok:
        raise typer.Exit(3)


# ------------------------------------------------------------------------------------ train
@app.command("train")
def train_cmd(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Media folders (media mode).", show_default=False)
    ] = None,
    labeled_ratio: Annotated[
        float | None,
        typer.Option(
            "--labeled-ratio",
            help="Share of the labeled pairs whose labels are kept, 0..1 (0: infonce only) [1].",
        ),
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--labels",
            help="CSV path,label (repeat to merge several; a header may name path and "
            "label/concept columns among others) [parent folder names].",
        ),
    ] = None,
    features: Annotated[
        str | None, typer.Option("--features", help="HDF5 feature file (feature mode).")
    ] = None,
    method: Annotated[
        str | None, typer.Option(help="psd | triplet | supervised | infonce [psd].")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs [50; infonce 40].")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size [128; infonce 256].")] = None,
    dim: Annotated[int | None, typer.Option(help="Embedding dimension [128].")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of label hiding, pairing and training [0].")
    ] = None,
    sampler: Annotated[
        str | None,
        typer.Option(
            help="Batches: random (pairs in proportion) | balanced (--per-class pairs of each "
            "of batch-size/per-class labels; hidden-label pairs fill the rest) [random]."
        ),
    ] = None,
    per_class: Annotated[
        int | None,
        typer.Option(help="With --sampler balanced: pairs of each label in a batch [4]."),
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Model directory to write [avsearch-model].")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run.")] = False,
    no_soft: Annotated[
        bool | None, typer.Option("--no-soft", help="psd: ablate soft triplets.")
    ] = None,
    no_distill: Annotated[
        bool | None, typer.Option("--no-distill", help="psd: ablate the KL.")
    ] = None,
    no_dis: Annotated[bool | None, typer.Option("--no-dis", help="psd: ablate l_dis.")] = None,
    no_progressive: Annotated[
        bool | None, typer.Option("--no-progressive", help="psd: constant labeled share.")
    ] = None,
    dis_mode: Annotated[
        str | None, typer.Option(help="psd: decorrelation | paired [decorrelation].")
    ] = None,
    teacher: Annotated[str | None, typer.Option(help="psd: ema | snapshot [ema].")] = None,
    augment: Annotated[
        bool | None,
        typer.Option(
            "--augment/--no-augment",
            help="Media mode: train on views of each item through the frozen backbones (as "
            "decoded + augmented copies) [off].",
        ),
    ] = None,
    views: Annotated[
        int | None,
        typer.Option(help="Views per item with --augment: as decoded + V-1 augmented [3]."),
    ] = None,
    audio_backbone: Annotated[
        str | None,
        typer.Option(
            help="Audio backbone (media mode), any audio entry of `avsearch models`: aisfx "
            "(general sound, the default model's) | aisfx-words (+ the spoken-word embedding: "
            "the speech model's) | a list such as aisfx+soundnet [aisfx]."
        ),
    ] = None,
    audio_head_parts: Annotated[
        str | None,
        typer.Option(
            help="Media mode: the parts of a composite audio backbone the audio head reads, "
            "joined by + (aisfx of aisfx+soundnet: soundnet then serves the zero-shot bridge "
            "alone) [all].",
        ),
    ] = None,
    bridge_map_alpha: Annotated[
        float | None,
        typer.Option(
            help="Media mode, an audio backbone with soundnet: ridge penalty of the learned "
            "correction of the zero-shot bridge's audio side, fitted on the training pairs "
            "(larger = closer to the bridge as it is); 0 = no correction [0.5].",
        ),
    ] = None,
    bridge_memory_k: Annotated[
        int | None,
        typer.Option(
            help="With the bridge map: each sound's bridge vector also leans towards the "
            "pictures of its K nearest training sounds (general-sound features); 0 = no such "
            "memory [5].",
        ),
    ] = None,
) -> None:
    """Train projection heads on frozen backbones: progressive self-distillation (psd),
    triplet, supervised, or cross-modal InfoNCE (infonce, the default model's recipe)."""
    from avsearch.train.options import label_files, plan_train
    from avsearch.train.run import run_train_features, run_train_media

    st = _state(ctx)
    flags: dict[str, Any] = {
        "method": method,
        "labeled_ratio": labeled_ratio,
        "labels": labels,
        "features": features,
        "epochs": epochs,
        "batch_size": batch_size,
        "dim": dim,
        "seed": seed,
        "sampler": sampler,
        "per_class": per_class,
        "out": out,
        "no_soft": no_soft,
        "no_distill": no_distill,
        "no_dis": no_dis,
        "no_progressive": no_progressive,
        "dis_mode": dis_mode,
        "teacher": teacher,
        "augment": augment,
        "views": views,
        "audio_backbone": audio_backbone,
        "audio_head_parts": audio_head_parts,
        "bridge_map_alpha": bridge_map_alpha,
        "bridge_memory_k": bridge_memory_k,
    }
    try:
        file_values = cfgmod.section(st.file_config, "train")
        options = cfgmod.build(cfgmod.TrainOptions, file_values, flags)
        given = {k for k, v in (*file_values.items(), *flags.items()) if v is not None}
        plan = plan_train(
            [str(p) for p in paths or []],
            options,
            given,
            lambda key: cfgmod.option_name(key, file_values, flags),
        )
        cfg, model_dir = plan.cfg, Path(options.out)
        with TrainProgress(stderr, enabled=not st.quiet, epochs=cfg.epochs) as progress:
            if plan.mode == "features":
                summary = run_train_features(
                    Path(str(options.features)),
                    model_dir,
                    cfg,
                    resume=resume,
                    command=plan.command,
                    epoch_progress=progress.epoch,
                )
            else:
                summary = run_train_media(
                    list(paths or []),
                    st.index,
                    model_dir,
                    cfg,
                    labels_csv=[Path(p) for p in label_files(options.labels)] or None,
                    resume=resume,
                    command=plan.command,
                    file_progress=progress.file,
                    epoch_progress=progress.epoch,
                )
    except AvsearchError as exc:
        raise _fail(exc, st.json) from exc
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/]: continue with the same command and --resume")
        raise typer.Exit(130) from None
    if st.json:
        _emit_json(summary.to_json())
    else:
        _print_train_summary(summary)
    if summary.media and summary.media["failed"]:
        raise typer.Exit(EXIT_PARTIAL)  # trained on the rest; as embed, say some input failed


def _print_train_summary(summary: Any) -> None:
    con = Console(soft_wrap=True)
    con.print(
        f"model: {summary.out_dir} ({summary.method}, labeled ratio "
        f"{summary.labeled_ratio}; {summary.labeled_pairs} of {summary.pairs} pairs "
        f"labeled; {len(summary.classes)} classes)",
        highlight=False,
    )
    best = "n/a" if summary.best_val_map is None else f"{summary.best_val_map:.4f}"
    con.print(
        f"epochs: {summary.epochs_run} ({summary.seconds_per_epoch:.2f} s each), best "
        f"validation MAP {best} at epoch {summary.best_epoch}"
        + (" (stopped early)" if summary.stopped_early else ""),
        highlight=False,
    )
    if summary.media:
        m = summary.media
        unlabeled = f" ({m['unlabeled_pairs']} unlabeled)" if m["unlabeled_pairs"] else ""
        con.print(
            f"media: {m['files']} files ({m['decoded']} decoded, {m['from_cache']} from "
            f"the feature cache, {len(m['failed'])} failed); {m['video_pairs']} video "
            f"pairs{unlabeled}, {m['label_pairs']} within-label pairs",
            highlight=False,
        )
        if m["views"] > 1:
            con.print(
                f"augmentation: {m['views']} views per item; {m['views_decoded']} files "
                "decoded again (the feature cache holds no augmented copies)",
                highlight=False,
            )
    if summary.test:
        con.print(
            f"test MAP a→v {summary.test['a2v_map']:.4f}  v→a "
            f"{summary.test['v2a_map']:.4f}  mean {summary.test['map']:.4f}"
        )
    con.print(f"data: {summary.data['files']} file(s), {summary.data['digest']}", highlight=False)
    con.print(f"use it: avsearch embed PATH --model {summary.out_dir}", highlight=False)


if TYPE_CHECKING:
    from avsearch.evaluate_index import IndexEvaluation


@app.command("eval")
def eval_index(
    ctx: typer.Context,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="CSV of path,label rows [each file's parent folder name]."),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw per-class AP and PR curves (PNG).")
    ] = None,
    features: Annotated[
        Path | None, typer.Option("--features", help="HDF5 feature file (with `avsearch train`).")
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Model directory, with --features.")
    ] = None,
    no_bridge: Annotated[
        bool | None,
        typer.Option("--no-bridge", help="Rank by the heads alone, no zero-shot bridge fusion."),
    ] = None,
) -> None:
    """Cross-modal MAP of the index: every segment of one modality ranked against the other."""
    from avsearch.errors import UsageError
    from avsearch.evaluate_index import evaluate_index

    st = _state(ctx)
    try:
        flags = {"labels": labels, "plot": plot, "features": features, "model": model}
        file_values = cfgmod.section(st.file_config, "eval")
        opts = cfgmod.build(
            cfgmod.EvalOptions,
            file_values,
            {**{k: _opt_str(v) for k, v in flags.items()}, "no_bridge": no_bridge},
        )

        def name(key: str) -> str:
            return cfgmod.option_name(key, file_values, flags)

        labels, plot = _opt_path(opts.labels), _opt_path(opts.plot)
        features, model = _opt_path(opts.features), _opt_path(opts.model)
        if (features is None) != (model is None):
            alone = "features" if features is not None else "model"
            raise UsageError(
                f"{name(alone)} is given alone: --features and --model go together",
                hint="avsearch eval --features FILE.h5 --model DIR",
            )
        if features is not None and model is not None:
            for key in ("labels", "plot"):
                if getattr(opts, key) is not None:
                    raise UsageError(f"{name(key)} applies to the index, not to --features")
            if opts.no_bridge:
                raise UsageError("--no-bridge applies to the index, not to --features")
            from avsearch.train.run import evaluate_feature_file

            report = evaluate_feature_file(features, model)
            if st.json:
                _emit_json(report.to_json())
            else:
                Console().print(
                    f"MAP a→v {report.a2v_map:.4f}  v→a {report.v2a_map:.4f}  "
                    f"mean {report.map:.4f}  (test split of {features}; "
                    f"{report.n_audio} audio, {report.n_visual} visual)",
                    highlight=False,
                )
            return
        evaluation = evaluate_index(st.index, labels, bridge=not opts.no_bridge)
        if plot is not None:
            from avsearch.plot import plot_report

            plot_report(evaluation, plot)
    except AvsearchError as exc:
        raise _fail(exc, st.json) from exc
    if evaluation.n_csv_rows_not_in_index and not st.quiet:
        stderr.print(
            f"note: {evaluation.n_csv_rows_not_in_index} file(s) named in {labels} are not in "
            "the index",
            highlight=False,
        )
    if st.json:
        data = evaluation.to_json()
        if plot is not None:
            data["plot"] = str(plot)
        _emit_json(data)
        return
    _print_evaluation(evaluation, plot)


def _opt_str(value: Path | None) -> str | None:
    return None if value is None else str(value)


def _opt_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _print_evaluation(evaluation: IndexEvaluation, plot: Path | None) -> None:
    r = evaluation.report
    if evaluation.space_note:
        stderr.print(f"note: {escape(evaluation.space_note)}", highlight=False)
    title = f"cross-modal retrieval ({evaluation.space} space)"
    table = Table(title=title, title_justify="left")
    for col in ("metric", "audio → visual", "visual → audio", "mean"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    table.add_row("MAP", f"{r.a2v_map:.4f}", f"{r.v2a_map:.4f}", f"{r.map:.4f}")
    table.add_row(
        "MAP@R",
        f"{r.a2v_map_at_r:.4f}",
        f"{r.v2a_map_at_r:.4f}",
        f"{(r.a2v_map_at_r + r.v2a_map_at_r) / 2:.4f}",
    )
    for k in r.recall_at["a2v"]:
        a2v, v2a = r.recall_at["a2v"][k], r.recall_at["v2a"][k]
        table.add_row(f"R@{k}", f"{a2v:.4f}", f"{v2a:.4f}", f"{(a2v + v2a) / 2:.4f}")
    out = Console()
    out.print(table)
    source = "parent folder names" if evaluation.labels_csv is None else str(evaluation.labels_csv)
    n_classes = len(set(r.per_class["a2v"]) | set(r.per_class["v2a"]))
    out.print(
        f"audio: {r.n_audio} segments ({evaluation.n_unlabeled_audio} unlabeled, left out); "
        f"visual: {r.n_visual} segments ({evaluation.n_unlabeled_visual} unlabeled, left out)",
        highlight=False,
    )
    skipped = r.n_skipped_queries
    if skipped["a2v"] or skipped["v2a"]:
        out.print(
            f"queries without any relevant item (not in the means): {skipped['a2v']} audio, "
            f"{skipped['v2a']} visual",
            highlight=False,
        )
    out.print(f"labels: {source}; {n_classes} classes", highlight=False)
    if plot is not None:
        out.print(f"plot: {plot}", highlight=False)


@app.command()
def doctor(ctx: typer.Context) -> None:
    """Check the installation: codecs, backbone weights, the default model, the index."""
    from avsearch.doctor import run_checks

    st = _state(ctx)
    checks = run_checks(st.index)
    failing = [c for c in checks if not c["ok"] and c.get("required", True)]
    ok = not failing
    if st.json:
        _emit_json({"ok": ok, "checks": checks})
    else:
        out = Console()
        for c in checks:
            mark = (
                "[green]ok[/]"
                if c["ok"]
                else ("[red]FAIL[/]" if c.get("required", True) else "[yellow]warn[/]")
            )
            out.print(f"{mark}  {c['name']}: {c['detail']}", highlight=False)
    if not ok:  # 3 when the only failure is a damaged index (DESIGN.md exit codes), else 1
        raise typer.Exit(3 if all(c.get("exit_code") == 3 for c in failing) else 1)


def main() -> None:
    from avsearch.cli_args import hoist_global_options

    app(args=hoist_global_options(sys.argv[1:]), prog_name="avsearch")
