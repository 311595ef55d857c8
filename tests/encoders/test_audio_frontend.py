"""Tests for the aisfx log-mel front-end (avsearch.encoders.audio_frontend)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avsearch.encoders import audio_frontend as fe

HAVE_LIBROSA = importlib.util.find_spec("librosa") is not None
needs_librosa = pytest.mark.skipif(
    not HAVE_LIBROSA, reason="librosa is not installed (pip install 'avsearch[dev]')"
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FSDD_WAV = SHARED / "data" / "fsdd" / "0_george_0.wav"
needs_fsdd = pytest.mark.skipif(
    not FSDD_WAV.is_file(), reason=f"shared data file {FSDD_WAV} is absent"
)

# Feature values lie in ~[0, 1]; float32 STFT round-off dominates only in near-empty bins.
RTOL, ATOL = 1e-4, 1e-5


def chirp(n: int, seed: int = 0) -> np.ndarray:
    """Seeded log chirp 50 Hz -> 18 kHz with a little noise and a random gain, float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fe.SAMPLE_RATE
    dur = n / fe.SAMPLE_RATE
    f0, f1 = 50.0, 18_000.0
    k = np.log(f1 / f0) / dur
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    y = np.sin(phase) * np.hanning(n) + 0.01 * rng.standard_normal(n)
    return (rng.uniform(0.05, 0.9) * y).astype(np.float32)


def librosa_feature(y: np.ndarray) -> np.ndarray:
    """aisfx's librosa computation (peak norm, melspectrogram, log, /9.4578) as [T, 96]."""
    import librosa

    peak = np.max(np.abs(y))
    y = y / (peak if peak > 0 else 1.0)
    spec = librosa.feature.melspectrogram(
        y=y,
        sr=fe.SAMPLE_RATE,
        n_mels=96,
        norm=1.0,
        fmin=0.0,
        fmax=22_050.0,
        htk=True,
        power=2.0,
        hop_length=1024,
        win_length=2048,
        n_fft=2048,
        center=True,
        pad_mode="constant",
    )
    return (np.log10(spec * 10_000.0 + 1.0) / 9.457798957824707).T


def numpy_feature(y: np.ndarray) -> np.ndarray:
    """Plain float64 numpy reference of the same feature (no librosa): [1 + N // HOP, 96]."""
    y = np.asarray(y, np.float64)
    peak = np.max(np.abs(y))
    y = y / (peak if peak > 0 else 1.0)
    padded = np.pad(y, fe.N_FFT // 2)
    n_frames = 1 + len(y) // fe.HOP
    idx = np.arange(fe.N_FFT)[None, :] + fe.HOP * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(fe.N_FFT) / fe.N_FFT)  # periodic Hann
    power = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2
    mel = power @ fe.mel_filterbank().astype(np.float64).T
    return np.log10(mel * 1e4 + 1.0) / fe.SPEC_MAX


