"""Fine-tuning the last blocks of a backbone: which parameters train, BatchNorm, saving.

Blocks, counted from the output end (``unfreeze(..., n_blocks=N)`` unfreezes the first ``N``
of these lists; names are submodules of the backbone module):

* **audio, aisfx** (:class:`~avsearch.encoders.aisfx.AisfxBackbone`), 4 blocks:
  ``net.conv_block4``, ``net.conv_block3``, ``net.conv_block2``, ``net.conv_block1`` (each:
  two 3x3 convolutions with their BatchNorms). The log-mel front-end has no parameters.
* **visual, EfficientNet-Lite0** (:class:`~avsearch.encoders.efficientnet.
  EfficientNetLite0Backbone`), 18 blocks: ``net._conv_head`` + ``net._bn1`` (the 1x1 head
  convolution to 1,280 channels) counts as the last block, then the MBConv blocks
  ``net._blocks.15``, ``net._blocks.14``, ... ``net._blocks.0``, and finally the stem
  ``net._conv_stem`` + ``net._bn0``. The ImageNet classifier ``net._fc`` is not part of the
  features and is never unfrozen.

``unfreeze`` sets ``requires_grad`` on exactly the parameters of the chosen blocks (BatchNorm
affine weights included) and clears it everywhere else. BatchNorm running statistics:

* ``bn_mode="frozen"``: every BatchNorm keeps its running mean/variance and normalises with
  them, also while training (the BN modules stay in eval mode); only the weights move. Safe
  with the small batches we train with.
* ``bn_mode="train"``: the BatchNorms of the unfrozen blocks are in train mode while training:
  they normalise with batch statistics and update their running statistics (momentum 0.1 for
  aisfx, 0.01 for EfficientNet). Frozen blocks always use and keep their statistics.

:func:`set_train_mode` (also called by the backbones' own ``train()`` once :func:`unfreeze`
has marked them ``finetuning``) puts only the unfrozen blocks into train mode; everything
else stays in eval mode. Neither backbone has dropout or drop-connect in its feature path, so
train mode only matters for BatchNorm.

Saving: :func:`backbone_state` is the state dict of the backbone's network (``backbone.net``,
keys without the ``net.`` prefix), the same layout as the shipped weight files, so a model
directory's ``audio_backbone.safetensors`` / ``visual_backbone.safetensors`` named in its
config (``TowerConfig.backbone_weights``) loads through the normal backbone registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from avsearch.errors import ModelError

__all__ = [
    "BACKBONE_FILES",
    "BN_MODES",
    "BNMode",
    "backbone_blocks",
    "backbone_state",
    "block_count",
    "load_backbone_state",
    "param_groups",
    "save_backbone_state",
    "set_train_mode",
    "unfreeze",
    "unfrozen_blocks",
]

BNMode = Literal["frozen", "train"]
BN_MODES: tuple[str, ...] = ("frozen", "train")
BACKBONE_FILES: dict[str, str] = {
    "audio": "audio_backbone.safetensors",
    "visual": "visual_backbone.safetensors",
}

_AISFX_BLOCKS: tuple[tuple[str, ...], ...] = tuple((f"net.conv_block{i}",) for i in range(4, 0, -1))
_EFFNET_MBCONV = 16
_EFFNET_BLOCKS: tuple[tuple[str, ...], ...] = (
    ("net._conv_head", "net._bn1"),
    *((f"net._blocks.{i}",) for i in range(_EFFNET_MBCONV - 1, -1, -1)),
    ("net._conv_stem", "net._bn0"),
)

# Attributes set on a backbone by unfreeze(); read by set_train_mode().
_BLOCKS_ATTR = "finetune_blocks"
_BN_ATTR = "finetune_bn_mode"


def _layout(backbone: nn.Module, modality: str) -> tuple[tuple[str, ...], ...]:
    """The backbone's blocks, last first, checked against the module."""
    if modality == "audio":
        layout = _AISFX_BLOCKS
    elif modality == "visual":
        layout = _EFFNET_BLOCKS
    else:
        raise ValueError(f"modality must be 'audio' or 'visual', not {modality!r}")
    declared = getattr(backbone, "modality", modality)
    if declared != modality:
        raise ValueError(f"{type(backbone).__name__} is a {declared} backbone, not {modality}")
    for names in layout:
        for name in names:
            try:
                backbone.get_submodule(name)
            except AttributeError as exc:
                raise ValueError(
                    f"{type(backbone).__name__} has no submodule {name!r}: only the aisfx and "
                    "EfficientNet-Lite0 backbones can be fine-tuned"
                ) from exc
    return layout


def block_count(modality: str) -> int:
    """How many fine-tunable blocks the default backbone of ``modality`` has (aisfx 4,
    EfficientNet-Lite0 18), without loading it."""
    if modality == "audio":
        return len(_AISFX_BLOCKS)
    if modality == "visual":
        return len(_EFFNET_BLOCKS)
    raise ValueError(f"modality must be 'audio' or 'visual', not {modality!r}")


def backbone_blocks(backbone: nn.Module, modality: str) -> list[tuple[str, ...]]:
    """The fine-tunable blocks of ``backbone``, last (output end) first, as submodule names."""
    return [tuple(names) for names in _layout(backbone, modality)]


