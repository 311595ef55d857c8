"""Shared pieces of the reliability tests: a fast deterministic stand-in for AVModel, an embed
helper, and readers of what an index holds."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from avsearch.config import EmbedConfig
from avsearch.media.decode import WindowSpec
from avsearch.pipeline import EmbedSummary, run_embed

# hypothesis keeps a cache and writes patches of failing examples: not into the repository
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "avsearch-hypothesis")

FAKE_RATE = 16_000
FAKE_WINDOW = 1.0  # seconds
AUDIO_BLOCKS = 64
IMAGE_SIZE = 32
IMAGE_GRID = 8


class FakeModel:
    """Duck-typed AVModel: what ``run_embed`` and ``run_query`` use, and nothing more.

    Vectors are L2-normalised ``tanh(features @ W + b)`` with a fixed seeded projection of a
    downsampled input (audio: mean and RMS over 64 blocks; pictures: an 8x8 colour grid), so they
    are deterministic in the input, finite for every finite input, and differ between different
    inputs. A non-finite input gives a non-finite vector, so a decoder that lets NaN through is
    caught by the "no non-finite vector in the manifest" checks rather than hidden here.
    """

    name = "fake"
    dim = 32
    image_size = IMAGE_SIZE
    sample_rate = FAKE_RATE

    def __init__(self, seed: int = 0, window: float = FAKE_WINDOW) -> None:
        rng = np.random.default_rng(seed)
        self.window = window
        self.fingerprint = f"fake-{seed}-{self.dim}-{window}"
        self.directory = Path("/nonexistent/avsearch-fake-model")
        self._w = {
            "audio": rng.standard_normal((2 * AUDIO_BLOCKS, self.dim)),
            "visual": rng.standard_normal((IMAGE_GRID * IMAGE_GRID * 3, self.dim)),
        }
        self._b = {m: rng.standard_normal(self.dim) * 0.5 for m in ("audio", "visual")}
        self.calls: dict[str, int] = {"audio": 0, "visual": 0}

    def window_spec(self, window: float | None = None, min_tail: float = 0.5) -> WindowSpec:
        return WindowSpec.from_seconds(float(window or self.window), FAKE_RATE, min_tail)

    def features(self, modality: str, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float64)
        n = len(x)
        if modality == "audio":
            x = x.reshape(n, -1)
            pad = (-x.shape[1]) % AUDIO_BLOCKS
            if pad:
                x = np.pad(x, ((0, 0), (0, pad)))
            blocks = x.reshape(n, AUDIO_BLOCKS, -1)
            mean = blocks.mean(axis=2)
            rms = np.sqrt((blocks * blocks).mean(axis=2))
            return np.concatenate([mean * 4.0, np.log1p(rms * 10.0)], axis=1)
        h, w = x.shape[1], x.shape[2]
        gh, gw = h // IMAGE_GRID, w // IMAGE_GRID
        grid = x[:, : gh * IMAGE_GRID, : gw * IMAGE_GRID, :3]
        grid = grid.reshape(n, IMAGE_GRID, gh, IMAGE_GRID, gw, 3).mean(axis=(2, 4))
        return grid.reshape(n, -1) / 255.0 - 0.5

    def embed(self, modality: str, batch: np.ndarray) -> np.ndarray:
        self.calls[modality] += len(batch)
        z = np.tanh(self.features(modality, batch) @ self._w[modality] / 4.0 + self._b[modality])
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        return (z / np.maximum(norm, 1e-12)).astype(np.float32)


@pytest.fixture
def fake_model() -> FakeModel:
    return FakeModel()


def embed(paths: list[Path], index_dir: Path, model: Any, /, **options: Any) -> EmbedSummary:
    """``run_embed`` with the fake model and small, quick settings (``options`` override)."""
    values: dict[str, Any] = {"model": "fake-model", "workers": 2, "batch_size": 16}
    values.update(options)
    return run_embed(paths, index_dir, EmbedConfig(**values), model=model)


Row = tuple[str, int, float, float]  # modality, idx, start, end


def index_contents(index_dir: Path) -> dict[str, list[tuple[Row, np.ndarray]]]:
    """path -> its segments ((modality, idx, start, end), vector), sorted, read from SQLite."""
    conn = sqlite3.connect(f"file:{index_dir / 'manifest.sqlite'}?mode=ro", uri=True)
    try:
        dim = int(conn.execute("SELECT value FROM meta WHERE key='dim'").fetchone()[0])
        out: dict[str, list[tuple[Row, np.ndarray]]] = {
            _path(p): [] for (p,) in conn.execute("SELECT path FROM files")
        }
        rows = conn.execute(
            'SELECT f.path, s.modality, s.idx, s.start, s."end", s.vector '
            "FROM segments s JOIN files f ON f.id = s.file_id"
        )
        for path, modality, idx, start, end, blob in rows:
            vec = np.frombuffer(blob, dtype=np.float32)
            assert vec.shape == (dim,), f"{path}: vector of {vec.shape} in a {dim}-d index"
            out[_path(path)].append(((str(modality), int(idx), float(start), float(end)), vec))
    finally:
        conn.close()
    for segs in out.values():
        segs.sort(key=lambda s: s[0])
    return out


def _path(value: str | bytes) -> str:
    """A stored path as ``str`` (a non-UTF-8 name may be stored as the BLOB of its bytes)."""
    return os.fsdecode(value) if isinstance(value, bytes) else str(value)


def non_finite_segments(index_dir: Path) -> list[tuple[str, Row]]:
    return [
        (path, row)
        for path, segs in index_contents(index_dir).items()
        for row, vec in segs
        if not np.all(np.isfinite(vec))
    ]


def failed_paths(summary: EmbedSummary) -> set[str]:
    return {f.path for f in summary.failures}


def can_read_despite_chmod(path: Path) -> bool:
    """True when mode 000 does not stop us (root, CAP_DAC_OVERRIDE): then that case is moot."""
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except PermissionError:
        return False
    return True


# For child processes that measure memory: peak_start() resets the kernel's peak-RSS mark
# (Linux clear_refs 5), so import peaks do not hide what follows, and returns the resident size
# to measure from; peak_growth_kib(start) -> (peak - start, peak), in KiB. Without clear_refs
# it falls back to getrusage's ru_maxrss (which includes the import peak).
PEAK_RSS_SNIPPET = """
import resource
from pathlib import Path


def _status_kib(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def peak_start():
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return ("hwm", _status_kib("VmRSS"))
    except OSError:
        return ("maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def peak_growth_kib(start):
    kind, base = start
    if kind == "hwm":
        peak = _status_kib("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak - base, peak
"""


@pytest.fixture
def restore_modes() -> Iterator[list[Path]]:
    """Paths appended here get their permissions back after the test (so tmp can be removed)."""
    paths: list[Path] = []
    yield paths
    for p in paths:
        if p.exists():
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
