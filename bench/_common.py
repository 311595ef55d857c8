"""Helpers shared by the bench scripts: where the shared data is, cached arrays, the avsearch
CLI as a subprocess, labels CSVs, and the docs/benchmarks.md sections."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OUT = REPO / "bench" / "out"


def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        sys.exit(
            f"{data} is absent: the bench scripts need the project's shared data beside the repo"
        )
    return data


def cached(name: str, key: str, compute) -> np.ndarray:  # type: ignore[no-untyped-def]
    """np.load a cached array named by (name, sha of key), or compute and save it."""
    OUT.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = OUT / "cache" / f"{name}-{digest}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return np.load(path)
    value = compute()
    np.save(path, value)
    return value


def run_avsearch(
    args: list[str], *, cwd: Path = REPO, quiet: bool = False, log: Path | None = None
) -> dict[str, Any]:
    """Run ``python -m avsearch --json ARGS`` (this checkout's package) and return its JSON.

    Progress goes to our stderr (or to ``log``, appended); a non-zero exit other than 4
    (finished, some inputs unreadable) ends the script with the CLI's message.
    """
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "avsearch", "--json", *(["-q"] if quiet else []), *args]
    err = None if log is None else log.open("a", encoding="utf-8")
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=dict(os.environ, PYTHONPATH=path),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            check=False,
        )
    finally:
        if err is not None:
            err.close()
    if proc.returncode not in (0, 4):
        sys.exit(
            f"avsearch {' '.join(args[:3])} ... failed (exit {proc.returncode}):\n{proc.stdout}"
        )
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def write_labels_csv(path: Path, labels: Mapping[Path, str]) -> Path:
    """A ``path,label`` CSV for ``--labels``, paths relative to the CSV's folder, sorted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    rows = sorted((os.path.relpath(p.resolve(), base), label) for p, label in labels.items())
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


def rel(path: Path) -> str:
    """``path`` relative to the repository when it can be (how commands are recorded)."""
    return os.path.relpath(path.resolve(), REPO)


def write_section(name: str, markdown: str, doc: Path | None = None) -> Path:
    """Replace (or append) the section of docs/benchmarks.md owned by bench script ``name``."""
    doc = doc or REPO / "docs" / "benchmarks.md"
    begin, end = f"<!-- bench:{name} begin -->", f"<!-- bench:{name} end -->"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")
    return doc


def machine_line() -> str:
    import os
    import platform

    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}"
    )


def feature_cache_rates(model: str = "default") -> tuple[int, int, float, float]:
    """(audio dims, visual dims, MB per hour of video, MB per hour of audio) of ``model``'s raw
    float32 backbone features as the feature cache stores them (one audio window and one frame
    per window of the model's length)."""
    from avsearch.encoders.model import AVModel

    m = AVModel.load(model)
    a, v = m.config.audio.head.in_dim, m.config.visual.head.in_dim
    per_hour = 3600 / m.window_spec().seconds
    return a, v, per_hour * (a + v) * 4 / 1e6, per_hour * a * 4 / 1e6