def unfrozen_blocks(backbone: nn.Module) -> tuple[str, ...]:
    """Submodule names unfrozen by the last :func:`unfreeze` (empty if none)."""
    return tuple(getattr(backbone, _BLOCKS_ATTR, ()))


def _check_bn_mode(bn_mode: str) -> None:
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {', '.join(BN_MODES)}, not {bn_mode!r}")


def unfreeze(
    backbone: nn.Module, modality: str, n_blocks: int, bn_mode: BNMode = "frozen"
) -> list[nn.Parameter]:
    """Make the last ``n_blocks`` blocks trainable, freeze the rest; returns their parameters.

    ``n_blocks`` runs from 0 (everything frozen) to the number of blocks (4 for aisfx, 18 for
    EfficientNet-Lite0, see the module docstring). The backbone is marked ``finetuning`` (its
    ``train()`` then defers to :func:`set_train_mode`) unless ``n_blocks == 0``, and left in
    eval mode. Calling it again replaces the previous choice.
    """
    _check_bn_mode(bn_mode)
    layout = _layout(backbone, modality)
    if not 0 <= n_blocks <= len(layout):
        raise ValueError(
            f"n_blocks must be in 0..{len(layout)} for the {modality} backbone, not {n_blocks}"
        )
    names = tuple(name for block in layout[:n_blocks] for name in block)
    for p in backbone.parameters():
        p.requires_grad_(False)
    params: list[nn.Parameter] = []
    for name in names:
        for p in backbone.get_submodule(name).parameters():
            p.requires_grad_(True)
            params.append(p)
    setattr(backbone, _BLOCKS_ATTR, names)
    setattr(backbone, _BN_ATTR, bn_mode)
    backbone.finetuning = n_blocks > 0
    set_train_mode(backbone, False)
    return params


def set_train_mode(backbone: nn.Module, training: bool, bn_mode: BNMode | None = None) -> None:
    """Eval mode everywhere, then (if ``training``) train mode for the unfrozen blocks only.

    With ``bn_mode="frozen"`` the BatchNorms of the unfrozen blocks stay in eval mode too.
    ``bn_mode=None`` uses the mode given to :func:`unfreeze`. Never touches ``requires_grad``.
    """
    mode = bn_mode if bn_mode is not None else getattr(backbone, _BN_ATTR, "frozen")
    _check_bn_mode(mode)
    nn.Module.train(backbone, False)  # bypasses the backbone's own train() override
    if not training:
        return
    for name in unfrozen_blocks(backbone):
        block = backbone.get_submodule(name)
        block.train(True)
        if mode == "frozen":
            for module in block.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()


def param_groups(
    heads_params: Iterable[nn.Parameter],
    backbone_params: Iterable[nn.Parameter],
    lr: float,
    backbone_lr_scale: float = 0.1,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups: heads at ``lr``, backbone at ``lr * backbone_lr_scale``.

    Parameters without ``requires_grad`` are dropped; an empty backbone group is left out.
    Each group has a ``name`` (``heads`` / ``backbone``) for logging and schedulers.
    """
    if lr <= 0 or backbone_lr_scale < 0:
        raise ValueError(f"need lr > 0 and backbone_lr_scale >= 0, got {lr}, {backbone_lr_scale}")
    heads = [p for p in heads_params if p.requires_grad]
    backbone = [p for p in backbone_params if p.requires_grad]
    overlap = {id(p) for p in heads} & {id(p) for p in backbone}
    if overlap:
        raise ValueError(f"{len(overlap)} parameters are in both the heads and the backbone")
    groups: list[dict[str, Any]] = [{"params": heads, "lr": lr, "name": "heads"}]
    if backbone:
        groups.append({"params": backbone, "lr": lr * backbone_lr_scale, "name": "backbone"})
    return groups


def _network(backbone: nn.Module) -> nn.Module:
    net = getattr(backbone, "net", None)
    if not isinstance(net, nn.Module):
        raise ValueError(f"{type(backbone).__name__} has no .net network to save or load")
    return net


def backbone_state(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Full state dict of ``backbone.net`` (weights and BatchNorm buffers), detached,
    contiguous CPU copies - the layout of the shipped weight files (no ``net.`` prefix)."""
    return {
        k: v.detach().to("cpu", copy=True).contiguous()
        for k, v in _network(backbone).state_dict().items()
    }


def save_backbone_state(backbone: nn.Module, path: Path) -> None:
    """Write :func:`backbone_state` to ``path`` (safetensors), via a temporary file."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(backbone_state(backbone), str(tmp))
    tmp.replace(path)


def load_backbone_state(backbone: nn.Module, path: Path) -> None:
    """Load a :func:`backbone_state` safetensors file into ``backbone.net``, strictly.

    Values are copied into the existing tensors (their device and memory format are kept);
    ``requires_grad`` and train/eval modes are left as they are.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"backbone weights file not found: {path}")
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises several error types for bad files
        raise ModelError(f"{path}: cannot read backbone weights: {exc}") from exc
    try:
        _network(backbone).load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"{path}: does not match the {type(backbone).__name__} network: {exc}"
        ) from exc
