"""Every registered tower gives finite features for hostile but legitimate input: digital
silence, DC offset, full-scale clipping, a one-sample click, -120 dBFS noise, tiny and huge
amplitudes; a 1x1, an all-black and an all-white image. (A composite's features are its parts'
side by side: the atomic towers are the ones to check.)"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from avsearch.encoders.audio_frontend import WINDOW_SAMPLES
from avsearch.encoders.registry import BACKBONES, load_backbone
from avsearch.encoders.tower import Tower
from avsearch.errors import ModelError
from avsearch.media.image import square_rgb

N = WINDOW_SAMPLES
_rng = np.random.default_rng(0)
SIGNALS = {
    "silence": np.zeros(N, np.float32),
    "dc": np.full(N, 0.5, np.float32),
    "clipped": np.clip(_rng.standard_normal(N) * 10, -1, 1).astype(np.float32),
    "click": np.r_[np.float32(1.0), np.zeros(N - 1, np.float32)],
    "two_clicks": np.r_[np.float32(1.0), np.zeros(N - 2, np.float32), np.float32(1.0)],
    "noise_-120dBFS": (_rng.standard_normal(N) * 1e-6).astype(np.float32),
    "noise_-200dBFS": (_rng.standard_normal(N) * 1e-10).astype(np.float32),
    "denormal": np.full(N, 1e-40, np.float32),
    "huge": np.full(N, 1e30, np.float32),
}
IMAGES = {
    "1x1": Image.new("RGB", (1, 1), (10, 20, 30)),
    "1x1_grey": Image.new("L", (1, 1)),
    "black": Image.new("RGB", (300, 200)),
    "white": Image.new("RGB", (300, 200), (255, 255, 255)),
}


def _load(name: str) -> Tower:
    try:
        return load_backbone(name)
    except ModelError as exc:  # e.g. the word model's package is not installed here
        pytest.skip(f"{name} cannot be loaded here: {exc.message}")


def _atomic(modality: str) -> list[str]:
    return [n for n, b in BACKBONES.items() if b.modality == modality and not b.parts]


@pytest.mark.parametrize("name", _atomic("audio"))
def test_audio_backbones_are_finite_on_hostile_signals(name: str) -> None:
    net = _load(name)
    feats = net.features(np.stack(list(SIGNALS.values())))
    assert feats.shape == (len(SIGNALS), net.dim)
    bad = [s for s, row in zip(SIGNALS, feats, strict=True) if not np.all(np.isfinite(row))]
    assert not bad, f"{name} gave non-finite features for {bad}"


@pytest.mark.parametrize("name", _atomic("visual"))
def test_visual_backbones_are_finite_on_hostile_images(name: str) -> None:
    net = _load(name)
    size = net.input.size  # type: ignore[union-attr]
    feats = net.features(np.stack([square_rgb(img, size) for img in IMAGES.values()]))
    bad = [s for s, row in zip(IMAGES, feats, strict=True) if not np.all(np.isfinite(row))]
    assert not bad, f"{name} gave non-finite features for {bad}"


def test_word_model_gives_zeros_for_a_flat_filterbank() -> None:
    """Silence (or a crop between two clicks) has a flat filterbank: the network's min-max
    normalisation would divide 0 by 0; the word part is the zero vector instead."""
    from avsearch.encoders.words import WordModel

    try:
        words = WordModel()
    except ModelError as exc:
        pytest.skip(exc.message)
    flat = np.full((2, 149, 64), np.log(np.finfo(float).eps))
    flat[1] = -3.0
    out = words.embed_logfbank(flat)
    assert out.shape == (2, 2048) and not out.any()
    voiced = words.embed_windows((_rng.standard_normal((1, N)) * 0.1).astype(np.float32), 44_100)
    assert np.isclose(np.linalg.norm(voiced), 1.0, atol=1e-3)
