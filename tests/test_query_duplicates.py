"""Exact duplicate files (same content hash in the manifest) are one hit that lists the other
paths (``duplicates``), in grouped and in raw-segment results, and on the results page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from avsearch.cli import app
from tests.mediagen import write_mp4, write_png, write_wav
from tests.test_report import fake_model  # noqa: F401 (fixture)

runner = CliRunner()


def run(*args: str) -> dict:
    result = runner.invoke(app, ["--json", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_copies_are_one_hit_with_their_paths(
    tmp_path: Path,
    index_env: Path,
    fake_model: object,  # noqa: F811
) -> None:
    root = tmp_path / "m"
    red = write_png(root / "a" / "red.png", (220, 20, 20))
    (root / "b").mkdir()
    shutil.copy(red, root / "b" / "red copy.png")
    shutil.copy(red, root / "c-red.png")
    for i in range(4):
        write_png(root / f"other{i}.png", (20 + 50 * i, 200, 20 * i))
    clip = write_mp4(root / "v" / "clip.mp4", seconds=3.0)
    shutil.copy(clip, root / "v" / "clip-copy.mp4")
    sound = write_wav(tmp_path / "q.wav", freq=500.0)
    assert runner.invoke(app, ["embed", str(root)], catch_exceptions=False).exit_code == 0

    out = run("query", str(sound), "--top", "20")
    paths = [r["path"] for r in out["results"]]
    assert len(paths) == 4 + 1 + 1  # 4 others, one red (of 3 copies), one clip (of 2)
    reds = {str(red), str(root / "b" / "red copy.png"), str(root / "c-red.png")}
    (red_hit,) = [r for r in out["results"] if r["path"] in reds]
    assert red_hit["path"] == min(reds)  # the first of the identical files' paths
    assert red_hit["duplicates"] == sorted(reds - {red_hit["path"]})
    clip_hit = next(r for r in out["results"] if "clip" in r["path"])
    assert len(clip_hit["duplicates"]) == 1
    both = {str(clip), str(root / "v" / "clip-copy.mp4")}
    assert {clip_hit["path"], *clip_hit["duplicates"]} == both
    plain = [r for r in out["results"] if "other" in r["path"]]
    assert all("duplicates" not in r for r in plain)

    # raw segments: each window of the clip once, not once per copy
    seg = run("query", str(sound), "--segments", "--top", "50")
    clip_segs = [(r["start"], r["end"]) for r in seg["results"] if "clip" in r["path"]]
    assert len(clip_segs) == len(set(clip_segs)) == 3
    assert sum(r["path"] in reds for r in seg["results"]) == 1

    page = tmp_path / "p.html"
    run("query", str(sound), "--top", "20", "--html", str(page))
    assert page.read_text(encoding="utf-8").count("same content:") == 2


def test_duplicates_of_non_utf8_names_keep_their_exact_bytes() -> None:
    import os

    from avsearch.media.paths import path_from_b64
    from avsearch.query import Hit

    bad = "/m/" + os.fsdecode(b"bad\xff.png")
    data = Hit(1, 0.5, "/m/a.png", None, None, "visual", 1, 0.9, ("/m/b.png", bad)).to_json()
    assert data["duplicates"] == ["/m/b.png", "/m/bad\\xff.png"]
    assert data["duplicates_b64"][0] is None and path_from_b64(data["duplicates_b64"][1]) == bad
    plain = Hit(1, 0.5, "/a", None, None, "visual", 1, None, ("/b",)).to_json()
    assert "duplicates_b64" not in plain
