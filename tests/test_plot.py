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


def test_plot_of_a_fused_evaluation_uses_its_ranking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`eval` fused heads + bridge: the PR curves are drawn from that ranking (the one of the
    per-class AP bars and the table), and the title names the space."""
    from avsearch import plot
    from avsearch.evaluate import precision_recall_curve
    from tests.test_spaces import _build

    drawn: list[tuple] = []
    real = plot._draw
    monkeypatch.setattr(plot, "_draw", lambda *a: drawn.append(a) or real(*a))
    root = _build(tmp_path / "i", n_files=16, seed=4)
    fused, heads = evaluate_index(root), evaluate_index(root, bridge=False)
    assert fused.space == "heads+bridge" and fused.scores is not None and heads.scores is None
    for ev in (fused, heads):
        assert plot_report(ev, tmp_path / f"{ev.space}.png").read_bytes().startswith(PNG_MAGIC)
    (f_report, f_curves, _, _, f_space), (h_report, h_curves, _, _, h_space) = drawn
    assert (f_report, f_space, h_report, h_space) == (
        fused.report,
        "heads+bridge",
        heads.report,
        "heads",
    )
    d = fused.data
    for name, (q, ql, g, gl) in {
        "a2v": (d.audio_emb, d.audio_labels, d.visual_emb, d.visual_labels),
        "v2a": (d.visual_emb, d.visual_labels, d.audio_emb, d.audio_labels),
    }.items():
        want = precision_recall_curve(q, ql, g, gl, score=fused.scores[name])[1]
        cosine = precision_recall_curve(q, ql, g, gl)[1]
        np.testing.assert_allclose(f_curves[name][1], want)
        np.testing.assert_allclose(h_curves[name][1], cosine)
    assert not all(
        np.allclose(f_curves[n][1], h_curves[n][1]) for n in ("a2v", "v2a")
    )  # (the two rankings differ here, so the test tells them apart)
