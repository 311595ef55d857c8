"""embed --exclude GLOB (and ``embed: {exclude: ...}`` in avsearch.yaml): matching files stay
out of the index, and those already in it are removed, the files themselves untouched; several
roots share one index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avsearch.cli import app
from avsearch.media.discover import discover, excluded
from tests.mediagen import write_png, write_wav
from tests.reliability.conftest import index_contents
from tests.test_report import fake_model  # noqa: F401 (fixture)

runner = CliRunner()


@pytest.mark.parametrize(
    ("path", "patterns", "hit"),
    [
        ("/r/a/drafts", ["drafts"], True),  # a folder by name
        ("/r/a/x.tmp.wav", ["*.tmp.wav"], True),  # a file by name
        ("/r/raw/2023-01.wav", ["raw/2023-*"], True),  # by path under the root
        ("/r/raw/2023-01.wav", ["2023-*/x"], False),
        ("/r/a/b.wav", ["/r/a/*"], True),  # absolute
        ("/r/a/b.wav", ["/other/*"], False),
        ("/r/a/B.WAV", ["*.wav"], False),  # case-sensitive
        ("/r/a/drafts", ["drafts/"], True),  # a trailing slash is fine
        ("/r/a/b.wav", [], False),
    ],
)
def test_excluded_by_name_relative_or_absolute_path(path: str, patterns: list[str], hit: bool):
    assert excluded(Path(path), Path("/r"), patterns) is hit


def _tree(root: Path) -> list[Path]:
    return [
        write_wav(root / "keep" / "a.wav", freq=300.0),
        write_png(root / "keep" / "b.png", (10, 200, 30)),
        write_wav(root / "keep" / "take.tmp.wav", freq=500.0),
        write_wav(root / "drafts" / "c.wav", freq=700.0),
        write_png(root / "drafts" / "deep" / "d.png", (200, 10, 30)),
    ]


def test_discover_prunes_excluded_folders_and_files(tmp_path: Path) -> None:
    root = tmp_path / "m"
    _tree(root)
    found = sorted(f.path.relative_to(root).as_posix() for f in discover([root]))
    assert len(found) == 5
    kept = discover([root], ignore=["drafts", "*.tmp.*"])
    assert sorted(f.path.relative_to(root).as_posix() for f in kept) == ["keep/a.wav", "keep/b.png"]


def embed(*args: str) -> dict:
    result = runner.invoke(app, ["--json", "embed", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def indexed(index: Path, root: Path) -> list[str]:
    paths = [Path(p) for p in index_contents(index)]
    return sorted(p.relative_to(root).as_posix() for p in paths if p.is_relative_to(root))


def test_exclude_keeps_files_out_and_removes_those_already_in(
    tmp_path: Path,
    index_env: Path,
    fake_model: object,  # noqa: F811
) -> None:
    root = tmp_path / "m"
    files = _tree(root)
    out = embed(str(root), "--exclude", "drafts", "--exclude", "*.tmp.wav")
    assert out["files"]["new"] == 2
    assert indexed(index_env, root) == ["keep/a.wav", "keep/b.png"]

    out = embed(str(root))  # no exclude: all five
    assert out["files"]["new"] == 3 and len(indexed(index_env, root)) == 5

    out = embed(str(root), "--exclude", "drafts")  # already in: removed, not deleted
    assert out["files"]["removed"] == 2 and out["files"]["unchanged"] == 3
    assert indexed(index_env, root) == ["keep/a.wav", "keep/b.png", "keep/take.tmp.wav"]
    assert all(f.is_file() for f in files)  # never touching disk
    query = runner.invoke(
        app, ["--json", "query", str(files[0]), "--top", "10"], catch_exceptions=False
    )
    assert "drafts" not in query.stdout


def test_exclude_from_avsearch_yaml_and_its_checks(
    tmp_path: Path,
    index_env: Path,
    fake_model: object,  # noqa: F811
) -> None:
    root = tmp_path / "m"
    _tree(root)
    cfg = tmp_path / "avsearch.yaml"
    cfg.write_text("embed:\n  exclude: [drafts, '*.tmp.wav']\n")
    result = runner.invoke(app, ["--config", str(cfg), "--json", "embed", str(root)])
    assert result.exit_code == 0, result.stderr
    assert indexed(index_env, root) == ["keep/a.wav", "keep/b.png"]
    cfg.write_text("embed:\n  exclude: keep\n")  # one glob as a plain string
    result = runner.invoke(app, ["--config", str(cfg), "--json", "embed", str(root)])
    assert result.exit_code == 0, result.stderr
    assert indexed(index_env, root) == ["drafts/c.wav", "drafts/deep/d.png"]
    cfg.write_text("embed:\n  exclude: 3\n")
    result = runner.invoke(app, ["--config", str(cfg), "embed", str(root)])
    assert result.exit_code == 2 and "embed.exclude in" in result.stderr
    result = runner.invoke(app, ["embed", str(root), "--exclude", " "])
    assert result.exit_code == 2 and "--exclude must not be empty" in result.stderr


def test_several_roots_share_one_index(
    tmp_path: Path,
    index_env: Path,
    fake_model: object,  # noqa: F811
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_wav(a / "x.wav", freq=300.0)
    write_png(a / "y.png", (1, 2, 3))
    write_wav(b / "z.wav", freq=900.0)
    write_png(b / "w.png", (200, 2, 3))
    assert embed(str(a))["files"]["new"] == 2
    assert embed(str(b))["files"]["new"] == 2
    # a run over one root leaves the other's files alone, an exclude included
    out = embed(str(a), "--exclude", "*.png")
    assert out["files"]["removed"] == 1 and out["files"]["unchanged"] == 1
    assert indexed(index_env, tmp_path) == ["a/x.wav", "b/w.png", "b/z.wav"]
    out = embed(str(a), str(b))
    assert out["files"]["new"] == 1 and out["files"]["unchanged"] == 3
