"""Seeded data augmentation for training views: audio waveforms and images.

``DEFAULT_AUDIO_AUGMENT`` and ``DEFAULT_VISUAL_AUGMENT`` are what ``avsearch train --augment``
uses (and every published figure with augmentation: docs/benchmarks.md); the dataclass
defaults below are the neutral starting point they are made from.

Audio (:func:`augment_audio`, float32 ``[B, N]`` mono windows, default 44.1 kHz), applied per
item in this order, each with its own switch in :class:`AudioAugmentConfig`:

1. **speed** - resample by a factor ``f`` drawn uniformly from ``speed_range`` (Kaldi-style
   speed perturbation: tempo *and* pitch change by ``f``). Output sample ``n`` is the input at
   time ``n * f``, by linear interpolation; for ``f > 1`` the input is first low-passed at
   ``sample_rate / (2 f)`` (FFT mask) so nothing aliases. The result is anchored at the
   window's start and cropped (``f < 1``) or zero-padded (``f > 1``) back to ``N`` samples.
2. **shift** - move the content by ``k`` samples, ``|k| <= max_shift * N``, filling with
   zeros (not circular). With ``shift_keep_content`` the shift is limited to the silent
   margins, so a short clip zero-padded into a window moves around without being cut; a
   window whose content fills it is then not shifted at all (for long recordings, prefer a
   random window offset in the data loader).
3. **gain** - multiply by ``10 ** (g / 20)``, ``g`` uniform in ``gain_db`` dB.
4. **noise** - add white or pink Gaussian noise at an SNR drawn uniformly from ``snr_db``:
   noise power = signal power / ``10 ** (snr / 10)`` exactly, the signal power taken over the
   active extent of the row (first to last non-silent sample; ``snr_over="window"``: the
   whole row). Silent rows stay silent.
5. **band-limit** - with probability ``bandlimit_prob``, keep only ``band_hz`` (300-3,400 Hz,
   telephone-like) by zeroing FFT bins outside the band (the edges get a short raised-cosine
   taper *inside* the band, so there is exactly no energy outside it).
6. **clip** - ``np.clip`` to ``[-1, 1]`` (on by default; only ever changes samples whose
   magnitude exceeds 1).

Note for the aisfx backbone: its front-end peak-normalises every window, so a pure gain
change is invisible to it unless it drives samples into the clipping of step 6. Gain matters
for backbones without such normalisation and as a clipping-distortion augmentation.

Images (:func:`augment_images`, uint8 ``[B, H, W, 3]``), with Pillow, in this order: random
resized crop (torchvision's algorithm: area share from ``crop_scale``, log-uniform aspect
ratio from ``crop_ratio``, 10 tries, else a centre crop) resized back to ``W x H`` with bicubic
interpolation; rotation by an angle uniform in ``±rotation_deg`` (bilinear, corners filled
with the median colour of the image's border, e.g. black for MNIST digits); horizontal flip
(off by default: digits are not flip-invariant); colour jitter - brightness, contrast and
saturation factors uniform in ``[1 - x, 1 + x]`` (``PIL.ImageEnhance``).

Randomness: each item gets its own generator, seeded from ``rng`` in item order, and draws
*all* of its parameters whatever the switches, so the same seed gives identical output and
switching one transform off leaves the draws of the others unchanged (handy for ablations).
Pass a list as ``record`` to get each item's drawn parameters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageEnhance

__all__ = [
    "DEFAULT_AUDIO_AUGMENT",
    "DEFAULT_VISUAL_AUGMENT",
    "AudioAugmentConfig",
    "VisualAugmentConfig",
    "augment_audio",
    "augment_images",
    "bandlimit",
    "change_speed",
    "colored_noise",
]

NoiseColor = Literal["white", "pink"]
SnrOver = Literal["active", "window"]

DEFAULT_SAMPLE_RATE = 44_100
SILENCE = 1e-6  # |x| at or below this (relative to the row's peak) counts as silence
BAND_TAPER_HZ = 50.0  # raised-cosine taper width inside each edge of the band-limit
_SEED_MAX = 2**63 - 1


def _check_range(name: str, rng: tuple[float, float], lo: float | None = None) -> None:
    if len(rng) != 2 or not rng[0] <= rng[1]:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, not {rng!r}")
    if lo is not None and rng[0] < lo:
        raise ValueError(f"{name} must be >= {lo}, not {rng!r}")


def _fmt(x: float) -> str:
    return f"{x:g}"


def _pair(x: Any) -> tuple[float, float]:
    a, b = x
    return float(a), float(b)


# ---------------------------------------------------------------------------------------- audio


def _plain_dict(cfg: Any) -> dict[str, Any]:
    """Plain (YAML-safe) dict of a config dataclass: tuples become lists."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def _from_dict(cls: Any, raw: dict[str, Any], what: str) -> Any:
    unknown = set(raw) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} augmentation keys: {', '.join(sorted(unknown))}")
    return cls(**raw)


