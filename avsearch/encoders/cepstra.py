"""The ``cepstra`` audio tower: an order-keeping cepstral template of a window, to sit beside
the aisfx embedding (the ``aisfx-cepstra`` backbone is the composite ``[aisfx, cepstra]``).

aisfx (a sound-effects network) pools its last feature map with a global max over time: it
says *what kind* of sound a window holds, not *in which order* its sounds come. For speech
that order is what tells words apart across voices (``bench/speaker_probe.py``: a linear
probe reads the digit of a new speaker from the aisfx embedding 58% of the time, from this
template 77%, from both 77% (0.773 and 0.769).

:class:`CepstralTemplate` is the classic isolated-word representation, computed from the
same log-mel frames aisfx sees (``[B, T, 96]``, HTK mel, 0-22.05 kHz):

1. keep the ``bands`` lowest mel bands (56: below 4 kHz, the telephone/speech band);
2. find the active stretch of the window: the first to the last frame whose band energy
   (sum of the compressed log-mel) exceeds ``threshold`` × the window's maximum;
3. cepstra ``1..n_cep`` of those frames (orthonormal DCT-II over the bands; c0, the level,
   is dropped);
4. resample the stretch linearly to ``frames`` frames, whatever its length: the template
   is invariant to speaking rate and to where in the window the sound sits.

The output is ``frames * n_cep`` values, frame-major. A silent window (no energy) gives
zeros. No parameters are learned and no weights file is read; the heads standardise it with
the aisfx features. :class:`CepstraTower` runs it on waveform windows, through the aisfx
front-end (:class:`~avsearch.encoders.audio_frontend.LogMelFrontend`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avsearch.encoders.audio_frontend import (
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    LogMelFrontend,
    run_windows,
)
from avsearch.encoders.tower import AudioInput

__all__ = ["CepstraConfig", "CepstraTower", "CepstralTemplate"]

EMBED_CHUNK = 64


@dataclass(frozen=True)
class CepstraConfig:
    frames: int = 16
    n_cep: int = 13
    bands: int = 56
    threshold: float = 0.3

    @property
    def dim(self) -> int:
        return self.frames * self.n_cep


def _dct_matrix(n: int, ks: range) -> torch.Tensor:
    """Orthonormal DCT-II basis ``[n, len(ks)]``: ``x @ D`` gives coefficients ``ks`` of x."""
    i = torch.arange(n, dtype=torch.float64)
    cols = [
        math.sqrt((1 if k == 0 else 2) / n) * torch.cos(math.pi * k * (2 * i + 1) / (2 * n))
        for k in ks
    ]
    return torch.stack(cols, dim=1).float()


class CepstralTemplate(nn.Module):
    """Log-mel ``[B, T, mel]`` -> time-normalised cepstral template ``[B, frames * n_cep]``."""

    def __init__(self, cfg: CepstraConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or CepstraConfig()
        self.register_buffer(
            "dct", _dct_matrix(self.cfg.bands, range(1, self.cfg.n_cep + 1)), persistent=False
        )

    @property
    def dim(self) -> int:
        return self.cfg.dim

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        if logmel.ndim != 3 or logmel.shape[2] < self.cfg.bands:
            raise ValueError(
                f"expected log-mel [B, T, >= {self.cfg.bands}], got {tuple(logmel.shape)}"
            )
        x = logmel[..., : self.cfg.bands].float()
        b, t = x.shape[:2]
        energy = x.sum(dim=2)  # [B, T]
        peak = energy.amax(dim=1, keepdim=True)
        active = (energy > self.cfg.threshold * peak) & (peak > 0)
        idx = torch.arange(t, device=x.device).expand(b, t)
        first = torch.where(active, idx, t).amin(dim=1).clamp_max(t - 1)
        last = torch.where(active, idx, -1).amax(dim=1).clamp_min(0)
        last = torch.maximum(last, first)
        cep = x @ self.dct  # [B, T, n_cep]
        steps = torch.linspace(0.0, 1.0, self.cfg.frames, device=x.device)
        pos = first[:, None].float() + (last - first)[:, None].float() * steps  # [B, frames]
        lo = pos.floor().long().clamp(0, t - 1)
        hi = (lo + 1).clamp_max(t - 1)
        w = (pos - lo.float()).unsqueeze(2)
        out = _frames(cep, lo) * (1 - w) + _frames(cep, hi) * w  # [B, frames, n_cep]
        return out.reshape(b, -1)


def _frames(cep: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx [B, F]`` of each item's ``cep [B, T, C]`` -> ``[B, F, C]``."""
    return torch.gather(cep, 1, idx.unsqueeze(2).expand(-1, -1, cep.shape[2]))


class CepstraTower(nn.Module):
    """The ``cepstra`` tower: waveform windows (mono 44.1 kHz, 102,400 samples; shorter rows
    zero-padded) -> the ``[B, 208]`` cepstral template of their aisfx log-mel frames."""

    name = "cepstra"
    modality = "audio"
    input = AudioInput(SAMPLE_RATE, WINDOW_SAMPLES)

    def __init__(self, cfg: CepstraConfig | None = None) -> None:
        super().__init__()
        self.frontend = LogMelFrontend()
        self.template = CepstralTemplate(cfg)
        self.dim = self.template.dim
        self.eval()

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if waves.ndim != 2:
            raise ValueError(f"expected waveforms of shape [B, N], got {tuple(waves.shape)}")
        short = WINDOW_SAMPLES - waves.shape[1]
        if short > 0:
            waves = F.pad(waves, (0, short))
        return self.template(self.frontend(waves))

    def features(self, waves: np.ndarray) -> np.ndarray:
        """``float32 [B, n]`` -> ``float32 [B, 208]`` (rows shorter than the block padded)."""
        return run_windows(self.forward, waves, self.dim, EMBED_CHUNK)
