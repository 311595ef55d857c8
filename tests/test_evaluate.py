"""Tests for avsearch.evaluate: hand-computed cases, a plain loop reference, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avsearch.evaluate import (
    RetrievalReport,
    average_precision,
    evaluate_cross_modal,
    map_at_r,
    mean_average_precision,
    per_class_ap,
    precision_recall_curve,
    rank_gallery,
    recall_at_k,
)

# --- plain reference implementation (Python loops, no vectorisation) ----------------------


def ref_ranking(q: np.ndarray, g: np.ndarray, normalize: bool = True) -> list[list[int]]:
    """Cosine (or inner-product) scores; gallery sorted by (-score, gallery index)."""
    if normalize:
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    out = []
    for i in range(len(q)):
        scores = [
            sum(float(x) * float(y) for x, y in zip(q[i], g[j], strict=True)) for j in range(len(g))
        ]
        out.append(sorted(range(len(g)), key=lambda j: (-scores[j], j)))
    return out


def ref_ap(rel: list[bool]) -> float:
    hits, total = 0, 0.0
    for k, r in enumerate(rel, start=1):
        if r:
            hits += 1
            total += hits / k
    return total / hits if hits else 0.0


def ref_ap_at_r(rel: list[bool]) -> float:
    n_rel = sum(rel)
    hits, total = 0, 0.0
    for k, r in enumerate(rel[:n_rel], start=1):
        if r:
            hits += 1
            total += hits / k
    return total / n_rel


def ref_interp(rel: list[bool], n_levels: int) -> list[float]:
    n_rel = sum(rel)
    points = []  # (recall, precision) at every rank
    hits = 0
    for k, r in enumerate(rel, start=1):
        hits += r
        points.append((hits / n_rel, hits / k))
    levels = [i / (n_levels - 1) for i in range(n_levels)]
    return [max(p for rc, p in points if rc >= lv - 1e-12) for lv in levels]


def ref_metrics(q, ql, g, gl, ks=(1, 5, 10), n_levels=11) -> dict:
    rankings = ref_ranking(q, g)
    aps, aprs, firsts, interps, classes = [], [], [], [], []
    skipped = 0
    for i, order in enumerate(rankings):
        rel = [gl[j] == ql[i] for j in order]
        if not any(rel):
            skipped += 1
            continue
        aps.append(ref_ap(rel))
        aprs.append(ref_ap_at_r(rel))
        firsts.append(rel.index(True))
        interps.append(ref_interp(rel, n_levels))
        classes.append(ql[i])
    per_class = {}
    for c in sorted(set(classes)):
        vals = [a for a, cc in zip(aps, classes, strict=True) if cc == c]
        per_class[c] = sum(vals) / len(vals)
    return {
        "map": sum(aps) / len(aps),
        "map_at_r": sum(aprs) / len(aprs),
        "recall": {k: sum(f < k for f in firsts) / len(firsts) for k in ks},
        "per_class": per_class,
        "interp": np.mean(np.array(interps), axis=0),
        "skipped": skipped,
        "aps": aps,
    }


def random_case(seed: int, n_q: int, n_g: int, n_cls: int, dim: int, strings: bool):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n_q, dim))
    g = rng.normal(size=(n_g, dim))
    ql = rng.integers(0, n_cls, n_q)
    gl = rng.integers(0, n_cls, n_g)
    if strings:
        names = np.array([f"class-{c}" for c in range(n_cls)])
        ql, gl = names[ql], names[gl]
    return q, ql, g, gl


# --- (1) hand-computed cases ----------------------------------------------------------------


def test_ap_hand_cases() -> None:
    assert average_precision(np.array([1, 0, 1, 0], bool)) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision(np.ones(7, bool)) == 1.0
    assert average_precision(np.array([0, 0, 0, 0, 1])) == pytest.approx(1 / 5)
    assert average_precision(np.array([0, 1, 0, 1, 1])) == pytest.approx(
        (1 / 2 + 2 / 4 + 3 / 5) / 3
    )
    assert average_precision(np.zeros(4, bool)) == 0.0


def _line_case(rel_order: list[int]) -> tuple[np.ndarray, ...]:
    """One query [1, 0]; gallery item j scores cos(angle_j) with angles increasing, so the
    ranking is the gallery order; relevant items get label 1."""
    angles = np.linspace(0.0, 1.5, len(rel_order))
    g = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.array([[1.0, 0.0]]), np.array([1]), g, np.array(rel_order)


def test_map_at_r_hand_case() -> None:
    # R = 3; first R ranks are [1, 0, 1] -> (1/1 + 2/3) / 3. The 3rd relevant item (rank 5) is
    # outside the first R ranks and does not count.
    q, ql, g, gl = _line_case([1, 0, 1, 0, 1])
    assert map_at_r(q, ql, g, gl) == pytest.approx((1 + 2 / 3) / 3)
    assert mean_average_precision(q, ql, g, gl) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert rank_gallery(q, g).tolist() == [[0, 1, 2, 3, 4]]


def test_recall_at_k_hand_case() -> None:
    # Query 0 (label 1): first relevant at rank 3. Query 1 (label 0, the opposite direction,
    # so the ranking is reversed: gallery 4, 3, 2, 1, 0): first relevant (gallery 3) at rank 2.
    _, _, g, gl = _line_case([0, 0, 1, 0, 1])
    q = np.array([[1.0, 0.0], [np.cos(1.5), np.sin(1.5)]])
    ql = np.array([1, 0])
    assert rank_gallery(q, g)[1].tolist() == [4, 3, 2, 1, 0]
    got = recall_at_k(q, ql, g, gl, ks=(1, 2, 3, 10))
    assert got == {1: 0.0, 2: 0.5, 3: 1.0, 10: 1.0}


def test_precision_recall_curve_hand_case() -> None:
    # rel = [1, 0, 1, 0]: R = 2, points (recall, precision) = (.5, 1), (.5, .5), (1, 2/3), (1, .5)
    q, ql, g, gl = _line_case([1, 0, 1, 0])
    levels, prec = precision_recall_curve(q, ql, g, gl, n_levels=3)
    np.testing.assert_allclose(levels, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(prec, [1.0, 1.0, 2 / 3])


def test_precision_recall_curve_ranks_by_given_scores() -> None:
    # the same case ranked by the negated cosine: rel = [0, 1, 0, 1], points (recall,
    # precision) = (.5, .5), (1, .5); interpolated at 0, .5, 1: .5 each
    q, ql, g, gl = _line_case([1, 0, 1, 0])
    _, prec = precision_recall_curve(q, ql, g, gl, n_levels=3, score=lambda rows: -(q[rows] @ g.T))
    np.testing.assert_allclose(prec, [0.5, 0.5, 0.5])


# --- (2) ties -------------------------------------------------------------------------------


def test_tie_rule_lower_gallery_index_first() -> None:
    # Gallery 1 (label "b") and gallery 2 (label "a") both score exactly 1.0 for the query; the
    # stable rule ranks gallery 1 first: rel = [0, 1, 1] -> AP = (1/2 + 2/3) / 2 = 7/12.
    # (The other order would give rel = [1, 0, 1] -> AP = 5/6.)
    q = np.array([[1.0, 0.0]])
    g = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    ql, gl = np.array(["a"]), np.array(["a", "b", "a"])
    assert rank_gallery(q, g).tolist() == [[1, 2, 0]]
    assert mean_average_precision(q, ql, g, gl) == pytest.approx(7 / 12)
    # Swapping the two tied items swaps the outcome: the rule, not the data, decides.
    assert mean_average_precision(q, ql, g, gl[[0, 2, 1]]) == pytest.approx(5 / 6)


def test_many_ties_are_resolved_by_index_in_every_chunk() -> None:
    # Small integers with the inner product: every score is exact, so ties are real ties.
    rng = np.random.default_rng(3)
    g = rng.integers(-2, 3, size=(40, 3)).astype(float)
    q = rng.integers(-2, 3, size=(9, 3)).astype(float)
    want = ref_ranking(q, g, normalize=False)
    for chunk in (1, 4, 1024):
        assert rank_gallery(q, g, chunk=chunk, normalize=False).tolist() == want


# --- (3) vectorised vs plain reference ----------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "n_q", "n_g", "n_cls", "dim", "strings"),
    [(0, 17, 23, 3, 4, False), (1, 40, 31, 5, 8, True), (2, 5, 60, 2, 3, False),
     (3, 33, 12, 7, 16, True), (4, 50, 50, 10, 2, False)],
)  # fmt: skip
def test_matches_reference(seed: int, n_q: int, n_g: int, n_cls: int, dim: int, strings: bool):
    q, ql, g, gl = random_case(seed, n_q, n_g, n_cls, dim, strings)
    ref = ref_metrics(q, ql, g, gl, ks=(1, 3, 10))
    for chunk in (1, 7, 1024):
        assert mean_average_precision(q, ql, g, gl, chunk=chunk) == pytest.approx(
            ref["map"], abs=1e-12
        )
        assert map_at_r(q, ql, g, gl, chunk=chunk) == pytest.approx(ref["map_at_r"], abs=1e-12)
        assert recall_at_k(q, ql, g, gl, ks=(1, 3, 10), chunk=chunk) == ref["recall"]
    got_pc = per_class_ap(q, ql, g, gl)
    assert list(got_pc) == list(ref["per_class"])
    for c, v in ref["per_class"].items():
        assert got_pc[c] == pytest.approx(v, abs=1e-12)
    _, prec = precision_recall_curve(q, ql, g, gl, n_levels=11, chunk=5)
    np.testing.assert_allclose(prec, ref["interp"], rtol=0, atol=1e-12)
    # Per query AP through the public one-query function and the reference ranking.
    order = rank_gallery(q, g, chunk=6)
    assert order.tolist() == ref_ranking(q, g)
    aps = [average_precision(gl[o] == ql[i]) for i, o in enumerate(order) if (gl == ql[i]).any()]
    np.testing.assert_allclose(aps, ref["aps"], rtol=0, atol=1e-12)


def test_evaluate_cross_modal_matches_reference() -> None:
    a, al, v, vl = random_case(7, 30, 45, 4, 6, strings=True)
    al[0] = "only-audio"  # a query with no relevant item: skipped and counted
    rep = evaluate_cross_modal(a, al, v, vl, chunk=8)
    a2v, v2a = ref_metrics(a, al, v, vl), ref_metrics(v, vl, a, al)
    assert rep.a2v_map == pytest.approx(a2v["map"], abs=1e-12)
    assert rep.v2a_map == pytest.approx(v2a["map"], abs=1e-12)
    assert rep.map == pytest.approx((a2v["map"] + v2a["map"]) / 2, abs=1e-12)
    assert rep.a2v_map_at_r == pytest.approx(a2v["map_at_r"], abs=1e-12)
    assert rep.v2a_map_at_r == pytest.approx(v2a["map_at_r"], abs=1e-12)
    assert rep.recall_at == {"a2v": a2v["recall"], "v2a": v2a["recall"]}
    assert rep.per_class["a2v"] == pytest.approx(a2v["per_class"], abs=1e-12)
    assert rep.per_class["v2a"] == pytest.approx(v2a["per_class"], abs=1e-12)
    assert rep.n_skipped_queries == {"a2v": 1, "v2a": 0}
    assert (rep.n_audio, rep.n_visual) == (30, 45)

    js = rep.to_json()
    json.dumps(js)
    for key in ("a2v_map", "v2a_map", "map", "a2v_map_at_r", "v2a_map_at_r", "recall_at"):
        assert key in js
    assert (js["n_audio"], js["n_visual"]) == (30, 45)
    assert set(js["recall_at"]) == {"a2v", "v2a"}
    assert set(js["recall_at"]["a2v"]) == {"1", "5", "10"}
    assert isinstance(rep, RetrievalReport)


def test_int_labels_give_int_keys() -> None:
    a, al, v, vl = random_case(8, 20, 20, 3, 4, strings=False)
    rep = evaluate_cross_modal(a, al, v, vl)
    assert all(type(k) is int for k in rep.per_class["a2v"])
    assert set(rep.to_json()["per_class"]["v2a"]) == {str(k) for k in rep.per_class["v2a"]}


# --- (4) sklearn ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_matches_sklearn(seed: int) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    # Tie-free random floats: sklearn groups tied scores, our rule orders them by index.
    q, ql, g, gl = random_case(seed, 12, 80, 4, 8, strings=False)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    order = rank_gallery(q, g)
    for i in range(len(q)):
        y = gl == ql[i]
        if not y.any():
            continue
        want = metrics.average_precision_score(y, gn @ qn[i])
        assert average_precision(y[order[i]]) == pytest.approx(want, abs=1e-12)


# --- (5) perfect and random embeddings -----------------------------------------------------


def test_perfect_embeddings_give_map_one() -> None:
    rng = np.random.default_rng(0)
    al, vl = rng.integers(0, 5, 60), rng.integers(0, 5, 70)
    rep = evaluate_cross_modal(np.eye(5)[al], al, np.eye(5)[vl], vl)
    assert rep.map == 1.0 and rep.a2v_map_at_r == 1.0 and rep.v2a_map_at_r == 1.0
    assert rep.recall_at["a2v"] == {1: 1.0, 5: 1.0, 10: 1.0}
    _, prec = precision_recall_curve(np.eye(5)[al], al, np.eye(5)[vl], vl)
    np.testing.assert_array_equal(prec, np.ones(11))


def test_random_embeddings_near_chance() -> None:
    rng = np.random.default_rng(1)
    n, n_cls = 1500, 4
    al, vl = rng.integers(0, n_cls, n), rng.integers(0, n_cls, n)
    rep = evaluate_cross_modal(rng.normal(size=(n, 32)), al, rng.normal(size=(n, 32)), vl)
    share = np.array([(vl == c).mean() for c in al])  # fraction of relevant items, ≈ 1/4
    assert rep.a2v_map == pytest.approx(share.mean(), abs=0.02)
    assert rep.v2a_map == pytest.approx(share.mean(), abs=0.02)
    # MAP@R of a random ranking: a share p of the first R ranks hit, each at precision ≈ p.
    assert rep.a2v_map_at_r == pytest.approx((share**2).mean(), abs=0.01)
    assert rep.recall_at["a2v"][1] == pytest.approx(share.mean(), abs=0.04)


# --- (6) validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "al", "v", "vl", "match"),
    [
        (np.ones((3, 4)), np.arange(3), np.ones((2, 5)), np.arange(2), "dimension"),
        (np.ones((3, 4)), np.arange(2), np.ones((2, 4)), np.arange(2), "one label per"),
        (np.ones((3, 4)), np.arange(3), np.ones((2, 4)), np.zeros((2, 1)), "one label per"),
        (np.ones((0, 4)), np.arange(0), np.ones((2, 4)), np.arange(2), "empty"),
        (np.ones(4), np.arange(1), np.ones((2, 4)), np.arange(2), "2-D"),
        (np.full((2, 4), np.nan), np.arange(2), np.ones((2, 4)), np.arange(2), "NaN"),
        (np.ones((2, 4)), np.arange(2), np.ones((2, 4)), np.array(["0", "1"]), "mix"),
        (np.ones((2, 4)), np.array([0, 0]), np.ones((2, 4)), np.array([1, 1]), "share no"),
        (np.array([["x"]]), np.arange(1), np.ones((2, 1)), np.arange(2), "numeric"),
    ],
)  # fmt: skip
def test_invalid_inputs_raise(a, al, v, vl, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate_cross_modal(a, al, v, vl)


def test_invalid_options_raise() -> None:
    q, ql, g, gl = random_case(0, 4, 5, 2, 3, strings=False)
    with pytest.raises(ValueError, match="ks"):
        recall_at_k(q, ql, g, gl, ks=(0, 5))
    with pytest.raises(ValueError, match="chunk"):
        mean_average_precision(q, ql, g, gl, chunk=0)
    with pytest.raises(ValueError, match="n_levels"):
        precision_recall_curve(q, ql, g, gl, n_levels=1)
    with pytest.raises(ValueError, match="1-D"):
        average_precision(np.zeros((2, 2), bool))
