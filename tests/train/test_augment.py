"""Tests for avsearch.train.augment: seeded waveform and image augmentation."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from avsearch.train.augment import (
    AudioAugmentConfig,
    VisualAugmentConfig,
    augment_audio,
    augment_images,
    bandlimit,
    change_speed,
    colored_noise,
)

SR = 44_100
N = 102_400
AUDIO_SWITCHES = ("speed", "shift", "gain", "noise", "bandlimit")
VISUAL_SWITCHES = ("crop", "rotate", "hflip", "jitter")


def sine(freq: float = 1000.0, amp: float = 0.5, n: int = N, rows: int = 1) -> np.ndarray:
    t = np.arange(n, dtype=np.float64) / SR
    return np.tile((amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), (rows, 1))


def speech_like(rows: int = 3, seed: int = 0) -> np.ndarray:
    """Short noisy bursts near the start of zero-padded windows, like a padded FSDD digit."""
    rng = np.random.default_rng(seed)
    out = np.zeros((rows, N), dtype=np.float32)
    for i in range(rows):
        start = int(rng.integers(0, 5000))
        length = int(rng.integers(15_000, 30_000))
        t = np.arange(length) / SR
        burst = np.sin(2 * np.pi * rng.uniform(150, 400) * t) * np.hanning(length)
        out[i, start : start + length] = 0.6 * burst + 0.05 * rng.standard_normal(length)
    return out


def one_switch(name: str) -> AudioAugmentConfig:
    extra: dict[str, Any] = {"bandlimit_prob": 1.0} if name == "bandlimit" else {}
    return AudioAugmentConfig.off(**{name: True, **extra})


def all_on() -> AudioAugmentConfig:
    return AudioAugmentConfig(bandlimit=True, noise_color="pink")


def peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1.0 / SR)[int(np.argmax(spec))])


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


# ---------------------------------------------------------------------------------------- audio
@pytest.mark.parametrize("cfg", [all_on(), AudioAugmentConfig()], ids=["all", "default"])
def test_audio_deterministic_under_seed(cfg: AudioAugmentConfig) -> None:
    x = speech_like()
    a = augment_audio(x, cfg, np.random.default_rng(7))
    b = augment_audio(x, cfg, np.random.default_rng(7))
    c = augment_audio(x, cfg, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_audio_per_item_randomness_and_input_untouched() -> None:
    x = np.repeat(speech_like(1), 3, axis=0)
    before = x.copy()
    record: list[dict[str, Any]] = []
    y = augment_audio(x, all_on(), np.random.default_rng(0), record)
    assert np.array_equal(x, before)
    assert len(record) == 3
    assert not np.array_equal(y[0], y[1]) and not np.array_equal(y[1], y[2])
    assert len({r["gain_db"] for r in record}) == 3


@pytest.mark.parametrize("name", [*AUDIO_SWITCHES, "all"])
def test_audio_shapes_dtype_length_each_and_all(name: str) -> None:
    cfg = all_on() if name == "all" else one_switch(name)
    for x in (speech_like(2), sine(rows=2), np.zeros((2, N), np.float32), sine(n=5000, rows=2)):
        y = augment_audio(x, cfg, np.random.default_rng(1))
        assert y.shape == x.shape
        assert y.dtype == np.float32
        assert np.isfinite(y).all()
        if cfg.clip:
            assert np.abs(y).max() <= 1.0
    x = speech_like(2)
    assert not np.array_equal(augment_audio(x, cfg, np.random.default_rng(1)), x)


def test_audio_empty_and_bad_input() -> None:
    cfg = all_on()
    assert augment_audio(np.zeros((0, N), np.float32), cfg, np.random.default_rng(0)).shape == (
        0,
        N,
    )
    assert augment_audio(np.zeros((2, 0), np.float32), cfg, np.random.default_rng(0)).shape == (
        2,
        0,
    )
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        augment_audio(np.zeros(N, np.float32), cfg, np.random.default_rng(0))


def test_audio_non_finite_input_and_silence() -> None:
    x = sine(rows=2)
    x[0, 100] = np.nan
    x[0, 200] = np.inf
    x[1] = 0.0
    record: list[dict[str, Any]] = []
    y = augment_audio(x, all_on(), np.random.default_rng(0), record)
    assert np.isfinite(y).all()
    assert not y[1].any()  # silence stays silence: no noise without a signal to scale it
    assert record[1]["snr_db"] is None


def test_switches_off_is_identity() -> None:
    x = speech_like(3) * 1.5  # even samples beyond ±1 pass untouched when clipping is off
    cfg = AudioAugmentConfig.off()
    assert not cfg.enabled
    assert cfg.describe() == "off"
    y = augment_audio(x, cfg, np.random.default_rng(0))
    assert np.array_equal(y, x) and y is not x
    # Band-limit switched on but never drawn, clipping on but nothing above 1: identity too.
    cfg = AudioAugmentConfig.off(bandlimit=True, bandlimit_prob=0.0, clip=True)
    assert np.array_equal(augment_audio(x / 2, cfg, np.random.default_rng(0)), x / 2)


def test_switching_one_transform_off_keeps_the_other_draws() -> None:
    x = speech_like(4)
    with_speed: list[dict[str, Any]] = []
    without: list[dict[str, Any]] = []
    augment_audio(x, all_on(), np.random.default_rng(3), with_speed)
    augment_audio(x, replace(all_on(), speed=False), np.random.default_rng(3), without)
    assert [r["gain_db"] for r in with_speed] == [r["gain_db"] for r in without]
    assert [r["snr_db"] for r in with_speed] == [r["snr_db"] for r in without]
    assert all("speed" not in r for r in without)


def test_gain_changes_rms_by_the_drawn_db() -> None:
    x = sine(amp=0.1, rows=6)  # +6 dB peak 0.2: no clipping
    record: list[dict[str, Any]] = []
    y = augment_audio(x, one_switch("gain"), np.random.default_rng(5), record)
    drawn = np.array([r["gain_db"] for r in record])
    assert drawn.min() >= -6 and drawn.max() <= 6 and np.ptp(drawn) > 1
    rms = lambda a: np.sqrt(np.mean(a.astype(np.float64) ** 2, axis=1))  # noqa: E731
    measured = 20 * np.log10(rms(y) / rms(x))
    np.testing.assert_allclose(measured, drawn, atol=1e-4)


def test_gain_then_clip_caps_the_peak() -> None:
    cfg = AudioAugmentConfig.off(gain=True, gain_db=(12.0, 12.0), clip=True)
    y = augment_audio(sine(amp=0.9), cfg, np.random.default_rng(0))
    assert np.abs(y).max() == 1.0


@pytest.mark.parametrize("color", ["white", "pink"])
def test_noise_at_snr_gives_that_snr(color: str) -> None:
    x = sine(amp=0.3, rows=8)
    cfg = AudioAugmentConfig.off(noise=True, snr_db=(0.0, 30.0), noise_color=color)
    record: list[dict[str, Any]] = []
    y = augment_audio(x, cfg, np.random.default_rng(11), record)
    for i, rec in enumerate(record):
        assert abs(snr_db(x[i], y[i]) - rec["snr_db"]) < 0.5
    fixed = AudioAugmentConfig.off(noise=True, snr_db=(12.0, 12.0), noise_color=color)
    y = augment_audio(x[:1], fixed, np.random.default_rng(0))
    assert abs(snr_db(x[0], y[0]) - 12.0) < 0.5


def test_noise_snr_over_active_part_of_padded_clip() -> None:
    x = np.zeros((1, N), np.float32)
    x[0, :20_000] = sine(amp=0.3, n=20_000)[0]
    active = AudioAugmentConfig.off(noise=True, snr_db=(10.0, 10.0))
    y = augment_audio(x, active, np.random.default_rng(0))
    assert abs(snr_db(x[0, :20_000], y[0, :20_000]) - 10.0) < 0.5
    window = replace(active, snr_over="window")
    y = augment_audio(x, window, np.random.default_rng(0))
    assert abs(snr_db(x[0], y[0]) - 10.0) < 0.5


def test_pink_noise_spectrum_falls_with_frequency() -> None:
    pink = colored_noise(N, "pink", np.random.default_rng(0))
    white = colored_noise(N, "white", np.random.default_rng(0))
    for noise in (pink, white):
        assert abs(np.mean(noise**2) - 1.0) < 1e-9
    freqs = np.fft.rfftfreq(N, 1.0 / SR)
    power = np.abs(np.fft.rfft(pink)) ** 2
    low = power[(freqs > 100) & (freqs < 200)].mean()
    high = power[(freqs > 10_000) & (freqs < 20_000)].mean()
    assert 10 * np.log10(low / high) > 15  # 1/f: ~20 dB per decade (100x in frequency)


def test_bandlimit_removes_energy_outside_the_band() -> None:
    noise = np.random.default_rng(0).standard_normal((3, N)).astype(np.float32) * 0.2
    record: list[dict[str, Any]] = []
    y = augment_audio(noise, one_switch("bandlimit"), np.random.default_rng(0), record)
    assert all(r["bandlimit"] for r in record)
    freqs = np.fft.rfftfreq(N, 1.0 / SR)
    for i in range(3):
        power = np.abs(np.fft.rfft(y[i].astype(np.float64))) ** 2
        total_before = np.sum(np.abs(np.fft.rfft(noise[i].astype(np.float64))) ** 2)
        assert power[freqs > 3400].sum() / total_before < 1e-9
        assert power[freqs < 300].sum() / total_before < 1e-9
        inside = power[(freqs > 400) & (freqs < 3300)].sum() / total_before
        assert 0.1 < inside < 0.2  # ~2,900 of 22,050 Hz of a flat spectrum
    half = replace(one_switch("bandlimit"), bandlimit_prob=0.5)
    record = []
    augment_audio(np.repeat(noise[:1], 40, axis=0), half, np.random.default_rng(1), record)
    assert 10 < sum(r["bandlimit"] for r in record) < 30


def test_bandlimit_function_keeps_in_band_sine() -> None:
    x = sine(freq=1000.0, amp=0.5)[0]
    y = bandlimit(x, SR)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y[1000:-1000], x[1000:-1000], atol=2e-3)
    for freq in (100.0, 6000.0):  # out of band: only edge ringing of the FFT mask is left
        out = bandlimit(sine(freq=freq)[0], SR)
        assert np.abs(out[20_000:-20_000]).max() < 1e-5
        assert np.sqrt(np.mean(out.astype(np.float64) ** 2)) < 0.01 * 0.5


@pytest.mark.parametrize("factor", [0.9, 0.95, 1.05, 1.1])
def test_speed_shifts_frequency_by_the_factor(factor: float) -> None:
    cfg = AudioAugmentConfig.off(speed=True, speed_range=(factor, factor))
    x = sine(freq=1000.0)
    y = augment_audio(x, cfg, np.random.default_rng(0))
    assert y.shape == x.shape
    assert abs(peak_hz(y[0]) - 1000.0 * factor) < 1.0  # bins are 0.43 Hz
    if factor > 1:  # content ends early, the rest is zero padding
        end = int((N - 1) / factor) + 1
        assert not y[0, end + 1 :].any() and y[0, : end - 10].any()


def test_random_speed_draw_matches_measured_frequency() -> None:
    x = sine(freq=2000.0, rows=4)
    record: list[dict[str, Any]] = []
    y = augment_audio(x, one_switch("speed"), np.random.default_rng(2), record)
    for i, rec in enumerate(record):
        assert 0.9 <= rec["speed"] <= 1.1
        assert abs(peak_hz(y[i]) - 2000.0 * rec["speed"]) < 1.5


def test_speed_up_does_not_alias() -> None:
    x = sine(freq=21_000.0)[0]  # x1.1 would move it to 23.1 kHz, above Nyquist
    y = change_speed(x, 1.1, SR)
    assert np.sqrt(np.mean(y[: N - 20_000].astype(np.float64) ** 2)) < 0.01


def test_shift_moves_content_and_keeps_short_clips_whole() -> None:
    x = speech_like(6, seed=3)
    record: list[dict[str, Any]] = []
    y = augment_audio(x, one_switch("shift"), np.random.default_rng(4), record)
    shifts = [r["shift"] for r in record]
    assert any(k != 0 for k in shifts)
    for i, k in enumerate(shifts):
        assert abs(k) <= 0.2 * N
        assert np.array_equal(y[i], np.roll(x[i], k))  # nothing wrapped: only silence moved
    # Without keep-content a full-window sine is shifted with zero fill.
    cfg = AudioAugmentConfig.off(shift=True, shift_keep_content=False, max_shift=0.1)
    record = []
    y = augment_audio(sine(), cfg, np.random.default_rng(0), record)
    k = record[0]["shift"]
    assert k != 0 and abs(k) <= 0.1 * N
    zeros = y[0, :k] if k > 0 else y[0, k:]
    assert not zeros.any()


def test_audio_config_validation_dict_and_describe() -> None:
    for bad in (
        {"gain_db": (3.0, -3.0)},
        {"speed_range": (0.0, 1.1)},
        {"max_shift": 1.5},
        {"bandlimit_prob": 2.0},
        {"noise_color": "brown"},
        {"band_hz": (300.0, 30_000.0)},
    ):
        with pytest.raises(ValueError):
            AudioAugmentConfig(**bad)
    cfg = all_on()
    assert AudioAugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg.to_dict()["gain_db"], list)
    with pytest.raises(ValueError, match="unknown"):
        AudioAugmentConfig.from_dict({"reverb": True})
    text = cfg.describe()
    for word in ("speed", "shift", "gain", "pink noise", "band-limit 300-3400 Hz"):
        assert word in text


# --------------------------------------------------------------------------------------- images
def digit_images(rows: int = 3, size: int = 224) -> np.ndarray:
    """White strokes on black, like the upsampled MNIST digits."""
    out = np.zeros((rows, size, size, 3), dtype=np.uint8)
    for i in range(rows):
        out[i, 60:170, 100 + 5 * i : 120 + 5 * i] = 255
        out[i, 60:80, 80:150] = 200
    return out


def photo_images(rows: int = 2, size: int = 224) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.int64) * 255 // size
    out = np.stack([base + rng.integers(-20, 20, base.shape) for _ in range(rows)])
    return np.clip(out, 0, 255).astype(np.uint8)


def test_images_deterministic_and_per_item() -> None:
    imgs = np.repeat(photo_images(1), 3, axis=0)
    cfg = VisualAugmentConfig(hflip=True)
    a = augment_images(imgs, cfg, np.random.default_rng(0))
    b = augment_images(imgs, cfg, np.random.default_rng(0))
    c = augment_images(imgs, cfg, np.random.default_rng(1))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[1])


@pytest.mark.parametrize("name", [*VISUAL_SWITCHES, "all"])
def test_images_stay_uint8_same_shape(name: str) -> None:
    if name == "all":
        cfg = VisualAugmentConfig(hflip=True, hflip_prob=1.0)
    else:
        extra: dict[str, Any] = {"hflip_prob": 1.0} if name == "hflip" else {}
        cfg = VisualAugmentConfig.off(**{name: True, **extra})
    for imgs in (photo_images(), digit_images(), photo_images(size=64)):
        record: list[dict[str, Any]] = []
        out = augment_images(imgs, cfg, np.random.default_rng(0), record)
        assert out.shape == imgs.shape and out.dtype == np.uint8
        assert len(record) == len(imgs)
        assert not np.array_equal(out, imgs)


def test_images_off_is_identity_and_hflip_off_by_default() -> None:
    assert VisualAugmentConfig().hflip is False
    imgs = photo_images()
    cfg = VisualAugmentConfig.off()
    assert not cfg.enabled and cfg.describe() == "off"
    assert np.array_equal(augment_images(imgs, cfg, np.random.default_rng(0)), imgs)
    flipped = augment_images(
        imgs, VisualAugmentConfig.off(hflip=True, hflip_prob=1.0), np.random.default_rng(0)
    )
    assert np.array_equal(flipped, imgs[:, :, ::-1])


def test_rotation_fills_with_the_border_colour() -> None:
    cfg = VisualAugmentConfig.off(rotate=True, rotation_deg=30.0)
    record: list[dict[str, Any]] = []
    out = augment_images(digit_images(4), cfg, np.random.default_rng(0), record)
    assert all(abs(r["rotation_deg"]) <= 30.0 for r in record)
    assert max(abs(r["rotation_deg"]) for r in record) > 5
    corners = out[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert not corners.any()  # black background, not a white or grey fill
    white = np.full((1, 64, 64, 3), 255, np.uint8)
    assert (augment_images(white, cfg, np.random.default_rng(0)) == 255).all()


def test_crop_box_within_image_and_scale() -> None:
    cfg = VisualAugmentConfig.off(crop=True, crop_scale=(0.5, 0.8))
    record: list[dict[str, Any]] = []
    augment_images(photo_images(8), cfg, np.random.default_rng(0), record)
    for r in record:
        left, top, w, h = r["crop"]
        assert left >= 0 and top >= 0 and left + w <= 224 and top + h <= 224
        assert 0.45 <= w * h / 224**2 <= 0.85


def test_jitter_factors_in_range() -> None:
    cfg = VisualAugmentConfig.off(jitter=True, brightness=0.2, contrast=0.1, saturation=0.4)
    record: list[dict[str, Any]] = []
    augment_images(photo_images(5), cfg, np.random.default_rng(0), record)
    for r in record:
        assert 0.8 <= r["brightness"] <= 1.2
        assert 0.9 <= r["contrast"] <= 1.1
        assert 0.6 <= r["saturation"] <= 1.4


def test_visual_config_validation_and_bad_input() -> None:
    for bad in (
        {"crop_scale": (0.0, 1.0)},
        {"crop_scale": (0.5, 1.5)},
        {"rotation_deg": -1.0},
        {"brightness": 1.0},
        {"hflip_prob": 1.5},
    ):
        with pytest.raises(ValueError):
            VisualAugmentConfig(**bad)
    cfg = VisualAugmentConfig()
    assert VisualAugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert "rotate ±10°" in cfg.describe() and "hflip" not in cfg.describe()
    with pytest.raises(ValueError, match="uint8"):
        augment_images(photo_images().astype(np.float32), cfg, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        augment_images(photo_images()[0], cfg, np.random.default_rng(0))
