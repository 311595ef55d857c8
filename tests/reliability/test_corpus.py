"""The broken-media corpus through ``run_embed`` (fake model, fast lane).

Every hostile file sits beside healthy ones. Whatever it is, the run finishes; the hostile file
is either named in ``summary.failures`` or, where indexing what is there is the right outcome
(a video without sound, a sound without video, a 5.1 track, a 0.05 s clip, silence, a long
name), indexed; every healthy file is indexed; no vector in the manifest is NaN or infinite.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import avsearch.pipeline as pipeline
from avsearch.config import QueryConfig
from avsearch.errors import AvsearchError
from avsearch.media.discover import MediaFile
from avsearch.pipeline import EmbedSummary
from avsearch.query import run_query
from avsearch.store.index import IndexStore
from avsearch.store.manifest import Manifest
from tests.brokenmedia import (
    GOOD_FILES,
    NON_UTF8_NAME,
    RECIPES,
    Recipe,
    build_corpus,
    make_symlink_loop,
    write_good,
    write_silent_wav,
)
from tests.mediagen import write_png, write_wav
from tests.reliability.conftest import (
    PEAK_RSS_SNIPPET,
    FakeModel,
    can_read_despite_chmod,
    embed,
    failed_paths,
    index_contents,
    non_finite_segments,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Truncation sources, made once for the module."""
    return tmp_path_factory.mktemp("sources")


@pytest.fixture(scope="module")
def good_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("good")
    write_good(root)
    return root


@pytest.fixture
def media(tmp_path: Path, good_template: Path) -> Path:
    """A fresh folder holding the healthy files (resolved, as run_embed stores paths)."""
    root = (tmp_path / "media").resolve()
    shutil.copytree(good_template, root)
    return root


def good_paths(root: Path) -> list[str]:
    return [str(root / rel) for rel, _ in GOOD_FILES]


