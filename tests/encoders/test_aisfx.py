"""Tests for the aisfx audio backbone and its checkpoint conversion."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from avsearch.encoders import aisfx as ax
from avsearch.encoders import audio_frontend as fe
from avsearch.encoders import convert
from avsearch.encoders.tower import AudioInput, Tower
from avsearch.errors import ModelError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "backbones" / "aisfx" / "model.safetensors"
SHARED = REPO.parent / "shared"
FSDD_WAV = SHARED / "data" / "fsdd" / "0_george_0.wav"

_AISFX_SPEC = importlib.util.find_spec("aisfx")
AISFX_ROOT = (
    Path(next(iter(_AISFX_SPEC.submodule_search_locations)))
    if _AISFX_SPEC is not None and _AISFX_SPEC.submodule_search_locations
    else None
)
AISFX_CKPT = AISFX_ROOT / "models" / "checkpoint.pth" if AISFX_ROOT else None
HAVE_AISFX = AISFX_CKPT is not None and AISFX_CKPT.is_file()

needs_shipped = pytest.mark.skipif(
    not SHIPPED.is_file(),
    reason=f"{SHIPPED} missing: run python -m avsearch.encoders.convert SRC models/backbones/aisfx",
)
needs_aisfx = pytest.mark.skipif(
    not HAVE_AISFX, reason="aisfx package not installed (pip install --no-deps aisfx==0.1.2)"
)
needs_fsdd = pytest.mark.skipif(not FSDD_WAV.is_file(), reason=f"{FSDD_WAV} is absent")


def random_net(seed: int = 0) -> ax.AisfxNet:
    """Seeded random AisfxNet with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    net = ax.AisfxNet()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def backbone() -> ax.AisfxBackbone:
    return ax.AisfxBackbone(random_net())


def read_wave(path: Path) -> np.ndarray:
    librosa = pytest.importorskip("librosa", reason="librosa needed to resample the test file")
    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return librosa.resample(y.mean(axis=1), orig_sr=sr, target_sr=fe.SAMPLE_RATE)


# ----------------------------------------------------------------------------- network
def test_state_dict_keys_are_clean() -> None:
    keys = set(ax.AisfxNet().state_dict())
    assert len(keys) == 48  # 4 blocks x (2 convs + 2 BN x 5 entries)
    assert "conv_block1.conv1.weight" in keys
    assert "conv_block4.bn2.running_var" in keys
    assert not any(k.startswith("embedding_net.") for k in keys)
    assert not any(k.endswith("conv1.bias") or k.endswith("conv2.bias") for k in keys)


def test_net_shape_and_non_negative() -> None:
    net = random_net(1)
    gen = torch.Generator().manual_seed(1)
    spec = torch.rand(3, fe.BLOCK_FRAMES, fe.N_MELS, generator=gen)
    with torch.no_grad():
        fmap = net.feature_map(spec)
        out = net(spec)
    assert fmap.shape == (3, 512, 12, 12)
    assert out.shape == (3, 512) and out.dtype == torch.float32
    assert (out >= 0).all() and torch.isfinite(out).all()
    torch.testing.assert_close(out, fmap.mean(dim=3).amax(dim=2))


def test_net_rejects_bad_input() -> None:
    net = ax.AisfxNet().eval()
    with pytest.raises(ValueError, match="96"):
        net(torch.zeros(1, 100, 64))
    with pytest.raises(ValueError, match="frames"):
        net(torch.zeros(1, 4, 96))


def test_load_aisfx_roundtrip_and_strict(tmp_path: Path) -> None:
    net = random_net(2)
    path = tmp_path / "model.safetensors"
    save_file(net.state_dict(), str(path))
    loaded = ax.load_aisfx(path)
    assert not loaded.training
    spec = torch.rand(2, fe.BLOCK_FRAMES, fe.N_MELS, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(spec), net(spec))

    state = dict(net.state_dict())
    state.pop("conv_block4.conv2.weight")
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    with pytest.raises(ModelError, match="not aisfx weights"):
        ax.load_aisfx(bad)
    with pytest.raises(ModelError, match="not found"):
        ax.load_aisfx(tmp_path / "absent.safetensors")


