"""Tests for avsearch.encoders.cepstra: the order-keeping cepstral template and the ``cepstra``
tower (registry entry; beside aisfx it makes ``aisfx-cepstra``, tested in test_registry)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.fft import dct

from avsearch.encoders.audio_frontend import SAMPLE_RATE, WINDOW_SAMPLES, LogMelFrontend
from avsearch.encoders.cepstra import CepstraConfig, CepstralTemplate, CepstraTower
from avsearch.encoders.registry import BACKBONES, load_backbone, names
from avsearch.train.config import AUDIO_BACKBONES


def reference(logmel: np.ndarray, cfg: CepstraConfig) -> np.ndarray:
    """The template written plainly, one window at a time."""
    x = logmel[:, : cfg.bands].astype(np.float64)
    energy = x.sum(axis=1)
    if energy.max() <= 0:
        return np.zeros(cfg.dim)
    voiced = np.flatnonzero(energy > cfg.threshold * energy.max())
    seg = x[voiced[0] : voiced[-1] + 1]
    cep = dct(seg, axis=1, norm="ortho")[:, 1 : cfg.n_cep + 1]
    pos = np.linspace(0, len(cep) - 1, cfg.frames)
    cols = [np.interp(pos, np.arange(len(cep)), cep[:, k]) for k in range(cfg.n_cep)]
    return np.stack(cols, 1).ravel()


def burst(t: int = 100, start: int = 30, length: int = 20, seed: int = 0) -> np.ndarray:
    """A log-mel window, silent but for a `length`-frame sound with a moving spectrum."""
    rng = np.random.default_rng(seed)
    out = np.zeros((t, 96), np.float32)
    shape = rng.uniform(0.2, 1.0, 96).astype(np.float32)
    for i in range(length):  # the spectrum slides up by 2 bands a frame
        out[start + i] = np.roll(shape, 2 * i) * (0.5 + 0.5 * np.sin(np.pi * i / length))
    return out


def test_matches_the_plain_reference() -> None:
    rng = np.random.default_rng(1)
    batch = np.stack([rng.uniform(0, 1, (100, 96)) for _ in range(3)] + [burst()]).astype(
        np.float32
    )
    cfg = CepstraConfig()
    got = CepstralTemplate(cfg)(torch.from_numpy(batch)).numpy()
    assert got.shape == (4, cfg.dim) == (4, 208)
    want = np.stack([reference(b, cfg) for b in batch])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_silence_gives_zeros_and_bad_shapes_are_refused() -> None:
    tpl = CepstralTemplate()
    assert torch.count_nonzero(tpl(torch.zeros(2, 100, 96))) == 0
    with pytest.raises(ValueError, match="log-mel"):
        tpl(torch.zeros(100, 96))
    with pytest.raises(ValueError, match="log-mel"):
        tpl(torch.zeros(1, 100, 40))


def test_position_in_the_window_does_not_matter_but_order_does() -> None:
    tpl = CepstralTemplate()
    early = tpl(torch.from_numpy(burst(start=5)[None]))
    late = tpl(torch.from_numpy(burst(start=70)[None]))
    torch.testing.assert_close(early, late)
    reversed_ = tpl(torch.from_numpy(burst(start=5)[::-1].copy()[None]))
    assert (early - reversed_).abs().max() > 0.1


def test_registry_and_training_config_agree() -> None:
    assert set(names("audio")) == set(AUDIO_BACKBONES)
    assert {"cepstra", "aisfx-cepstra"} <= set(AUDIO_BACKBONES)
    assert BACKBONES["cepstra"].dim == CepstraTower().dim == CepstraConfig().dim == 208
    assert BACKBONES["aisfx-cepstra"].dim == 512 + 208
    assert not BACKBONES["cepstra"].has_weights  # nothing to install


def waves(n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(2)
    t = np.arange(WINDOW_SAMPLES) / SAMPLE_RATE
    tone = np.sin(2 * np.pi * 440 * t) * (t < 0.8)
    return (tone + 0.05 * rng.standard_normal((n, t.size))).astype(np.float32)


def test_tower_is_the_template_of_the_aisfx_log_mel_frames() -> None:
    tower = load_backbone("cepstra")
    assert isinstance(tower, CepstraTower) and not tower.training
    assert tower.input == BACKBONES["cepstra"].input
    x = waves()
    out = tower.features(x)
    assert out.shape == (3, 208) and out.dtype == np.float32
    with torch.inference_mode():
        logmel = LogMelFrontend()(torch.from_numpy(x))
    np.testing.assert_allclose(out, CepstralTemplate()(logmel).numpy(), atol=1e-6)
    # a short clip is its zero-padded window; silence gives zeros
    short = x[:, :50_000]
    padded = np.pad(short, ((0, 0), (0, WINDOW_SAMPLES - 50_000)))
    np.testing.assert_allclose(tower.features(short), tower.features(padded), atol=1e-6)
    assert not tower.features(np.zeros((2, WINDOW_SAMPLES), np.float32)).any()
    assert tower.features(np.zeros((0, WINDOW_SAMPLES), np.float32)).shape == (0, 208)
