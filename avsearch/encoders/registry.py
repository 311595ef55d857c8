"""Backbones by name, and where shipped models live.

A backbone is loaded from a local weights file only: nothing is ever downloaded. Shipped model
directories live in ``models/`` of the source tree (or ``avsearch/_models`` in an installed
wheel); ``AVSEARCH_MODELS`` points elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from avsearch.errors import ModelError

if TYPE_CHECKING:  # torch is imported by the loaders, not by reading the registry
    from torch import nn

MODELS_ENV = "AVSEARCH_MODELS"


def models_root() -> Path:
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser().resolve()
    packaged = Path(__file__).resolve().parents[1] / "_models"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "models"


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    modality: str
    dim: int
    description: str
    loader: Callable[[Path | None], nn.Module]
    default_weights: Callable[[], Path]


def _aisfx_default() -> Path:
    return models_root() / "backbones" / "aisfx" / "model.safetensors"


def _aisfx_weights(path: Path | None) -> Path:
    weights = path or _aisfx_default()
    if not weights.exists():
        raise ModelError(
            f"aisfx weights not found at {weights}",
            hint="convert them once with `python -m avsearch.encoders.convert` (see models/README)",
        )
    return weights


def _load_aisfx(path: Path | None) -> nn.Module:
    from avsearch.encoders.aisfx import AisfxBackbone, load_aisfx

    return AisfxBackbone(load_aisfx(_aisfx_weights(path)))


def _load_aisfx_cepstra(path: Path | None) -> nn.Module:
    from avsearch.encoders.aisfx import load_aisfx
    from avsearch.encoders.cepstra import AisfxCepstraBackbone

    return AisfxCepstraBackbone(load_aisfx(_aisfx_weights(path)))


def _load_aisfx_words(path: Path | None) -> nn.Module:
    from avsearch.encoders.aisfx import load_aisfx
    from avsearch.encoders.words import AisfxWordsBackbone

    return AisfxWordsBackbone(load_aisfx(_aisfx_weights(path)))


def _effnet_default() -> Path:
    from avsearch.encoders.efficientnet import default_weights_path

    return default_weights_path()


def _load_effnet(path: Path | None) -> nn.Module:
    from avsearch.encoders.efficientnet import EfficientNetLite0Backbone, load_efficientnet_lite0

    return EfficientNetLite0Backbone(load_efficientnet_lite0(path))


BACKBONES: dict[str, BackboneInfo] = {
    "aisfx": BackboneInfo(
        "aisfx",
        "audio",
        512,
        "sound-effects CNN (Ma & Lerch, ISMIR 2022), CC BY 4.0, 44.1 kHz log-mel input",
        _load_aisfx,
        _aisfx_default,
    ),
    "aisfx-cepstra": BackboneInfo(
        "aisfx-cepstra",
        "audio",
        720,
        "aisfx plus an order-keeping cepstral template of the window (16 frames x 13 "
        "cepstra below 4 kHz): tells spoken words apart across voices",
        _load_aisfx_cepstra,
        _aisfx_default,
    ),
    "aisfx-words": BackboneInfo(
        "aisfx-words",
        "audio",
        2560,
        "aisfx plus the EfficientWord-Net spoken-word embedding (ResNet-50, ArcFace, "
        "Apache-2.0; 2048-d of the 1.5 s around the window's energy centre): spoken words "
        "across voices; needs `pip install --no-deps EfficientWord-Net==1.0.5`",
        _load_aisfx_words,
        _aisfx_default,
    ),
    "efficientnet-lite0": BackboneInfo(
        "efficientnet-lite0",
        "visual",
        1280,
        "EfficientNet-Lite0 ImageNet (Apache-2.0), 224x224 RGB input",
        _load_effnet,
        _effnet_default,
    ),
}


def _soundnet_default() -> Path:
    return models_root() / "backbones" / "soundnet" / "model.safetensors"


def _load_soundnet(path: Path | None) -> nn.Module:
    from avsearch.encoders.soundnet import SoundNetBackbone, load_soundnet

    return SoundNetBackbone(load_soundnet(path or _soundnet_default()))


BACKBONES["soundnet"] = BackboneInfo(
    "soundnet",
    "audio",
    2425,
    "SoundNet-8 (Aytar, Vondrick & Torralba, NeurIPS 2016), MIT; 22.05 kHz waveform (each "
    "window resampled from 44.1 kHz and mirrored out to 20 s): conv7 max-pooled (1024), "
    "ImageNet object (1000) and Places scene (401) distributions",
    _load_soundnet,
    _soundnet_default,
)


def load_backbone(name: str, weights: Path | None = None) -> nn.Module:
    """A backbone in eval mode, frozen. Any failure to read its weights is a ModelError."""
    info = BACKBONES.get(name)
    if info is None:
        raise ModelError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")
    try:
        module = info.loader(weights)
    except ModelError:
        raise
    except Exception as exc:  # a damaged or foreign weights file: name it, no traceback
        source = weights or "its installed weights"
        raise ModelError(
            f"cannot load the {name} backbone from {source}: {type(exc).__name__}: {exc}"
        ) from exc
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
