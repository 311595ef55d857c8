"""bench/natural.py without training: fold construction, data reading and the table maths.

Imported by module name (pytest puts bench/ on sys.path), never by file path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import natural
import numpy as np
import pytest


def test_folds_are_disjoint_cover_everything_and_are_seeded() -> None:
    concepts = [f"c{i:02d}" for i in range(54)]
    folds = natural.make_folds(concepts, 5, seed=0)
    assert len(folds) == 5
    assert sorted(c for f in folds for c in f) == concepts
    assert sorted(len(f) for f in folds) == [10, 11, 11, 11, 11]
    assert all(f == sorted(f) for f in folds)
    assert natural.make_folds(list(reversed(concepts)), 5, seed=0) == folds  # order-free
    assert natural.make_folds(concepts, 5, seed=1) != folds
    for bad in (1, 55):
        with pytest.raises(ValueError, match="--folds"):
            natural.make_folds(concepts, bad, seed=0)


def _tiny_natural(tmp_path: Path) -> Path:
    root = tmp_path / "natural"
    rows = [
        "path,concept,modality,kind,source,original_path,licence,author,pairing,note",
        "dog/bark.ogg,dog,audio,recording,s,o,l,a,both,",
        "dog/dog.png,dog,image,drawing,s,o,l,a,both,",
        "../farm/sounds/dog.ogg,dog,audio,recording,s,o,l,a,both,lives in farm/",
        "../farm/images/chicken.webp,chicken,image,photo,s,o,l,a,both,lives in farm/",
        "chicken/chicken.png,chicken,image,drawing,s,o,l,a,both,",
        "../farm/sounds/chickens.ogg,chicken,audio,recording,s,o,l,a,both,lives in farm/",
        "gong/gong.ogg,gong,audio,recording,s,o,l,a,audio_only,",
    ]
    root.mkdir()
    (root / "index.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_natural_index_reading_and_training_paths(tmp_path: Path) -> None:
    root = _tiny_natural(tmp_path)
    items = natural.load_natural(root)
    assert len(items) == 7
    farm_dog = next(it for it in items if it.path.name == "dog.ogg")
    assert farm_dog.path == (tmp_path / "farm" / "sounds" / "dog.ogg").resolve()
    assert (farm_dog.concept, farm_dog.modality, farm_dog.inside) == ("dog", "audio", False)
    assert {it.modality for it in items} == {"audio", "visual"}
    assert natural.paired_concepts(items) == ["chicken", "dog"]  # gong is sound-only
    farm = tmp_path / "farm"
    assert natural.media_paths(items, ["dog", "gong"], root) == sorted(
        [(root / "dog").resolve(), (root / "gong").resolve(), (farm / "sounds/dog.ogg").resolve()]
    )
    # chicken: its only sound lies in farm/, so the file goes in beside the folder
    assert natural.media_paths(items, ["chicken"], root) == sorted(
        [(root / "chicken").resolve()]
        + [(farm / p).resolve() for p in ("images/chicken.webp", "sounds/chickens.ogg")]
    )


def test_same_modality_map_leaves_out_the_query_file() -> None:
    emb = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.1, 0.9], [0.9986, 0.0526]])
    labels = np.array(["a", "a", "b", "b", "a"])
    files = np.array([0, 1, 2, 2, 0])
    value, queries, skipped = natural.same_modality_map(emb, labels, files)
    # item 1 (a, file 1) ranks 3 (b), 2 (b), 4 (a), 0 (a): AP (1/3 + 2/4) / 2; items 0 and 4
    # find item 1 first (their own file's windows are out); 2 and 3 have no other b file
    assert value == pytest.approx((1 + 1 + (1 / 3 + 2 / 4) / 2) / 3)
    assert (queries, skipped) == (3, 2)
    assert natural.same_modality_map(emb[2:4], labels[2:4], files[2:4]) == (None, 0, 2)


def test_same_modality_chance_is_near_the_share_of_relevant_items() -> None:
    labels = np.repeat(np.array(["a", "b", "c", "d"]), 10)
    files = np.arange(40)
    chance = natural.same_modality_chance(labels, files, dim=16, seeds=5)
    assert chance is not None and 0.2 < chance < 0.35  # 9 relevant of 39, plus the AP lift
    assert natural.same_modality_chance(labels[:1], files[:1], dim=4, seeds=2) is None


def _row(m: float, chance: float, same_audio: float | None) -> dict[str, Any]:
    recall = {"a2v": {"1": m, "5": m, "10": m}, "v2a": {"1": m / 2, "5": m, "10": m}}
    return {
        "a2v_map": m,
        "v2a_map": m / 2,
        "map": 0.75 * m,
        "recall": recall,
        "n_audio": 10,
        "n_visual": 5,
        "dim": 128,
        "chance": {"a2v_map": chance, "v2a_map": chance, "map": chance, "recall": recall},
        "ratio": natural.ratio(0.75 * m, chance),
        "same": {
            "audio": {"map": same_audio, "chance": 0.2, "queries": 4, "skipped": 1},
            "visual": {"map": 0.5, "chance": 0.25, "queries": 2, "skipped": 0},
        },
    }


def test_summary_means_over_folds_and_ratio_of_means() -> None:
    rows = [_row(0.8, 0.1, 0.6), _row(0.4, 0.3, None)]
    s = natural.summarise(rows)
    assert s["folds"] == 2
    assert s["a2v_map"] == pytest.approx(0.6)
    assert s["v2a_map"] == pytest.approx(0.3)
    assert s["map"] == pytest.approx(0.45)
    assert s["chance_map"] == pytest.approx(0.2)
    assert s["ratio_map"] == pytest.approx(0.45 / 0.2)  # not the mean of 6.0 and 1.0
    assert s["v2a_r1"] == pytest.approx(0.3)
    assert s["same_audio"]["map"] == pytest.approx(0.6)  # the fold without a value is left out
    assert s["same_audio"]["ratio"] == pytest.approx(3.0)
    assert s["same_visual"]["ratio"] == pytest.approx(2.0)
    assert natural.ratio(None, 0.2) is None and natural.ratio(0.5, 0.0) is None
    assert natural.summarise([])["map"] is None


def test_markdown_renders_every_setting_and_the_verdict() -> None:
    settings = dict.fromkeys(natural.SETTINGS[:3], _row(0.8, 0.1, 0.6))
    folds = [
        {"held_out": ["cat", "dog"], "fold": ["cat", "dog"], "settings": settings},
        {"held_out": ["cow"], "fold": ["cow"], "settings": dict(settings)},
    ]
    folds[1]["settings"][natural.SETTINGS[3]] = _row(0.3, 0.2, None)
    summary = {
        name: natural.summarise([f["settings"][name] for f in folds if name in f["settings"]])
        for name in natural.SETTINGS
    }
    training = {
        "pairs": 100,
        "natural_pairs": 10,
        "unpaired_windows": 3,
        "epochs_run": 3,
        "wall_seconds": 5.0,
        "decoded": 0,
    }
    zero_shot = {**training, "pairs": 90, "natural_pairs": None, "decoded": 400}
    result = {
        "command": "--quick",
        "date": "2026-01-01",
        "machine": "test box",
        "args": {
            "seed": 0,
            "method": "infonce",
            "audio_backbone": None,
            "epochs": 3,
            "chance_seeds": 5,
            "shipped": "default",
        },
        "dim": 128,
        "farm_concepts": ["cat", "cow", "dog"],
        "sound_only_concepts": ["gong"],
        "training": {"zero_shot": zero_shot, "folds": [training, training]},
        "folds": folds,
        "summary": summary,
        "timings": {"avdigits": 1.0, "train": 2.0, "embed_eval": 3.0},
        "seconds": 60.0,
        "json": "bench/out/natural/natural-quick.json",
    }
    text = natural.markdown(result)
    assert text.startswith("## Natural sounds, leave concepts out (`python bench/natural.py")
    assert "leave-out 6.00×: met" in text
    for name in natural.SETTINGS:
        assert f"| {name} |" in text
    assert "| 0 | shipped, farm concepts left out | – |" in text  # fold 0 had only farm ones
    assert "(cat, cow, dog)" in text
    assert "natural pairs are 10%–10% of a" in text and "3 epochs run" in text
    assert "Baseline" not in text
    result["args"]["audio_backbone"] = "aisfx+soundnet"
    result["baselines"] = [
        {
            "json": "bench/out/x/natural.json",
            "command": "--bridge-map-alpha 0.0",
            "args": {"bridge_map_alpha": 0.0},
            "summary": {"leave-out": {"map": 0.5, "ratio_map": 1.5}},
        }
    ]
    text = natural.markdown(result)
    assert "corrected by the map `train` learns" in text and "`--bridge-map-alpha 0.5`" in text
    assert "Baseline (the bridge map off), `python bench/natural.py --bridge-map-alpha 0.0`" in text
    assert "leave-out 0.500 (1.50×)" in text
    result["args"]["bridge_map_alpha"] = 0.0
    assert "audio side uncorrected" in natural.markdown(result)
