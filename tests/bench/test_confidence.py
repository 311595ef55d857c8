"""bench/confidence.py: the metrics at a threshold, the logistic fit and the report."""

from __future__ import annotations

import confidence as bench
import numpy as np
import pytest

from avsearch import calibrate


def _q(scores: list[float], relevant: list[bool]) -> bench.QueryScores:
    bg = calibrate.Background.of(np.linspace(-0.2, 0.2, 41))
    return bench.QueryScores("d", "/q.wav", "audio", "x", np.array(scores), np.array(relevant), bg)


def test_at_threshold_by_hand() -> None:
    qs = [
        _q([0.9, 0.8, 0.1], [True, False, False]),  # 2 hits >= 0.5: precision 1/2, recall 1
        _q([0.95, 0.2], [True, True]),  # 1 hit: precision 1, recall 1/2
        _q([0.3, 0.2], [False, False]),  # no right answer, returns nothing: no good match
        _q([0.7], [False]),  # no right answer, returns a hit
    ]
    r = bench.at_threshold(qs, [q.scores for q in qs], 0.5)
    assert r["with_hits"] == 2 and r["answerable"] == 2
    assert r["precision_mean"] == pytest.approx(0.75)
    assert r["recall_mean"] == pytest.approx(0.75)
    assert r["precision_micro"] == pytest.approx(2 / 4)
    assert r["no_answer_queries"] == 2 and r["no_good_match"] == pytest.approx(0.5)


def test_fit_logistic_recovers_a_known_curve() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, 20000)
    y = rng.random(len(x)) < 1 / (1 + np.exp(-(1.5 * x - 3.0)))
    a, b = bench.fit_logistic([x], [y], [1.0])
    assert a == pytest.approx(1.5, abs=0.1) and b == pytest.approx(-3.0, abs=0.15)


def test_render_names_every_method_and_the_curve() -> None:
    qs = {"A": [_q([0.9, 0.1], [True, False])], "B": [_q([0.8, 0.0], [True, False])]}
    curves = bench.fit_curves(qs)
    result = {
        "date": "today",
        "machine": "m",
        "model": "default",
        "curve": {k: [c.a, c.b] for k, c in curves.items()},
        **bench.evaluate(qs, curves),
    }
    result["verdict"] = bench.verdict(result["rows"])
    text = bench.render(result)
    for method in ("percentile", "z (mean/std)", "robust z, logistic (shipped)", "fitted on B"):
        assert method in text
    assert "Shipped curve" in text and text.count("\n| A |") == 4 * len(bench.THRESHOLDS)
