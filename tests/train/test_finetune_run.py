"""Two-stage fine-tuning on a real aisfx tail and tiny seeded data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avsearch.encoders.cut import cut_backbone
from avsearch.encoders.finetune import BACKBONE_FILES, backbone_state
from avsearch.encoders.model_dir import load_config
from avsearch.encoders.registry import load_backbone
from avsearch.train import for_method
from avsearch.train.augment import AudioAugmentConfig, augment_audio
from avsearch.train.finetune_run import STAGE1_DIR, train_finetune
from avsearch.train.loop import embed_tower
from avsearch.train.views import TrainData, Views, build_views


def _tones(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % 3
    t = np.arange(22050) / 44100
    waves = np.stack(
        [0.5 * np.sin(2 * np.pi * (300 + 500 * y + 20 * rng.standard_normal()) * t) for y in labels]
    ).astype(np.float32)
    return waves, labels


def _tones_and_cut(n: int, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    """Seeded tones, a fresh aisfx, its state before training and its last-block cut."""
    torch.manual_seed(0)
    waves, labels = _tones(n, rng)
    backbone = load_backbone("aisfx")
    return waves, labels, backbone, backbone_state(backbone), cut_backbone(backbone, "audio", 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    waves, labels, backbone, before, cut = _tones_and_cut(24, rng)
    aug = AudioAugmentConfig(snr_db=(20.0, 30.0))
    audio = build_views(
        waves, cut.activations, n_views=2, augment=lambda b, r: augment_audio(b, aug, r)
    )
    visual = Views(
        (np.eye(3)[labels][:, None, :] + 0.1 * rng.standard_normal((24, 2, 3))).astype(np.float32)
    )
    data = TrainData(audio, visual, labels)
    cfg = for_method(
        "psd", epochs=2, finetune_epochs=1, val_fraction=0.0, batch_size=8, finetune="audio",
        audio_backbone="aisfx",
    )  # fmt: skip
    out = tmp_path_factory.mktemp("ft")
    result = train_finetune(data, np.ones(24, bool), cfg, out, cuts={"audio": cut})
    return out, result, before, backbone, audio


def test_only_the_tail_changes(trained) -> None:  # type: ignore[no-untyped-def]
    _, _, before, backbone, _ = trained
    after = backbone_state(backbone)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "fine-tuning changed nothing"
    assert all(k.startswith("conv_block4.") for k in changed)
    weights = {k for k in changed if k.endswith("weight") and "conv" in k.split(".")[1]}
    assert weights  # the convolutions themselves moved, not only buffers


def test_model_dir_holds_the_finetuned_backbone(trained) -> None:  # type: ignore[no-untyped-def]
    out, result, _, backbone, audio = trained
    assert (out / STAGE1_DIR / "heads.safetensors").exists()
    cfg = load_config(out)
    assert cfg.audio.backbone_weights == BACKBONE_FILES["audio"]
    assert cfg.visual.backbone_weights is None
    assert cfg.training["stage"] == "tails"
    reloaded = load_backbone("aisfx", Path(out) / BACKBONE_FILES["audio"])
    saved, live = backbone_state(reloaded), backbone_state(backbone)
    assert all(torch.equal(saved[k], live[k]) for k in live)
    # the saved backbone + heads give the vectors the trained nets give
    x = embed_tower(result.nets, "audio", audio.clean()[:4])
    feats = cut_backbone(reloaded, "audio", 1).features(audio.clean()[:4])
    y = embed_tower(result.nets, "visual", np.zeros((1, 3), np.float32))  # smoke: visual works
    assert y.shape == (1, cfg.embedding_dim)
    head = result.nets.audio.eval()
    with torch.no_grad():
        z = head(torch.from_numpy(feats)).numpy()
    np.testing.assert_allclose(x, z, atol=1e-5)


def test_build_views_is_seeded() -> None:
    rng = np.random.default_rng(1)
    raw = rng.standard_normal((5, 4)).astype(np.float32)

    def aug(b: np.ndarray, r: np.random.Generator) -> np.ndarray:
        return b + r.standard_normal(b.shape).astype(np.float32)

    a = build_views(raw, lambda b: b * 2, n_views=3, augment=aug, seed=7, chunk=2)
    b = build_views(raw, lambda b: b * 2, n_views=3, augment=aug, seed=7, chunk=2)
    c = build_views(raw, lambda b: b * 2, n_views=3, augment=aug, seed=8, chunk=2)
    assert a.data.shape == (5, 3, 4)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.clean(), raw * 2)
    assert not np.array_equal(a.data[:, 1], c.data[:, 1])
    with pytest.raises(ValueError):
        build_views(raw, lambda b: b, n_views=2)


def test_a_worse_finetune_keeps_the_heads_stage(tmp_path: Path) -> None:
    """A tails stage that wrecks the backbone (learning rate ×10⁴) loses to the heads stage on
    validation: the model keeps the pretrained backbone and the stage-1 heads' vectors."""
    waves, labels, backbone, before, cut = _tones_and_cut(30, np.random.default_rng(1))
    audio = build_views(waves, cut.activations, n_views=1, augment=None)
    visual = Views((np.eye(3)[labels][:, None, :] * 3).astype(np.float32))
    data = TrainData(audio, visual, labels)
    cfg = for_method(
        "psd", epochs=8, finetune_epochs=1, val_fraction=0.4, batch_size=8, finetune="audio",
        backbone_lr_scale=1e4, lr=1e-2, audio_backbone="aisfx",
    )  # fmt: skip
    stage1 = train_finetune(data, np.ones(30, bool), cfg, tmp_path / "a", cuts={"audio": cut})
    assert stage1.best_epoch == -1 and stage1.best_val_map is not None
    assert not (tmp_path / "a" / BACKBONE_FILES["audio"]).exists()
    assert load_config(tmp_path / "a").audio.backbone_weights is None
    after = backbone_state(backbone)
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored with the best state
    # switched off, the wrecked tails stage is what is saved
    forced = train_finetune(
        data, np.ones(30, bool), cfg.replace(keep_better_heads=False), tmp_path / "b",
        cuts={"audio": cut_backbone(load_backbone("aisfx"), "audio", 1)},
    )  # fmt: skip
    assert forced.best_epoch == 0 and (tmp_path / "b" / BACKBONE_FILES["audio"]).exists()
