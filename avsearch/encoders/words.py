"""The ``words`` audio tower: a spoken-word embedding of the window.

aisfx is a sound-effects network: it says *what kind* of sound a window holds, and its global
max over time drops the order of sounds that tells words apart. On speakers left out of
training a linear probe reads the FSDD digit from it 58% of the time (``bench/speaker_probe.py``).
The EfficientWord-Net word model (Chidhambararajan R. et al., 2022; Apache-2.0; PyPI
``EfficientWord-Net``) is a ResNet-50 trained with an ArcFace loss to map a 1.5 s recording of
a word to the same unit vector whoever says it: it was made for few-shot hotword detection on
new voices, which is exactly the gap. The same probe reads a new speaker's digit from it 93%
of the time. Beside aisfx it is the ``aisfx-words`` backbone of the default model (the
composite ``[aisfx, words]``, see :mod:`avsearch.encoders.registry`).

Per window (mono, at the rate the tower declares: the aisfx window, 44.1 kHz, 102,400 samples):

1. resample to 16 kHz (:func:`avsearch.encoders.resample.resample`, a windowed-sinc filter of
   finite support, in float64: a stretch of exact zeros, such as window padding, stays exactly
   zero, as padding was in the model's own training);
2. cut the 1.5 s (24,000 samples) centred on the window's energy centroid (the middle of a
   silent window): an isolated word sits whole in the middle of the crop;
3. log mel filterbank as the model's own front-end computes it (``python_speech_features``
   ``logfbank``: 25 ms frames every 10 ms without a window, 512-point power spectrum, 64
   triangular mel filters over 0-8 kHz, log with a floor at float64 eps): ``[149, 64]``;
4. the network (its own ONNX file, run by onnxruntime; it min-max normalises its input and
   L2-normalises its 2048-d output).

Nothing is downloaded: the ONNX file is read from the installed ``eff_word_net`` package
(``pip install --no-deps EfficientWord-Net==1.0.5``; its own dependencies, PyAudio among
them, are not needed) or from ``$AVSEARCH_WORDS_WEIGHTS``, and its sha256 must match the one
pinned here. Importing this module imports no torch.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from avsearch.encoders.files import package_file, sha256_file
from avsearch.encoders.resample import resample
from avsearch.encoders.tower import AudioInput
from avsearch.errors import ModelError

__all__ = [
    "ONNX_SHA256",
    "WORDS_DIM",
    "WordModel",
    "WordsTower",
    "centre_crop",
    "log_fbank",
    "words_weights_path",
]

WORDS_RATE = 16_000
CLIP_SAMPLES = 24_000  # 1.5 s: the word model's input
FRAME_LEN = 400  # 25 ms
FRAME_STEP = 160  # 10 ms
NFFT = 512
N_FILTERS = 64
N_FRAMES = 1 + -(-(CLIP_SAMPLES - FRAME_LEN) // FRAME_STEP)  # 149
WORDS_DIM = 2048
FLAT_FBANK = 1e-6  # a log-filterbank spread below this is flat: no word to embed
WORDS_CHUNK = 16  # windows resampled and cropped at a time (bounds the float64 copies)
WEIGHTS_ENV = "AVSEARCH_WORDS_WEIGHTS"
PACKAGE = "eff_word_net"
ONNX_RELPATH = "models/resnet_50_arc/slim_93%_accuracy_72.7390%.onnx"
ONNX_SHA256 = "373916c2a52dffb716738ac451d384ca2097d4cca5bde1357377023da8e47cbe"
INSTALL_HINT = (
    "install the word model with `pip install --no-deps EfficientWord-Net==1.0.5` (only its "
    f"ONNX file is used) or point ${WEIGHTS_ENV} at that file; `--model cepstra` does "
    "without it"
)


def words_weights_path() -> Path:
    """Where the word model's ONNX file is: ``$AVSEARCH_WORDS_WEIGHTS``, else the installed
    ``eff_word_net`` package (found without importing it)."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    return package_file(PACKAGE, ONNX_RELPATH)


def centre_crop(waves: np.ndarray, length: int = CLIP_SAMPLES) -> np.ndarray:
    """The ``length`` samples centred on each row's energy centroid, kept inside the row (the
    middle of a silent row); rows shorter than ``length`` are zero-padded on both sides."""
    x = np.asarray(waves, dtype=np.float64)
    n = x.shape[1]
    if n < length:
        before = (length - n) // 2
        return np.pad(x, ((0, 0), (before, length - n - before)))
    if len(x) == 0:
        return np.zeros((0, length))
    energy = x**2
    total = energy.sum(axis=1)
    centroid = np.full(len(x), n / 2)
    voiced = total > 0
    centroid[voiced] = (energy[voiced] @ np.arange(n, dtype=np.float64)) / total[voiced]
    start = np.clip(np.round(centroid - length / 2).astype(np.int64), 0, n - length)
    return np.stack([row[s : s + length] for row, s in zip(x, start, strict=True)])