def check_run(
    summary: EmbedSummary,
    index_dir: Path,
    root: Path,
    *,
    fail: list[Path] = (),  # type: ignore[assignment]
    index: list[Path] = (),  # type: ignore[assignment]
    either: list[Path] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """The common assertions; returns the index contents for more."""
    contents = index_contents(index_dir)
    failed = failed_paths(summary)
    for good in good_paths(root):
        assert contents.get(good), f"healthy {good} was not indexed"
        assert good not in failed
    for p in fail:
        assert str(p) in failed, f"{p.name} is not named in failures: {summary.failures}"
        assert str(p) not in contents, f"{p.name} failed but is in the index"
    for p in index:
        assert str(p) not in failed, f"{p.name} failed: {summary.failures}"
        assert str(p) in contents, f"{p.name} was not indexed"
    for p in either:
        assert (str(p) in failed) != (str(p) in contents), f"{p.name}: failed and indexed"
        if str(p) in contents:
            assert contents[str(p)], f"{p.name}: indexed with no segment"
    assert summary.failed == len(summary.failures)
    for f in summary.failures:
        assert f.reason and "Traceback" not in f.reason
    assert non_finite_segments(index_dir) == []
    return contents


def split(cases: list[tuple[str, Path]]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {"fail": [], "index": [], "either": []}
    for expect, p in cases:
        out[expect].append(p)
    return out


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_bad_file_beside_good_files(
    recipe: Recipe, media: Path, scratch: Path, tmp_path: Path, fake_model: FakeModel
) -> None:
    (case,) = build_corpus(media, scratch, (recipe,))
    index_dir = tmp_path / "index"
    summary = embed([media], index_dir, fake_model)
    groups = split([(case.expect, case.path)])
    check_run(summary, index_dir, media, **groups)
    # a second run: nothing healthy is re-encoded, the bad file is reported again
    again = embed([media], index_dir, fake_model)
    assert again.new == again.updated == again.segments == 0
    assert failed_paths(again) == failed_paths(summary)


def test_whole_corpus_in_one_folder(
    media: Path, scratch: Path, tmp_path: Path, fake_model: FakeModel
) -> None:
    """Every hostile file at once (plus a link loop), then a query over what was indexed."""
    cases = build_corpus(media / "bad", scratch)
    loops = make_symlink_loop(media / "links")
    index_dir = tmp_path / "index"
    summary = embed([media], index_dir, fake_model, workers=3, batch_size=7)
    groups = split([(c.expect, c.path) for c in cases])
    groups["fail"] += loops
    contents = check_run(summary, index_dir, media, **groups)
    assert summary.total_files == len(contents)
    # the vector files agree with the manifest: every id found is a segment of a live file
    with IndexStore.open_existing(index_dir) as store:
        for modality in ("audio", "visual"):
            q = np.random.default_rng(1).standard_normal((3, fake_model.dim)).astype(np.float32)
            scores, ids = store.search(modality, q, 50)
            assert np.all(np.isfinite(scores))
            rows = store.manifest.segments_by_ids(int(i) for i in ids.ravel() if i >= 0)
            assert {int(i) for i in ids.ravel() if i >= 0} == set(rows)
    result = run_query(
        media / GOOD_FILES[0][0],
        index_dir,
        QueryConfig(top=50),
        model=fake_model,  # type: ignore[arg-type]
    )
    assert result.results, "an audio query over an index with pictures found nothing"
    for hit in result.results:
        assert Path(hit.path).exists() and str(hit.path) in contents
        assert np.isfinite(hit.score)


def test_non_utf8_name_is_indexed_and_reported(
    media: Path, tmp_path: Path, fake_model: FakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    # the skip warning names the undecodable file; pytest-xdist cannot send that text (lone
    # surrogates) between processes, and the summary below is what this test checks
    caplog.set_level(logging.ERROR)
    good = write_png(media / NON_UTF8_NAME, (40, 180, 40))
    bad = media / os.fsdecode(b"junk\xff.wav")
    bad.write_text("not a sound", encoding="utf-8")
    index_dir = tmp_path / "index"
    summary = embed([media], index_dir, fake_model)
    contents = check_run(summary, index_dir, media, fail=[bad], index=[good])
    assert contents[str(good)][0][0][0] == "visual"
    # the summary can be written as UTF-8 JSON (what --json prints)
    text = json.dumps(summary.to_json(), ensure_ascii=False)
    text.encode("utf-8")
    # an image query reaches the stored name, as the same str the file system gives
    result = run_query(good, index_dir, QueryConfig(target="visual", top=3), model=fake_model)  # type: ignore[arg-type]
    assert str(good) in {h.path for h in result.results}
    again = embed([media], index_dir, fake_model)
    assert again.new == again.updated == 0 and again.unchanged == len(contents)


def test_symlink_loops(media: Path, tmp_path: Path, fake_model: FakeModel) -> None:
    """A file link loop is named; with follow_symlinks a folder loop is walked once."""
    loops = make_symlink_loop(media / "links")
    (media / "links" / "back").symlink_to("..", target_is_directory=True)
    dangling = media / "links" / "gone.wav"
    dangling.symlink_to("does-not-exist.wav")
    for follow in (False, True):
        index_dir = tmp_path / f"index-{follow}"
        summary = embed([media], index_dir, fake_model, follow_symlinks=follow)
        contents = check_run(summary, index_dir, media, fail=[*loops, dangling])
        assert sorted(contents) == sorted(good_paths(media)), "a file was indexed twice"


def test_fifo_named_like_media_is_named_not_opened(
    media: Path, tmp_path: Path, fake_model: FakeModel
) -> None:
    """A FIFO called ``pipe.wav``: opening it would block for ever; it must be reported."""
    fifo = media / "pipe.wav"
    os.mkfifo(fifo)
    index_dir = tmp_path / "index"
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["summary"] = embed([media], index_dir, fake_model)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    if t.is_alive():
        with contextlib.suppress(OSError):  # unblock a reader stuck in open(), if any
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("embed blocked on a FIFO")
    assert "error" not in box, box.get("error")
    check_run(box["summary"], index_dir, media, fail=[fifo])


def test_unreadable_file_is_named(
    media: Path, tmp_path: Path, fake_model: FakeModel, restore_modes: list[Path]
) -> None:
    locked = write_wav(media / "locked.wav", 700.0, 1.0)
    locked.chmod(0)
    restore_modes.append(locked)
    if can_read_despite_chmod(locked):
        pytest.skip("running as root (or with CAP_DAC_OVERRIDE): mode 000 does not stop reading")
    index_dir = tmp_path / "index"
    summary = embed([media], index_dir, fake_model)
    check_run(summary, index_dir, media, fail=[locked])


def _wrap_discover(monkeypatch: pytest.MonkeyPatch, after: Callable[[MediaFile], None]) -> None:
    original = pipeline.discover

    def hooked(*args: Any, **kwargs: Any) -> Iterator[MediaFile]:
        for f in original(*args, **kwargs):
            yield f
            after(f)

    monkeypatch.setattr(pipeline, "discover", hooked)


def _wrap_file_pieces(monkeypatch: pytest.MonkeyPatch, before: Callable[[Path], None]) -> None:
    original = pipeline.file_pieces

    def hooked(path: Path, *args: Any, **kwargs: Any) -> Any:
        before(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "file_pieces", hooked)


def test_file_deleted_between_discovery_and_hashing(
    media: Path, tmp_path: Path, fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = write_wav(media / "vanishing.wav", 600.0, 1.0)
    _wrap_discover(monkeypatch, lambda f: f.path.unlink() if f.path == victim else None)
    index_dir = tmp_path / "index"
    summary = embed([media], index_dir, fake_model)
    check_run(summary, index_dir, media, fail=[victim])


def test_file_deleted_between_planning_and_decoding(
    media: Path, tmp_path: Path, fake_model: FakeModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    victims = [write_wav(media / "gone.wav", 600.0, 1.0), write_png(media / "gone.png")]
    _wrap_file_pieces(monkeypatch, lambda p: p.unlink() if p in victims else None)
    index_dir = tmp_path / "index"
    summary = embed([media], index_dir, fake_model)
    check_run(summary, index_dir, media, fail=victims)
    monkeypatch.undo()
    again = embed([media], index_dir, fake_model)
    assert again.failures == [] and again.removed == 0


@pytest.mark.parametrize("same_size", [False, True], ids=["new-size", "same-size"])
def test_file_rewritten_between_planning_and_decoding(
    same_size: bool,
    media: Path,
    tmp_path: Path,
    fake_model: FakeModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run may index either content; the next run must leave the index equal to a fresh
    build of the folder."""
    victim = write_wav(media / "changing.wav", 600.0, 1.0)
    done: list[Path] = []

    def rewrite(p: Path) -> None:
        if p == victim and not done:
            done.append(p)
            write_wav(victim, 1500.0, 1.0 if same_size else 2.5)

    _wrap_file_pieces(monkeypatch, rewrite)
    index_dir = tmp_path / "index"
    summary = embed([media], index_dir, fake_model)
    check_run(summary, index_dir, media, either=[victim])
    monkeypatch.undo()
    embed([media], index_dir, fake_model)
    fresh = tmp_path / "fresh"
    embed([media], fresh, fake_model)
    assert_same_index(index_contents(index_dir), index_contents(fresh))


def assert_same_index(got: dict[str, Any], want: dict[str, Any], atol: float = 1e-6) -> None:
    assert sorted(got) == sorted(want)
    for path, segs in want.items():
        assert [r for r, _ in got[path]] == [r for r, _ in segs], path
        for (_, a), (_, b) in zip(got[path], segs, strict=True):
            np.testing.assert_allclose(a, b, atol=atol, err_msg=path)


def test_model_ref_is_recorded_for_a_name_and_for_a_directory(
    media: Path, tmp_path: Path, fake_model: FakeModel
) -> None:
    """run_embed with a preloaded model: a model *name* is stored as given; a model *directory*
    (one that exists) as the loaded model's directory."""
    embed([media], tmp_path / "by-name", fake_model, model="fake-model")
    model_dir = tmp_path / "a-model-dir"
    model_dir.mkdir()
    embed([media], tmp_path / "by-dir", fake_model, model=str(model_dir))
    for sub, want in (("by-name", "fake-model"), ("by-dir", str(fake_model.directory))):
        m = Manifest(tmp_path / sub / "manifest.sqlite")
        try:
            assert m.get_meta("model_ref") == want
            assert m.get_meta("model_fingerprint") == fake_model.fingerprint
        finally:
            m.close()


# ------------------------------------------------------------------------ long silence, RSS

_PROBE = PEAK_RSS_SNIPPET + textwrap.dedent(
    """
    import json, sys
    import avsearch.pipeline
    from tests.reliability.conftest import FakeModel, embed, index_contents, non_finite_segments
    media, index = Path(sys.argv[1]), Path(sys.argv[2])
    start = peak_start()
    summary = embed([media], index, FakeModel(), workers=2)
    grew, peak = peak_growth_kib(start)
    contents = index_contents(index)
    print(json.dumps({
        "grew_kib": grew,
        "peak_kib": peak,
        "failures": [[f.path, f.reason] for f in summary.failures],
        "indexed": sorted(contents),
        "segments": {p: len(s) for p, s in contents.items()},
        "non_finite": len(non_finite_segments(index)),
        "seconds": summary.seconds,
    }))
    """
)


def _probe(media: Path, index: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(media), str(index)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_one_hour_silent_wav_streams_in_bounded_memory(tmp_path: Path) -> None:
    """A 1-hour silent wav (115 MB as 16-bit, 230 MB as float32) is indexed without failure or
    non-finite vector, and embedding it raises peak RSS by far less than its decoded size."""
    small = tmp_path / "small"
    write_silent_wav(small / "second.wav", 1.0)
    write_wav(small / "tone.wav", 440.0, 1.0)
    big = tmp_path / "big"
    hour = write_silent_wav(big / "hour.wav", 3600.0)
    write_wav(big / "tone.wav", 440.0, 1.0)
    base = _probe(small, tmp_path / "index-small")
    run = _probe(big, tmp_path / "index-big")
    assert run["failures"] == [] and run["non_finite"] == 0
    assert str(hour.resolve()) in run["indexed"]
    grown_mib = (run["grew_kib"] - base["grew_kib"]) / 1024
    print(
        f"\n1-hour silent wav: embed raised peak RSS by {run['grew_kib'] / 1024:.0f} MiB "
        f"(1 s file: {base['grew_kib'] / 1024:.0f} MiB; difference {grown_mib:.0f} MiB; "
        f"peak {run['peak_kib'] / 1024:.0f} MiB), embed {run['seconds']:.1f} s, "
        f"{run['segments'][str(hour.resolve())]} segments"
    )
    assert grown_mib < 64, f"peak RSS grew by {grown_mib:.0f} MiB for a streamed file"


@pytest.fixture(scope="module")
def query_index(tmp_path_factory: pytest.TempPathFactory, good_template: Path) -> Path:
    index = tmp_path_factory.mktemp("query-index") / "index"
    embed([good_template], index, FakeModel())
    return index


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_bad_file_as_a_query(
    recipe: Recipe, scratch: Path, tmp_path: Path, query_index: Path, fake_model: FakeModel
) -> None:
    """A hostile file given to ``query``: results, or a typed error -- never another exception
    (the CLI turns only AvsearchError into a message; anything else is a traceback)."""
    (case,) = build_corpus(tmp_path / "q", scratch, (recipe,))
    for target in (None, "audio", "visual"):
        try:
            result = run_query(case.path, query_index, QueryConfig(target=target), model=fake_model)  # type: ignore[arg-type]
        except AvsearchError:
            continue
        for hit in result.results:
            assert np.isfinite(hit.score) and Path(hit.path).exists()