def frontend_one(y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return fe.LogMelFrontend()(torch.from_numpy(y)[None])[0].numpy()


# ------------------------------------------------------------------------------ constants
def test_constants() -> None:
    assert (fe.SAMPLE_RATE, fe.N_FFT, fe.HOP, fe.N_MELS) == (44_100, 2048, 1024, 96)
    assert fe.BLOCK_FRAMES == 100
    assert fe.WINDOW_SAMPLES == 102_400
    assert fe.LogMelFrontend.num_frames(fe.WINDOW_SAMPLES) == fe.BLOCK_FRAMES
    assert abs(fe.SPEC_MAX - 9.4578) < 1e-4


# ---------------------------------------------------------------------------- filterbank
def test_filterbank_unit_l1_rows() -> None:
    fb = fe.mel_filterbank()
    assert fb.shape == (96, 1025) and fb.dtype == np.float32
    assert (fb >= 0).all()
    np.testing.assert_allclose(fb.sum(axis=1), 1.0, rtol=1e-5)
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all()  # centres increase with the band index


def test_htk_mel_roundtrip() -> None:
    hz = np.array([0.0, 700.0, 1000.0, 22_050.0])
    np.testing.assert_allclose(fe.mel_to_hz_htk(fe.hz_to_mel_htk(hz)), hz, atol=1e-9)
    assert fe.hz_to_mel_htk(700.0) == pytest.approx(2595.0 * np.log10(2.0))


@needs_librosa
def test_filterbank_equals_librosa() -> None:
    import librosa

    ref = librosa.filters.mel(
        sr=44_100, n_fft=2048, n_mels=96, fmin=0, fmax=22_050, htk=True, norm=1.0
    )
    np.testing.assert_allclose(fe.mel_filterbank(), ref, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------- feature vs references
def test_file_logmel_equals_numpy_reference() -> None:
    y = chirp(30_000, seed=1)
    ours = fe.file_logmel(y)
    assert ours.shape == (1 + 30_000 // fe.HOP, 96)
    np.testing.assert_allclose(ours, numpy_feature(y), rtol=RTOL, atol=ATOL)


@needs_librosa
def test_file_logmel_equals_librosa_on_chirp() -> None:
    y = chirp(fe.SAMPLE_RATE, seed=2)  # 1 s
    ref = librosa_feature(y)
    ours = fe.file_logmel(y)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)


@needs_librosa
def test_frontend_window_equals_librosa_on_chirp() -> None:
    y = chirp(fe.WINDOW_SAMPLES, seed=3)
    ref = librosa_feature(y)
    assert ref.shape == (fe.BLOCK_FRAMES + 1, 96)  # librosa's extra frame centred at N
    ours = frontend_one(y)
    assert ours.shape == (fe.BLOCK_FRAMES, 96)
    np.testing.assert_allclose(ours, ref[: fe.BLOCK_FRAMES], rtol=RTOL, atol=ATOL)


@needs_librosa
@needs_fsdd
def test_frontend_equals_librosa_on_real_speech() -> None:
    import librosa

    raw, sr = sf.read(str(FSDD_WAV), dtype="float32")
    assert sr == 8000 and raw.ndim == 1
    y = librosa.resample(raw, orig_sr=sr, target_sr=fe.SAMPLE_RATE)  # what librosa.load does
    assert y.dtype == np.float32 and len(y) == 13_142
    ref = librosa_feature(y)
    np.testing.assert_allclose(fe.file_logmel(y), ref, rtol=RTOL, atol=ATOL)
    # The same clip zero-padded into one window: per-window peak == whole-file peak here and
    # librosa pads with zeros too, so the clip's frames are the same.
    window = np.zeros(fe.WINDOW_SAMPLES, np.float32)
    window[: len(y)] = y
    ours = frontend_one(window)
    np.testing.assert_allclose(ours[: ref.shape[0]], ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        ours, librosa_feature(window)[: fe.BLOCK_FRAMES], rtol=RTOL, atol=ATOL
    )


# --------------------------------------------------------------------------- behaviour
def test_batch_rows_are_independent_and_peak_normalised() -> None:
    a = chirp(fe.WINDOW_SAMPLES, seed=4)
    b = chirp(fe.WINDOW_SAMPLES, seed=5)
    frontend = fe.LogMelFrontend()
    with torch.no_grad():
        batch = frontend(torch.from_numpy(np.stack([a, 0.01 * b])))
        single_b = frontend(torch.from_numpy(b)[None])
    assert batch.shape == (2, fe.BLOCK_FRAMES, fe.N_MELS)
    np.testing.assert_allclose(batch[0].numpy(), frontend_one(a), rtol=1e-5, atol=1e-6)
    # Gain does not matter: each row is divided by its own peak.
    np.testing.assert_allclose(batch[1].numpy(), single_b[0].numpy(), rtol=1e-4, atol=1e-5)


def test_num_frames_for_other_lengths() -> None:
    frontend = fe.LogMelFrontend()
    for n in (1, 1024, 1025, 50_000, 2 * fe.WINDOW_SAMPLES):
        with torch.no_grad():
            out = frontend(torch.zeros(1, n))
        assert out.shape == (1, max(1, -(-n // fe.HOP)), 96)


def test_silence_is_finite_zero_and_differentiable() -> None:
    frontend = fe.LogMelFrontend()
    x = torch.zeros(2, fe.WINDOW_SAMPLES, requires_grad=True)
    out = frontend(x)
    assert torch.isfinite(out).all()
    assert float(out.detach().abs().max()) == 0.0
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert np.all(fe.file_logmel(np.zeros(5000, np.float32)) == 0.0)


def test_gradient_is_finite_on_signal() -> None:
    torch.manual_seed(0)
    x = (0.1 * torch.randn(2, fe.WINDOW_SAMPLES)).requires_grad_(True)
    fe.LogMelFrontend()(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert float(x.grad.abs().sum()) > 0


def test_frontend_has_no_state_dict_entries() -> None:
    assert dict(fe.LogMelFrontend().state_dict()) == {}


def test_bad_shapes_rejected() -> None:
    frontend = fe.LogMelFrontend()
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        frontend(torch.zeros(fe.WINDOW_SAMPLES))
    with pytest.raises(ValueError):
        frontend(torch.zeros(2, 0))
    with pytest.raises(ValueError):
        fe.file_logmel(np.zeros((2, 100), np.float32))
