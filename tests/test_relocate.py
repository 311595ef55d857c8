"""An index stored inside the folder it indexes keeps working when the folder is moved or copied
(avsearch.relocate): its paths follow the folder, nothing is re-encoded; files outside the folder
keep their paths, and moving only the index directory changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from avsearch.cli import app
from tests.mediagen import write_png, write_wav
from tests.reliability.conftest import index_contents
from tests.test_report import fake_model  # noqa: F401 (fixture)

runner = CliRunner()


def cli(index: Path, *args: str) -> dict:
    result = runner.invoke(app, ["--index", str(index), "--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def make(folder: Path, outside: Path) -> Path:
    write_wav(folder / "sounds" / "a.wav", freq=300.0)
    write_png(folder / "pictures" / "red.png", (220, 20, 20))
    write_png(folder / "pictures" / "green.png", (20, 220, 20))
    write_png(outside / "blue.png", (20, 20, 220))
    index = folder / ".avsearch"
    cli(index, "embed", str(folder), str(outside))
    return index


def test_moved_folder_keeps_its_index_working(
    tmp_path: Path,
    fake_model: object,  # noqa: F811
) -> None:
    folder, outside = tmp_path / "photos", tmp_path / "elsewhere"
    make(folder, outside)
    moved = tmp_path / "archive" / "photos-2024"
    moved.parent.mkdir()
    shutil.move(folder, moved)
    index = moved / ".avsearch"

    out = cli(index, "query", str(moved / "sounds" / "a.wav"))
    paths = {r["path"] for r in out["results"]}
    assert paths == {
        str(moved / "pictures" / "red.png"),
        str(moved / "pictures" / "green.png"),
        str(outside / "blue.png"),  # outside the folder: as it was
    }
    assert all(Path(p).is_file() for p in paths)
    out = cli(index, "embed", str(moved), str(outside))  # nothing to redo
    assert out["files"]["unchanged"] == 4
    assert out["files"]["new"] == out["files"]["moved"] == out["files"]["removed"] == 0
    assert sorted(index_contents(index)) == sorted([str(moved / "sounds" / "a.wav"), *paths])


def test_a_copied_folder_has_its_own_paths(tmp_path: Path, fake_model: object) -> None:  # noqa: F811
    folder, outside = tmp_path / "photos", tmp_path / "elsewhere"
    make(folder, outside)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    out = cli(copy / ".avsearch", "query", str(copy / "sounds" / "a.wav"))
    assert str(copy / "pictures" / "red.png") in {r["path"] for r in out["results"]}
    out = cli(folder / ".avsearch", "query", str(folder / "sounds" / "a.wav"))
    assert str(folder / "pictures" / "red.png") in {r["path"] for r in out["results"]}


def test_moving_only_the_index_directory_changes_no_path(
    tmp_path: Path,
    fake_model: object,  # noqa: F811
) -> None:
    folder, outside = tmp_path / "photos", tmp_path / "elsewhere"
    index = make(folder, outside)
    alone = tmp_path / "indexes" / "photos-index"
    alone.parent.mkdir()
    shutil.move(index, alone)
    out = cli(alone, "query", str(folder / "sounds" / "a.wav"))
    assert str(folder / "pictures" / "red.png") in {r["path"] for r in out["results"]}
    out = cli(alone, "embed", str(folder), str(outside))
    assert out["files"]["unchanged"] == 4 and out["files"]["removed"] == 0


def test_stats_reports_a_move_still_to_apply_and_changes_nothing(
    tmp_path: Path,
    fake_model: object,  # noqa: F811
) -> None:
    folder, outside = tmp_path / "photos", tmp_path / "elsewhere"
    index = make(folder, outside)
    assert cli(index, "index", "stats")["moved"] is None
    moved = tmp_path / "archive" / "photos-2024"
    moved.parent.mkdir()
    shutil.move(folder, moved)
    index = moved / ".avsearch"

    before = sorted(index_contents(index))
    stats = cli(index, "index", "stats")
    assert stats["moved"] == {"from": str(folder), "to": str(moved), "files": 3}
    text = runner.invoke(app, ["--index", str(index), "index", "stats"], catch_exceptions=False)
    assert text.exit_code == 0
    assert f"moved: from {folder} to {moved}; 3 file path(s)" in text.stdout
    assert "next `avsearch query` or `avsearch embed`" in text.stdout
    assert sorted(index_contents(index)) == before  # stats only reads: the old paths stay

    cli(index, "query", str(moved / "sounds" / "a.wav"))  # the paths follow the folder
    assert cli(index, "index", "stats")["moved"] is None
    assert str(moved / "pictures" / "red.png") in index_contents(index)


def test_stats_of_an_index_moved_alone_reports_no_move(
    tmp_path: Path,
    fake_model: object,  # noqa: F811
) -> None:
    index = make(tmp_path / "photos", tmp_path / "elsewhere")
    alone = tmp_path / "indexes" / "photos-index"
    alone.parent.mkdir()
    shutil.move(index, alone)
    assert cli(alone, "index", "stats")["moved"] is None
