"""What a query's score is, said the same way everywhere: a cosine when one space ranked, a
fused z-score (plus the hit's heads cosine) when heads + native or heads + bridge did; in the
JSON answer, the text table and the results page. On the tiny seeded index of test_spaces (no
model needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avsearch import report
from avsearch import spaces as sp
from avsearch.cli import _print_query_result
from avsearch.encoders import bridge as br
from avsearch.query import Hit, QueryResult, _search, with_heads_cosine
from avsearch.store.index import IndexStore
from avsearch.store.manifest import HEADS
from tests.test_spaces import BR, DIM, NAT, _build, _unit


def _fused_result(root: Path, space: str) -> tuple[QueryResult, np.ndarray]:
    """A grouped query of seeded vectors ranked in ``space`` (heads+bridge: audio -> visual;
    heads+native: audio -> audio), as run_query builds it; and the heads query vector."""
    rng = np.random.default_rng(3)
    qh = _unit(rng.normal(size=(1, DIM)))
    with IndexStore.open_existing(root) as store:
        if space == sp.FUSED:
            target, other, dim = "visual", sp.BRIDGE, BR
        else:
            target, other, dim = "audio", sp.NATIVE, NAT
        qo = _unit(rng.normal(size=(1, dim)))
        fused = sp.FusedSearch(store, target, qh, qo, br.FusionRule(), other=other)
        hits = _search(store, target, qh, 4, grouped=True, search=fused)
        hits = with_heads_cosine(store, qh, hits)
    result = QueryResult("/q.wav", "audio", target, "m", True, hits, space=space)
    return result, qh


@pytest.mark.parametrize("space", [sp.FUSED, sp.FUSED_NATIVE])
def test_fused_hits_carry_their_heads_cosine(tmp_path: Path, space: str) -> None:
    root = _build(tmp_path / "i")
    result, qh = _fused_result(root, space)
    assert len(result.results) == 4
    with IndexStore.open_existing(root) as store:
        ids = [h.segment_id for h in result.results]
        vecs = store.manifest.vectors_by_ids(ids, DIM, HEADS)
    for h in result.results:
        assert h.heads_cosine == pytest.approx(float(vecs[h.segment_id] @ qh.ravel()), abs=1e-6)
    # the fused score is a sum of z-scores, not that cosine
    assert any(abs(h.score - (h.heads_cosine or 0.0)) > 1e-3 for h in result.results)
    data = result.to_json()
    assert data["space"] == space and data["score_kind"] == "fused"
    for hit, h in zip(data["results"], result.results, strict=True):
        assert hit["score"] == round(h.score, 6)
        assert hit["heads_cosine"] == round(h.heads_cosine or 0.0, 6)


def test_heads_and_native_rankings_say_cosine(tmp_path: Path) -> None:
    plain = Hit(1, 0.5, "/m/a.png", None, None, "visual", 1)
    heads = QueryResult("/q.wav", "audio", "visual", "m", True, [plain]).to_json()
    assert heads["score_kind"] == "cosine" and "heads_cosine" not in heads["results"][0]
    native = QueryResult("/q.wav", "audio", "audio", "m", True, [], space=sp.NATIVE)
    assert native.to_json()["score_kind"] == "cosine"
    assert sp.score_kind(sp.NATIVE) == sp.score_kind(HEADS) == "cosine"
    assert "not a cosine" in sp.score_meaning(sp.FUSED_NATIVE)
    assert sp.score_meaning(HEADS) == "cosine in the heads' space"


def test_text_table_names_the_score_and_shows_the_heads_cosine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result, _ = _fused_result(_build(tmp_path / "i"), sp.FUSED)
    _print_query_result(result)
    out = capsys.readouterr().out
    assert "heads+bridge space" in out and "score: fused z-score" in out
    assert "heads cos" in out
    for h in result.results:
        assert f"{h.score:.3f}" in out and f"{h.heads_cosine:.3f}" in out

    plain = QueryResult(
        "/q.wav", "audio", "visual", "m", True, [Hit(1, 0.5, "/m/a.png", None, None, "visual", 1)]
    )
    _print_query_result(plain)
    out = capsys.readouterr().out
    assert "score: cosine in the heads' space" in out and "heads cos" not in out


def test_results_page_says_what_the_score_is(tmp_path: Path) -> None:
    result, _ = _fused_result(_build(tmp_path / "i"), sp.FUSED_NATIVE)
    text = report.render_page(result, tmp_path / "gone.wav")  # (media gone: listed as such)
    assert "ranked in the heads+native space" in text and "not a cosine" in text
    for h in result.results:
        assert f"score {h.score:.3f} (fused) · heads cosine {h.heads_cosine:.3f}" in text

    plain = QueryResult(
        "/q.wav", "audio", "visual", "m", True, [Hit(1, 0.5, "/m/a.png", None, None, "visual", 1)]
    )
    text = report.render_page(plain, tmp_path / "gone.wav")
    assert "ranked in the heads space" in text and "score 0.500 · confidence" in text
    assert "heads cosine" not in text
