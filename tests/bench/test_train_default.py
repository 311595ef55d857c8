"""bench/train_default.py without training: the recorded command, its substitutions, the
labels CSV of a leave-one-speaker-out fold and the docs table.

Imported by module name (pytest puts bench/ on sys.path), never by file path."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import train_default as td

COMMAND = (
    "avsearch train bench/out/avdigits/train/audio ../shared/data/farm "
    "--labels bench/out/avdigits/train/labels.csv --labels ../shared/data/natural/index.csv "
    "--method infonce --epochs 40 --seed 0 --audio-backbone aisfx --out models/default"
)


def _model(tmp_path: Path, command: str | None = COMMAND) -> Path:
    model = tmp_path / "m"
    model.mkdir(parents=True)
    training = f"  command: {command}\n" if command else "  mode: media\n"
    (model / "config.yaml").write_text(f"name: m\ntraining:\n{training}", encoding="utf-8")
    return model


def test_recorded_command_is_the_train_arguments(tmp_path: Path) -> None:
    args = td.recorded_command(_model(tmp_path))
    assert args[0] == "train" and args[-2:] == ["--out", "models/default"]
    with pytest.raises(SystemExit, match=r"no training\.command"):
        td.recorded_command(_model(tmp_path / "x", None))


def test_substitutions_touch_one_value_only() -> None:
    args = COMMAND.split()[1:]
    out = td.with_option(args, "--out", "bench/out/x")
    assert out[-2:] == ["--out", "bench/out/x"] and args[-1] == "models/default"
    assert td.with_option(args, "--epochs", "2").count("--epochs") == 1
    assert td.with_option(["train"], "--epochs", "2") == ["train", "--epochs", "2"]
    csv_path = td.REPO / "bench/out/avdigits/train/labels.csv"
    fold = td.substitute(args, "--labels", csv_path, "w/labels.csv")
    assert fold.count("w/labels.csv") == 1
    assert "../shared/data/natural/index.csv" in fold
    with pytest.raises(SystemExit, match="expected one"):
        td.substitute(args, "--labels", None, "x.csv")  # two of them: which one?
    with pytest.raises(SystemExit, match="has 0"):
        td.substitute(args, "--labels", td.REPO / "elsewhere.csv", "x.csv")


def test_labels_without_speaker_drops_their_clips_and_rebases_paths(tmp_path: Path) -> None:
    split = tmp_path / "train"
    (split / "audio" / "3").mkdir(parents=True)
    src = split / "labels.csv"
    src.write_text(
        "path,label\naudio/3/3_george_7.wav,3\naudio/3/3_theo_7.wav,3\nimages/3/train_0001.png,3\n",
        encoding="utf-8",
    )
    dst = td.labels_without_speaker(src, "george", tmp_path / "work" / "loso" / "labels.csv")
    with dst.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "label"]
    assert sorted(rows[1:]) == [
        ["../../train/audio/3/3_theo_7.wav", "3"],
        ["../../train/images/3/train_0001.png", "3"],
    ]


def test_farm_labels_come_from_the_stems(tmp_path: Path) -> None:
    for rel in ("sounds/chickens.ogg", "sounds/dog.ogg", "images/chicken.webp", "images/dog.webp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    labels = {p.name: v for p, v in td.farm_labels(tmp_path).items()}
    assert labels == {"chickens.ogg": "chicken", "dog.ogg": "dog", "chicken.webp": "chicken",
                      "dog.webp": "dog"}  # fmt: skip


def _results(loso: bool) -> dict[str, Any]:
    per = {s: {"map": 0.9} for s in td.avdigits_data.SPEAKERS}
    return {
        "audio_backbone": "aisfx",
        "command": COMMAND,
        "date": "2026-01-01",
        "seconds": 10.0,
        "reproduction": {"verdict": "byte-identical", "heads_sha256": "ab" * 32, "seconds": 1.0},
        "avdigits": {"a2v_map": 0.96, "v2a_map": 0.95, "map": 0.955, "seconds": 2.0},
        "farm": {"r1_a2v": 1.0, "a2v_map": 1.0, "n_audio": 19, "seconds": 3.0},
        "loso": {"per_speaker": per, "map_mean": 0.9, "map_std": 0.0, "seconds": 4.0}
        if loso
        else None,
    }


def test_section_puts_the_models_side_by_side_and_states_the_targets() -> None:
    text = td.section({"speech": _results(True), "default": _results(False)})
    header = next(line for line in text.splitlines() if line.startswith("| |"))
    assert header == "| | `default` | `speech` |"
    row = "| AV-Digits LOSO MAP, mean ± std of the speakers | not measured | 0.900 ± 0.000 |"
    assert row in text
    assert "`default` AV-Digits test MAP ≥ 0.95: 0.955, met" in text
    assert "`speech` LOSO mean MAP ≥ 0.90: 0.900, met" in text
    assert "python bench/train_default.py --model speech --loso" in text
    assert "--labels ../shared/data/natural/index.csv" in text  # option beside its value
