"""The bridge as an index space: vectors from the tower features already computed (SoundNet's
object slice, EfficientNet-Lite0's classifier on the pooled features), which models have one,
and the fusion rule of a model's config."""

from __future__ import annotations

import numpy as np
import pytest

from avsearch.encoders import bridge as br
from avsearch.encoders.imagenet_groups import N_CLASSES
from avsearch.errors import ModelError


def _constants(seed: int = 0) -> br.BridgeConstants:
    rng = np.random.default_rng(seed)
    g = br.N_GROUPS
    return br.BridgeConstants(
        rng.normal(size=g), rng.normal(size=g), rng.uniform(0.1, 1, g), rng.uniform(0.1, 1, g)
    )


def _fc(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N_CLASSES, 1280)) * 0.05, rng.normal(size=N_CLASSES) * 0.1


def test_off_reasons() -> None:
    assert br.bridge_off_reason("aisfx+soundnet", "efficientnet-lite0") is None
    assert br.bridge_off_reason("soundnet", "efficientnet-lite0") is None
    assert "no soundnet part" in (br.bridge_off_reason("aisfx", "efficientnet-lite0") or "")
    assert "no soundnet part" in (br.bridge_off_reason("aisfx-words", "efficientnet-lite0") or "")
    assert br.bridge_off_reason("not-registered", "efficientnet-lite0") is not None
    with pytest.raises(ModelError, match="no bridge"):
        br.BridgeSpace("aisfx", "efficientnet-lite0", _fc)


def test_audio_vectors_read_the_soundnet_objects_of_a_composite() -> None:
    rng = np.random.default_rng(2)
    constants = _constants()
    space = br.BridgeSpace("aisfx+soundnet", "efficientnet-lite0", _fc, constants)
    probs = rng.dirichlet(np.ones(N_CLASSES), size=3)
    feats = rng.normal(size=(3, 512 + 2425))
    feats[:, 512 + 1024 : 512 + 2024] = probs
    want = constants.vectors(br.group_probabilities(probs), "audio")
    np.testing.assert_allclose(space.vectors("audio", feats), want, atol=1e-6)
    feats[:, :512] = 0.0  # the aisfx part and the conv7/scene slices play no part
    feats[:, 512 : 512 + 1024] = 7.0
    np.testing.assert_allclose(space.vectors("audio", feats), want, atol=1e-6)


def test_visual_vectors_apply_the_classifier_then_softmax() -> None:
    rng = np.random.default_rng(3)
    constants = _constants(1)
    w, b = _fc()
    calls: list[int] = []

    def classifier() -> tuple[np.ndarray, np.ndarray]:
        calls.append(1)
        return w, b

    space = br.BridgeSpace("soundnet", "efficientnet-lite0", classifier, constants)
    assert not calls  # loaded on first use only
    feats = rng.normal(size=(4, 1280))
    logits = feats @ w.T + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    want = constants.vectors(br.group_probabilities(p), "visual")
    got = space.vectors("visual", feats)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    space.vectors("visual", feats)
    assert len(calls) == 1


def test_a_classifier_of_the_wrong_shape_is_refused() -> None:
    space = br.BridgeSpace(
        "soundnet", "efficientnet-lite0", lambda: (np.zeros((10, 1280)), np.zeros(10))
    )
    with pytest.raises(ModelError, match="classifier"):
        space.vectors("visual", np.zeros((1, 1280)))


def test_softmax_is_stable() -> None:
    p = br.softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(p, [[1.0, 0.0], [0.5, 0.5]])


def test_fusion_rule_from_config() -> None:
    assert br.FusionRule.from_config({}) == br.FusionRule("gated", 0.5, 0.7, 4.0)
    rule = br.FusionRule.from_config({"bridge": "gated", "low": 0.4, "high": 0.6, "weight": 2})
    assert rule.to_config() == {"bridge": "gated", "low": 0.4, "high": 0.6, "weight": 2.0}
    np.testing.assert_allclose(rule.weight_for(np.array([0.3, 0.5, 0.6, 0.9])), [2, 1, 0, 0])
    off = br.FusionRule.from_config({"bridge": "off"})
    assert not off.on and off.to_config() == {"bridge": "off"}
    assert off.weight_for(0.1) == 0.0
    for bad in ({"bridge": "always"}, {"low": 0.8, "high": 0.7}, {"gate": 1}, {"low": "x"}):
        with pytest.raises(ModelError, match="fusion"):
            br.FusionRule.from_config(bad)


def test_the_default_gate_matches_the_documented_thresholds() -> None:
    rule = br.FusionRule()
    w = rule.weight_for(np.array([0.0, 0.5, 0.6, 0.7, 1.0]))
    np.testing.assert_allclose(w, [4.0, 4.0, 2.0, 0.0, 0.0])


def test_constants_id_names_the_file_content(tmp_path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("{}")
    b.write_text("{} ")
    assert br.constants_id(a) != br.constants_id(b)
    assert br.constants_id(tmp_path / "none.json") == "missing"