@dataclass(frozen=True)
class AudioAugmentConfig:
    """Waveform augmentation switches and ranges (see the module docstring for the order)."""

    speed: bool = True
    speed_range: tuple[float, float] = (0.9, 1.1)
    shift: bool = True
    max_shift: float = 0.2  # fraction of the window length
    shift_keep_content: bool = True
    gain: bool = True
    gain_db: tuple[float, float] = (-6.0, 6.0)
    noise: bool = True
    snr_db: tuple[float, float] = (10.0, 40.0)
    noise_color: NoiseColor = "white"
    snr_over: SnrOver = "active"
    bandlimit: bool = False
    bandlimit_prob: float = 0.5
    band_hz: tuple[float, float] = (300.0, 3400.0)
    clip: bool = True
    sample_rate: int = DEFAULT_SAMPLE_RATE

    def __post_init__(self) -> None:
        for name in ("speed_range", "gain_db", "snr_db", "band_hz"):
            object.__setattr__(self, name, _pair(getattr(self, name)))
        _check_range("speed_range", self.speed_range)
        if self.speed_range[0] <= 0:
            raise ValueError(f"speed factors must be positive, not {self.speed_range!r}")
        _check_range("gain_db", self.gain_db)
        _check_range("snr_db", self.snr_db)
        _check_range("band_hz", self.band_hz, lo=0.0)
        if not 0.0 <= self.max_shift <= 1.0:
            raise ValueError(f"max_shift must be in [0, 1], not {self.max_shift}")
        if not 0.0 <= self.bandlimit_prob <= 1.0:
            raise ValueError(f"bandlimit_prob must be in [0, 1], not {self.bandlimit_prob}")
        if self.noise_color not in ("white", "pink"):
            raise ValueError(f"noise_color must be 'white' or 'pink', not {self.noise_color!r}")
        if self.snr_over not in ("active", "window"):
            raise ValueError(f"snr_over must be 'active' or 'window', not {self.snr_over!r}")
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, not {self.sample_rate}")
        if self.band_hz[1] > self.sample_rate / 2:
            raise ValueError(f"band_hz {self.band_hz} exceeds Nyquist ({self.sample_rate / 2} Hz)")

    @classmethod
    def off(cls, **overrides: Any) -> AudioAugmentConfig:
        """Every transform switched off (identity), then ``overrides`` applied."""
        base: dict[str, Any] = {
            "speed": False,
            "shift": False,
            "gain": False,
            "noise": False,
            "bandlimit": False,
            "clip": False,
        }
        return cls(**{**base, **overrides})

    @property
    def enabled(self) -> bool:
        """Whether any transform can change a (within ``[-1, 1]``) waveform."""
        return self.speed or self.shift or self.gain or self.noise or self.bandlimit

    def describe(self) -> str:
        parts: list[str] = []
        if self.speed:
            parts.append(f"speed x{_fmt(self.speed_range[0])}-{_fmt(self.speed_range[1])}")
        if self.shift:
            keep = ", keep content" if self.shift_keep_content else ""
            parts.append(f"shift <= {self.max_shift:.0%}{keep}")
        if self.gain:
            parts.append(f"gain {_fmt(self.gain_db[0])}..{_fmt(self.gain_db[1])} dB")
        if self.noise:
            parts.append(
                f"{self.noise_color} noise SNR {_fmt(self.snr_db[0])}-{_fmt(self.snr_db[1])} dB"
                f" ({self.snr_over})"
            )
        if self.bandlimit:
            parts.append(
                f"band-limit {_fmt(self.band_hz[0])}-{_fmt(self.band_hz[1])} Hz"
                f" p={_fmt(self.bandlimit_prob)}"
            )
        text = ", ".join(parts) if parts else "off"
        return text + (", clip ±1" if self.clip and parts else "")

    def to_dict(self) -> dict[str, Any]:
        return _plain_dict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AudioAugmentConfig:
        return _from_dict(cls, raw, "audio")


