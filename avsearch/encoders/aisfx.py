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

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avsearch.encoders.audio_frontend import (
    BLOCK_FRAMES,
    N_MELS,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    LogMelFrontend,
)
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
    "load_aisfx",
]

CHANNELS: tuple[int, ...] = (64, 128, 256, 512)
POOLS: tuple[int, ...] = (2, 2, 2, 1)
FEATURE_DIM = CHANNELS[-1]
EMBED_CHUNK = 64
MIN_FRAMES = 8  # three 2x2 max-pools need at least 8 frames


class ConvBlock(nn.Module):
    """Two bias-free 3x3 convolutions, each followed by BatchNorm and ReLU, then a max-pool."""

    def __init__(self, in_channels: int, out_channels: int, pool: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        if self.pool > 1:
            x = F.max_pool2d(x, kernel_size=self.pool)
        return x


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
    net = AisfxNet()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: not aisfx weights: {exc}") from exc
    net.eval()
    logger.debug("loaded aisfx weights from %s", path)
    return net


class AisfxBackbone(nn.Module):
    """Waveform windows (mono 44.1 kHz) -> 512-d aisfx embeddings: front-end + network.

    :meth:`forward` is differentiable (for fine-tuning); :meth:`embed` is the numpy inference
    entry point. The module's state dict holds only the network (``net.*``): the front-end's
    filterbank and window are rebuilt from constants.
    """

    name = "aisfx"
    modality = "audio"
    dim = FEATURE_DIM
    sample_rate = SAMPLE_RATE
    window_samples = WINDOW_SAMPLES
    block_frames = BLOCK_FRAMES
    finetuning: bool = False  # set by avsearch.encoders.finetune.unfreeze

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
        self.eval()

    def train(self, mode: bool = True) -> AisfxBackbone:
        """Plain ``nn.Module.train``, except while fine-tuning: once
        :func:`avsearch.encoders.finetune.unfreeze` has marked the backbone ``finetuning``,
        train mode reaches only its unfrozen blocks (see
        :func:`avsearch.encoders.finetune.set_train_mode`)."""
        if self.finetuning:
            from avsearch.encoders.finetune import set_train_mode

            set_train_mode(self, mode)
            return self
        return super().train(mode)

    def _pad(self, waves: torch.Tensor) -> torch.Tensor:
        short = self.window_samples - waves.shape[1]
        return F.pad(waves, (0, short)) if short > 0 else waves

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """``float [B, N]`` -> ``[B, 512]``; rows shorter than ``window_samples`` are zero-padded.

        ``N == window_samples`` is the aisfx 100-frame block. Longer rows are accepted here
        (the network is fully convolutional and max-pools over time) but are not what aisfx
        was trained on; :meth:`embed` refuses them.
        """
        if waves.ndim != 2:
            raise ValueError(f"expected waveforms of shape [B, N], got {tuple(waves.shape)}")
        return self.from_logmel(self.frontend(self._pad(waves)))

    def from_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        """The features of front-end output ``[B, T, 96]`` (subclasses add their own)."""
        return self.net(logmel)

    def embed(self, waves: np.ndarray) -> np.ndarray:
        """``float32 [B, n]`` with ``n <= window_samples`` -> ``float32 [B, 512]``.

        Shorter rows are zero-padded at the end to ``window_samples``; a 1-D array is one row.
        Runs under ``torch.inference_mode`` in chunks of at most 64 rows, on the network's
        device.
        """
        arr = np.asarray(waves, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] > self.window_samples:
            raise ValueError(
                f"expected waveforms of shape [B, n] with n <= {self.window_samples}, "
                f"got {arr.shape}"
            )
        if arr.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if arr.shape[1] == 0:
            arr = np.zeros((arr.shape[0], self.window_samples), dtype=np.float32)
        device = next(self.net.parameters()).device
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, arr.shape[0], EMBED_CHUNK):
                chunk = torch.from_numpy(np.ascontiguousarray(arr[start : start + EMBED_CHUNK]))
                feats = self.forward(chunk.to(device))
                out.append(feats.float().cpu().numpy())
        return np.concatenate(out, axis=0)
