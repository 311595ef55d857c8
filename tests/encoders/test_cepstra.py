"""Tests for avsearch.encoders.cepstra: the order-keeping cepstral template and the
aisfx-cepstra backbone (registry entry, fine-tuning cut)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.fft import dct

from avsearch.encoders import aisfx as ax
from avsearch.encoders.cepstra import AisfxCepstraBackbone, CepstraConfig, CepstralTemplate
from avsearch.encoders.cut import cut_backbone
from avsearch.encoders.registry import BACKBONES, load_backbone
from avsearch.train.config import AUDIO_BACKBONES

REPO = Path(__file__).resolve().parents[2]
AISFX_WEIGHTS = REPO / "models" / "backbones" / "aisfx" / "model.safetensors"
needs_aisfx = pytest.mark.skipif(
    not AISFX_WEIGHTS.is_file(),
    reason=f"{AISFX_WEIGHTS} missing: python -m avsearch.encoders.convert (see models/README)",
)


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
    audio = tuple(n for n, info in BACKBONES.items() if info.modality == "audio")
    assert audio == AUDIO_BACKBONES
    assert BACKBONES["aisfx-cepstra"].dim == AisfxCepstraBackbone.dim == 512 + 208


@pytest.fixture(scope="module")
def backbones() -> tuple[ax.AisfxBackbone, AisfxCepstraBackbone]:
    plain, both = load_backbone("aisfx"), load_backbone("aisfx-cepstra")
    assert isinstance(plain, ax.AisfxBackbone) and isinstance(both, AisfxCepstraBackbone)
    return plain, both


def waves(n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(2)
    t = np.arange(ax.WINDOW_SAMPLES) / ax.SAMPLE_RATE
    tone = np.sin(2 * np.pi * 440 * t) * (t < 0.8)
    return (tone + 0.05 * rng.standard_normal((n, t.size))).astype(np.float32)


@needs_aisfx
def test_backbone_is_aisfx_then_the_template(
    backbones: tuple[ax.AisfxBackbone, AisfxCepstraBackbone],
) -> None:
    plain, both = backbones
    x = waves()
    out = both.embed(x)
    assert out.shape == (3, 720)
    np.testing.assert_array_equal(out[:, :512], plain.embed(x))
    with torch.inference_mode():
        logmel = both.frontend(torch.from_numpy(x))
    np.testing.assert_allclose(out[:, 512:], CepstralTemplate()(logmel).numpy(), atol=1e-6)
    assert set(both.state_dict()) == set(plain.state_dict())  # same weights file


@needs_aisfx
@pytest.mark.parametrize("n_blocks", [1, 2, 4])
def test_cut_packs_the_template_after_the_activations(
    backbones: tuple[ax.AisfxBackbone, AisfxCepstraBackbone], n_blocks: int
) -> None:
    _, both = backbones
    x = waves()
    cut = cut_backbone(both, "audio", n_blocks)
    act = cut.activations(x)
    assert act.ndim == 2 and act.shape[1] > 208
    np.testing.assert_allclose(cut.features(act), both.embed(x), rtol=1e-5, atol=1e-5)
    # a training step moves the aisfx part only; the template passes through untouched
    out = cut.tail(torch.from_numpy(act))
    out[:, :512].sum().backward()
    np.testing.assert_array_equal(out[:, 512:].detach().numpy(), act[:, -208:])
    assert all(p.grad is not None for p in cut.tail.parameters())
    for p in both.parameters():
        p.requires_grad_(False)
        p.grad = None
