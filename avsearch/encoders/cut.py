"""Cutting a backbone in two for fine-tuning: a frozen prefix and a trainable tail.

``cut_backbone(backbone, modality, n_blocks)`` splits the network before its last
``n_blocks`` blocks (as counted by :mod:`avsearch.encoders.finetune`):

* the **prefix** (raw input -> activations at the cut) is frozen, runs in eval mode and is
  only ever called without gradients; its output can be computed once per input (and per
  augmented view) and stored, which is what makes fine-tuning affordable on a CPU;
* the **tail** (activations at the cut -> the backbone's pooled feature vector) holds the
  backbone's own block modules, not copies: training the tail trains the backbone, and
  :func:`avsearch.encoders.finetune.backbone_state` then saves the fine-tuned weights.

``tail(prefix(x)) == backbone(x)`` in eval mode (tested). The tail's ``train()`` follows the
BatchNorm mode: ``"frozen"`` keeps every BatchNorm on its running statistics, ``"train"``
lets the tail's BatchNorms normalise with batch statistics and update their running ones.

Audio (aisfx) input is float waveforms ``[B, N]``; visual (EfficientNet-Lite0) input is
uint8 images ``[B, 224, 224, 3]``, as the backbones' ``features`` take them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from avsearch.encoders.finetune import BN_MODES, BNMode, backbone_blocks

__all__ = ["BackboneCut", "Tail", "cut_backbone"]


class _Pool(nn.Module):
    """The backbone's pooling of its last feature map into the feature vector."""

    def __init__(self, modality: str) -> None:
        super().__init__()
        self.modality = modality

    def forward(self, x: Tensor) -> Tensor:
        if self.modality == "audio":  # aisfx: mean over mel, max over time
            return x.mean(dim=3).amax(dim=2)
        return x.mean(dim=(2, 3))  # EfficientNet: global average pool


def _stage(backbone: nn.Module, names: tuple[str, ...], modality: str) -> nn.Module:
    """One block as a module: the submodule itself, or conv -> BN -> ReLU6 for the
    EfficientNet stem and head (whose activation is applied by the network's forward)."""
    mods = [backbone.get_submodule(n) for n in names]
    if len(mods) == 1:
        return mods[0]
    if modality != "visual" or len(mods) != 2:
        raise ValueError(f"unexpected block layout {names!r}")
    return nn.Sequential(mods[0], mods[1], nn.ReLU6())


class Tail(nn.Module):
    """Activations at the cut -> pooled backbone features; the backbone's own modules."""

    def __init__(
        self,
        stages: list[nn.Module],
        modality: str,
        bn_mode: BNMode,
        packed: tuple[tuple[int, ...], int] | None = None,
    ) -> None:
        super().__init__()
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {', '.join(BN_MODES)}, not {bn_mode!r}")
        self.stages = nn.Sequential(*stages)
        self.pool = _Pool(modality)
        self.modality = modality
        self.bn_mode: BNMode = bn_mode
        # (activation shape, extra width) when the prefix packs fixed extra features (the
        # aisfx-cepstra template) after the flattened activations; they pass through as is.
        self.packed = packed

    def train(self, mode: bool = True) -> Tail:
        super().train(mode)
        if mode and self.bn_mode == "frozen":
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.packed is not None:
            shape, extra = self.packed
            n = x.shape[1] - extra
            act = x[:, :n].reshape(len(x), *shape)
            return torch.cat([self.pool(self.stages(act)), x[:, n:]], dim=1)
        if self.modality == "visual":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.pool(self.stages(x))


class _Prefix(nn.Module):
    def __init__(self, backbone: nn.Module, stages: list[nn.Module], modality: str) -> None:
        super().__init__()
        self.modality = modality
        self.frontend = getattr(backbone, "frontend", None) if modality == "audio" else None
        self.stages = nn.Sequential(*stages)
        self.backbone_pad = getattr(backbone, "_pad", None)
        self.template = getattr(backbone, "template", None) if modality == "audio" else None

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if self.modality != "audio":
            return self.stages(x)
        assert self.frontend is not None and self.backbone_pad is not None
        logmel = self.frontend(self.backbone_pad(x))
        act = self.stages(logmel.unsqueeze(1))
        if self.template is None:
            return act
        return torch.cat([act.flatten(1), self.template(logmel)], dim=1)


@dataclass
class BackboneCut:
    """A backbone cut before its last ``n_blocks`` blocks (see the module docstring)."""

    backbone: nn.Module
    modality: str
    n_blocks: int
    prefix: nn.Module
    tail: Tail

    @torch.no_grad()
    def activations(self, batch: np.ndarray) -> np.ndarray:
        """Raw input (waveforms ``[B, N]`` float or images ``[B, 224, 224, 3]`` uint8) ->
        float32 activations at the cut, ``[B, *activation_shape]``."""
        self.prefix.eval()
        if self.modality == "audio":
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        else:
            to_tensor = self.backbone.to_tensor  # type: ignore[operator]
            x = to_tensor(np.asarray(batch))
        out = self.prefix(x)
        return out.contiguous().numpy().astype(np.float32, copy=False)

    @torch.no_grad()
    def features(self, activations: np.ndarray | Tensor, chunk: int = 64) -> np.ndarray:
        """Activations at the cut -> backbone features, tail in eval mode."""
        was = self.tail.training
        self.tail.eval()
        x = torch.as_tensor(np.asarray(activations, dtype=np.float32))
        out = torch.cat([self.tail(x[i : i + chunk]) for i in range(0, len(x), chunk)])
        self.tail.train(was)
        return out.numpy()


def cut_backbone(
    backbone: nn.Module, modality: str, n_blocks: int, bn_mode: BNMode = "frozen"
) -> BackboneCut:
    """Split ``backbone`` before its last ``n_blocks`` (≥ 1) blocks; the tail's parameters
    get ``requires_grad``, every other parameter of the backbone loses it."""
    blocks = backbone_blocks(backbone, modality)  # last first
    if not 1 <= n_blocks <= len(blocks):
        raise ValueError(
            f"n_blocks must be in 1..{len(blocks)} for the {modality} backbone, not {n_blocks}"
        )
    ordered = blocks[::-1]  # input end first
    cut = len(ordered) - n_blocks
    prefix_stages = [_stage(backbone, names, modality) for names in ordered[:cut]]
    tail_stages = [_stage(backbone, names, modality) for names in ordered[cut:]]
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    prefix = _Prefix(backbone, prefix_stages, modality).eval()
    packed = None
    if prefix.template is not None:  # aisfx-cepstra: learn the activation shape once
        window = getattr(backbone, "window_samples", 1)
        with torch.no_grad():
            probe = prefix.stages(prefix.frontend(torch.zeros(1, window))[:, None])
        packed = (tuple(probe.shape[1:]), int(prefix.template.dim))
    tail = Tail(tail_stages, modality, bn_mode, packed)
    for p in tail.parameters():
        p.requires_grad_(True)
    return BackboneCut(backbone, modality, n_blocks, prefix, tail)
