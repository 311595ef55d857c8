"""`avsearch train` and `avsearch eval --features` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from avsearch.cli import app
from tests.mediagen import write_mp4, write_png, write_wav

runner = CliRunner()


def cli(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    data = json.loads(result.stdout) if "--json" in args and result.stdout.strip() else None
    return result.exit_code, data, result.stderr


def _features(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    a_centres = rng.normal(size=(classes, 16)) * 3
    v_centres = rng.normal(size=(classes, 24)) * 3
    audio = a_centres[labels] + rng.normal(size=(n, 16))
    visual = v_centres[labels] + rng.normal(size=(n, 24))
    return audio.astype(np.float32), visual.astype(np.float32), labels


@pytest.fixture
def h5_file(tmp_path: Path) -> Path:
    a, v, y = _features(240, 4, 0)
    split = np.array(["train"] * 180 + ["test"] * 60)
    path = tmp_path / "feats.h5"
    with h5py.File(path, "w") as fh:
        fh["audio"], fh["visual"], fh["label"] = a, v, y
        fh["split"] = split.astype("S")
    return path


def test_feature_mode_trains_and_evaluates(h5_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    code, summary, err = cli(
        "--json",
        "train",
        "--features",
        str(h5_file),
        "--epochs",
        "4",
        "--labeled-ratio",
        "0.5",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert summary["mode"] == "features" and summary["epochs_run"] == 4
    assert summary["labeled_pairs"] < summary["pairs"]
    assert summary["test"]["map"] > 0.6  # 4 well separated classes; chance ≈ 0.25
    assert (out / "config.yaml").exists() and (out / "heads.safetensors").exists()
    code, report, _ = cli("--json", "eval", "--features", str(h5_file), "--model", str(out))
    assert code == 0 and report["map"] == pytest.approx(summary["test"]["map"], abs=1e-6)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--labeled-ratio", "1.5"], "--labeled-ratio"),
        (["--labeled-ratio", "0"], "--labeled-ratio"),
        (["--method", "magic"], "method"),
    ],
)
def test_bad_options_are_usage_errors(h5_file: Path, tmp_path: Path, args, needle) -> None:
    code, _, err = cli("train", "--features", str(h5_file), "--out", str(tmp_path / "m"), *args)
    assert code == 2 and needle in err and "Traceback" not in err


def test_bad_feature_files_and_missing_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as fh:
        fh["audio"] = np.zeros((10, 4), np.float32)
        fh["visual"] = np.zeros((9, 4), np.float32)
        fh["label"] = np.zeros(10, np.int64)
    code, _, err = cli("train", "--features", str(bad), "--out", str(tmp_path / "m"))
    assert code == 2 and "Traceback" not in err
    code, _, err = cli("train", "--out", str(tmp_path / "m"))
    assert code == 2 and "--features" in err
    code, _, err = cli("eval", "--features", str(bad))
    assert code == 2 and "go together" in err


@pytest.mark.slow
def test_media_mode_model_works_with_embed(tmp_path: Path, index_env: Path) -> None:
    media = tmp_path / "media"
    for i in range(3):
        write_mp4(media / "low" / f"v{i}.mp4", seconds=2.5, freq=220.0 + 10 * i)
        write_mp4(media / "high" / f"v{i}.mp4", seconds=2.5, freq=2000.0 + 50 * i, colour_every=0.5)
    write_wav(media / "high" / "beep.wav", freq=2500.0)
    write_png(media / "low" / "pic.png")
    out = tmp_path / "model"
    args = ["--json", "train", str(media), "--epochs", "2", "--batch-size", "8", "--out", str(out)]
    code, summary, err = cli(*args)
    assert code == 0, err
    assert summary["mode"] == "media" and summary["classes"] == ["high", "low"]
    assert summary["media"]["decoded"] == 8 and summary["media"]["video_pairs"] >= 6
    code, again, _ = cli(*args[:-1], str(tmp_path / "model2"))
    assert code == 0 and again["media"]["decoded"] == 0 and again["media"]["from_cache"] == 8
    code, emb, err = cli("--json", "embed", str(media), "--model", str(out))
    assert code == 0 and emb["files"]["new"] == 8, err
    code, res, _ = cli("--json", "query", str(media / "high" / "beep.wav"))
    assert code == 0 and res["model"] == "model" and res["results"]


def test_no_pairs_and_missing_csv_files(tmp_path: Path, index_env: Path) -> None:
    write_wav(tmp_path / "only-sounds" / "a" / "x.wav", seconds=1.0)
    code, _, err = cli("train", str(tmp_path / "only-sounds"), "--out", str(tmp_path / "m"))
    assert code == 2 and "no audio-visual pairs" in err
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nnot-there.wav,a\n")
    code, _, err = cli(
        "train", str(tmp_path / "only-sounds"), "--labels", str(csv), "--out", str(tmp_path / "m")
    )
    assert code == 2 and "do not exist" in err


@pytest.mark.slow
def test_corrupt_file_is_skipped_and_exit_code_is_partial(tmp_path: Path, index_env: Path) -> None:
    media = tmp_path / "media"
    for label, freq, colour in (("low", 300.0, (30, 30, 200)), ("high", 3000.0, (200, 30, 30))):
        write_wav(media / label / "a.wav", freq=freq)
        write_png(media / label / "a.png", colour=colour)
    (media / "high" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk" * 50)
    out = tmp_path / "model"
    args = ["--json", "train", str(media), "--epochs", "2", "--batch-size", "4", "--out", str(out)]
    code, summary, err = cli(*args)
    assert code == 4, err
    assert [Path(f["path"]).name for f in summary["media"]["failed"]] == ["broken.wav"]
    assert summary["pairs"] == 2 and (out / "config.yaml").exists()