# ---------------------------------------------------------------------------- backbone
def test_backbone_attributes(backbone: ax.AisfxBackbone) -> None:
    assert backbone.name == "aisfx" and backbone.modality == "audio"
    assert backbone.dim == 512 and backbone.input == AudioInput(44_100, fe.WINDOW_SAMPLES)
    assert fe.WINDOW_SAMPLES == 102_400
    assert isinstance(backbone, torch.nn.Module) and isinstance(backbone, Tower)
    assert isinstance(backbone.frontend, fe.LogMelFrontend)
    assert all(k.startswith("net.") for k in backbone.state_dict())


def test_features_match_forward_and_pad_short_input(backbone: ax.AisfxBackbone) -> None:
    rng = np.random.default_rng(3)
    short = (0.3 * rng.standard_normal((2, 40_000))).astype(np.float32)
    padded = np.zeros((2, fe.WINDOW_SAMPLES), np.float32)
    padded[:, :40_000] = short
    emb = backbone.features(short)
    assert emb.shape == (2, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, backbone.features(padded), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(
            emb, backbone(torch.from_numpy(short)).numpy(), rtol=1e-5, atol=1e-6
        )
    assert backbone.features(short[0]).shape == (1, 512)
    assert backbone.features(np.zeros((0, 100), np.float32)).shape == (0, 512)


def test_features_take_longer_windows_as_forward_does(backbone: ax.AisfxBackbone) -> None:
    rng = np.random.default_rng(6)
    longer = (0.2 * rng.standard_normal((2, fe.WINDOW_SAMPLES + 30_000))).astype(np.float32)
    with torch.no_grad():
        want = backbone(torch.from_numpy(longer)).numpy()
    np.testing.assert_allclose(backbone.features(longer), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        backbone.features(np.zeros((1, 2, 3), np.float32))


def test_features_chunks(backbone: ax.AisfxBackbone, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    waves = (0.2 * rng.standard_normal((5, 20_000))).astype(np.float32)
    whole = backbone.features(waves)
    monkeypatch.setattr(ax, "EMBED_CHUNK", 2)
    np.testing.assert_allclose(backbone.features(waves), whole, rtol=1e-5, atol=1e-6)


def test_bf16_runs_the_network_in_bfloat16_and_stays_close() -> None:
    """``precision = "bf16"``: the network (not the front-end) in bfloat16, float32 out, about
    1% from the float32 features; set back to fp32, the float32 features again."""
    b = ax.AisfxBackbone(random_net(2))
    waves = (0.2 * np.random.default_rng(8).standard_normal((3, fe.WINDOW_SAMPLES))).astype(
        np.float32
    )
    fp32 = b.features(waves)
    b.precision = "bf16"
    bf16 = b.features(waves)
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)
    cos = (bf16 * fp32).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cos.min() > 0.999
    b.precision = "fp32"
    np.testing.assert_array_equal(b.features(waves), fp32)


def test_silence_gives_finite_output(backbone: ax.AisfxBackbone) -> None:
    emb = backbone.features(np.zeros((2, fe.WINDOW_SAMPLES), np.float32))
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(emb[0], emb[1])


def test_forward_is_differentiable() -> None:
    bb = ax.AisfxBackbone(random_net(5))
    torch.manual_seed(5)
    x = (0.1 * torch.randn(2, fe.WINDOW_SAMPLES)).requires_grad_(True)
    bb(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    weight_grad = bb.net.conv_block1.conv1.weight.grad
    assert weight_grad is not None and torch.isfinite(weight_grad).all()


# ------------------------------------------------------------------- real weights (aisfx)
def _original_embedding_net() -> torch.nn.Module:
    """aisfx's own EmbeddingNet, loaded from the installed wheel (its __init__ needs tqdm, so
    cnn2d.py is loaded on its own) with the checkpoint read via weights_only=True."""
    assert AISFX_ROOT is not None and AISFX_CKPT is not None
    spec = importlib.util.spec_from_file_location("_aisfx_cnn2d", AISFX_ROOT / "models/cnn2d.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allowed = [(scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.int64))]
    with torch.serialization.safe_globals(allowed):
        state, _info = torch.load(AISFX_CKPT, map_location="cpu", weights_only=True)
    net = module.EmbeddingNet("max", 3, 1, 64)
    prefix = "embedding_net."
    net.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return net.eval()


def _blocks(spec: np.ndarray) -> torch.Tensor:
    """aisfx-style blocks of 100 frames with hop 50, the last one zero-padded."""
    starts = range(0, max(1, spec.shape[0] - fe.BLOCK_FRAMES // 2), fe.BLOCK_FRAMES // 2)
    padded = np.zeros((spec.shape[0] + fe.BLOCK_FRAMES, fe.N_MELS), np.float32)
    padded[: spec.shape[0]] = spec
    return torch.from_numpy(np.stack([padded[s : s + fe.BLOCK_FRAMES] for s in starts]))


@needs_shipped
@needs_aisfx
def test_shipped_weights_match_original_aisfx() -> None:
    ours = ax.load_aisfx(SHIPPED)
    original = _original_embedding_net()
    if FSDD_WAV.is_file():
        wave = read_wave(FSDD_WAV)
    else:  # still a meaningful comparison without ../shared
        rng = np.random.default_rng(6)
        wave = (np.sin(np.arange(150_000) * 0.05) + 0.1 * rng.standard_normal(150_000)).astype(
            np.float32
        )
    blocks = _blocks(fe.file_logmel(wave))
    with torch.no_grad():
        expected = original(blocks)
        got = ours(blocks)
    assert got.shape == (blocks.shape[0], 512)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert float(expected.max()) > 0.1  # a real, non-degenerate embedding


@needs_shipped
@needs_fsdd
def test_shipped_backbone_embeds_real_speech() -> None:
    bb = ax.AisfxBackbone(weights=SHIPPED)
    wave = read_wave(FSDD_WAV)
    emb = bb.features(wave[None])
    assert emb.shape == (1, 512) and np.isfinite(emb).all() and (emb >= 0).all()
    # Reference: aisfx's whole-file feature of the zero-padded window, first 100 frames. (Not
    # the clip's own spectrogram: the padded window has one more frame that sees the clip's
    # tail, centred past the clip's end, which librosa framing of the bare clip drops.)
    window = np.zeros(fe.WINDOW_SAMPLES, np.float32)
    window[: len(wave)] = wave
    spec = torch.from_numpy(fe.file_logmel(window)[None, : fe.BLOCK_FRAMES])
    with torch.no_grad():
        np.testing.assert_allclose(emb, bb.net(spec).numpy(), rtol=1e-4, atol=1e-4)


@needs_aisfx
def test_convert_checkpoint(tmp_path: Path) -> None:
    assert AISFX_CKPT is not None
    out = convert.convert_aisfx_checkpoint(AISFX_CKPT, tmp_path / "aisfx")
    assert out == tmp_path / "aisfx" / "model.safetensors"
    state = load_file(str(out))
    assert set(state) == set(ax.AisfxNet().state_dict())
    assert all(v.dtype == torch.float32 for k, v in state.items() if "num_batches" not in k)
    assert 18e6 < out.stat().st_size < 20e6
    ax.load_aisfx(out)
    license_text = (out.parent / "LICENSE.md").read_text(encoding="utf-8")
    for needle in ("Alison B. Ma", "Alexander Lerch", "ISMIR 2022", "CC BY 4.0", "0.1.2"):
        assert needle in license_text
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((out.parent / "config.yaml").read_text(encoding="utf-8"))
    assert config["name"] == "aisfx" and config["dim"] == 512
    assert config["sample_rate"] == 44_100
    assert config["frontend"]["window_samples"] == fe.WINDOW_SAMPLES
    assert config["source"]["sha256"] == convert.sha256_file(AISFX_CKPT)
    if SHIPPED.is_file():
        shipped = load_file(str(SHIPPED))
        for key, value in state.items():
            assert torch.equal(value, shipped[key]), key
