"""Labels for training: several CSVs merged, catalogue headers, conflicts refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from avsearch.errors import UsageError
from avsearch.train.options import label_files
from avsearch.train.run import labels_function


def test_two_csvs_merge_and_a_catalogue_header_picks_its_columns(tmp_path: Path) -> None:
    for rel in ("digits/3/a.wav", "digits/3/b.png", "nature/dog/bark.ogg", "farm/dog.webp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    plain = tmp_path / "digits" / "labels.csv"
    plain.write_text("path,label\n3/a.wav,3\n3/b.png,3\n", encoding="utf-8")
    catalogue = tmp_path / "nature" / "index.csv"
    catalogue.write_text(
        "path,concept,licence,note\ndog/bark.ogg,dog,CC0,\n../farm/dog.webp,dog,CC0,a photo\n",
        encoding="utf-8",
    )
    label = labels_function([plain, catalogue])
    assert label(tmp_path / "digits/3/a.wav") == "3"
    assert label(tmp_path / "nature/dog/bark.ogg") == "dog"
    assert label(tmp_path / "farm/dog.webp") == "dog"
    assert label(tmp_path / "elsewhere.wav") is None  # with CSVs, folder names are not used


def test_a_file_labelled_twice_differently_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"x")
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    one.write_text("a.wav,cat\n", encoding="utf-8")
    two.write_text("a.wav,dog\n", encoding="utf-8")
    with pytest.raises(UsageError, match="labelled 'cat' by one labels file and 'dog'"):
        labels_function([one, two])


def test_label_files_of_an_option() -> None:
    assert label_files(None) == [] and label_files("a.csv") == ["a.csv"]
    assert label_files(["a.csv", "b.csv"]) == ["a.csv", "b.csv"]
