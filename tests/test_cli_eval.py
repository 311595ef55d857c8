"""`avsearch eval` through the real Typer app on a tiny hand-made index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avsearch.cli import app
from tests.test_evaluate_index import build_index

runner = CliRunner()
KEYS = {
    "a2v_map",
    "v2a_map",
    "map",
    "a2v_map_at_r",
    "v2a_map_at_r",
    "recall_at",
    "n_audio",
    "n_visual",
    "n_unlabeled_audio",
    "n_unlabeled_visual",
}


def test_eval_json_on_the_index_from_the_environment(index_env: Path, tmp_path: Path) -> None:
    build_index(index_env, tmp_path / "media")
    result = runner.invoke(app, ["--json", "eval"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) >= KEYS
    assert data["a2v_map"] == pytest.approx(5 / 6) and data["v2a_map"] == pytest.approx(3 / 4)
    assert data["recall_at"]["a2v"] == {"1": 1.0, "5": 1.0, "10": 1.0}
    assert (data["n_audio"], data["n_visual"]) == (2, 4)
    assert data["label_source"] == "folders"


def test_eval_table_labels_csv_and_plot(index_env: Path, tmp_path: Path) -> None:
    media = tmp_path / "media"
    build_index(index_env, media)
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "media/audio/cat/a.wav,cat\nmedia/audio/dog/b.wav,dog\n"
        "media/images/cat/cat1.png,cat\nmedia/images/dog/dog2.png,dog\nmissing.png,dog\n",
        encoding="utf-8",
    )
    plot = tmp_path / "eval.png"
    result = runner.invoke(
        app, ["eval", "--labels", str(csv), "--plot", str(plot)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr
    assert "MAP@R" in result.stdout and "R@10" in result.stdout
    assert "1.0000" in result.stdout  # with cat2/dog1 unlabelled, both directions are perfect
    assert "2 unlabeled" in result.stdout
    assert "1 file(s) named in" in result.stderr
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_eval_errors_map_to_exit_codes(index_env: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["--json", "eval"], catch_exceptions=False)
    assert result.exit_code == 3  # no index yet
    assert json.loads(result.stdout)["exit_code"] == 3

    build_index(index_env, tmp_path / "media")
    result = runner.invoke(app, ["eval", "--features", "x.h5", "--model", "m"])
    assert result.exit_code == 2
    assert "x.h5" in result.stderr and "no such file" in result.stderr

    bad = tmp_path / "bad.csv"
    bad.write_text("a.wav,cat,extra\n", encoding="utf-8")
    result = runner.invoke(app, ["eval", "--labels", str(bad)])
    assert result.exit_code == 2 and "line 1" in result.stderr


def test_eval_reads_its_yaml_section(index_env: Path, tmp_path: Path) -> None:
    media = tmp_path / "media"
    build_index(index_env, media)
    csv = tmp_path / "labels.csv"
    csv.write_text("media/audio/cat/a.wav,cat\nmedia/images/cat/cat1.png,cat\n", encoding="utf-8")
    conf = tmp_path / "avsearch.yaml"
    conf.write_text(f"eval:\n  labels: {csv}\n", encoding="utf-8")
    result = runner.invoke(app, ["--config", str(conf), "--json", "eval"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["n_audio"] == 1  # only the CSV's one labelled sound

    conf.write_text("eval:\n  model: m\n  plot: p.png\n", encoding="utf-8")
    result = runner.invoke(app, ["--config", str(conf), "eval", "--features", "x.h5"])
    assert result.exit_code == 2
    assert f"eval.plot in {conf} applies to the index, not to --features" in result.stderr
    conf.write_text("eval:\n  top: 3\n", encoding="utf-8")
    result = runner.invoke(app, ["--config", str(conf), "eval"])
    assert result.exit_code == 2
    assert "unknown key 'top' in section `eval:`; valid keys: labels, plot, features, model" in (
        result.stderr
    )