@lru_cache(maxsize=1)
def _filterbank() -> np.ndarray:
    """The 64 triangular mel filters ``[64, 257]`` of ``python_speech_features`` (0-8 kHz)."""

    def hz2mel(hz: np.ndarray | float) -> np.ndarray:
        return 2595 * np.log10(1 + np.asarray(hz) / 700.0)

    def mel2hz(mel: np.ndarray) -> np.ndarray:
        return 700 * (10 ** (mel / 2595.0) - 1)

    points = np.linspace(hz2mel(0.0), hz2mel(WORDS_RATE / 2), N_FILTERS + 2)
    bins = np.floor((NFFT + 1) * mel2hz(points) / WORDS_RATE)
    fb = np.zeros((N_FILTERS, NFFT // 2 + 1))
    for j in range(N_FILTERS):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return fb


def log_fbank(clips: np.ndarray) -> np.ndarray:
    """``[B, 24000]`` 16 kHz clips -> ``[B, 149, 64]`` log mel filterbank energies (float64)."""
    x = np.asarray(clips, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != CLIP_SAMPLES:
        raise ValueError(f"expected clips of shape [B, {CLIP_SAMPLES}], got {x.shape}")
    pad = (N_FRAMES - 1) * FRAME_STEP + FRAME_LEN - CLIP_SAMPLES
    x = np.pad(x, ((0, 0), (0, pad)))
    idx = np.arange(FRAME_LEN)[None, :] + FRAME_STEP * np.arange(N_FRAMES)[:, None]
    frames = x[:, idx]  # [B, 149, 400]
    power = np.abs(np.fft.rfft(frames, NFFT, axis=-1)) ** 2 / NFFT
    feat = power @ _filterbank().T
    return np.log(np.where(feat == 0, np.finfo(float).eps, feat))


class WordModel:
    """The word network (onnxruntime, one clip per call: its graph has a fixed batch of 1)."""

    def __init__(self, path: Path | None = None) -> None:
        path = path or words_weights_path()
        if not path.is_file():
            raise ModelError(
                f"the word model is not installed ({path} not found)", hint=INSTALL_HINT
            )
        sha = sha256_file(path)
        if sha != ONNX_SHA256:
            raise ModelError(
                f"{path}: sha256 {sha[:12]}… is not the EfficientWord-Net 1.0.5 word model's "
                f"({ONNX_SHA256[:12]}…)",
                hint=INSTALL_HINT,
            )
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a dependency of avsearch
            raise ModelError("onnxruntime is missing", "pip install onnxruntime") from exc
        import torch  # only for its thread setting, which the whole process follows

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # no busy-waiting between calls: the decode threads and aisfx share these cores
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self._session: Any = ort.InferenceSession(
            str(path), opts, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name

    def embed_logfbank(self, feats: np.ndarray) -> np.ndarray:
        """``[B, 149, 64]`` -> ``float32 [B, 2048]``: unit vectors, or zeros for "no word".

        The network min-max normalises its input, ``(x - min) / (max - min)``: a clip whose
        filterbank is flat (digital silence, or a crop that falls between two sounds) divides
        zero by zero and comes out NaN. Such a clip holds no word, so it gets the zero vector
        (finite, and the same for every silent clip); so does any row the network still
        returns non-finite.
        """
        out = np.zeros((len(feats), WORDS_DIM), dtype=np.float32)
        for i, f in enumerate(np.asarray(feats, dtype=np.float32)):
            if not np.all(np.isfinite(f)) or float(f.max() - f.min()) < FLAT_FBANK:
                continue
            row = self._session.run(None, {self._input: f[None, None]})[0][0]
            if np.all(np.isfinite(row)):
                out[i] = row
        return out

    def embed_windows(self, waves: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono windows ``[B, N]`` at ``sample_rate`` -> ``float32 [B, 2048]``."""
        x = np.asarray(waves, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expected waveforms of shape [B, N], got {x.shape}")
        if len(x) == 0:
            return np.zeros((0, WORDS_DIM), np.float32)
        x16 = resample(x, sample_rate, WORDS_RATE)
        return self.embed_logfbank(log_fbank(centre_crop(x16)))


class WordsTower:
    """The ``words`` tower: audio windows as ``input`` declares them -> ``float32 [B, 2048]``,
    the word model's embedding of the 1.5 s around each window's energy centre (zeros for a
    window with no word in it). Frozen: the network runs in onnxruntime, outside autograd."""

    name = "words"
    modality = "audio"
    dim = WORDS_DIM

    def __init__(self, model: WordModel, input: AudioInput) -> None:
        self.model = model
        self.input = input

    def features(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float32)  # the window as every tower sees it
        if x.ndim != 2:
            raise ValueError(f"expected waveforms of shape [B, n], got {x.shape}")
        parts = [
            self.model.embed_windows(x[i : i + WORDS_CHUNK], self.input.sample_rate)
            for i in range(0, len(x), WORDS_CHUNK)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, WORDS_DIM), np.float32)
