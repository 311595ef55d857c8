"""The index records its window (samples, rate, shortest tail): another one is refused (exit
3), never mixed; a run that names none, and every query, use the index's."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from avsearch.cli import app
from avsearch.config import EmbedConfig, QueryConfig
from avsearch.errors import WindowMismatchError
from avsearch.media.segment import WindowSpec
from avsearch.pipeline import EmbedSummary, run_embed
from avsearch.query import run_query
from avsearch.store.index import WINDOW_KEYS, IndexStore
from tests.mediagen import write_wav
from tests.reliability.conftest import FAKE_RATE, FakeModel, index_contents


def _embed(media: Path, index: Path, **options: object) -> EmbedSummary:
    return run_embed([media], index, EmbedConfig(**options), model=FakeModel())  # type: ignore[arg-type]


def _window(index: Path) -> WindowSpec | None:
    with IndexStore.open_existing(index) as store:
        return store.window()


def _starts(index: Path, name: str) -> list[float]:
    rows = index_contents(index)[name]
    return [row[2] for row, _ in rows if row[0] == "audio"]


def test_the_window_is_recorded_kept_and_another_refused(tmp_path: Path) -> None:
    media, index = tmp_path / "m", tmp_path / "index"
    write_wav(media / "a.wav", seconds=3.0, rate=FAKE_RATE)
    first = _embed(media, index, window=0.5)
    assert _window(index) == WindowSpec(FAKE_RATE // 2, FAKE_RATE, 0.5)
    assert first.audio_segments == 6

    write_wav(media / "b.wav", seconds=2.0, rate=FAKE_RATE)
    (media / "a.wav").unlink()
    with pytest.raises(WindowMismatchError) as refused:
        _embed(media, index, window=1.0)
    err = refused.value
    assert err.exit_code == 3 and "0.500 s (8000 samples at 16000 Hz" in err.message
    assert "1.000 s" in err.message and "--window 1 --rebuild" in (err.hint or "")
    assert set(index_contents(index)) == {str(media / "a.wav")}  # nothing touched
    with pytest.raises(WindowMismatchError):
        _embed(media, index, min_tail=0.2)

    again = _embed(media, index)  # no window named: the index's, not the model's 1 s
    assert (again.new, again.removed) == (1, 1)
    assert _starts(index, str(media / "b.wav")) == [0.0, 0.5, 1.0, 1.5]

    rebuilt = _embed(media, index, window=1.0, rebuild=True)
    assert rebuilt.new == 1 and _window(index) == WindowSpec(FAKE_RATE, FAKE_RATE, 0.5)
    assert _starts(index, str(media / "b.wav")) == [0.0, 1.0]


def test_an_index_from_before_windows_were_recorded_gets_the_model_default(
    tmp_path: Path,
) -> None:
    media, index = tmp_path / "m", tmp_path / "index"
    write_wav(media / "a.wav", seconds=2.0, rate=FAKE_RATE)
    _embed(media, index)
    with IndexStore.open_existing(index) as store, store.manifest.transaction():
        store.manifest.delete_meta(*WINDOW_KEYS)
    assert _window(index) is None
    with pytest.raises(WindowMismatchError):  # it was built with the default, not 0.5 s
        _embed(media, index, window=0.5)
    assert _window(index) == WindowSpec(FAKE_RATE, FAKE_RATE, 0.5)  # recorded on first open
    assert _embed(media, index).unchanged == 1


def test_a_query_is_cut_into_the_index_windows(tmp_path: Path) -> None:
    media, index = tmp_path / "m", tmp_path / "index"
    clip = write_wav(media / "a.wav", seconds=3.0, rate=FAKE_RATE)
    _embed(media, index, window=0.5)
    model = FakeModel()  # its own default: 1 s windows
    run_query(clip, index, QueryConfig(target="audio"), model=model)  # type: ignore[arg-type]
    assert model.calls["audio"] == 6
    model = FakeModel()
    run_query(clip, index, QueryConfig(target="audio", start=1.2, end=2.2), model=model)  # type: ignore[arg-type]
    assert model.calls["audio"] == 3  # [1.0, 1.5), [1.5, 2.0), [2.0, 2.5)


@pytest.mark.slow  # (loads a real model's heads)
def test_the_cli_refuses_another_window_with_exit_3(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    args = ["--index", str(tmp_path / "index"), "embed", str(tmp_path / "empty"), "--model"]
    runner = CliRunner()
    first = runner.invoke(app, [*args, "default", "--window", "1.5"])
    assert first.exit_code == 0, first.output
    refused = runner.invoke(app, [*args, "default", "--window", "2"])
    assert refused.exit_code == 3
    assert "1.500 s" in refused.stderr and "--rebuild" in refused.stderr
    assert runner.invoke(app, [*args, "default"]).exit_code == 0