def _band_mask(n: int, sample_rate: float, lo: float, hi: float, taper: float) -> np.ndarray:
    """rfft gain mask: 1 inside [lo, hi] Hz, 0 outside, raised-cosine ramps inside the edges."""
    freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
    mask = ((freqs >= lo) & (freqs <= hi)).astype(np.float64)
    taper = min(taper, (hi - lo) / 2)
    if taper > 0:
        if lo > 0:
            rise = (freqs >= lo) & (freqs < lo + taper)
            mask[rise] = 0.5 - 0.5 * np.cos(np.pi * (freqs[rise] - lo) / taper)
        fall = (freqs > hi - taper) & (freqs <= hi)
        mask[fall] = 0.5 - 0.5 * np.cos(np.pi * (hi - freqs[fall]) / taper)
    return mask


def bandlimit(
    wave: np.ndarray,
    sample_rate: int,
    band_hz: tuple[float, float] = (300.0, 3400.0),
    taper_hz: float = BAND_TAPER_HZ,
) -> np.ndarray:
    """Keep only ``band_hz`` of a 1-D signal by FFT masking; float32, same length."""
    x = np.asarray(wave, dtype=np.float64)
    if x.size < 2:
        return x.astype(np.float32)
    mask = _band_mask(x.size, sample_rate, band_hz[0], band_hz[1], taper_hz)
    return np.fft.irfft(np.fft.rfft(x) * mask, n=x.size).astype(np.float32)


