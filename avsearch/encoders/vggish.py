"""VGGish audio tower (Hershey et al., ICASSP 2017; Apache-2.0), in our own code.

"CNN Architectures for Large-Scale Audio Classification", Shawn Hershey et al., ICASSP 2017:
the AudioSet VGG network of Google's ``tensorflow/models`` ``research/audioset/vggish``, whose
128-d embeddings are the audio features of AVE and VEGAS, the benchmarks of this research
line. The weights are the PyTorch port's (https://github.com/harritaylor/torchvggish, release
v0.1, Apache-2.0): ``vggish-10086976.pth``, a plain state dict (``features.0.weight`` ...
``embeddings.4.bias``), and optionally ``vggish_pca_params-970ea276.pth`` (``pca_eigen_vectors``
``[128, 128]``, ``pca_means`` ``[128]``, stored as numpy arrays), read from a local file only:
nothing is downloaded. :func:`convert` writes either as a ``.safetensors`` file once.

Front-end (``mel_features.py`` / ``vggish_input.py`` / ``vggish_params.py`` of the reference),
on a mono 16 kHz waveform in [-1, 1]: frames of 400 samples (25 ms) every 160 (10 ms), no
centring or padding; a *periodic* Hann window; the magnitude (not power) of a 512-point real
FFT, 257 bins; a 64-band mel matrix on the HTK mel scale ``1127 ln(1 + f / 700)`` whose
triangles are linear in mel between 125 and 7500 Hz, with the reference's quirks (the bin
frequencies are ``linspace(0, 8000, 257)`` and the DC bin's row is zeroed; no area
normalisation); ``log(mel + 0.01)``. Examples are patches of 96 frames x 64 bands (0.96 s),
one every 96 frames; an incomplete trailing patch is dropped.

Network (the torchvggish ``VGG``): 3x3 convolutions with bias and ReLU, 64 -> max-pool 2 ->
128 -> max-pool 2 -> 256, 256 -> max-pool 2 -> 512, 512 -> max-pool 2, on the patch seen as a
``[1, 96, 64]`` image (frames x bands); the ``[512, 6, 4]`` map is flattened in TensorFlow's
(frames, bands, channels) order; then fully connected 12288 -> 4096 -> 4096 -> 128, each
followed by a ReLU as in the torch port (so the raw embedding is non-negative). With the PCA
parameters, each patch embedding is then post-processed as the AudioSet release was: PCA with
whitening ``E (x - mu)``, clipped to [-2, 2] and quantised to 8 bits (values 0..255), as
torchvggish's ``Postprocessor`` does (``quantize=False`` keeps the continuous PCA output).

Tower (:class:`VGGish`, ``[B, N]`` at 16 kHz -> ``[B, 128]``): the native window is one
0.96 s example hop, 15,360 samples. A 96-frame patch reads 15,600 samples (the last frame
ends 240 samples after the 0.96 s), so a row is treated as followed by 240 zero samples and
cut into the reference's patches: a row of exactly ``k`` windows gives ``k`` patches (only the
last two frames of the last patch see some of those zeros), a longer row gives exactly the
reference's patches of it (an incomplete tail is dropped, as the reference drops it), a shorter
row is zero-padded to one patch. The window's vector is the mean of its patch vectors.
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

from avsearch.encoders.files import (
    as_tensors,
    convert_main,
    load_strict,
    read_weights_file,
    require_file,
    run_rows,
    sha256_file,
)
from avsearch.encoders.tower import AudioInput
from avsearch.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = [
    "DIM",
    "FFT_LENGTH",
    "LOG_OFFSET",
    "MEL_MAX_HZ",
    "MEL_MIN_HZ",
    "N_MELS",
    "PATCH_FRAMES",
    "PATCH_SAMPLES",
    "PCA_URL",
    "SAMPLE_RATE",
    "STFT_HOP",
    "STFT_WINDOW",
    "WEIGHTS_URL",
    "WINDOW_SAMPLES",
    "VGGish",
    "VGGishNet",
    "VGGishPCA",
    "convert",
    "load_vggish",
    "log_mel",
    "main",
    "mel_matrix",
    "n_patches",
    "periodic_hann",
]

SAMPLE_RATE = 16_000
STFT_WINDOW = 400  # 25 ms
STFT_HOP = 160  # 10 ms
FFT_LENGTH = 512  # the next power of two above the window
N_BINS = FFT_LENGTH // 2 + 1  # 257
N_MELS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
PATCH_FRAMES = 96  # 0.96 s of 10 ms frames
WINDOW_SAMPLES = PATCH_FRAMES * STFT_HOP  # 15,360: one example hop, 0.96 s
PATCH_SAMPLES = STFT_WINDOW + (PATCH_FRAMES - 1) * STFT_HOP  # 15,600: what one patch reads
DIM = 128
CHUNK = 16  # rows per forward pass in features()
CONV_PLAN: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
FLAT_DIM = 512 * 6 * 4  # the [512, 6, 4] map of a 96 x 64 patch
HIDDEN = 4096
QUANTIZE_MIN = -2.0
QUANTIZE_MAX = 2.0

WEIGHTS_FILE = "vggish-10086976.pth"
PCA_FILE = "vggish_pca_params-970ea276.pth"
RELEASE = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
WEIGHTS_URL = RELEASE + WEIGHTS_FILE
PCA_URL = RELEASE + PCA_FILE
PCA_KEYS = ("pca_eigen_vectors", "pca_means")


# ----------------------------------------------------------------------------- front-end
def periodic_hann(length: int) -> np.ndarray:
    """Hann window of period ``length`` (Matlab's "periodic"; not ``np.hanning``)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi / length * np.arange(length))


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix() -> np.ndarray:
    """The ``[257, 64]`` float64 matrix that turns STFT magnitudes into VGGish mel bands."""
    bins_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, N_BINS))
    edges = np.linspace(_hz_to_mel(MEL_MIN_HZ), _hz_to_mel(MEL_MAX_HZ), N_MELS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # the DC bin contributes to no band (HTK)
    return weights


def n_patches(n_samples: int) -> int:
    """Patches a row of ``n_samples`` gives (module docstring): at least one; ``k`` for a row
    of ``k`` windows; the reference's count for a longer row."""
    padded = max(n_samples, WINDOW_SAMPLES) + PATCH_SAMPLES - WINDOW_SAMPLES
    return (1 + (padded - STFT_WINDOW) // STFT_HOP) // PATCH_FRAMES


def log_mel(waves: torch.Tensor, window: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` (N >= 400) -> ``[B, 1 + (N - 400) // 160, 64]`` VGGish log-mel frames."""
    frames = waves.unfold(-1, STFT_WINDOW, STFT_HOP) * window
    magnitude = torch.fft.rfft(frames, n=FFT_LENGTH).abs()
    return torch.log(magnitude @ mel + LOG_OFFSET)


# ----------------------------------------------------------------------------- network
class VGGishPCA(nn.Module):
    """The AudioSet post-processing of a ``[N, 128]`` embedding batch: PCA with whitening
    ``E (x - mu)``, then (``quantize``) clipped to [-2, 2] and scaled and rounded to 0..255.

    Buffers ``pca_eigen_vectors [128, 128]`` and ``pca_means [128]``, the names of
    ``vggish_pca_params-970ea276.pth``. Rounding has no gradient: fine-tune without it.
    """

    def __init__(self, quantize: bool = True) -> None:
        super().__init__()
        self.quantize = quantize
        self.register_buffer("pca_eigen_vectors", torch.eye(DIM))
        self.register_buffer("pca_means", torch.zeros(DIM))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        x = (embeddings - self.pca_means) @ self.pca_eigen_vectors.T
        if not self.quantize:
            return x
        x = x.clamp(QUANTIZE_MIN, QUANTIZE_MAX) - QUANTIZE_MIN
        return torch.round(x * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))


def _features() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 1
    for step in CONV_PLAN:
        if isinstance(step, int):
            layers += [nn.Conv2d(in_channels, step, kernel_size=3, padding=1), nn.ReLU()]
            in_channels = step
        else:  # "M"
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class VGGishNet(nn.Module):
    """torchvggish's ``VGG``: ``[N, 96, 64]`` log-mel patches -> ``[N, 128]`` raw embeddings.

    Parameter names are the checkpoint's: ``features.{0,3,6,8,11,13}.*`` (convolutions),
    ``embeddings.{0,2,4}.*`` (fully connected).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _features()
        self.embeddings = nn.Sequential(
            nn.Linear(FLAT_DIM, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, DIM),
            nn.ReLU(),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.features(patches.unsqueeze(1))  # [N, 512, 6, 4]
        x = x.permute(0, 2, 3, 1).flatten(1)  # TensorFlow's (frames, bands, channels) order
        return self.embeddings(x)


class VGGish(nn.Module):
    """Waveform windows (mono 16 kHz) -> 128-d VGGish embeddings (module docstring): front-end,
    :class:`VGGishNet` (``net``) and, optionally, :class:`VGGishPCA` (``pproc``).

    :meth:`forward` is the torch path, :meth:`features` the tower's numpy entry point. The
    front-end's window and mel matrix are rebuilt from constants (not in the state dict).
    """

    SAMPLE_RATE = SAMPLE_RATE
    WINDOW_SAMPLES = WINDOW_SAMPLES
    DIM = DIM
    name = "vggish"
    modality = "audio"
    dim = DIM
    input = AudioInput(SAMPLE_RATE, WINDOW_SAMPLES)

    def __init__(self, net: VGGishNet | None = None, pproc: VGGishPCA | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else VGGishNet()
        self.pproc: VGGishPCA | None
        self.register_module("pproc", pproc)
        window = torch.from_numpy(periodic_hann(STFT_WINDOW).astype(np.float32))
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_matrix().astype(np.float32)), False)
        self.eval()

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` (N >= 400) -> ``[B, 1 + (N - 400) // 160, 64]`` log-mel frames."""
        return log_mel(waves, self.window, self.mel)

    def patches(self, waves: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` -> ``[B, P, 96, 64]`` log-mel patches, ``P = n_patches(N)``."""
        if waves.ndim != 2:
            raise ValueError(f"expected waveforms of shape [B, N], got {tuple(waves.shape)}")
        count = n_patches(waves.shape[1])
        length = count * WINDOW_SAMPLES + PATCH_SAMPLES - WINDOW_SAMPLES
        if waves.shape[1] < length:
            waves = F.pad(waves, (0, length - waves.shape[1]))
        spec = self.log_mel(waves[:, :length].float())
        return spec.reshape(waves.shape[0], count, PATCH_FRAMES, N_MELS)

    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """``[N, 96, 64]`` log-mel patches -> ``[N, 128]`` raw embeddings (before PCA)."""
        return self.net(patches)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """``float [B, N]`` at 16 kHz -> ``[B, 128]``: the mean of the row's patch vectors."""
        patches = self.patches(waves)
        batch, count = patches.shape[:2]
        x = self.embed_patches(patches.reshape(batch * count, PATCH_FRAMES, N_MELS))
        if self.pproc is not None:
            x = self.pproc(x)
        return x.reshape(batch, count, DIM).mean(dim=1)

    def features(self, waves: np.ndarray) -> np.ndarray:
        """The tower's numpy entry point: ``float32 [B, n]`` at 16 kHz -> ``float32 [B, 128]``
        (:func:`~avsearch.encoders.files.run_rows`)."""
        return run_rows(self.forward, waves, DIM, CHUNK, next(self.parameters()).device)


# ----------------------------------------------------------------------------- loading
def _weights_state(path: Path) -> dict[str, torch.Tensor]:
    raw = read_weights_file(path, "VGGish", f"{WEIGHTS_FILE} from {WEIGHTS_URL}")
    return as_tensors(raw, path, "VGGish")


def _pca_state(raw: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    state = as_tensors(raw, path, "VGGish PCA")
    means = state.get("pca_means")
    if means is not None and means.numel() == DIM:
        state["pca_means"] = means.reshape(DIM)  # the release stores [128]; the port [128, 1]
    return state


def _pca_module(state: dict[str, torch.Tensor], path: Path, quantize: bool) -> VGGishPCA:
    pproc = VGGishPCA(quantize)
    load_strict(pproc, state, path, "VGGish PCA")
    return pproc


def load_vggish(path: Path, pca: Path | None = None, *, quantize: bool = True) -> VGGish:
    """:class:`VGGish` with ``path``'s weights loaded strictly (``vggish-10086976.pth`` or its
    ``.safetensors`` conversion) and, when ``pca`` is given (``vggish_pca_params-970ea276.pth``
    or its conversion), the AudioSet post-processing; eval mode, on CPU.

    A state dict that also holds ``pproc.*`` (a whole torchvggish model saved with its
    post-processor) gives its PCA too unless ``pca`` is given. Nothing is downloaded: a missing
    file is a one-line :class:`ModelError` naming where to get it.
    """
    path = require_file(path, "VGGish", f"{WEIGHTS_FILE} from {WEIGHTS_URL}")
    pca_raw = None
    if pca is not None:  # the small file first: a missing one fails before the large read
        pca = Path(pca)
        pca_raw = read_weights_file(pca, "VGGish PCA", f"{PCA_FILE} from {PCA_URL}")
    state = _weights_state(path)
    bundled = {k.removeprefix("pproc."): v for k, v in state.items() if k.startswith("pproc.")}
    state = {k: v for k, v in state.items() if not k.startswith("pproc.")}
    net = VGGishNet()
    load_strict(net, state, path, "VGGish")
    pproc = None
    if pca is not None and pca_raw is not None:
        pproc = _pca_module(_pca_state(pca_raw, pca), pca, quantize)
    elif bundled:
        pproc = _pca_module(_pca_state(bundled, path), path, quantize)
    logger.debug("loaded VGGish weights from %s (PCA: %s)", path, pca or bool(bundled))
    return VGGish(net, pproc)


def convert(src: Path, dst: Path | None = None) -> Path:
    """Write the VGGish weights or PCA file ``src`` (``.pth``) as safetensors, same keys
    (PCA means as ``[128]``, values float32), after checking that it loads strictly; ``dst``
    defaults to ``src`` with the suffix ``.safetensors``. Returns ``dst``."""
    from safetensors.torch import save_file

    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_suffix(".safetensors")
    if dst.resolve() == src.resolve():
        raise ModelError(f"{dst}: refusing to overwrite the source file")
    raw = read_weights_file(src, "VGGish", f"{WEIGHTS_FILE} or {PCA_FILE} from {RELEASE}")
    if set(raw) == set(PCA_KEYS):
        state = _pca_state(raw, src)
        _pca_module(state, src, quantize=True)
        kind = "pca"
    else:
        state = as_tensors(raw, src, "VGGish")
        _check_weights(state, src)
        kind = "weights"
    dst.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in state.items()}
    save_file(tensors, str(dst), metadata={"source": src.name, "source_sha256": sha256_file(src)})
    logger.info("wrote %s (VGGish %s, %d tensors)", dst, kind, len(tensors))
    return dst


def _check_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    net = VGGishNet()
    rest = {k: v for k, v in state.items() if not k.startswith("pproc.")}
    load_strict(net, rest, path, "VGGish")
    bundled = {k.removeprefix("pproc."): v for k, v in state.items() if k.startswith("pproc.")}
    if bundled:
        _pca_module(_pca_state(bundled, path), path, quantize=True)


def main(argv: Sequence[str] | None = None) -> int:
    return convert_main(argv, "vggish", "VGGish", f"{WEIGHTS_FILE} or {PCA_FILE}", convert)


if __name__ == "__main__":
    raise SystemExit(main())
