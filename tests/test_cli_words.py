"""The aisfx-words audio backbone through the real CLI, on real speech: `train` on FSDD clips
of some speakers, then `embed --model DIR` and `query` with a voice the heads never heard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avsearch.cli import app
from avsearch.encoders.model_dir import load_config
from avsearch.encoders.words import words_weights_path
from tests.conftest import shared_path
from tests.mediagen import write_png

runner = CliRunner()
DIGITS = {"0": (220, 20, 20), "1": (20, 200, 20), "7": (20, 20, 220)}
TRAIN_SPEAKERS = ("george", "jackson", "theo")
needs_words = pytest.mark.skipif(
    not words_weights_path().is_file(),
    reason="the word model is not installed: pip install --no-deps EfficientWord-Net==1.0.5",
)


def cli(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    data = json.loads(result.stdout) if "--json" in args and result.stdout.strip() else None
    return result.exit_code, data, result.stderr


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class folders of real spoken digits (3 speakers x 4 takes) and one colour image each."""
    fsdd = shared_path("data", "fsdd")
    root = tmp_path_factory.mktemp("words-media")
    for digit, colour in DIGITS.items():
        for speaker in TRAIN_SPEAKERS:
            for take in range(4):
                name = f"{digit}_{speaker}_{take}.wav"
                (root / digit).mkdir(exist_ok=True)
                shutil.copy(fsdd / name, root / digit / name)
        write_png(root / digit / "img.png", colour=colour)
    return root


@pytest.mark.slow
@needs_words
def test_words_backbone_trains_and_serves_a_new_voice(speech: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    code, summary, err = cli(
        "--json", "--index", str(tmp_path / "t"), "train", str(speech), "--labeled-ratio", "1.0",
        "--audio-backbone", "aisfx-words", "--epochs", "15", "--batch-size", "12",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0 and summary is not None, err
    config = load_config(out)
    assert config.audio.backbone == "aisfx-words" and config.audio.head.in_dim == 2560
    assert config.audio.backbone_weights is None  # frozen: the installed files are used
    index = str(tmp_path / "e")
    code, emb, err = cli("--json", "--index", index, "embed", str(speech), "--model", str(out))
    assert code == 0 and emb is not None and emb["files"]["new"] == 3 * 12 + 3, err
    # a speaker the heads never heard: each digit still finds its own picture first
    fsdd = shared_path("data", "fsdd")
    for digit in DIGITS:
        clip = fsdd / f"{digit}_yweweler_7.wav"
        code, res, err = cli("--json", "--index", index, "query", str(clip), "--top", "3")
        assert code == 0 and res is not None, err
        assert Path(res["results"][0]["path"]).parent.name == digit, (digit, res["results"])
