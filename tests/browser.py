"""A real headless Chromium, driven by Selenium, to check a results page as a person's browser
shows it: no console error, every image decoded, every player able to play; and a screenshot.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and
``selenium`` (the dev extra). Never downloads anything: the browser and driver found on PATH are
given to Selenium, and Selenium Manager is told to stay offline.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "chromium-driver")


def missing() -> str | None:
    """Why the browser check cannot run here, or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not any(shutil.which(b) for b in BROWSERS):
        return "no chromium on PATH (apt-get install chromium chromium-driver)"
    if not any(shutil.which(d) for d in DRIVERS):
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    return None


@dataclass
class PageCheck:
    errors: list[str] = field(default_factory=list)  # console messages of level SEVERE
    images: list[dict[str, Any]] = field(default_factory=list)  # src kind, naturalWidth
    media: list[dict[str, Any]] = field(default_factory=list)  # tag, readyState, duration, error
    title: str = ""


MEDIA_STATE = """
return {
  images: Array.from(document.images).map(i => ({
    alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth, kind: i.src.slice(0, 16)})),
  media: Array.from(document.querySelectorAll('audio, video')).map(m => ({
    tag: m.tagName.toLowerCase(), readyState: m.readyState, duration: m.duration,
    error: m.error ? m.error.code : null})),
};
"""


def check_page(page: Path, screenshot: Path | None = None, timeout: float = 20.0) -> PageCheck:
    """Load ``page`` (a file) in headless Chromium; wait (up to ``timeout``) until every image
    is complete and every audio/video element has its metadata (readyState >= 1) or an error;
    return what the page reports, and save a full-page screenshot when asked."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = next(str(shutil.which(b)) for b in BROWSERS if shutil.which(b))
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1100,1400",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = next(str(shutil.which(d)) for d in DRIVERS if shutil.which(d))
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        driver.get(page.absolute().as_uri())
        deadline = time.monotonic() + timeout
        while True:
            state = driver.execute_script(MEDIA_STATE)
            ready = all(i["complete"] for i in state["images"]) and all(
                m["readyState"] >= 1 or m["error"] is not None for m in state["media"]
            )
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        check = PageCheck(title=driver.title, images=state["images"], media=state["media"])
        check.errors = [
            f"{e.get('level')}: {e.get('message')}"
            for e in driver.get_log("browser")
            if e.get("level") == "SEVERE"
        ]
        if screenshot is not None:
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1100, min(max(int(height) + 40, 600), 4000))
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(screenshot))
        return check
    finally:
        driver.quit()
