"""The broken-media corpus through the real models and the real CLI (slow lane).

The CLI run is a separate process (``python -m avsearch --json embed``), as a user runs it:
exit code 4 (finished, some files unreadable), one valid JSON document on stdout naming every
unreadable file, and no Python traceback on stderr. Bad files given as queries get a typed
error (JSON with ``error``), never a traceback.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avsearch.config import EmbedConfig
from avsearch.pipeline import run_embed
from tests.brokenmedia import (
    NON_UTF8_NAME,
    build_corpus,
    make_symlink_loop,
    write_good,
    write_silent_wav,
)
from tests.mediagen import write_png
from tests.reliability.conftest import index_contents
from tests.reliability.test_corpus import check_run, split

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def corpus(root: Path) -> tuple[Path, dict[str, list[Path]]]:
    media = (root / "media").resolve()
    write_good(media)
    cases = build_corpus(media / "bad", root / "scratch")
    groups = split([(c.expect, c.path) for c in cases])
    groups["fail"] += make_symlink_loop(media / "links")
    junk = media / "bad" / os.fsdecode(b"junk\xff.wav")
    junk.write_text("not a sound", encoding="utf-8")
    groups["fail"].append(junk)
    groups["index"].append(write_png(media / NON_UTF8_NAME, (40, 180, 40)))
    return media, groups


def _failure_path(entry: dict[str, str]) -> str:
    if "path_b64" in entry:
        return os.fsdecode(base64.b64decode(entry["path_b64"]))
    return entry["path"]


def _cli(*args: str, index: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "AVSEARCH_INDEX": str(index)}
    return subprocess.run(
        [sys.executable, "-m", "avsearch", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=900,
    )


def test_cli_embed_over_the_corpus(tmp_path: Path) -> None:
    media, groups = corpus(tmp_path)
    index = tmp_path / "index"
    proc = _cli("--json", "embed", str(media), index=index)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, stderr[-3000:]
    assert proc.returncode == 4, stderr[-3000:]
    out = json.loads(proc.stdout.decode("utf-8"))  # one valid UTF-8 JSON document
    failed = {_failure_path(f) for f in out["failures"]}
    assert all(f["reason"] for f in out["failures"])
    assert out["files"]["failed"] == len(out["failures"])
    contents = index_contents(index)
    for p in groups["fail"]:
        assert str(p) in failed, f"{p} not under failures"
    for p in groups["index"]:
        assert str(p) not in failed and str(p) in contents, f"{p} not indexed"
    for p in groups["either"]:
        assert (str(p) in failed) != (str(p) in contents), p
    assert failed <= {str(p) for ps in groups.values() for p in ps}, "a good file failed"

    # bad files as queries: a typed error as JSON, no traceback
    for bad in (
        media / "bad" / "empty" / "zero.mp4",
        media / "bad" / "text" / "readme.wav",
        media / "bad" / "huge.png",
        media / "bad" / "truncated" / "cut-30b.webm",
    ):
        q = _cli("--json", "query", str(bad), index=index)
        err = q.stderr.decode("utf-8", "replace")
        assert "Traceback" not in err, err[-3000:]
        assert q.returncode not in (0, 4), f"{bad.name}: exit {q.returncode}"
        assert "error" in json.loads(q.stdout.decode("utf-8")), bad.name


@pytest.mark.parametrize("model", ["default", "speech"])
def test_real_models_over_the_corpus(model: str, tmp_path: Path) -> None:
    """The whole corpus and 5 minutes of silence at 44.1 kHz through a shipped model: no
    crash, every outcome as with the fake model, no NaN or infinite vector from a real network.
    (The 1-hour file is the fake-model memory test: the real backbones still run over silent
    windows when features are cached, which would take minutes here.)"""
    media, groups = corpus(tmp_path)
    groups["index"].append(write_silent_wav(media / "silence-44k.wav", 300.0, rate=44100))
    index = tmp_path / "index"
    summary = run_embed([media], index, EmbedConfig(model=model))
    check_run(summary, index, media, **groups)


def test_real_model_indexes_the_good_files_beside_nothing_else(tmp_path: Path) -> None:
    """Control: the healthy files alone give a clean run (exit-code-0 material)."""
    media = (tmp_path / "media").resolve()
    write_good(media)
    summary = run_embed([media], tmp_path / "index", EmbedConfig())
    assert summary.failures == [] and summary.new == 5
    check_run(summary, tmp_path / "index", media)
