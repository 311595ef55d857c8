"""Tests for the zero-shot bridge: the ImageNet grouping, the vectors, the shipped constants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avsearch.encoders import bridge as br
from avsearch.encoders.imagenet_groups import GROUPS, N_CLASSES, parse_members
from avsearch.errors import ModelError
from tests.conftest import shared_path

REPO = Path(__file__).resolve().parents[2]
SOUNDNET = REPO / "models" / "backbones" / "soundnet" / "model.safetensors"
OBJECTS = REPO / "models" / "backbones" / "soundnet" / "objects.txt"
CONSTANTS = REPO / "models" / "bridge" / br.CONSTANTS_FILE


def _constants(seed: int = 0) -> br.BridgeConstants:
    rng = np.random.default_rng(seed)
    g = br.N_GROUPS
    return br.BridgeConstants(
        rng.normal(size=g), rng.normal(size=g), rng.uniform(0.1, 1, g), rng.uniform(0.1, 1, g)
    )


def _probs(n: int, seed: int = 0, peak: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = peak * rng.standard_normal((n, N_CLASSES))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- grouping
def test_every_class_in_exactly_one_group() -> None:
    members = [i for _, _, spec in GROUPS for i in parse_members(spec)]
    assert sorted(members) == list(range(N_CLASSES))
    m = br.membership()
    assert m.shape == (N_CLASSES, br.N_GROUPS)
    assert np.array_equal(m.sum(axis=1), np.ones(N_CLASSES))
    assert (m.sum(axis=0) >= 1).all()  # no empty group


def test_group_names_unique_and_described() -> None:
    assert len(set(br.GROUP_NAMES)) == len(br.GROUP_NAMES) == br.N_GROUPS
    assert 40 <= br.N_GROUPS <= 70
    assert all(name.isidentifier() and desc for name, desc, _ in GROUPS)


def test_parse_members() -> None:
    assert parse_members("0-2 7 9-10") == (0, 1, 2, 7, 9, 10)


@pytest.mark.skipif(not OBJECTS.is_file(), reason="SoundNet class names not shipped")
def test_known_classes_land_in_their_group() -> None:
    names = [n.split(",")[0] for n in OBJECTS.read_text(encoding="utf-8").splitlines()]
    groups = np.array(br.GROUP_NAMES)[br.membership().argmax(axis=1)]
    group_of = dict(zip(names, groups, strict=True))
    expect = {
        "Chihuahua": "dogs",
        "Mexican hairless": "dogs",
        "timber wolf": "wild_canids",
        "tabby": "domestic_cats",
        "violin": "string_instruments",
        "grand piano": "keyboard_instruments",
        "trombone": "brass_instruments",
        "sax": "woodwind_instruments",
        "gong": "percussion_instruments",
        "steam locomotive": "rail",
        "sports car": "cars",
        "drake": "waterfowl",
        "great grey owl": "raptors_owls",
        "hen": "fowl",
        "ox": "cattle",
        "ram": "sheep_goats",
        "hog": "pigs",
        "sorrel": "equines",
        "bullfrog": "amphibians",
        "rubber eraser": "stationery_books",
        "toilet tissue": "toiletries_bathroom",
    }
    assert {k: group_of[k] for k in expect} == expect


# ----------------------------------------------------------------------------- vectors
def test_vectors_finite_unit_norm_and_deterministic() -> None:
    c = _constants()
    for modality in ("audio", "visual"):
        # flat, peaked and degenerate (one-hot, all-zero) distributions
        probs = np.concatenate([_probs(5, 1), _probs(5, 2, peak=30.0), np.eye(N_CLASSES)[:3]])
        v = c.vectors(br.group_probabilities(probs), modality)
        assert v.shape == (len(probs), br.N_GROUPS)
        assert v.dtype == np.float32
        assert np.isfinite(v).all()
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        assert np.array_equal(v, c.vectors(br.group_probabilities(probs), modality))


def test_item_centring_ignores_the_scale_of_a_distribution() -> None:
    g = br.group_probabilities(_probs(4, 3))
    f = br.bridge_features(g, space="log", eps=0.0, item_centre=True)
    assert np.allclose(f, br.bridge_features(3.0 * g, space="log", eps=0.0, item_centre=True))
    assert np.allclose(f.mean(axis=1), 0.0)


def test_gallery_mean_weights_each_file_once() -> None:
    f = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [4.0, 2.0]])
    assert np.allclose(br.fit_gallery_mean(f, ["a", "a", "a", "b"]), [2.0, 1.0])
    assert np.allclose(br.fit_gallery_mean(f), [1.0, 0.5])
    _, std = br.fit_gallery_stats(f, ["a", "a", "a", "b"])
    assert np.allclose(std, [2.0, 1.0])  # two items, 0 and (4, 2), equally weighted


def test_fit_constants_whitens_the_reference_collection() -> None:
    ga = br.group_probabilities(_probs(12, 5))
    gv = br.group_probabilities(_probs(7, 6, peak=5.0))
    c = br.fit_constants(ga, np.arange(12) // 3, gv)
    f = (gv - c.visual_mean) / c.visual_std
    assert np.allclose(f.mean(axis=0), 0.0, atol=1e-9)
    assert np.allclose(f.std(axis=0), 1.0)
    assert np.allclose(np.linalg.norm(c.vectors(gv, "visual"), axis=1), 1.0, atol=1e-5)


def test_constants_round_trip_and_refuse_other_groups(tmp_path: Path) -> None:
    c = _constants(1)
    path = c.save(tmp_path / "c.json")
    back = br.load_constants(path)
    assert np.allclose(back.audio_mean, c.audio_mean, atol=1e-6)
    assert np.allclose(back.visual_std, c.visual_std, atol=1e-6)
    probs = br.group_probabilities(_probs(3, 4))
    assert np.allclose(back.vectors(probs, "visual"), c.vectors(probs, "visual"), atol=1e-5)
    obj = json.loads(path.read_text())
    obj["groups"] = obj["groups"][::-1]
    path.write_text(json.dumps(obj))
    with pytest.raises(ModelError, match="other groups"):
        br.load_constants(path)
    with pytest.raises(ModelError, match="not found"):
        br.load_constants(tmp_path / "missing.json")


def test_zscore_fuse() -> None:
    a = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    b = np.array([[30.0, 20.0, 10.0], [0.0, 1.0, 2.0]])
    fused = br.zscore_fuse([a, b], [1.0, 1.0], axis=1)
    assert np.allclose(fused[0], 0.0)  # opposite rankings cancel
    assert np.allclose(fused[1], (b[1] - 1.0) / b[1].std())  # a constant row adds nothing
    assert np.allclose(br.zscore_fuse([a], [2.0], axis=1)[0], 2 * (a[0] - 2) / a[0].std())


@pytest.mark.skipif(not CONSTANTS.is_file(), reason="models/bridge/constants.json not fitted")
def test_shipped_constants_load() -> None:
    c = br.load_constants()
    assert c.space == "prob" and c.gallery_centre and c.gallery_scale
    assert (c.audio_std > 0).all() and (c.visual_std > 0).all()
    assert c.fitted_on.get("collection")


# ----------------------------------------------------------------------------- real sounds
@pytest.mark.skipif(
    not (SOUNDNET.is_file() and CONSTANTS.is_file()), reason="SoundNet or constants missing"
)
def test_a_real_bark_lands_on_the_dog_group() -> None:
    from avsearch.encoders.audio_frontend import SAMPLE_RATE, WINDOW_SAMPLES
    from avsearch.media.decode import audio_chunks

    barks = sorted(shared_path("data", "natural", "dog").glob("*.ogg"))
    if not barks:
        pytest.skip("no dog recordings in natural/dog")
    bridge = br.Bridge()
    seconds = WINDOW_SAMPLES / SAMPLE_RATE
    for path in barks:
        wave = np.concatenate(list(audio_chunks(path, SAMPLE_RATE)))
        starts = np.arange(max(1, int(len(wave) / WINDOW_SAMPLES))) * seconds
        v = bridge.audio_vectors(wave, SAMPLE_RATE, starts, seconds)
        assert np.isfinite(v).all()
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        top = {br.GROUP_NAMES[i] for i in v.argmax(axis=1)}
        assert top <= {"dogs", "wild_canids"}, f"{path.name}: top groups {top}"
        again = bridge.audio_vectors(wave, SAMPLE_RATE, starts, seconds)
        assert np.array_equal(v, again)


def test_gated_weight() -> None:
    w = br.gated_weight(np.array([0.2, 0.55, 0.65, 0.75, 0.95]), low=0.55, high=0.75)
    assert np.allclose(w, [4.0, 4.0, 2.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        br.gated_weight(0.5, low=0.8, high=0.7)
    s = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    fused = br.zscore_fuse([s, s[::-1]], [1.0, np.array([[0.0], [1.0]])], axis=1)
    assert np.allclose(fused[1], 0.0)  # per-row weight: row 1 gets both, which cancel
    assert np.allclose(fused[0], (s[0] - 2) / s[0].std())
