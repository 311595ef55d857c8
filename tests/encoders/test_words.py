"""Tests for avsearch.encoders.words: the word model's front-end (crop, log filterbank), its
loader (pinned file, clear errors) and the ``words`` tower beside aisfx."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from avsearch.encoders import words as w
from avsearch.encoders.registry import BACKBONES, load_backbone
from avsearch.errors import ModelError
from avsearch.train.config import AUDIO_BACKBONES, TrainConfig

needs_words = pytest.mark.skipif(
    not w.words_weights_path().is_file(),
    reason="the word model is not installed: pip install --no-deps EfficientWord-Net==1.0.5",
)


def test_centre_crop_centres_the_energy() -> None:
    x = np.zeros((3, 1_000))
    x[0, 700:720] = 1.0  # late burst: crop [460, 960)
    x[1, 0:10] = 1.0  # at the start: the crop stays inside the row
    crops = w.centre_crop(x, 500)
    assert crops.shape == (3, 500)
    assert np.flatnonzero(crops[0])[0] == 700 - 460
    assert np.flatnonzero(crops[1]).tolist() == list(range(10))
    np.testing.assert_array_equal(crops[2], 0.0)  # silence: the middle
    short = w.centre_crop(np.ones((1, 100)), 500)
    assert short.shape == (1, 500) and np.flatnonzero(short[0])[[0, -1]].tolist() == [200, 299]


def _python_speech_features_logfbank(sig: np.ndarray) -> np.ndarray:
    """``python_speech_features.logfbank`` with the word model's settings, written plainly
    (frame by frame, filter by filter) as in that package."""
    frames = []
    n = 1 + int(np.ceil((len(sig) - 400) / 160))
    padded = np.concatenate([sig, np.zeros((n - 1) * 160 + 400 - len(sig))])
    for k in range(n):
        frames.append(padded[k * 160 : k * 160 + 400])
    pspec = 1.0 / 512 * np.square(np.abs(np.fft.rfft(np.array(frames), 512)))
    mel = np.linspace(0, 2595 * np.log10(1 + 8000 / 700.0), 66)
    bins = np.floor(513 * (700 * (10 ** (mel / 2595.0) - 1)) / 16000)
    fb = np.zeros((64, 257))
    for j in range(64):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    feat = pspec @ fb.T
    return np.log(np.where(feat == 0, np.finfo(float).eps, feat))


def test_log_fbank_matches_the_model_front_end() -> None:
    rng = np.random.default_rng(0)
    clips = np.zeros((2, 24_000))
    clips[0, 5_000:15_000] = rng.standard_normal(10_000) * 0.1
    clips[1] = np.sin(2 * np.pi * 300 * np.arange(24_000) / 16_000)
    got = w.log_fbank(clips)
    assert got.shape == (2, 149, 64)
    for clip, feats in zip(clips, got, strict=True):
        np.testing.assert_allclose(feats, _python_speech_features_logfbank(clip), atol=1e-9)
    with pytest.raises(ValueError, match="24000"):
        w.log_fbank(np.zeros((1, 100)))


@pytest.mark.skipif(importlib.util.find_spec("eff_word_net") is None, reason="no eff_word_net")
def test_log_fbank_matches_the_packaged_reference() -> None:
    pytest.importorskip("onnxruntime")
    from eff_word_net.audio_utils import logfbank  # the word model's own front-end

    rng = np.random.default_rng(3)
    clip = np.zeros(24_000)
    clip[2_000:20_000] = rng.standard_normal(18_000) * 0.05
    want = logfbank(clip, samplerate=16000, winlen=0.025, winstep=0.01, nfilt=64, nfft=512,
                    preemph=0.0)  # fmt: skip
    np.testing.assert_allclose(w.log_fbank(clip[None])[0], want, atol=1e-9)


def test_missing_or_foreign_weights_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(w.WEIGHTS_ENV, str(tmp_path / "absent.onnx"))
    with pytest.raises(ModelError, match="not installed") as exc:
        w.WordModel()
    assert "EfficientWord-Net" in (exc.value.hint or "")
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not the word model")
    monkeypatch.setenv(w.WEIGHTS_ENV, str(other))
    with pytest.raises(ModelError, match="sha256"):
        w.WordModel()


def test_registry_and_training_agree() -> None:
    assert {"words", "aisfx-words"} <= set(AUDIO_BACKBONES)
    assert BACKBONES["words"].dim == w.WordsTower.dim == w.WORDS_DIM == 2048
    assert BACKBONES["aisfx-words"].dim == 512 + 2048
    assert BACKBONES["words"].pinned_sha256 == w.ONNX_SHA256
    assert TrainConfig(audio_backbone="aisfx-words").audio_backbone == "aisfx-words"


@needs_words
def test_word_model_is_deterministic_unit_and_speaker_robust_on_a_tone_pair() -> None:
    model = w.WordModel()
    rng = np.random.default_rng(0)
    t = np.arange(40_000) / 44_100
    chirp = np.sin(2 * np.pi * (300 + 900 * t) * t) * np.hanning(len(t))
    waves = np.zeros((3, 102_400), np.float32)
    waves[0, 20_000:60_000] = chirp
    waves[1, 50_000:90_000] = chirp * 0.3  # the same sound later and quieter
    waves[2] = rng.standard_normal(102_400) * 0.1
    a = model.embed_windows(waves, 44_100)
    assert a.shape == (3, 2048) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, model.embed_windows(waves, 44_100))
    # where the sound sits and how loud it is barely matter; what it is does
    assert a[0] @ a[1] > 0.9 > a[0] @ a[2]


@needs_words
def test_words_tower_embeds_each_window_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    tower = load_backbone("words")
    assert isinstance(tower, w.WordsTower) and tower.input == BACKBONES["words"].input
    rng = np.random.default_rng(1)
    waves = (rng.standard_normal((3, 102_400)) * 0.1).astype(np.float32)
    whole = tower.features(waves)
    assert whole.shape == (3, 2048) and whole.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    monkeypatch.setattr(w, "WORDS_CHUNK", 2)
    np.testing.assert_array_equal(tower.features(waves), whole)
    assert tower.features(np.zeros((0, 102_400), np.float32)).shape == (0, 2048)
