"""Confidence against a background (avsearch.calibrate) and its use by query: hand-computed
cases, seeded sampling, and --min-confidence / "no good match" through the CLI with a stand-in
model (fast lane)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from avsearch import calibrate
from avsearch.cli import app
from avsearch.encoders.model import AVModel
from avsearch.query import Hit, QueryResult, keep_confident
from avsearch.store.manifest import Manifest, NewSegment
from tests.mediagen import write_png, write_wav
from tests.reliability.conftest import FakeModel

runner = CliRunner()


def test_robust_z_and_percentile_by_hand() -> None:
    bg = calibrate.Background.of([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert bg.median == pytest.approx(0.5)
    # |x - 0.5| = 0.4 0.3 0.2 0.1 0 0.1 0.2 0.3 0.4 -> median 0.2
    assert bg.spread == pytest.approx(1.4826 * 0.2)
    assert bg.z(0.5 + 1.4826 * 0.2 * 3) == pytest.approx(3.0)
    # 0.45: 4 below, none equal; 0.5: 4 below, 1 equal -> (4 + 5) / 18
    assert bg.percentile(np.array([0.45, 0.5, 2.0])) == pytest.approx([4 / 9, 0.5, 1.0])


def test_a_few_matches_in_the_background_barely_move_the_robust_z() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 0.1, 450)
    matches = rng.normal(0.6, 0.05, 50)  # a tenth of the gallery matches the query
    clean, mixed = calibrate.Background.of(noise), calibrate.Background.of([*noise, *matches])
    assert abs(mixed.z(0.6) - clean.z(0.6)) / clean.z(0.6) < 0.2
    assert abs(mixed.z_mean_std(0.6) - clean.z_mean_std(0.6)) / clean.z_mean_std(0.6) > 0.4


def test_curve_is_increasing_within_0_1_and_matches_the_formula() -> None:
    curve = calibrate.Curve(1.5, -5.0)
    z = np.array([-100.0, 0.0, 2.0, 3.0, 100.0])
    c = curve(z)
    assert np.all(np.diff(c) > 0) and c[0] >= 0.0 and c[-1] <= 1.0
    assert c[2] == pytest.approx(1 / (1 + np.exp(2.0)))


def test_confidence_is_unknown_on_a_tiny_background_and_floors_the_spread() -> None:
    assert np.isnan(calibrate.Background.of([0.1, 0.2]).confidence(0.9))
    flat = calibrate.Background.of([0.3] * 20)  # zero spread: floored, no division by zero
    assert np.isfinite(flat.z(0.31)) and flat.confidence(0.31) > flat.confidence(0.3)


def test_sample_ids_is_seeded_sorted_and_takes_all_of_a_small_set() -> None:
    ids = np.arange(1000, 0, -1)
    a = calibrate.sample_ids(ids, 10, seed=3)
    assert np.array_equal(a, calibrate.sample_ids(ids, 10, seed=3))
    assert not np.array_equal(a, calibrate.sample_ids(ids, 10, seed=4))
    assert len(set(a.tolist())) == 10 and np.all(np.diff(a) > 0)
    assert calibrate.sample_ids(np.array([5, 1, 3]), 10).tolist() == [1, 3, 5]


def test_background_vectors_come_from_the_manifest_of_one_modality(tmp_path: Path) -> None:
    m = Manifest(tmp_path / "m.sqlite")
    m.ensure_schema()
    rng = np.random.default_rng(1)
    vis = rng.standard_normal((30, 4)).astype(np.float32)
    segs = [NewSegment("visual", i, float(i), float(i + 1), v) for i, v in enumerate(vis)]
    segs.append(NewSegment("audio", 0, 0.0, 1.0, np.full(4, 9.0, np.float32)))
    m.put_file(path="/x.mp4", kind="video", size=1, mtime_ns=1, digest="d", segments=segs)
    got = calibrate.background_vectors(m, "visual", 4, n=10, seed=0)
    assert got.shape == (10, 4)
    assert all(any(np.array_equal(g, v) for v in vis) for g in got)  # never the audio one
    assert np.array_equal(got, calibrate.background_vectors(m, "visual", 4, n=10, seed=0))
    assert calibrate.background_vectors(m, "visual", 4, n=100).shape == (30, 4)
    m.close()


def _result(confidences: list[float | None]) -> QueryResult:
    hits = [
        Hit(i + 1, 0.9 - 0.1 * i, f"/m/{i}.png", None, None, "visual", i, c)
        for i, c in enumerate(confidences)
    ]
    return QueryResult("q.wav", "audio", "visual", "m", True, hits)


def test_keep_confident_drops_weak_hits_and_says_no_good_match() -> None:
    res = keep_confident(_result([0.95, 0.6, 0.2]), 0.5)
    assert [h.rank for h in res.results] == [1, 2] and res.note is None
    assert keep_confident(_result([0.95, 0.6]), None).results == _result([0.95, 0.6]).results
    none = keep_confident(_result([0.3, 0.2]), 0.5)
    data = none.to_json()
    assert data["results"] == [] and data["no_good_match"] is True
    assert data["note"].startswith("no good match") and "0.30" in data["note"]
    unknown = keep_confident(_result([None, None]), 0.1)
    assert unknown.results == [] and "too few segments" in (unknown.note or "")


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> FakeModel:
    from tests.test_report import StandIn

    model = StandIn()
    monkeypatch.setattr(AVModel, "load", staticmethod(lambda *a, **k: model))
    return model


def _media(root: Path) -> Path:
    for i in range(12):
        write_png(root / "pics" / f"p{i}.png", ((i * 40) % 256, (i * 90) % 256, (i * 20) % 256))
    write_wav(root / "sounds" / "a.wav", freq=300.0)
    return root


def test_cli_reports_confidence_and_min_confidence_filters(
    tmp_path: Path, index_env: Path, fake_model: FakeModel
) -> None:
    media = _media(tmp_path / "m")
    result = runner.invoke(app, ["embed", str(media)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    args = ["--json", "query", str(media / "sounds" / "a.wav"), "--top", "12"]
    out = json.loads(runner.invoke(app, args, catch_exceptions=False).stdout)
    conf = [r["confidence"] for r in out["results"]]
    assert len(conf) == 12 and all(0.0 <= c <= 1.0 for c in conf)
    assert conf == sorted(conf, reverse=True)  # monotone in the score within one query
    cut = (conf[3] + conf[4]) / 2
    kept = json.loads(
        runner.invoke(app, [*args, "--min-confidence", str(cut)], catch_exceptions=False).stdout
    )
    assert [r["confidence"] for r in kept["results"]] == conf[:4]
    # nothing passes: "no good match", exit 0, empty results with a note (JSON and table)
    result = runner.invoke(app, [*args, "--min-confidence", "1"], catch_exceptions=False)
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["results"] == [] and data["no_good_match"] is True
    assert data["note"].startswith("no good match")
    result = runner.invoke(app, [*args[1:], "--min-confidence", "1"], catch_exceptions=False)
    assert result.exit_code == 0 and "no good match" in result.stderr


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan"])
def test_min_confidence_outside_0_1_is_one_line_exit_2(
    tmp_path: Path, index_env: Path, value: str
) -> None:
    clip = write_wav(tmp_path / "a.wav")
    result = runner.invoke(app, ["query", str(clip), "--min-confidence", value])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--min-confidence must be between 0 and 1" in lines[0]
    assert "Traceback" not in result.stderr


def test_min_confidence_from_avsearch_yaml_is_checked(tmp_path: Path, index_env: Path) -> None:
    cfg = tmp_path / "avsearch.yaml"
    cfg.write_text("query:\n  min_confidence: 2\n")
    clip = write_wav(tmp_path / "a.wav")
    result = runner.invoke(app, ["--config", str(cfg), "query", str(clip)])
    assert result.exit_code == 2 and "query.min_confidence in" in result.stderr
