"""Helpers shared by the bench scripts: where the shared data is, and cached backbone features."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

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
