"""Cost of the full content hash (``content_hash``: sha256 of every byte, 1 MiB blocks) against
the old quick hash (size + first 1 MiB + last 1 KiB) it replaced, on the shared data and on one
large generated file (a long video's size).

    python bench/hash_cost.py [--repeat 5] [--big-mb 512]

Times are the median of ``--repeat`` passes after one warm-up pass, so files are read from the
page cache: this is the CPU cost of hashing; a cold disk adds its read time to the full hash
(the quick hash reads at most ~1 MiB per file). Writes its section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import shared_data, write_section

from avsearch.media.discover import content_hash, quick_hash


def timed(files: list[Path], fn: Callable[[Path], str], repeat: int) -> float:
    for f in files:  # warm-up: page cache, and the same work as the timed passes
        fn(f)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for f in files:
            fn(f)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(name: str, files: list[Path], repeat: int) -> tuple[str, float]:
    """A table row, and the full hash's speed in MB/s."""
    size = sum(f.stat().st_size for f in files)
    quick = timed(files, quick_hash, repeat)
    full = timed(files, content_hash, repeat)
    mb = size / 1e6
    cells = (
        f"| {name} | {len(files)} | {mb:.1f} | {quick * 1e3:.0f} | {full * 1e3:.0f} | "
        f"{mb / full:.0f} | {full / quick:.1f}× |"
    )
    print(f"{name}: quick {quick:.3f} s, full {full:.3f} s for {mb:.1f} MB")
    return cells, mb / full


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed passes (median reported)")
    ap.add_argument("--big-mb", type=int, default=512, help="size of the generated large file")
    args = ap.parse_args()
    data = shared_data()
    files = sorted(p for p in data.rglob("*") if p.is_file() and not p.is_symlink())
    rows = []
    for name, subset in (
        (f"`../shared/data` (all {len(files)} files)", files),
        (
            "its media files (wav, ogg, png, jpg, webp)",
            [f for f in files if f.suffix.lower() in {".wav", ".ogg", ".png", ".jpg", ".webp"}],
        ),
    ):
        cells, _ = row(name, subset, args.repeat)
        rows.append(cells)
    with tempfile.TemporaryDirectory(prefix="avsearch-hash-") as tmp:
        big = Path(tmp) / "big.mp4"
        block = os.urandom(1 << 20)
        with big.open("wb") as fh:
            for _ in range(args.big_mb):
                fh.write(block)
        cells, big_speed = row(f"one generated {args.big_mb} MiB file", [big], args.repeat)
        rows.append(cells)
    speeds = {}
    for algo in ("sha256", "blake2b", "sha1", "md5"):
        h = hashlib.new(algo)
        t0 = time.perf_counter()
        for _ in range(256):
            h.update(block)
        speeds[algo] = 256 / (time.perf_counter() - t0)
    md = f"""## Content hash cost (`python bench/hash_cost.py`)

`python bench/hash_cost.py --repeat {args.repeat} --big-mb {args.big_mb}` on \
{dt.date.today().isoformat()}; {platform.machine()}, {os.cpu_count()} cores, \
Python {platform.python_version()}. Median of {args.repeat} passes after a warm-up (files in the
page cache: the hashing's own cost; a cold disk adds the read time of every byte to the full
hash, while the quick hash reads at most ~1 MiB per file). Quick hash: the old one, sha256 of
(size, first 1 MiB, last 1 KiB); full: `content_hash`, sha256 of every byte.

| files | count | MB | quick hash ms | full sha256 ms | full MB/s | full / quick |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Hash speeds here on 1 MiB blocks (MiB/s): \
{", ".join(f"{a} {s:.0f}" for a, s in speeds.items())}; sha256 is the fastest of the \
collision-resistant ones on this CPU (SHA extensions), so `content_hash` uses it.
`embed` hashes only new files and files whose size or mtime changed (an unchanged folder is
not read at all), so the full hash is paid once per new or edited file: about \
{1000 / big_speed:.2f} s per GB here from the page cache (the encoders take far longer per file).
"""
    doc = write_section("hash_cost", md)
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
