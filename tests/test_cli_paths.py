"""The CLI with awkward paths: file names that are not UTF-8, and an --index that is a file.

A tiny stand-in model replaces the real one (``AVModel.load``), so this runs in the fast lane.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from avsearch.cli import app
from avsearch.encoders.model import AVModel
from avsearch.media.decode import WindowSpec
from avsearch.media.paths import path_from_b64
from tests.conftest import shared_path
from tests.mediagen import write_png, write_wav

runner = CliRunner()


class TinyModel:
    """Duck-typed AVModel: one unit vector per item, no weights to load."""

    name = "tiny"
    dim = 4
    fingerprint = "tiny-1"
    image_size = 32
    directory = Path("/nonexistent/tiny-model")

    def window_spec(self, window: float | None = None, min_tail: float = 0.5) -> WindowSpec:
        return WindowSpec.from_seconds(window or 1.0, 16000, min_tail)

    def embed(self, modality: str, batch: np.ndarray) -> np.ndarray:
        return np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (len(batch), 1))


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AVModel, "load", staticmethod(lambda *a, **k: TinyModel()))


def run(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout, stderr; stdout must be valid UTF-8 (decoding it strictly)."""
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout_bytes.decode("utf-8"), result.stderr


def test_non_utf8_file_names_are_indexed_queried_and_printed_losslessly(
    tmp_path: Path, index_env: Path, tiny_model: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "m"
    write_png(root / "horse.png")
    write_wav(root / "dog.wav")
    bad_png = root / os.fsdecode(b"bad\xff\xfe.png")
    bad_wav = root / os.fsdecode(b"bad\xff.wav")
    # other content than the good files (a copy would be one hit with a `duplicates` list)
    write_png(root / "other.png", (10, 20, 200)).rename(bad_png)
    write_wav(root / "other.wav", freq=880.0).rename(bad_wav)
    (root / os.fsdecode(b"gone\xff.wav")).symlink_to(root / "nowhere.wav")

    code, out, err = run("--json", "embed", str(root))
    assert code == 4, err  # all four files indexed; the dangling link named
    data = json.loads(out)
    assert data["files"]["new"] == 4 and data["files"]["failed"] == 1
    (failure,) = data["failures"]
    assert failure["path"] == str(root) + "/gone\\xff.wav"
    assert path_from_b64(failure["path_b64"]) == str(root / os.fsdecode(b"gone\xff.wav"))
    assert "gone\\xff.wav" in err  # named on stderr too, printably

    code, out, err = run("--json", "query", str(bad_wav), "--top", "5")
    assert code == 0, err
    data = json.loads(out)
    assert path_from_b64(data["query_b64"]) == str(bad_wav)
    paths = {
        path_from_b64(r["path_b64"]) if "path_b64" in r else r["path"] for r in data["results"]
    }
    assert paths == {str(bad_png), str(root / "horse.png")}

    monkeypatch.chdir(root)
    code, out, err = run("query", str(bad_png))
    assert code == 0, err
    assert "bad\\xff.wav" in out and "dog.wav" in out
    code, out, err = run("embed", str(root))
    assert code == 4 and "4 unchanged" in out and "gone\\xff.wav" in err


def test_an_index_path_that_is_a_file_exits_2_naming_it(tmp_path: Path, tiny_model: None) -> None:
    not_a_dir = tmp_path / "index.txt"
    not_a_dir.write_text("")
    clip = write_wav(tmp_path / "m" / "a.wav")
    for args in (
        ["embed", str(clip.parent)],
        ["query", str(clip)],
        ["index", "stats"],
        ["eval"],
    ):
        code, out, err = run("--index", str(not_a_dir), "--json", *args)
        assert code == 2, (args, err)
        assert json.loads(out)["exit_code"] == 2
        assert str(not_a_dir) in " ".join(err.split()) and "Traceback" not in err


@pytest.mark.slow
def test_real_cli_indexes_farm_files_with_non_utf8_names(tmp_path: Path, index_env: Path) -> None:
    """The issue's case with the real model: `cp horse.webp m/bad\\xff\\xfe.webp` beside good
    files; also an audio file so named (soundfile opens it by its bytes)."""
    root = tmp_path / "m"
    root.mkdir()
    horse = shared_path("data", "farm", "images", "horse.webp")
    dog = shared_path("data", "farm", "sounds", "dog.ogg")
    shutil.copy(horse, root / "horse.webp")
    shutil.copy(dog, root / "dog.ogg")
    shutil.copy(horse, root / os.fsdecode(b"bad\xff\xfe.webp"))
    shutil.copy(dog, root / os.fsdecode(b"bad\xff.ogg"))
    code, out, err = run("--json", "embed", str(root))
    assert code == 0, err
    data = json.loads(out)
    assert data["files"]["new"] == 4 and not data["failures"]
    code, out, err = run("--json", "query", str(root / os.fsdecode(b"bad\xff.ogg")))
    assert code == 0, err
    hits = json.loads(out)["results"]
    named = {path_from_b64(h["path_b64"]) for h in hits if "path_b64" in h}
    assert named == {str(root / os.fsdecode(b"bad\xff\xfe.webp"))}


def test_log_messages_naming_non_utf8_files_are_made_printable() -> None:
    import logging

    from avsearch.cli import _printable_log_record

    bad = os.fsdecode(b"/m/bad\xff.wav")
    record = logging.LogRecord("avsearch", logging.WARNING, __file__, 1, "skipping %s: %s",
                               (Path(bad), "50% damaged"), None)  # fmt: skip
    assert _printable_log_record(record)
    assert record.getMessage() == "skipping /m/bad\\xff.wav: 50% damaged"
    record.getMessage().encode("utf-8")