def change_speed(wave: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Play a 1-D signal ``factor`` times faster (pitch and tempo); float32, same length.

    ``y[n] = x(n * factor)`` by linear interpolation, anchored at sample 0; positions past the
    input's end give zeros. For ``factor > 1`` the input is low-passed at the new Nyquist
    frequency first.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, not {factor}")
    x = np.asarray(wave, dtype=np.float64)
    n = x.size
    if n < 2 or factor == 1.0:
        return x.astype(np.float32)
    if factor > 1.0:
        x = np.fft.irfft(
            np.fft.rfft(x) * _band_mask(n, sample_rate, 0.0, sample_rate / (2 * factor), 0.0),
            n=n,
        )
    pos = np.arange(n, dtype=np.float64) * factor
    out = np.zeros(n, dtype=np.float64)
    valid = pos <= n - 1
    out[valid] = np.interp(pos[valid], np.arange(n, dtype=np.float64), x)
    return out.astype(np.float32)


def colored_noise(n: int, color: NoiseColor, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of unit mean square: ``white`` (flat) or ``pink`` (power ~ 1/f, no DC)."""
    white = rng.standard_normal(n)
    if color == "pink" and n > 2:
        spec = np.fft.rfft(white)
        k = np.arange(spec.size, dtype=np.float64)
        k[0] = np.inf  # no DC
        white = np.fft.irfft(spec / np.sqrt(k), n=n)
    power = float(np.mean(white**2))
    return white / math.sqrt(power) if power > 0 else white


def _active_extent(x: np.ndarray) -> tuple[int, int] | None:
    """(first, last) index of samples above ``SILENCE`` x peak, or None for a silent row."""
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak <= 0.0:
        return None
    loud = np.flatnonzero(np.abs(x) > SILENCE * peak)
    return int(loud[0]), int(loud[-1])


def _shift(x: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros_like(x)
    n = x.size
    if k >= 0:
        out[k:] = x[: n - k]
    else:
        out[: n + k] = x[-k:]
    return out


def _augment_one(
    x: np.ndarray, cfg: AudioAugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    n = x.size
    # Draw everything up front, whatever the switches, so that the draws do not depend on them.
    speed = float(rng.uniform(*cfg.speed_range))
    shift_u = float(rng.uniform(-1.0, 1.0))
    gain_db = float(rng.uniform(*cfg.gain_db))
    snr_db = float(rng.uniform(*cfg.snr_db))
    noise_seed = int(rng.integers(0, _SEED_MAX))
    band_u = float(rng.uniform())
    rec: dict[str, Any] = {}
    y = x.astype(np.float32, copy=True)
    if cfg.speed:
        y = change_speed(y, speed, cfg.sample_rate)
        rec["speed"] = speed
    if cfg.shift:
        limit = int(cfg.max_shift * n)
        k = round(shift_u * limit)
        if cfg.shift_keep_content:
            extent = _active_extent(y)
            if extent is not None:
                k = min(max(k, -extent[0]), n - 1 - extent[1])
        if k:
            y = _shift(y, k)
        rec["shift"] = k
    if cfg.gain:
        y *= np.float32(10.0 ** (gain_db / 20.0))
        rec["gain_db"] = gain_db
    if cfg.noise:
        extent = _active_extent(y)
        if extent is not None:
            part = y[extent[0] : extent[1] + 1] if cfg.snr_over == "active" else y
            power = float(np.mean(part.astype(np.float64) ** 2))
            noise = colored_noise(n, cfg.noise_color, np.random.default_rng(noise_seed))
            y = (y + noise * math.sqrt(power / 10.0 ** (snr_db / 10.0))).astype(np.float32)
            rec["snr_db"] = snr_db
        else:
            rec["snr_db"] = None  # silent row: nothing to measure the SNR against
    if cfg.bandlimit:
        applied = band_u < cfg.bandlimit_prob
        if applied:
            y = bandlimit(y, cfg.sample_rate, cfg.band_hz)
        rec["bandlimit"] = applied
    if cfg.clip:
        np.clip(y, -1.0, 1.0, out=y)
    return y, rec


# `avsearch train --augment`: speed x0.85-1.15 with pitch, shift, white noise at 10-40 dB SNR
# and every copy band-limited to 0-4 kHz, as a sound recorded at 8 kHz (a telephone, FSDD);
# gain is off, a no-op for aisfx, which peak-normalises every window
DEFAULT_AUDIO_AUGMENT = AudioAugmentConfig(
    speed_range=(0.85, 1.15),
    gain=False,
    snr_db=(10.0, 40.0),
    bandlimit=True,
    bandlimit_prob=1.0,
    band_hz=(0.0, 4000.0),
)


def augment_audio(
    waves: np.ndarray,
    cfg: AudioAugmentConfig,
    rng: np.random.Generator,
    record: list[dict[str, Any]] | None = None,
) -> np.ndarray:
    """Augment float ``[B, N]`` mono windows -> float32 ``[B, N]`` (a new array).

    Each item draws its own parameters from a generator seeded from ``rng`` (so ``rng``
    advances by exactly ``B`` draws). ``record``, if given, gets one dict per item with the
    parameters actually applied (``speed``, ``shift`` in samples, ``gain_db``, ``snr_db``,
    ``bandlimit``). Non-finite input samples are replaced by zeros.
    """
    arr = np.asarray(waves)
    if arr.ndim != 2:
        raise ValueError(f"expected waveforms of shape [B, N], got {arr.shape}")
    arr = np.nan_to_num(arr.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    seeds = rng.integers(0, _SEED_MAX, size=arr.shape[0])
    out = np.empty(arr.shape, dtype=np.float32)
    for i in range(arr.shape[0]):
        out[i], rec = _augment_one(arr[i], cfg, np.random.default_rng(int(seeds[i])))
        if record is not None:
            record.append(rec)
    return out


# --------------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class VisualAugmentConfig:
    """Image augmentation switches and ranges (see the module docstring for the order)."""

    crop: bool = True
    crop_scale: tuple[float, float] = (0.7, 1.0)  # share of the image area
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # width / height
    rotate: bool = True
    rotation_deg: float = 10.0
    hflip: bool = False  # digits are not flip-invariant
    hflip_prob: float = 0.5
    jitter: bool = True
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_scale", _pair(self.crop_scale))
        object.__setattr__(self, "crop_ratio", _pair(self.crop_ratio))
        _check_range("crop_scale", self.crop_scale)
        if not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            raise ValueError(f"crop_scale must lie in (0, 1], not {self.crop_scale!r}")
        _check_range("crop_ratio", self.crop_ratio)
        if self.crop_ratio[0] <= 0:
            raise ValueError(f"crop_ratio must be positive, not {self.crop_ratio!r}")
        if not 0.0 <= self.rotation_deg <= 180.0:
            raise ValueError(f"rotation_deg must be in [0, 180], not {self.rotation_deg}")
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must be in [0, 1], not {self.hflip_prob}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), not {getattr(self, name)}")

    @classmethod
    def off(cls, **overrides: Any) -> VisualAugmentConfig:
        """Every transform switched off (identity), then ``overrides`` applied."""
        base: dict[str, Any] = {"crop": False, "rotate": False, "hflip": False, "jitter": False}
        return cls(**{**base, **overrides})

    @property
    def enabled(self) -> bool:
        return self.crop or self.rotate or self.hflip or self.jitter

    def describe(self) -> str:
        parts: list[str] = []
        if self.crop:
            parts.append(
                f"resized crop area {_fmt(self.crop_scale[0])}-{_fmt(self.crop_scale[1])}"
                f" ratio {self.crop_ratio[0]:.2f}-{self.crop_ratio[1]:.2f}"
            )
        if self.rotate:
            parts.append(f"rotate ±{_fmt(self.rotation_deg)}°")
        if self.hflip:
            parts.append(f"hflip p={_fmt(self.hflip_prob)}")
        if self.jitter:
            parts.append(
                f"jitter brightness ±{_fmt(self.brightness)} contrast ±{_fmt(self.contrast)}"
                f" saturation ±{_fmt(self.saturation)}"
            )
        return ", ".join(parts) if parts else "off"

    def to_dict(self) -> dict[str, Any]:
        return _plain_dict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VisualAugmentConfig:
        return _from_dict(cls, raw, "visual")


def _crop_box(
    width: int, height: int, cfg: VisualAugmentConfig, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params: (left, top, w, h)."""
    area = width * height
    log_ratio = (math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    for _ in range(10):
        target = area * float(rng.uniform(*cfg.crop_scale))
        ratio = math.exp(float(rng.uniform(*log_ratio)))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, w, h
    # Fallback: a centre crop with the aspect ratio clamped into the allowed range.
    in_ratio = width / height
    if in_ratio < cfg.crop_ratio[0]:
        w, h = width, round(width / cfg.crop_ratio[0])
    elif in_ratio > cfg.crop_ratio[1]:
        w, h = round(height * cfg.crop_ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _border_colour(arr: np.ndarray) -> tuple[int, int, int]:
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]], axis=0)
    med = np.median(border.reshape(-1, 3), axis=0)
    return int(med[0]), int(med[1]), int(med[2])


def _augment_image(
    arr: np.ndarray, cfg: VisualAugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    height, width = arr.shape[:2]
    crop_seed = int(rng.integers(0, _SEED_MAX))
    angle = float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    flip = bool(rng.uniform() < cfg.hflip_prob)
    factors = [float(rng.uniform(1 - x, 1 + x)) for x in (cfg.brightness, cfg.contrast)]
    factors.append(float(rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)))
    rec: dict[str, Any] = {}
    img = Image.fromarray(arr)
    if cfg.crop:
        left, top, w, h = _crop_box(width, height, cfg, np.random.default_rng(crop_seed))
        img = img.resize(
            (width, height),
            resample=Image.Resampling.BICUBIC,
            box=(left, top, left + w, top + h),
        )
        rec["crop"] = (left, top, w, h)
    if cfg.rotate:
        fill = _border_colour(np.asarray(img))
        img = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill)
        rec["rotation_deg"] = angle
    if cfg.hflip:
        if flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        rec["hflip"] = flip
    if cfg.jitter:
        img = ImageEnhance.Brightness(img).enhance(factors[0])
        img = ImageEnhance.Contrast(img).enhance(factors[1])
        img = ImageEnhance.Color(img).enhance(factors[2])
        rec["brightness"], rec["contrast"], rec["saturation"] = factors
    return np.asarray(img, dtype=np.uint8), rec


# `avsearch train --augment`: resized crop (70-100% of the area), rotation ±10°, colour jitter
DEFAULT_VISUAL_AUGMENT = VisualAugmentConfig()


def augment_images(
    images: np.ndarray,
    cfg: VisualAugmentConfig,
    rng: np.random.Generator,
    record: list[dict[str, Any]] | None = None,
) -> np.ndarray:
    """Augment uint8 ``[B, H, W, 3]`` RGB images -> a new uint8 array of the same shape.

    Per-item generators and ``record`` work as in :func:`augment_audio`.
    """
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected images of shape [B, H, W, 3], got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {arr.dtype}")
    seeds = rng.integers(0, _SEED_MAX, size=arr.shape[0])
    out = np.empty_like(arr)
    for i in range(arr.shape[0]):
        out[i], rec = _augment_image(
            np.ascontiguousarray(arr[i]), cfg, np.random.default_rng(int(seeds[i]))
        )
        if record is not None:
            record.append(rec)
    return out
