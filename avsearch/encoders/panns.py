"""PANNs CNN14 audio tower (Kong et al., IEEE/ACM TASLP 2020; code MIT, weights CC BY 4.0).

"PANNs: Large-Scale Pretrained Audio Neural Networks for Audio Pattern Recognition", Qiuqiang
Kong, Yin Cao, Turab Iqbal, Yuxuan Wang, Wenwu Wang and Mark D. Plumbley, IEEE/ACM
Transactions on Audio, Speech, and Language Processing 28 (2020). The network is ``Cnn14`` of
https://github.com/qiuqiangkong/audioset_tagging_cnn (``pytorch/models.py``, MIT) with the
torchlibrosa front-end (https://github.com/qiuqiangkong/torchlibrosa, ``stft.py``), trained on
AudioSet (527 classes) from 10 s clips at 32 kHz. The weights are ``Cnn14_mAP=0.431.pth`` of
Zenodo record 3987831 (https://zenodo.org/record/3987831), read from a local file only
(nothing is downloaded): the dict the training script saves, whose ``model`` entry is the state
dict (``spectrogram_extractor.stft.conv_real.weight`` ... ``fc_audioset.bias``); its other
entries (``iteration``, a sampler state) are ignored. :func:`convert` writes that state dict as
a ``.safetensors`` file once.

Front-end, on a mono 32 kHz waveform in [-1, 1]: torchlibrosa's STFT as a strided 1-D
convolution with ``n_fft`` 1024, hop 320 (10 ms), a periodic Hann window, ``center=True`` with
reflect padding of 512 samples on each side (``1 + N // 320`` frames); the power spectrum
(``real^2 + imag^2``); 64 mel bands between 50 and 14,000 Hz from librosa's default filterbank
(Slaney's mel scale, linear below 1 kHz and logarithmic above, each triangle scaled to unit
area, ``norm="slaney"``); ``10 log10(max(mel, 1e-10))`` (``power_to_db`` with ref 1.0, amin
1e-10, no ``top_db``). The STFT kernels and the mel matrix are in the checkpoint
(``spectrogram_extractor.*``, ``logmel_extractor.melW``): the tower uses the loaded ones, and
warns if they differ from the ones it builds.

Network: BatchNorm over the 64 mel bins (``bn0``); six blocks of two bias-free 3x3
convolutions, each with BatchNorm and ReLU (64, 128, 256, 512, 1024, 2048 channels), followed
by a 2x2 average pool (the sixth: 1x1, none); the mean over frequency; the max plus the mean
over time; ``fc1`` (2048 -> 2048) and ReLU: the 2048-d embedding. ``fc_audioset`` and a
sigmoid give the 527 AudioSet tag probabilities (:meth:`Cnn14.clipwise`). Dropout acts in
train mode as in the reference; its SpecAugment and mixup (training only) are not here.

Window: 2.0 s (64,000 samples): the segment length of the authors' own sound event detection
demo ("the audio tagging system on consecutive 2-second segments", the repository's README),
close to the default model's 2.32 s windows, and long enough for six time steps after the five
pools (201 frames; the pools' floors leave the last 9 frames, 90 ms, with less weight). The
network is fully convolutional with global pooling: a longer row is embedded whole (the
reference's clip-level inference); a shorter one is zero-padded to 2.0 s, as the training data
padded clips shorter than 10 s with zeros.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avsearch.encoders.aisfx import ConvBlock
from avsearch.encoders.files import (
    as_tensors,
    convert_main,
    load_strict,
    read_weights_file,
    run_rows,
    sha256_file,
)
from avsearch.encoders.tower import AudioInput
from avsearch.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = [
    "CHANNELS",
    "DIM",
    "FMAX",
    "FMIN",
    "HOP",
    "N_CLASSES",
    "N_FFT",
    "N_MELS",
    "SAMPLE_RATE",
    "WEIGHTS_URL",
    "WINDOW_SAMPLES",
    "Cnn14",
    "convert",
    "load_cnn14",
    "main",
    "slaney_mel_matrix",
    "stft_kernels",
]

SAMPLE_RATE = 32_000
N_FFT = 1024
HOP = 320
N_BINS = N_FFT // 2 + 1  # 513
N_MELS = 64
FMIN = 50.0
FMAX = 14_000.0
AMIN = 1e-10
REF = 1.0
CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
DIM = CHANNELS[-1]
N_CLASSES = 527
WINDOW_SAMPLES = 2 * SAMPLE_RATE  # 64,000: 2.0 s, 201 frames, 6 time steps after the pools
MIN_SAMPLES = 31 * HOP  # 9,920: 32 frames, the fewest the five 2x2 pools leave a step of
FRONTEND_TOLERANCE = 1e-5
CHUNK = 8  # rows per forward pass in features()

WEIGHTS_FILE = "Cnn14_mAP=0.431.pth"
WEIGHTS_URL = "https://zenodo.org/record/3987831"
SOURCE = f"{WEIGHTS_FILE} from Zenodo record 3987831, {WEIGHTS_URL}"
FRONTEND_KEYS = (
    "spectrogram_extractor.stft.conv_real.weight",
    "spectrogram_extractor.stft.conv_imag.weight",
    "logmel_extractor.melW",
)


# ----------------------------------------------------------------------------- front-end
def stft_kernels() -> tuple[np.ndarray, np.ndarray]:
    """torchlibrosa's STFT convolution kernels, ``[513, 1, 1024]`` float32 each: row ``k`` is
    ``w(n) cos(2 pi k n / N)`` (real) and ``-w(n) sin(2 pi k n / N)`` (imaginary), ``w`` the
    periodic Hann window."""
    n = np.arange(N_FFT)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)
    phase = 2 * np.pi * np.outer(np.arange(N_BINS), n) / N_FFT
    real = (np.cos(phase) * window)[:, None, :].astype(np.float32)
    imag = (-np.sin(phase) * window)[:, None, :].astype(np.float32)
    return real, imag


def _slaney_hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    logstep = np.log(6.4) / 27.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / logstep
    return np.where(hz >= 1000.0, log_part, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    logstep = np.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(logstep * (mel - 15.0)), mel * (200.0 / 3))


def slaney_mel_matrix() -> np.ndarray:
    """librosa's default mel filterbank for 32 kHz, ``n_fft`` 1024, 64 bands over 50-14,000 Hz
    (Slaney scale and area normalisation), transposed to ``[513, 64]`` float32 (``melW``)."""
    bin_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_BINS)
    band_hz = _slaney_mel_to_hz(
        np.linspace(_slaney_hz_to_mel(FMIN), _slaney_hz_to_mel(FMAX), N_MELS + 2)
    )
    widths = np.diff(band_hz)
    ramps = band_hz[:, None] - bin_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (band_hz[2:] - band_hz[:-2]))[:, None]
    return weights.T.astype(np.float32)


class _Kernel(nn.Module):
    """Holds one constant STFT kernel as the buffer ``weight`` (the checkpoint's name)."""

    def __init__(self, weight: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(weight))


class _Stft(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        real, imag = stft_kernels()
        self.conv_real = _Kernel(real)
        self.conv_imag = _Kernel(imag)

    def forward(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, N]`` -> real and imaginary parts ``[B, 513, 1 + N // 320]``."""
        x = F.pad(waves[:, None, :], (N_FFT // 2, N_FFT // 2), mode="reflect")
        return (
            F.conv1d(x, self.conv_real.weight, stride=HOP),
            F.conv1d(x, self.conv_imag.weight, stride=HOP),
        )


class _Spectrogram(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stft = _Stft()

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` -> power spectrogram ``[B, T, 513]``."""
        real, imag = self.stft(waves)
        return (real**2 + imag**2).transpose(1, 2)


class _LogMel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("melW", torch.from_numpy(slaney_mel_matrix()))

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        """``[B, T, 513]`` power -> ``[B, T, 64]`` dB."""
        mel = power @ self.melW
        return 10.0 * torch.log10(mel.clamp(min=AMIN)) - 10.0 * np.log10(max(AMIN, REF))


# ----------------------------------------------------------------------------- network
class Cnn14(nn.Module):
    """Waveform windows (mono 32 kHz) -> 2048-d PANNs CNN14 embeddings (module docstring).

    The state dict is the checkpoint's ``model`` dict, key for key: the front-end constants as
    buffers (``spectrogram_extractor.stft.conv_{real,imag}.weight``, ``logmel_extractor.melW``),
    ``bn0.*``, ``conv_block{1..6}.{conv1,conv2,bn1,bn2}.*``, ``fc1.*``, ``fc_audioset.*``.
    """

    SAMPLE_RATE = SAMPLE_RATE
    WINDOW_SAMPLES = WINDOW_SAMPLES
    DIM = DIM
    name = "panns-cnn14"
    modality = "audio"
    dim = DIM
    input = AudioInput(SAMPLE_RATE, WINDOW_SAMPLES)

    def __init__(self) -> None:
        super().__init__()
        self.spectrogram_extractor = _Spectrogram()
        self.logmel_extractor = _LogMel()
        self.bn0 = nn.BatchNorm2d(N_MELS)
        in_channels = 1
        for i, out_channels in enumerate(CHANNELS, start=1):
            pool = 2 if i < len(CHANNELS) else 1
            self.add_module(f"conv_block{i}", ConvBlock(in_channels, out_channels, pool, "avg"))
            in_channels = out_channels
        self.fc1 = nn.Linear(DIM, DIM)
        self.fc_audioset = nn.Linear(DIM, N_CLASSES)
        self.eval()

    def _pad(self, waves: torch.Tensor) -> torch.Tensor:
        if waves.ndim != 2:
            raise ValueError(f"expected waveforms of shape [B, N], got {tuple(waves.shape)}")
        short = WINDOW_SAMPLES - waves.shape[1]
        return F.pad(waves.float(), (0, short)) if short > 0 else waves.float()

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` -> ``[B, 1 + N' // 320, 64]`` log-mel (dB), before ``bn0``; rows shorter
        than the window are zero-padded to it first (``N'``)."""
        return self.logmel_extractor(self.spectrogram_extractor(self._pad(waves)))

    def pooled(self, logmel: torch.Tensor) -> torch.Tensor:
        """``[B, T, 64]`` log-mel -> ``[B, 2048]``: the time max plus time mean of the last
        block's frequency means (the input of ``fc1``)."""
        x = self.bn0(logmel.transpose(1, 2)[:, :, None, :]).squeeze(2).transpose(1, 2)
        x = x[:, None]  # [B, 1, T, 64]
        for i in range(1, len(CHANNELS) + 1):
            x = getattr(self, f"conv_block{i}")(x)
            x = F.dropout(x, p=0.2, training=self.training)
        x = x.mean(dim=3)
        x = x.amax(dim=2) + x.mean(dim=2)
        return F.dropout(x, p=0.5, training=self.training)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """``float [B, N]`` at 32 kHz -> ``[B, 2048]`` embeddings (``relu(fc1(.))``)."""
        return F.relu(self.fc1(self.pooled(self.log_mel(waves))))

    def features(self, waves: np.ndarray) -> np.ndarray:
        """The tower's numpy entry point: ``float32 [B, n]`` at 32 kHz -> ``float32 [B, 2048]``
        (:func:`~avsearch.encoders.files.run_rows`)."""
        return run_rows(self.forward, waves, DIM, CHUNK, next(self.parameters()).device)

    def clipwise(self, waves: torch.Tensor) -> torch.Tensor:
        """``float [B, N]`` at 32 kHz -> ``[B, 527]`` AudioSet tag probabilities."""
        return torch.sigmoid(self.fc_audioset(self(waves)))


# ----------------------------------------------------------------------------- loading
def _model_state(raw: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The ``model`` entry of a training checkpoint, or the state dict itself."""
    inner = raw.get("model")
    state = inner if isinstance(inner, dict) else raw
    return as_tensors(state, path, "PANNs CNN14")


def _check_frontend(net: Cnn14, state: dict[str, torch.Tensor], path: Path) -> None:
    built = net.state_dict()
    for key in FRONTEND_KEYS:
        value = state.get(key)
        if value is None or value.shape != built[key].shape:
            continue  # the strict load reports it
        diff = float((value - built[key]).abs().max())
        if diff > FRONTEND_TOLERANCE:
            logger.warning(
                "%s: %s differs from the 32 kHz CNN14 front-end by up to %.3g; using the "
                "checkpoint's (is this Cnn14_mAP=0.431.pth?)",
                path,
                key,
                diff,
            )


def load_cnn14(path: Path) -> Cnn14:
    """:class:`Cnn14` with ``path`` loaded strictly: ``Cnn14_mAP=0.431.pth`` (read with
    ``torch.load(weights_only=True)``) or its ``.safetensors`` conversion; eval mode, on CPU.
    Nothing is downloaded: a missing file is a one-line :class:`ModelError` naming where to get
    it."""
    path = Path(path)
    state = _model_state(read_weights_file(path, "PANNs CNN14", SOURCE), path)
    net = Cnn14()
    _check_frontend(net, state, path)
    load_strict(net, state, path, "PANNs CNN14 (32 kHz)")
    net.eval()
    logger.debug("loaded PANNs CNN14 weights from %s", path)
    return net


def convert(src: Path, dst: Path | None = None) -> Path:
    """Write the state dict of ``src`` (``Cnn14_mAP=0.431.pth``) as safetensors, same keys,
    floating point as float32, after checking that it loads strictly; ``dst`` defaults to
    ``src`` with the suffix ``.safetensors``. Returns ``dst``."""
    from safetensors.torch import save_file

    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_suffix(".safetensors")
    if dst.resolve() == src.resolve():
        raise ModelError(f"{dst}: refusing to overwrite the source file")
    state = _model_state(read_weights_file(src, "PANNs CNN14", SOURCE), src)
    load_strict(Cnn14(), state, src, "PANNs CNN14 (32 kHz)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in state.items()}
    save_file(tensors, str(dst), metadata={"source": src.name, "source_sha256": sha256_file(src)})
    logger.info("wrote %s (PANNs CNN14, %d tensors)", dst, len(tensors))
    return dst


def main(argv: Sequence[str] | None = None) -> int:
    return convert_main(argv, "panns", "PANNs CNN14", WEIGHTS_FILE, convert)


if __name__ == "__main__":
    raise SystemExit(main())
