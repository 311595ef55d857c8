"""The learned correction of the bridge's audio side: targets and weights of training pairs, the
ridge fit (near the identity under a large penalty, a learnt bias corrected on rows it never
saw), the model directory files, refusals, and the bridge space applying it to sounds only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from avsearch.encoders import bridge as br
from avsearch.encoders import model_dir as md
from avsearch.encoders.bridge_map import (
    MAP_FILE,
    BridgeMap,
    BridgeMemory,
    build_memory,
    fit_bridge_map,
    load_bridge_map,
    pair_targets,
    write_bridge_map,
)
from avsearch.encoders.head_config import HeadConfig
from avsearch.errors import ModelError

G = br.N_GROUPS


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_targets_are_label_means_and_each_label_weighs_one() -> None:
    rng = np.random.default_rng(0)
    a, v = _unit(rng.normal(size=(7, G))), _unit(rng.normal(size=(7, G)))
    labels = [0, 0, 0, 1, 1, 2, -1]
    revealed = np.array([True, True, True, True, True, False, False])
    x, y, w = pair_targets(a, v, labels, revealed)
    np.testing.assert_array_equal(x, a)
    np.testing.assert_allclose(y[0], _unit(v[:3].mean(0)))
    np.testing.assert_allclose(y[1], y[0])
    np.testing.assert_allclose(y[3], _unit(v[3:5].mean(0)))
    np.testing.assert_allclose(y[5:], v[5:])  # hidden: the pair's own picture
    np.testing.assert_allclose(w[:3].sum(), 1.0)
    np.testing.assert_allclose(w[3:5].sum(), 1.0)
    np.testing.assert_allclose(w[5:], 1 / 2.5)  # one revealed label's share per pair
    with pytest.raises(ValueError, match="one row per pair"):
        pair_targets(a, v[:3], labels, revealed)


def test_no_revealed_label_weighs_each_pair_one() -> None:
    rng = np.random.default_rng(1)
    a, v = rng.normal(size=(4, G)), rng.normal(size=(4, G))
    _, y, w = pair_targets(a, v, [-1] * 4, np.zeros(4, bool))
    np.testing.assert_allclose(w, 1.0)
    np.testing.assert_allclose(y, v)


def test_a_large_penalty_keeps_the_bridge_as_it_is() -> None:
    rng = np.random.default_rng(2)
    a, v = _unit(rng.normal(size=(30, G))), _unit(rng.normal(size=(30, G)))
    found = fit_bridge_map(a, v, np.ones(30), alpha=1e9)
    assert found is not None
    assert np.abs(found.weight).max() < 1e-6
    np.testing.assert_allclose(found.apply(a), a, atol=1e-5)


def test_a_learnt_bias_is_corrected_on_rows_the_fit_never_saw() -> None:
    """Sounds whose group vectors are the pictures' seen through a fixed linear distortion: the
    map learns to undo it, and held-out sounds come closer to their own pictures."""
    rng = np.random.default_rng(3)
    mix = np.eye(G) + 0.8 * rng.normal(size=(G, G)) / np.sqrt(G)
    pictures = _unit(rng.normal(size=(400, G)))
    sounds = _unit(pictures @ mix + 0.05 * rng.normal(size=(400, G)))
    train, test = slice(0, 300), slice(300, 400)
    found = fit_bridge_map(sounds[train], pictures[train], np.ones(300), alpha=0.1)
    assert found is not None and found.fitted_on["pairs"] == 300
    before = np.sum(sounds[test] * pictures[test], axis=1).mean()
    mapped = found.apply(sounds[test])
    after = np.sum(mapped * pictures[test], axis=1).mean()
    np.testing.assert_allclose(np.linalg.norm(mapped, axis=1), 1.0, atol=1e-5)
    assert after > before + 0.1, (before, after)


def test_nothing_to_fit_gives_no_map_and_bad_values_are_refused() -> None:
    assert fit_bridge_map(np.zeros((0, G)), np.zeros((0, G)), np.zeros(0)) is None
    assert fit_bridge_map(np.ones((2, G)), np.ones((2, G)), np.zeros(2)) is None
    with pytest.raises(ValueError, match="alpha"):
        fit_bridge_map(np.ones((2, G)), np.ones((2, G)), np.ones(2), alpha=0)
    with pytest.raises(ModelError, match="shapes"):
        BridgeMap(np.zeros(G), np.zeros((G, G + 1)))
    bad = np.zeros((G, G))
    bad[0, 0] = np.inf
    with pytest.raises(ModelError, match="non-finite"):
        BridgeMap(np.zeros(G), bad)
    with pytest.raises(ValueError, match="expected"):
        BridgeMap(np.zeros(G), np.zeros((G, G))).apply(np.zeros((2, G + 1)))


def _model_dir(tmp_path: Path) -> Path:
    from torch import nn

    from avsearch.encoders.heads import ProjectionHead

    config = md.ModelConfig(
        name="tiny",
        embedding_dim=4,
        audio=md.TowerConfig("aisfx+soundnet", HeadConfig(512 + 2425, 4, 8)),
        visual=md.TowerConfig("efficientnet-lite0", HeadConfig(1280, 4, 8)),
    )
    heads: dict[str, nn.Module] = {
        "audio": ProjectionHead(config.audio.head),
        "visual": ProjectionHead(config.visual.head),
    }
    d = tmp_path / "model"
    md.save_model_dir(d, config, heads)
    return d


def _map(seed: int = 4) -> BridgeMap:
    rng = np.random.default_rng(seed)
    return BridgeMap(rng.normal(size=G) * 0.1, rng.normal(size=(G, G)) * 0.1, 0.5, {"by": "test"})


def test_write_and_load_round_trip_and_change_the_fingerprint(tmp_path: Path) -> None:
    d = _model_dir(tmp_path)
    before = md.fingerprint(d)
    assert load_bridge_map(d, md.load_config(d).bridge_map) is None
    assert "bridge_map" not in yaml.safe_load((d / md.CONFIG).read_text())
    written = _map()
    after = write_bridge_map(d, written)
    assert after != before and after == md.fingerprint(d)
    raw = yaml.safe_load((d / md.CONFIG).read_text())
    assert raw["bridge_map"] == {"dim": G, "alpha": 0.5, "fitted_on": {"by": "test"}}
    loaded = load_bridge_map(d, md.load_config(d).bridge_map)
    assert loaded is not None
    x = _unit(np.random.default_rng(5).normal(size=(3, G)))
    np.testing.assert_allclose(loaded.apply(x), written.apply(x), atol=1e-5)
    md.update_training_info(d, {"note": "x"})  # a later config update keeps the section
    assert md.load_config(d).bridge_map == raw["bridge_map"]


def test_a_declared_map_without_its_file_or_of_another_size_is_refused(tmp_path: Path) -> None:
    d = _model_dir(tmp_path)
    write_bridge_map(d, _map())
    section = md.load_config(d).bridge_map
    with pytest.raises(ModelError, match="says"):
        load_bridge_map(d, {**section, "dim": G + 1})
    (d / MAP_FILE).write_bytes(b"\x80\x04 not safetensors")
    with pytest.raises(ModelError):
        load_bridge_map(d, section)
    (d / MAP_FILE).unlink()
    with pytest.raises(ModelError, match="missing"):
        load_bridge_map(d, section)


def test_the_bridge_space_maps_sounds_and_leaves_pictures_alone() -> None:
    rng = np.random.default_rng(6)
    consts = br.BridgeConstants(np.zeros(G), np.zeros(G), np.ones(G), np.ones(G))

    def fc() -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(size=(1000, 1280)) * 0.05, np.zeros(1000)

    plain = br.BridgeSpace("aisfx+soundnet", "efficientnet-lite0", fc, consts)
    the_map = _map()
    mapped = br.BridgeSpace("aisfx+soundnet", "efficientnet-lite0", fc, consts, the_map)
    feats = rng.normal(size=(2, 512 + 2425))
    feats[:, 512 + 1024 : 512 + 2024] = rng.dirichlet(np.ones(1000), size=2)
    np.testing.assert_allclose(
        mapped.vectors("audio", feats), the_map.apply(plain.vectors("audio", feats)), atol=1e-6
    )
    mapped._classifier = plain._classifier = lambda: (np.eye(1000, 1280), np.zeros(1000))
    pics = rng.normal(size=(2, 1280))
    np.testing.assert_allclose(mapped.vectors("visual", pics), plain.vectors("visual", pics))


def test_a_model_with_a_map_names_it_in_its_bridge_id(tmp_path: Path) -> None:
    from avsearch.encoders.model import AVModel, describe_spaces

    d = _model_dir(tmp_path)
    plain = AVModel.load(d, lazy=True)
    write_bridge_map(d, _map())
    mapped = AVModel.load(d, lazy=True)
    assert plain.bridge_map is None and mapped.bridge_map is not None
    a, b = plain.spaces_stamp()["bridge"]["id"], mapped.spaces_stamp()["bridge"]["id"]
    assert b.startswith(a) and b != a
    assert describe_spaces(mapped.config)["bridge"]["audio_map"] == {"alpha": 0.5}
    assert "audio_map" not in describe_spaces(plain.config)["bridge"]


def test_the_memory_leans_towards_the_pictures_of_the_nearest_training_sounds() -> None:
    rng = np.random.default_rng(7)
    feats = rng.normal(size=(6, 16)) + 3.0  # (a shared offset: the centring removes it)
    targets = _unit(rng.normal(size=(6, G)))
    memory = build_memory(feats, targets, ("aisfx",), k=2, beta=1.0)
    assert memory is not None and memory.config() == {
        "parts": ["aisfx"],
        "windows": 6,
        "k": 2,
        "beta": 1.0,
    }
    query = feats[[0]] + 0.01 * rng.normal(size=(1, 16))
    sims = _unit(feats - feats.mean(0)) @ _unit(query - feats.mean(0))[0]
    nearest = np.argsort(-sims)[:2]
    near = sims[nearest].mean()
    assert 0 < near < 1
    lean = near * _unit(targets[nearest].mean(0))
    np.testing.assert_allclose(memory.lean(query)[0], lean, atol=1e-3)
    the_map = BridgeMap(np.zeros(G), np.zeros((G, G)), memory=memory)
    b = _unit(rng.normal(size=(1, G)))
    np.testing.assert_allclose(the_map.apply(b, query)[0], _unit(b[0] + lean), atol=1e-3)
    # a sound unlike every training sound (negative cosines) does not lean at all
    far = feats.mean(0, keepdims=True) - 10 * (feats[nearest].mean(0) - feats.mean(0))
    unlike = memory.lean(far)
    assert np.linalg.norm(unlike) < np.linalg.norm(lean)
    with pytest.raises(ValueError, match="part features"):
        the_map.apply(b)
    assert build_memory(np.full((2, 16), np.nan), targets[:2], ("aisfx",)) is None
    with pytest.raises(ModelError, match="k=0"):
        BridgeMemory(("aisfx",), np.zeros(16), np.ones((2, 16)), targets[:2], k=0)


def test_a_memory_survives_the_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    d = _model_dir(tmp_path)
    memory = build_memory(rng.normal(size=(5, 512)), _unit(rng.normal(size=(5, G))), ("aisfx",))
    written = BridgeMap(np.zeros(G), rng.normal(size=(G, G)) * 0.1, 0.5, {}, memory)
    write_bridge_map(d, written)
    section = md.load_config(d).bridge_map
    assert section["memory"] == {"parts": ["aisfx"], "windows": 5, "k": 5, "beta": 1.0}
    loaded = load_bridge_map(d, section)
    assert loaded is not None and loaded.memory is not None
    b, parts = _unit(rng.normal(size=(3, G))), rng.normal(size=(3, 512))
    np.testing.assert_allclose(loaded.apply(b, parts), written.apply(b, parts), atol=1e-5)
    with pytest.raises(ModelError, match="another number"):
        load_bridge_map(d, {**section, "memory": {**section["memory"], "windows": 4}})
