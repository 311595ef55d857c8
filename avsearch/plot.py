"""One PNG that shows a cross-modal evaluation: per-class AP bars for both directions (left) and
the interpolated precision-recall curve of each direction (right), both from the ranking the
evaluation used (the heads' space, or heads + bridge when ``eval`` fused; the title names it).

matplotlib is optional (``pip install matplotlib`` or ``pip install 'avsearch[plot]'``); it is
imported only when a plot is drawn, and the figure is drawn with the Agg canvas directly (no
pyplot, so the caller's global backend is left alone).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from avsearch.errors import AvsearchError
from avsearch.evaluate import (
    RetrievalReport,
    ScoreFn,
    evaluate_cross_modal,
    precision_recall_curve,
)
from avsearch.evaluate_index import IndexEvaluation, LabelledEmbeddings

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DIRECTIONS = (("a2v", "audio → visual"), ("v2a", "visual → audio"))
COLOURS = {"a2v": "#1f77b4", "v2a": "#ff7f0e"}


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise AvsearchError(
            "plotting needs matplotlib, which is not installed",
            hint="pip install matplotlib   (or: pip install 'avsearch[plot]')",
        ) from exc
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)  # Agg on this figure only: the global backend is left alone
    return fig


def _sort_key(label: Any) -> tuple[int, float, str]:
    text = str(label)
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def plot_report(
    source: IndexEvaluation | LabelledEmbeddings,
    out: Path,
    *,
    title: str | None = None,
    n_levels: int = 11,
) -> Path:
    """Draw ``source`` (an index evaluation, or labelled audio/visual arrays) into ``out``.

    An index evaluation is drawn from its own ranking: the per-class AP of its report, and
    precision-recall curves ranked as the report was (heads + bridge when it fused); the title
    names that space."""
    scores: dict[str, ScoreFn] = {}
    space = None
    if isinstance(source, IndexEvaluation):
        data, report = source.data, source.report
        scores, space = source.scores or {}, source.space
    else:
        data = source
        report = evaluate_cross_modal(
            data.audio_emb, data.audio_labels, data.visual_emb, data.visual_labels
        )
    curves = {
        "a2v": precision_recall_curve(
            data.audio_emb, data.audio_labels, data.visual_emb, data.visual_labels,
            n_levels=n_levels, score=scores.get("a2v"),
        ),
        "v2a": precision_recall_curve(
            data.visual_emb, data.visual_labels, data.audio_emb, data.audio_labels,
            n_levels=n_levels, score=scores.get("v2a"),
        ),
    }  # fmt: skip
    return _draw(report, curves, out, title, space)


def plot_arrays(
    audio_emb: np.ndarray,
    audio_labels: np.ndarray,
    visual_emb: np.ndarray,
    visual_labels: np.ndarray,
    out: Path,
    *,
    title: str | None = None,
) -> Path:
    """:func:`plot_report` for plain arrays."""
    data = LabelledEmbeddings(
        np.asarray(audio_emb), np.asarray(audio_labels),
        np.asarray(visual_emb), np.asarray(visual_labels),
    )  # fmt: skip
    return plot_report(data, out, title=title)


def _draw(
    report: RetrievalReport,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    out: Path,
    title: str | None,
    space: str | None = None,
) -> Path:
    classes = sorted(set(report.per_class["a2v"]) | set(report.per_class["v2a"]), key=_sort_key)
    bars_width = min(max(5.0, 0.45 * len(classes) + 2.0), 24.0)
    fig = _figure(bars_width + 4.5, 4.2)
    grid = fig.add_gridspec(1, 2, width_ratios=[bars_width, 4.5])
    ax_bars, ax_pr = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])

    x = np.arange(len(classes))
    width = 0.4
    for offset, (name, text) in zip((-width / 2, width / 2), DIRECTIONS, strict=True):
        values = [report.per_class[name].get(c, np.nan) for c in classes]
        mean = report.a2v_map if name == "a2v" else report.v2a_map
        ax_bars.bar(
            x + offset, values, width, color=COLOURS[name], label=f"{text} (MAP {mean:.3f})"
        )
    ax_bars.set_xticks(x)
    ax_bars.set_xticklabels(
        [str(c) for c in classes], rotation=0 if len(classes) <= 15 else 60, fontsize=8
    )
    ax_bars.set_ylim(0.0, 1.2)
    ax_bars.set_yticks(np.linspace(0.0, 1.0, 6))
    ax_bars.set_xlabel("class")
    ax_bars.set_ylabel("AP (mean over the class's queries)")
    ax_bars.set_title("per-class AP")
    ax_bars.legend(loc="upper center", ncols=2, fontsize=8, frameon=False)
    ax_bars.grid(axis="y", alpha=0.3)

    for name, text in DIRECTIONS:
        recall, precision = curves[name]
        ax_pr.plot(recall, precision, marker="o", ms=3, color=COLOURS[name], label=text)
    ax_pr.set_xlim(0.0, 1.0)
    ax_pr.set_ylim(0.0, 1.05)
    ax_pr.set_xlabel("recall")
    ax_pr.set_ylabel("interpolated precision")
    ax_pr.set_title("precision-recall")
    ax_pr.legend(loc="lower left", fontsize=8)
    ax_pr.grid(alpha=0.3)

    ranked = "" if space is None else f" ({space} space)"
    fig.suptitle(
        title
        or f"cross-modal retrieval{ranked}: MAP {report.map:.3f} "
        f"({report.n_audio} audio, {report.n_visual} visual)"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, format="png")
    except OSError as exc:
        raise AvsearchError(f"cannot write the plot to {out}: {exc}") from exc
    return out
