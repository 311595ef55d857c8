from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from avsearch.errors import AvsearchError
from avsearch.evaluate_index import evaluate_index
from avsearch.plot import plot_arrays, plot_report
from tests.test_evaluate_index import build_index

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_of_an_index_evaluation_is_a_png(tmp_path: Path) -> None:
    ev = evaluate_index(build_index(tmp_path / "index", tmp_path / "media"))
    out = plot_report(ev, tmp_path / "plots" / "eval.png")
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000


def test_plot_of_plain_arrays_with_many_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    audio_labels, visual_labels = np.arange(60) % 20, np.arange(100) % 20
    out = plot_arrays(
        rng.normal(size=(60, 8)),
        audio_labels,
        rng.normal(size=(100, 8)),
        visual_labels,
        tmp_path / "random.png",
        title="random",
    )
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_missing_matplotlib_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ev = evaluate_index(build_index(tmp_path / "index", tmp_path / "media"))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(AvsearchError) as info:
        plot_report(ev, tmp_path / "x.png")
    assert "pip install matplotlib" in str(info.value)
    assert not (tmp_path / "x.png").exists()
