"""aisfx sound-effects audio backbone (Ma & Lerch, ISMIR 2022; CC BY 4.0), in our own code.

"Representation Learning for the Automatic Indexing of Sound Effects Libraries", Alison B. Ma
and Alexander Lerch, ISMIR 2022; weights from the PyPI package ``aisfx`` 0.1.2 (model
X-Sequential-CE), converted once to ``models/backbones/aisfx/model.safetensors`` by
:mod:`avsearch.encoders.convert`. The ``aisfx`` package itself is never imported here.

Network (the "Cnn_9layers" embedding net of the DCASE 2018 cross-task baseline, as in
``aisfx/models/cnn2d.py``, ``EmbeddingNet("max", ks=3, strd=1, hl1=64)``): input
``[B, T, 96]`` log-mel (time, mel) seen as a one-channel image; four blocks of
``conv3x3 (no bias) -> BatchNorm -> ReLU -> conv3x3 (no bias) -> BatchNorm -> ReLU -> max-pool``
with 64, 128, 256, 512 channels and pools 2x2, 2x2, 2x2, 1x1; then the mean over the mel axis
and the max over time give a non-negative 512-d embedding. For a 100-frame block the last
feature map is ``[512, 12, 12]``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from avsearch.encoders.audio_frontend import (
    N_MELS,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    LogMelFrontend,
    run_windows,
)
from avsearch.encoders.files import load_new, weights_state
from avsearch.encoders.tower import PRECISIONS, AudioInput, Precision, autocast
from avsearch.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = [
    "CHANNELS",
    "EMBED_CHUNK",
    "FEATURE_DIM",
    "POOLS",
    "AisfxBackbone",
    "AisfxNet",
    "ConvBlock",
    "fold_batchnorm",
    "load_aisfx",
]

CHANNELS: tuple[int, ...] = (64, 128, 256, 512)
POOLS: tuple[int, ...] = (2, 2, 2, 1)
FEATURE_DIM = CHANNELS[-1]
EMBED_CHUNK = 64
MIN_FRAMES = 8  # three 2x2 max-pools need at least 8 frames


class ConvBlock(nn.Module):
    """Two bias-free 3x3 convolutions, each followed by BatchNorm and ReLU, then a pool: max
    (aisfx) or average (PANNs CNN14, whose checkpoint uses the same parameter names)."""

    def __init__(self, in_channels: int, out_channels: int, pool: int, kind: str = "max") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool
        self.pool_fn = F.max_pool2d if kind == "max" else F.avg_pool2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.pool_fn(x, self.pool) if self.pool > 1 else x


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """An inference copy of ``net``: every :class:`ConvBlock`'s BatchNorm (running statistics)
    folded into the convolution before it, weights in channels_last layout. Same outputs up to
    float rounding (max relative difference about 1e-6 on aisfx); about 30% less time per
    window on this CPU (bench/embed_throughput.py). ``net`` itself is left as it is."""
    fast = copy.deepcopy(net).eval()
    for block in fast.modules():
        if isinstance(block, ConvBlock):
            block.conv1 = fuse_conv_bn_eval(block.conv1, block.bn1)
            block.conv2 = fuse_conv_bn_eval(block.conv2, block.bn2)
            block.bn1, block.bn2 = nn.Identity(), nn.Identity()  # type: ignore[assignment]
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast.to(memory_format=torch.channels_last)


class AisfxNet(nn.Module):
    """aisfx embedding CNN: ``[B, T, 96]`` log-mel -> ``[B, 512]``, non-negative.

    Parameter names are those of aisfx's ``EmbeddingNet`` (``conv_block1.conv1.weight``,
    ``conv_block1.bn1.running_mean`` ...) without the ``embedding_net.`` prefix of its
    checkpoint.
    """

    def __init__(self) -> None:
        super().__init__()
        in_ch = 1
        for i, (out_ch, pool) in enumerate(zip(CHANNELS, POOLS, strict=True), start=1):
            self.add_module(f"conv_block{i}", ConvBlock(in_ch, out_ch, pool))
            in_ch = out_ch

    def feature_map(self, spec: torch.Tensor) -> torch.Tensor:
        """``[B, T, 96]`` -> ``[B, 512, T // 8, 12]`` last block activations."""
        if spec.ndim != 3 or spec.shape[2] != N_MELS:
            raise ValueError(f"expected log-mel input [B, T, {N_MELS}], got {tuple(spec.shape)}")
        if spec.shape[1] < MIN_FRAMES:
            raise ValueError(f"need at least {MIN_FRAMES} frames, got {tuple(spec.shape)}")
        x = spec.unsqueeze(1)
        for i in range(1, len(CHANNELS) + 1):
            x = getattr(self, f"conv_block{i}")(x)
        return x

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.feature_map(spec).mean(dim=3)  # mean over mel -> [B, 512, T']
        return x.amax(dim=2)  # max over time -> [B, 512]


def load_aisfx(path: Path) -> AisfxNet:
    """Build :class:`AisfxNet` and load ``path`` (safetensors) strictly; eval mode, on CPU."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"aisfx weights file not found: {path}")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises several error types for bad files
        raise ModelError(f"{path}: cannot read aisfx weights: {exc}") from exc
    net = load_new(AisfxNet, state, path, "aisfx")
    net.eval()
    logger.debug("loaded aisfx weights from %s", path)
    return net


class AisfxBackbone(nn.Module):
    """The ``aisfx`` tower: waveform windows (mono 44.1 kHz, 102,400 samples) -> 512-d aisfx
    embeddings, front-end + network.

    :meth:`forward` is the differentiable torch path; :meth:`features` is the tower's numpy entry
    point, run by a BatchNorm-folded copy of the network (:func:`fold_batchnorm`, made on first
    use: the tower is frozen). The module's state dict holds only the network (``net.*``): the
    front-end's filterbank and window are rebuilt from constants.
    """

    name = "aisfx"
    modality = "audio"
    dim = FEATURE_DIM
    input = AudioInput(SAMPLE_RATE, WINDOW_SAMPLES)
    precisions = PRECISIONS

    def __init__(self, net: AisfxNet | None = None, weights: Path | None = None) -> None:
        super().__init__()
        if net is not None and weights is not None:
            raise ValueError("pass either net or weights, not both")
        if net is None:
            if weights is None:
                raise ValueError("pass an AisfxNet or the path of its weights")
            net = load_aisfx(weights)
        self.frontend = LogMelFrontend()
        self.net = net
        self._fast: list[tuple[Any, nn.Module]] = []  # the folded copy: not a submodule
        self.precision: Precision = "fp32"  # the network's (the front-end stays float32)
        self.eval()

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """``float [B, N]`` -> ``[B, 512]``; rows shorter than the window are zero-padded.

        ``N == WINDOW_SAMPLES`` is the aisfx 100-frame block. Longer rows (a window set
        longer than the block) are accepted: the network is fully convolutional and max-pools
        over time, though aisfx was trained on the block.
        """
        if waves.ndim != 2:
            raise ValueError(f"expected waveforms of shape [B, N], got {tuple(waves.shape)}")
        short = WINDOW_SAMPLES - waves.shape[1]
        if short > 0:
            waves = F.pad(waves, (0, short))
        return self.net(self.frontend(waves))

    def features(self, waves: np.ndarray) -> np.ndarray:
        """``float32 [B, n]`` -> ``float32 [B, 512]``
        (:func:`~avsearch.encoders.audio_frontend.run_windows`: rows shorter than the block
        zero-padded, a 1-D array is one row, chunks of at most 64 rows on the network's
        device)."""
        device = next(self.net.parameters()).device
        key = weights_state(self.net)
        if not self._fast or self._fast[0][0] != key:  # (made again when the weights change)
            self._fast[:] = [(key, fold_batchnorm(self.net))]
        fast = self._fast[0][1]

        def forward(rows: torch.Tensor) -> torch.Tensor:
            short = WINDOW_SAMPLES - rows.shape[1]
            spec = self.frontend(F.pad(rows, (0, short)) if short > 0 else rows)
            with autocast(self.precision, device.type):
                return fast(spec).float()

        return run_windows(forward, waves, self.dim, EMBED_CHUNK, device)
