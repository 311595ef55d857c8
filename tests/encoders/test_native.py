"""Native spaces: the PCA kept and its geometry, the parts a composite enters with, the model
directory files (native.safetensors + config.yaml's native: section) and refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from avsearch.encoders import model_dir as md
from avsearch.encoders.head_config import HeadConfig
from avsearch.encoders.native import (
    NATIVE_FILE,
    NativeTower,
    declared_dims,
    default_parts,
    fit_native,
    load_native,
    part_columns,
    windows_by_modality,
    write_native,
)
from avsearch.errors import ModelError
from avsearch.store.features import CachedWindow


def _cos(x: np.ndarray) -> np.ndarray:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    return u @ u.T


def test_part_columns_of_a_composite_follow_the_tower_order() -> None:
    cols = part_columns("aisfx+words", ["aisfx"])
    assert np.array_equal(cols, np.arange(512))
    cols = part_columns("aisfx+soundnet", ["soundnet"])
    assert cols[0] == 512 and len(cols) == 2425
    with pytest.raises(ModelError, match="not a part"):
        part_columns("aisfx", ["words"])


def test_default_parts_keep_general_sound_and_every_image_part() -> None:
    assert default_parts("aisfx-words", "audio") == ("aisfx",)
    assert default_parts("aisfx+soundnet", "audio") == ("aisfx",)
    assert default_parts("cepstra", "audio") == ("cepstra",)  # nothing general: all of it
    assert default_parts("efficientnet-lite0", "visual") == ("efficientnet-lite0",)


def test_uncentred_full_rank_projection_keeps_every_cosine() -> None:
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(40, 512)))  # non-negative, like aisfx
    space = fit_native({"audio": x}, {"audio": "aisfx"}, dim=40)
    v = space.towers["audio"].vectors(x)
    assert v.shape == (40, 40)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(v @ v.T, _cos(x), atol=1e-5)


def test_centred_projection_keeps_the_cosines_of_centred_features() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(loc=3.0, size=(30, 512))
    space = fit_native({"audio": x}, {"audio": "aisfx"}, dim=256, centred=True)
    tower = space.towers["audio"]
    assert tower.centred and tower.dim == 29  # n - 1 directions carry variance
    v = tower.vectors(x)
    np.testing.assert_allclose(v @ v.T, _cos(x - x.mean(axis=0)), atol=1e-5)


def test_a_truncated_projection_keeps_the_leading_directions() -> None:
    rng = np.random.default_rng(2)
    basis = np.linalg.qr(rng.normal(size=(512, 512)))[0]
    x = rng.normal(size=(200, 3)) * [10.0, 5.0, 2.0] @ basis[:, :3].T
    x += 0.01 * rng.normal(size=x.shape)
    comps = fit_native({"audio": x}, {"audio": "aisfx"}, dim=3).towers["audio"].components
    overlap = np.linalg.svd(comps.T @ basis[:, :3], compute_uv=False)
    assert overlap.min() > 0.999  # the same subspace


def test_the_fit_is_deterministic_and_signed() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 1280))
    a = fit_native({"visual": x}, {"visual": "efficientnet-lite0"}, dim=8).towers["visual"]
    b = fit_native({"visual": x.copy()}, {"visual": "efficientnet-lite0"}, dim=8).towers["visual"]
    assert np.array_equal(a.components, b.components)
    rows = np.abs(a.components).argmax(axis=0)
    assert (a.components[rows, np.arange(8)] > 0).all()


def test_a_modality_with_fewer_than_two_windows_gets_no_space() -> None:
    x = np.ones((1, 512))
    space = fit_native({"audio": x}, {"audio": "aisfx", "visual": "efficientnet-lite0"})
    assert space.towers == {}


def test_only_the_chosen_parts_enter() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 2560))
    tower = fit_native({"audio": x}, {"audio": "aisfx-words"}, dim=19).towers["audio"]
    y = x.copy()
    y[:, 512:] = rng.normal(size=(20, 2048))  # another words part: the same native vectors
    np.testing.assert_allclose(tower.vectors(x), tower.vectors(y), atol=1e-6)


def test_bad_statistics_are_refused() -> None:
    with pytest.raises(ModelError, match="shape"):
        NativeTower("aisfx", ("aisfx",), np.zeros(10), np.zeros((512, 4)), False)
    with pytest.raises(ModelError, match="non-finite"):
        comps = np.zeros((512, 4))
        comps[0, 0] = np.nan
        NativeTower("aisfx", ("aisfx",), np.zeros(512), comps, False)
    with pytest.raises(ModelError, match="dimension"):
        NativeTower("aisfx", ("aisfx",), np.zeros(512), np.zeros((512, 300)), False)


def _model_dir(tmp_path: Path) -> Path:
    from torch import nn

    from avsearch.encoders.heads import ProjectionHead

    config = md.ModelConfig(
        name="tiny",
        embedding_dim=4,
        audio=md.TowerConfig("aisfx", HeadConfig(512, 4, 8)),
        visual=md.TowerConfig("efficientnet-lite0", HeadConfig(1280, 4, 8)),
    )
    heads: dict[str, nn.Module] = {
        "audio": ProjectionHead(config.audio.head),
        "visual": ProjectionHead(config.visual.head),
    }
    d = tmp_path / "model"
    md.save_model_dir(d, config, heads)
    return d


def test_write_and_load_round_trip_and_change_the_fingerprint(tmp_path: Path) -> None:
    d = _model_dir(tmp_path)
    before = md.fingerprint(d)
    rng = np.random.default_rng(5)
    feats = {"audio": rng.normal(size=(12, 512)), "visual": rng.normal(size=(9, 1280))}
    space = fit_native(
        feats, {"audio": "aisfx", "visual": "efficientnet-lite0"}, fitted_on={"by": "test"}
    )
    after = write_native(d, space)
    assert after != before and after == md.fingerprint(d)
    raw = yaml.safe_load((d / md.CONFIG).read_text())
    assert raw["native"]["audio"] == {"parts": ["aisfx"], "dim": 12, "centred": False}
    assert raw["native"]["fitted_on"]["by"] == "test"
    config = md.load_config(d)
    assert declared_dims(config.native) == {"audio": 12, "visual": 9}
    loaded = load_native(d, config.native)
    assert loaded is not None
    for m in ("audio", "visual"):
        np.testing.assert_allclose(
            loaded.towers[m].vectors(feats[m]), space.towers[m].vectors(feats[m]), atol=1e-6
        )
    # the training info survives a later update of the config, and so does native:
    md.update_training_info(d, {"note": "x"})
    assert md.load_config(d).native == config.native


def test_a_declared_space_without_its_file_is_refused(tmp_path: Path) -> None:
    d = _model_dir(tmp_path)
    rng = np.random.default_rng(6)
    write_native(d, fit_native({"audio": rng.normal(size=(5, 512))}, {"audio": "aisfx"}))
    (d / NATIVE_FILE).unlink()
    with pytest.raises(ModelError, match="missing"):
        load_native(d, md.load_config(d).native)
    (d / NATIVE_FILE).write_bytes(b"\x80\x04 not safetensors")
    with pytest.raises(ModelError):
        load_native(d, md.load_config(d).native)


def test_a_model_without_native_has_none(tmp_path: Path) -> None:
    d = _model_dir(tmp_path)
    assert load_native(d, md.load_config(d).native) is None
    assert "native" not in yaml.safe_load((d / md.CONFIG).read_text())


def test_windows_by_modality_leaves_silence_out() -> None:
    class F:
        def __init__(self) -> None:
            self.windows = [
                CachedWindow("audio", 0, 0.0, 1.0, np.ones(3), False),
                CachedWindow("audio", 1, 1.0, 2.0, np.zeros(3), True),
                CachedWindow("visual", 0, 0.0, 0.0, np.full(2, 2.0), False),
            ]

    out = windows_by_modality([F()])
    assert out["audio"].shape == (1, 3) and out["visual"].shape == (1, 2)
