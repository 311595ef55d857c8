"""The results page (avsearch.report, query --html/--open): self-contained, small, complete,
and bad output paths refused in one line. A stand-in model (fast lane); the page in a real
browser is tests/test_report_browser.py."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avsearch import report
from avsearch.cli import app
from avsearch.encoders.model import AVModel
from tests.mediagen import write_mp4, write_png, write_wav
from tests.reliability.conftest import FakeModel

runner = CliRunner()


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def of(self, name: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == name]


def parse(path: Path) -> Tags:
    tags = Tags()
    tags.feed(path.read_text(encoding="utf-8"))
    return tags


class StandIn(FakeModel):
    """The reliability tests' stand-in model, with no zero-shot bridge to fuse."""

    fusion = None


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> FakeModel:
    model = StandIn()
    monkeypatch.setattr(AVModel, "load", staticmethod(lambda *a, **k: model))
    return model


def make_media(root: Path) -> Path:
    write_mp4(root / "videos" / "a.mp4", seconds=5.0, freq=330.0)
    write_mp4(root / "videos" / "b.mp4", seconds=3.0, freq=880.0, colour_every=0.7)
    for i in range(6):
        write_png(root / "pictures" / f"p{i}.png", ((i * 40) % 256, (i * 90) % 256, 100))
    write_wav(root / "sounds" / "beep.wav", freq=1000.0, seconds=3.0)
    write_wav(root / "sounds" / "low.wav", freq=200.0, seconds=2.0)
    return root


@pytest.fixture
def indexed(tmp_path: Path, index_env: Path, fake_model: FakeModel) -> Path:
    media = make_media(tmp_path / "media")
    assert runner.invoke(app, ["embed", str(media)], catch_exceptions=False).exit_code == 0
    return media


def query(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    data = json.loads(result.stdout) if "--json" in args and result.stdout.strip() else None
    return result.exit_code, data, result.stderr


def test_sound_query_page_is_self_contained_and_complete(indexed: Path, tmp_path: Path) -> None:
    page = tmp_path / "out" / "results.html"
    page.parent.mkdir()
    code, data, err = query(
        "--json", "query", str(indexed / "sounds" / "beep.wav"), "--html", str(page)
    )
    assert code == 0, err
    assert data is not None and data["html"] == str(page) and "results page" in err
    text = page.read_text(encoding="utf-8")
    tags = parse(page)
    csp = next(m for m in tags.of("meta") if m.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in str(csp["content"])
    sources = [a.get("src") or "" for t, a in tags.tags if t in ("img", "audio", "video")]
    assert sources and all(s.startswith("data:") for s in sources)
    assert "http://" not in text and "https://" not in text
    # query: player + spectrogram; each of the 8 hits (2 videos, 6 pictures) has a picture;
    # video hits have a sound player and a clip
    assert len(tags.of("article")) == len(data["results"]) == 8
    assert len(tags.of("video")) == 2
    assert len(tags.of("audio")) == 1 + 2
    assert len(tags.of("img")) == 1 + 8
    for hit in data["results"]:
        assert os.path.basename(hit["path"]) in text
        assert f"{hit['score']:.3f}" in text and f"{hit['confidence']:.2f}" in text
    assert page.stat().st_size < 400_000  # thumbnails and clips are small


def test_picture_query_page_shows_sound_hits_with_spectrograms(
    indexed: Path, tmp_path: Path
) -> None:
    page = tmp_path / "p.html"
    code, data, err = query(
        "--json", "query", str(indexed / "pictures" / "p1.png"), "--html", str(page)
    )
    assert code == 0, err
    tags = parse(page)
    assert data is not None and data["target"] == "audio"
    spectros = [i for i in tags.of("img") if i.get("class") == "spectro"]
    assert len(spectros) == len(data["results"])  # one per sound hit
    assert len(tags.of("audio")) == len(data["results"])


def test_a_hit_whose_file_is_gone_is_listed_with_the_reason(indexed: Path, tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    gone = indexed / "pictures" / "p2.png"
    gone.unlink()  # the index still holds it
    code, _, err = query("query", str(indexed / "sounds" / "beep.wav"), "--html", str(page))
    assert code == 4, err  # finished, but a hit's file could not be read (as embed says it)
    assert "not shown" in err and "p2.png" in err
    text = page.read_text(encoding="utf-8")
    assert "not available" in text and "p2.png" in text


def test_unwritable_html_path_is_one_line_exit_2_before_the_query(
    indexed: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for bad in (blocker / "results.html", tmp_path, tmp_path / "missing" / "r.html"):
        code, data, err = query(
            "--json", "query", str(indexed / "sounds" / "beep.wav"), "--html", str(bad)
        )
        assert code == 2, (bad, err)
        assert data is not None and data["exit_code"] == 2
        lines = [line for line in err.splitlines() if line.strip() and "hint" not in line]
        assert len(lines) == 1 and "cannot write the results page" in lines[0]
        assert "Traceback" not in err


def test_open_without_html_writes_a_temp_page_and_says_when_no_browser(
    indexed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Path] = []
    monkeypatch.setattr(report, "default_page_path", lambda: tmp_path / "tmp-page.html")
    monkeypatch.setattr(report, "open_in_browser", lambda p: opened.append(p) or False)
    code, data, err = query("--json", "query", str(indexed / "sounds" / "beep.wav"), "--open")
    assert code == 0, err
    assert data is not None and data["html"] == str(tmp_path / "tmp-page.html")
    assert data["opened"] is False and "no web browser" in err
    assert opened == [tmp_path / "tmp-page.html"] and opened[0].is_file()


def test_no_good_match_page_carries_the_note(indexed: Path, tmp_path: Path) -> None:
    page = tmp_path / "n.html"
    code, data, _ = query(
        "--json",
        "query",
        str(indexed / "sounds" / "beep.wav"),
        "--min-confidence",
        "1",
        "--html",
        str(page),
    )
    assert code == 0 and data is not None and data["results"] == []
    text = page.read_text(encoding="utf-8")
    assert "no good match" in text and "<article" not in text
