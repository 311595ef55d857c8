"""evaluate_index on tiny indexes written through the store API, with MAPs worked out by hand.

The hand case (2-d vectors, cosine): audio cat [1, 0], dog [0, 1]; visual cat1 [1, 0],
cat2 [0.6, 0.8], dog1 [0.8, 0.6], dog2 [0, 1].
- a2v, cat: cat1 1.0, dog1 0.8, cat2 0.6, dog2 0 → relevant at ranks 1, 3 → AP (1 + 2/3) / 2 = 5/6;
  dog is symmetric → MAP 5/6; MAP@R (R = 2): (1/1) / 2 = 1/2; R@1 = 1.
- v2a: cat1 → cat first (AP 1), cat2 → dog .8, cat .6 (AP 1/2), dog1 → 1/2, dog2 → 1 →
  MAP 3/4; MAP@R (R = 1) = 1/2; R@1 = 1/2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avsearch.errors import EmptyIndexError, UsageError
from avsearch.evaluate_index import evaluate_index, read_labels_csv
from avsearch.store.index import IndexStore, ModelStamp
from avsearch.store.manifest import NewSegment

STAMP = ModelStamp("m", "f" * 64, 2)
AUDIO = {"audio/cat/a.wav": [1.0, 0.0], "audio/dog/b.wav": [0.0, 1.0]}
VISUAL = {
    "images/cat/cat1.png": [1.0, 0.0],
    "images/cat/cat2.png": [0.6, 0.8],
    "images/dog/dog1.png": [0.8, 0.6],
    "images/dog/dog2.png": [0.0, 1.0],
}


def put(store: IndexStore, path: Path, **vectors: list[list[float]]) -> None:
    """One file with its segments, e.g. ``audio=[[1, 0]], visual=[[0, 1]]`` for a video."""
    kind = "video" if len(vectors) == 2 else "image" if "visual" in vectors else "audio"
    store.manifest.put_file(
        path=str(path),
        kind=kind,
        size=1,
        mtime_ns=1,
        digest=str(path),
        segments=[
            NewSegment(modality, i, 2.0 * i, 2.0 * (i + 1), np.asarray(v, np.float32))
            for modality, vecs in vectors.items()
            for i, v in enumerate(vecs)
        ],
    )


def build_index(index: Path, media: Path, *, audio: bool = True, visual: bool = True) -> Path:
    """The hand case above: files in class folders under ``media``, vectors in ``index``."""
    with IndexStore.create_or_open(index, STAMP) as store:
        for rel, vec in AUDIO.items() if audio else ():
            put(store, media / rel, audio=[vec])
        for rel, vec in VISUAL.items() if visual else ():
            put(store, media / rel, visual=[vec])
    return index


def test_labels_from_parent_folders_give_the_hand_computed_metrics(tmp_path: Path) -> None:
    index = build_index(tmp_path / "index", tmp_path / "media")
    ev = evaluate_index(index)
    r = ev.report
    assert r.a2v_map == pytest.approx(5 / 6)
    assert r.v2a_map == pytest.approx(3 / 4)
    assert r.map == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert r.a2v_map_at_r == pytest.approx(1 / 2) and r.v2a_map_at_r == pytest.approx(1 / 2)
    assert r.recall_at["a2v"][1] == 1.0 and r.recall_at["v2a"][1] == 0.5
    assert (r.n_audio, r.n_visual) == (2, 4)
    assert (ev.n_unlabeled_audio, ev.n_unlabeled_visual) == (0, 0)
    assert ev.label_source == "folders" and ev.labels_csv is None
    assert set(r.per_class["a2v"]) == {"cat", "dog"}

    data = ev.to_json()
    for key in ("a2v_map", "v2a_map", "map", "a2v_map_at_r", "v2a_map_at_r", "recall_at"):
        assert key in data
    assert data["n_audio"] == 2 and data["n_visual"] == 4
    assert data["recall_at"]["v2a"]["1"] == 0.5
    assert data["n_unlabeled_audio"] == 0 and data["label_source"] == "folders"


def test_every_segment_of_a_file_gets_its_label(tmp_path: Path) -> None:
    index = tmp_path / "index"
    with IndexStore.create_or_open(index, STAMP) as store:
        put(store, tmp_path / "v" / "cat" / "a.mp4", audio=[[1, 0], [1, 0.1]], visual=[[1, 0]])
        put(store, tmp_path / "v" / "dog" / "b.mp4", audio=[[0, 1]], visual=[[0, 1], [0.1, 1]])
    ev = evaluate_index(index)
    assert (ev.report.n_audio, ev.report.n_visual) == (3, 3)
    assert ev.report.a2v_map == 1.0 and ev.report.v2a_map == 1.0


def test_labels_from_csv_with_header_relative_paths_and_unlabelled_files(tmp_path: Path) -> None:
    media = tmp_path / "media"
    index = build_index(tmp_path / "index", media)
    csv = tmp_path / "lists" / "labels.csv"
    csv.parent.mkdir()
    # cat2 and dog1 swap classes, so every first hit is right; dog2 has no row (unlabelled);
    # one row names a file that is not in the index.
    csv.write_text(
        "path,label\n"
        "../media/audio/cat/a.wav,cat\n"
        f"{media / 'audio' / 'dog' / 'b.wav'},dog\n"
        "\n"
        "../media/images/cat/cat1.png,cat\n"
        "../media/images/cat/cat2.png,dog\n"
        "../media/./images/dog/dog1.png,cat\n"
        "../media/images/elsewhere.png,cat\n",
        encoding="utf-8",
    )
    ev = evaluate_index(index, csv)
    assert ev.label_source == "csv" and ev.labels_csv == csv.resolve()
    assert (ev.n_unlabeled_audio, ev.n_unlabeled_visual) == (0, 1)
    assert ev.n_csv_rows_not_in_index == 1
    assert ev.report.n_visual == 3
    # a2v cat [1,0]: cat1 1.0 (cat), dog1 0.8 (cat), cat2 0.6 (dog) → AP 1;
    # dog [0,1]: cat2 0.8 (dog) first → AP 1.
    assert ev.report.a2v_map == pytest.approx(1.0)
    assert ev.to_json()["n_unlabeled_visual"] == 1


def test_csv_without_header_and_with_a_bom(tmp_path: Path) -> None:
    csv = tmp_path / "l.csv"
    csv.write_text("\ufeffa/x.wav,3\n/abs/y.png,4\n", encoding="utf-8")
    labels = read_labels_csv(csv)
    assert labels == {str(tmp_path.resolve() / "a" / "x.wav"): "3", "/abs/y.png": "4"}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("path,label\na.wav,cat\nb.wav,dog,extra\n", 3),
        ("a.wav,cat\n\nb.wav\n", 3),
        ("a.wav,\n", 1),
        ("a.wav,cat\nb.wav,dog\n./a.wav,dog\n", 3),  # the same file with another label
    ],
)
def test_malformed_csv_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError) as info:
        read_labels_csv(csv)
    assert f"line {line}" in str(info.value) and info.value.exit_code == 2


def test_missing_or_empty_csv_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_labels_csv(tmp_path / "none.csv")
    (tmp_path / "empty.csv").write_text("path,label\n", encoding="utf-8")
    with pytest.raises(UsageError, match="no `path,label` rows"):
        read_labels_csv(tmp_path / "empty.csv")


def test_a_modality_without_labels_or_segments_is_a_clear_error(tmp_path: Path) -> None:
    media = tmp_path / "media"
    index = build_index(tmp_path / "index", media)
    csv = tmp_path / "audio-only.csv"
    csv.write_text(f"{media / 'audio' / 'cat' / 'a.wav'},cat\n", encoding="utf-8")
    with pytest.raises(UsageError, match="none of the 4 visual segments"):
        evaluate_index(index, csv)

    csv.write_text(
        f"{media / 'audio' / 'cat' / 'a.wav'},cat\n{media / 'images' / 'cat' / 'cat1.png'},dog\n",
        encoding="utf-8",
    )
    with pytest.raises(UsageError, match="share no label"):
        evaluate_index(index, csv)

    only_audio = build_index(tmp_path / "index2", media, visual=False)
    with pytest.raises(EmptyIndexError, match="no visual segments") as info:
        evaluate_index(only_audio)
    assert info.value.exit_code == 3
