"""Throughput of `embed` with the local engine and with `--engine ray` at 1 and 2 workers on this
machine: the same media (the shared fixtures, farm/ and a third of natural/), each run into a
fresh index, in one invocation.

    python bench/embed_ray.py [--natural-share 0.33]

Each engine runs twice: cold (the first run: a Ray worker process loads the model on its
first shard; the media are read from disk the first time) and warm (the
second, in the same process or Ray instance: the steady state a long run lives in). The Ray
instance's start is timed apart. The machine is shared with other jobs, so the 1-minute
load average is given before and after each run. Writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED, machine_line, write_section

from avsearch.config import EmbedConfig
from avsearch.encoders.model import AVModel
from avsearch.pipeline import EmbedSummary, run_embed


def media(share: float) -> tuple[list[Path], str]:
    fixtures, farm, natural = (
        SHARED / "fixtures",
        SHARED / "data" / "farm",
        SHARED / "data" / "natural",
    )
    for p in (fixtures, farm, natural):
        if not p.is_dir():
            sys.exit(f"{p} is absent: this benchmark needs the project's shared media")
    classes = sorted(d for d in natural.iterdir() if d.is_dir())
    part = classes[: max(1, round(len(classes) * share))]
    what = (
        f"`fixtures/` (5 videos, 2 photos), `farm/` (9 sounds, 9 photos) and the first "
        f"{len(part)} of the {len(classes)} class folders of `natural/` "
        f"(`{part[0].name}` … `{part[-1].name}`: sounds and pictures)"
    )
    return [fixtures, farm, *part], what


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--natural-share", type=float, default=0.33)
    args = ap.parse_args()
    try:
        import ray
    except ImportError:
        sys.exit('Ray is not installed: pip install -e ".[ray]"')
    from avsearch.engines.ray import RayEngine, start_local

    paths, what = media(args.natural_share)
    work = Path(tempfile.mkdtemp(prefix="avsearch-bench-ray-"))
    rows: list[tuple[str, float | None, EmbedSummary, tuple[float, float], int | None]] = []
    try:
        t0 = time.perf_counter()
        model = AVModel.load("default")
        _ = model.audio_backbone, model.visual_backbone, model.heads
        t_load = time.perf_counter() - t0

        def embed(name: str, engine: RayEngine | None = None, t_start: float | None = None) -> None:
            before = os.getloadavg()[0]
            s = run_embed(paths, work / name, EmbedConfig(), model=model, engine=engine)
            load = (before, os.getloadavg()[0])
            workers = engine.workers if engine is not None else None
            rows.append((name, t_start, s, load, workers))
            print(f"{name}: {s.seconds:.1f} s, {s.segments} segments", file=sys.stderr)

        embed("local engine, 2 decode threads, cold")
        embed("local engine, 2 decode threads, warm")
        for workers in (1, 2):
            t = time.perf_counter()
            start_local(workers)
            t_start = time.perf_counter() - t
            try:
                name = f"Ray, {workers} worker{'s' * (workers > 1)}"
                embed(f"{name}, cold", RayEngine(workers=workers), t_start)
                embed(f"{name}, warm", RayEngine(workers=workers))
            finally:
                ray.shutdown()
        import torch  # last: what a Ray task runs with, in this process

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            embed("local engine, 2 decode threads, torch on 1 thread, warm")
        finally:
            torch.set_num_threads(threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    first = rows[0][2]
    audio, visual = model.config.audio.backbone, model.config.visual.backbone
    assert all(s.segments == first.segments and not s.failures for _, _, s, _, _ in rows)
    lines = [
        "## Embed over Ray (`--engine ray`)",
        "",
        f"`python bench/embed_ray.py --natural-share {args.natural_share}` on "
        f"{dt.date.today().isoformat()}; {machine_line()}; Ray {ray.__version__}.",
        f"Input: {what}: {first.new} files, {first.media_seconds:.1f} s of timed media, "
        f"{first.segments} segments ({first.audio_segments} audio, {first.visual_segments} "
        f"visual). Each run builds a fresh index with the default model ({audio} + {visual}, "
        f"fingerprint `{model.fingerprint[:12]}`; raw features kept, as `embed` does by "
        f"default); every run gave the same segments. Model load in the driver (both "
        f"backbones): {t_load:.2f} s, not included.",
        "",
        "| run | Ray start s | wall s | segments/s | media s per wall s | segments/s per worker "
        "| load avg before → after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t_start, s, load, workers in rows:
        rate = s.segments / s.seconds
        lines.append(
            f"| {name} | {'–' if t_start is None else f'{t_start:.1f}'} | {s.seconds:.2f} | "
            f"{rate:.1f} | {s.media_seconds / s.seconds:.1f} | "
            f"{'–' if workers is None else f'{rate / workers:.1f}'} | "
            f"{load[0]:.1f} → {load[1]:.1f} |"
        )
    lines += [
        "",
        "A Ray task holds one CPU: one decode thread ahead of its encoder, torch on one thread "
        "(Ray sets `OMP_NUM_THREADS=1`); the local engine runs 2 decode threads and torch on "
        "all cores. *Cold*: the first run (Ray's worker processes load the model - backbones, "
        "heads, the fingerprint check - on their first shard, inside the wall time; the local "
        "engine's model was loaded before it; both read the media from disk the first time); "
        "*warm*: the second run in the same process or instance. The driver only plans and "
        "writes (one SQLite writer). The last row is the local engine with torch on one "
        "thread, as in a task. Timings on a 2-core machine shared with other jobs are noisy: read "
        "the ratios within one run, and the load average beside them. Under such load a "
        "torch pool of 2 threads waits on busy cores: compare the last row, the same engine "
        "with torch on one thread, with the Ray 1-worker warm row.",
    ]
    doc = write_section("embed_ray", "\n".join(lines))
    print("\n".join(lines))
    print(f"\nwritten to {doc}")


if __name__ == "__main__":
    main()
