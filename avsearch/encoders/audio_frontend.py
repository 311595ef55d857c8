"""Log-mel front-end of the aisfx audio backbone, in differentiable, batched PyTorch.

This reproduces the input features of aisfx (Ma & Lerch, ISMIR 2022) as computed by its
librosa path (``aisfx/spectrogram/spectrogram_librosa.py`` + ``preprocessing.py`` of the PyPI
package 0.1.2, which pins librosa 0.9.2), without calling librosa at run time:

1. **Peak normalisation.** aisfx divides the *whole file* by ``max |y|`` (and by 1 when the
   file is all zeros). We normalise *each window independently*: ``x / max(max |x|,
   PEAK_FLOOR)``. A window of digital silence therefore stays all zeros (no NaN, no
   division by zero); any window with a peak above ``PEAK_FLOOR`` (-120 dBFS, below the
   16-bit LSB) is scaled exactly as aisfx would scale a file holding only that window.
   :func:`file_logmel` keeps aisfx's whole-file rule for reference comparisons.
2. **Power spectrogram.** Periodic Hann window of ``N_FFT = 2048`` samples (librosa's
   ``get_window("hann", 2048, fftbins=True)``), hop ``HOP = 1024``, ``|STFT|**2``. Framing is
   librosa's ``center=True`` with ``pad_mode="constant"`` (the default since librosa 0.9.0,
   hence the one aisfx's pinned librosa 0.9.2 uses): the signal gets ``N_FFT // 2`` zeros on
   each side and frame ``t`` is centred on sample ``t * HOP``; a signal of ``N`` samples
   gives librosa ``1 + N // HOP`` frames.
3. **Mel bands.** 96 HTK-scale triangular filters from 0 to 22,050 Hz, each scaled to unit
   L1 norm (``librosa.filters.mel(..., htk=True, norm=1.0)``, *not* Slaney area norm), applied
   to the power spectrum.
4. **Compression.** ``log10(1e4 * S + 1) / 9.457798957824707``: the ``shift_scale_log`` of the
   paper's Essentia pipeline followed by aisfx's ``spectrogram_normalize(spec_norm="original")``
   min/max normalisation with ``mn = 0``, ``mx = 9.457798957824707`` (the maximum over all
   training spectrograms of the paper).
5. **Layout.** The network takes ``[B, time, mel]``. (aisfx's librosa path returns
   ``[mel, time]`` and then blocks along the mel axis, a bug of that convenience path; its
   Essentia path, used in the paper, returns ``[time, mel]``, which is what the network was
   trained on and what we produce.)

Fixed windows: the model sees blocks of ``BLOCK_FRAMES = 100`` frames (about 2.32 s).
One of our windows holds ``WINDOW_SAMPLES = BLOCK_FRAMES * HOP = 102,400`` samples. librosa
framing gives ``1 + 102400 // 1024 = 101`` frames for it; the last one is centred on sample
102,400, just past the window's end, so :class:`LogMelFrontend` drops it and keeps the 100
frames whose centres lie inside the window (in general ``ceil(N / HOP)`` frames). Those 100
frames cover samples ``[-1024, 102400)``: every sample of the window is used and consecutive
windows tile the signal without gaps. Compared with aisfx's blocks cut out of a whole-file
spectrogram, only frame 0 differs (it sees zeros, not the previous window's last 1,024
samples), besides the per-window peak normalisation. A clip shorter than a window is
zero-padded to it; it then has ``ceil(n / HOP)`` frames with signal in them, one more than
librosa's ``1 + n // HOP`` framing of the bare clip keeps when the frame centred just past
its end still overlaps its last samples.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from avsearch.encoders.files import run_rows

logger = logging.getLogger(__name__)

__all__ = [
    "BLOCK_FRAMES",
    "F_MAX",
    "F_MIN",
    "HOP",
    "LOG_SCALE",
    "N_FFT",
    "N_MELS",
    "PEAK_FLOOR",
    "SAMPLE_RATE",
    "SPEC_MAX",
    "WINDOW_SAMPLES",
    "LogMelFrontend",
    "file_logmel",
    "hz_to_mel_htk",
    "mel_filterbank",
    "mel_to_hz_htk",
    "run_windows",
]

SAMPLE_RATE = 44_100
N_FFT = 2048
HOP = 1024
N_MELS = 96
F_MIN = 0.0
F_MAX = 22_050.0
LOG_SCALE = 1e4  # feature = log10(LOG_SCALE * S + 1) / SPEC_MAX
SPEC_MAX = 9.457798957824707  # aisfx preprocessing.spectrogram_normalize("original"): mn=0, mx
BLOCK_FRAMES = 100
WINDOW_SAMPLES = BLOCK_FRAMES * HOP  # 102,400 samples = 2.322 s -> exactly 100 kept frames
PEAK_FLOOR = 1e-6  # -120 dBFS: quieter windows are treated as (near) silence, never NaN

_LN10 = math.log(10.0)


def hz_to_mel_htk(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz_htk(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_htk`: ``700 * (10 ** (m / 2595) - 1)``."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sr: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = F_MIN,
    fmax: float = F_MAX,
) -> np.ndarray:
    """HTK triangular mel filters with unit L1 norm each: ``float32 [n_mels, n_fft // 2 + 1]``.

    Same construction as ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
    fmax=fmax, htk=True, norm=1.0)``: ``n_mels + 2`` band edges equally spaced on the HTK mel
    scale, triangles evaluated in Hz on the FFT bin frequencies, then each row divided by the
    sum of its weights (an all-zero row would be left as is).
    """
    if n_mels < 1 or n_fft < 2 or not 0.0 <= fmin < fmax <= sr / 2.0:
        raise ValueError(f"bad mel filterbank parameters: {sr=} {n_fft=} {n_mels=} {fmin=} {fmax=}")
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)  # [n_fft // 2 + 1], 0 .. sr / 2
    mels = np.linspace(hz_to_mel_htk(fmin), hz_to_mel_htk(fmax), n_mels + 2)
    edges = mel_to_hz_htk(mels)  # [n_mels + 2]
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    norms = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, norms, out=weights.copy(), where=norms > 0)
    empty = int((norms[:, 0] <= 0).sum())
    if empty:
        logger.warning("%d of %d mel filters are empty (n_fft %d too small?)", empty, n_mels, n_fft)
    return weights.astype(np.float32)


def _power_frames(wave: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` -> power spectrogram ``[B, N_FFT // 2 + 1, 1 + N // HOP]``, librosa framing."""
    spec = torch.stft(
        wave,
        n_fft=N_FFT,
        hop_length=HOP,
        win_length=N_FFT,
        window=window,
        center=True,
        pad_mode="constant",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    # |z|^2 as re^2 + im^2: same value as abs()**2, but with a finite gradient at z = 0.
    return torch.view_as_real(spec).pow(2).sum(dim=-1)


def _compress(mel_power: torch.Tensor) -> torch.Tensor:
    """``log10(1e4 * S + 1) / 9.4578``, computed with log1p for accuracy near 0."""
    return torch.log1p(mel_power * LOG_SCALE) / (_LN10 * SPEC_MAX)


class LogMelFrontend(nn.Module):
    """Waveforms ``float32 [B, N]`` (mono, 44.1 kHz) -> network input ``[B, T, 96]``.

    Each row is peak-normalised on its own (see the module docstring), then turned into the
    aisfx log-mel feature; ``T = ceil(N / HOP)`` frames are kept (the frames whose centres lie
    inside the row), i.e. ``T = BLOCK_FRAMES`` for ``N = WINDOW_SAMPLES``. Differentiable with
    respect to the input. The filterbank and window are non-persistent buffers, so they never
    appear in a state dict.
    """

    mel_fb: torch.Tensor
    window: torch.Tensor

    def __init__(self, peak_normalize: bool = True) -> None:
        super().__init__()
        self.peak_normalize = peak_normalize
        self.register_buffer("mel_fb", torch.from_numpy(mel_filterbank()), persistent=False)
        self.register_buffer(
            "window", torch.hann_window(N_FFT, periodic=True, dtype=torch.float32), persistent=False
        )

    @staticmethod
    def num_frames(num_samples: int) -> int:
        """Frames kept for a row of ``num_samples`` samples: ``ceil(num_samples / HOP)``."""
        return max(1, math.ceil(num_samples / HOP))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.ndim != 2:
            raise ValueError(f"expected waveforms of shape [B, N], got {tuple(wave.shape)}")
        if wave.shape[1] == 0:
            raise ValueError(f"empty waveforms, shape {tuple(wave.shape)}")
        x = wave.to(self.mel_fb.dtype)
        if self.peak_normalize:
            peak = x.abs().amax(dim=1, keepdim=True).clamp_min(PEAK_FLOOR)
            x = x / peak
        power = _power_frames(x, self.window)[..., : self.num_frames(x.shape[1])]
        mel = torch.matmul(self.mel_fb, power)  # [B, N_MELS, T]
        return _compress(mel).transpose(1, 2).contiguous()  # [B, T, N_MELS]


def file_logmel(samples: np.ndarray) -> np.ndarray:
    """Whole-file aisfx feature (reference path): mono 44.1 kHz ``[N]`` -> ``float32 [T, 96]``.

    Exactly aisfx's librosa computation followed by its ``"original"`` normalisation, but in
    the ``[time, mel]`` layout the network takes: the whole file is divided by its peak (by 1
    if it is all zeros), all ``T = 1 + N // HOP`` librosa frames are kept (``center=True``,
    zero padding). aisfx then cuts this into blocks of ``BLOCK_FRAMES`` frames, zero-padding
    the last one.
    """
    y = np.asarray(samples, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"expected a non-empty mono signal [N], got shape {y.shape}")
    peak = float(np.max(np.abs(y)))
    if peak == 0.0:
        peak = 1.0
    x = torch.from_numpy(y / np.float32(peak))[None]
    window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float32)
    mel_fb = torch.from_numpy(mel_filterbank())
    with torch.inference_mode():
        mel = torch.matmul(mel_fb, _power_frames(x, window))
        return _compress(mel)[0].T.contiguous().numpy()


def run_windows(
    forward: Callable[[torch.Tensor], torch.Tensor],
    waves: np.ndarray,
    dim: int,
    chunk: int,
    device: torch.device | None = None,
    window_samples: int = WINDOW_SAMPLES,
) -> np.ndarray:
    """The numpy entry point of a tower over aisfx windows: ``float32 [B, n]`` ->
    ``float32 [B, dim]``, by ``forward`` on at most ``chunk`` rows at a time under
    ``torch.inference_mode``.

    Shorter rows are zero-padded at the end to ``window_samples`` (the padded last window of a
    clip); a 1-D array is one row. Longer rows (``embed --window`` above the native block) are
    passed as they are: the towers on these frames pool over time.
    """
    arr = np.asarray(waves, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim == 2 and arr.shape[1] < window_samples:
        arr = np.pad(arr, ((0, 0), (0, window_samples - arr.shape[1])))
    return run_rows(forward, arr, dim, chunk, device or torch.device("cpu"))
