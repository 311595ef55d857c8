"""The results page in a real headless Chromium (tests/browser.py): it loads without a console
error, every image decodes (naturalWidth > 0), every player can play (readyState >= 1); a
screenshot is taken. Skipped, with the reason, where chromium, chromedriver or selenium is
missing (.ci/run installs them).

The slow test runs the real model over the shared fixtures and farm/ and saves its screenshot
into ``$AVSEARCH_SCREENSHOT_DIR`` when set (``AVSEARCH_SCREENSHOT_DIR=docs/img`` renews the
picture in docs/quickstart.md), else into the test's temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from avsearch.cli import app
from tests import browser
from tests.conftest import shared_path
from tests.test_report import fake_model, indexed  # noqa: F401 (fixtures)

runner = CliRunner()

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))


def assert_page_works(check: browser.PageCheck, images: int, players: int) -> None:
    assert check.errors == [], check.errors
    assert len(check.images) == images and len(check.media) == players
    bad = [i for i in check.images if not i["naturalWidth"]]
    assert not bad, bad
    unplayable = [m for m in check.media if m["readyState"] < 1 or m["error"] is not None]
    assert not unplayable, unplayable
    assert all(m["duration"] > 0 for m in check.media)


def assert_real_screenshot(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width >= 800 and img.height >= 400
        colours = img.convert("RGB").resize((64, 64)).getcolors(64 * 64)
        assert colours is not None and len(colours) > 20  # not a blank page


def test_page_plays_in_headless_chromium(indexed: Path, tmp_path: Path) -> None:  # noqa: F811
    page = tmp_path / "results.html"
    result = runner.invoke(
        app,
        ["query", str(indexed / "sounds" / "beep.wav"), "--html", str(page)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    shot = tmp_path / "shot.png"
    check = browser.check_page(page, shot)
    assert check.title == "avsearch: beep.wav"
    # query: spectrogram + player; 8 hits with a picture each; 2 video hits: player + clip
    assert_page_works(check, images=1 + 8, players=1 + 2 * 2)
    assert_real_screenshot(shot)


@pytest.mark.slow
def test_real_model_page_on_the_shared_data(index_env: Path, tmp_path: Path) -> None:
    fixtures, farm = shared_path("fixtures"), shared_path("data", "farm")
    result = runner.invoke(app, ["embed", str(fixtures), str(farm)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    shots = Path(os.environ.get("AVSEARCH_SCREENSHOT_DIR") or tmp_path)
    for query, name, top in (
        (farm / "sounds" / "dog.ogg", "results-page.png", 5),
        (fixtures / "photos" / "sklearn_china.jpg", "results-page-sounds.png", 4),
    ):
        page = tmp_path / f"{query.stem}.html"
        result = runner.invoke(
            app, ["query", str(query), "--top", str(top), "--html", str(page)],
            catch_exceptions=False,
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        assert page.stat().st_size < 1_500_000
        check = browser.check_page(page, shots / name)
        assert check.errors == [] and check.images and check.media
        assert_page_works(check, len(check.images), len(check.media))
        assert_real_screenshot(shots / name)
