"""Projection heads: MLPs mapping each backbone's features into one shared, L2-normalised space.

Input standardisation (a per-feature mean and std, fitted on training features) is part of the
head: the aisfx features are non-negative (max-pooled ReLU outputs) and must be centred before
cosine similarity means anything.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avsearch.encoders.head_config import HeadConfig

__all__ = ["HeadConfig", "ProjectionHead"]


class ProjectionHead(nn.Module):
    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(cfg.in_dim))
        self.register_buffer("std", torch.ones(cfg.in_dim))
        self.net = nn.Sequential(
            nn.Linear(cfg.in_dim, cfg.hidden),
            nn.LayerNorm(cfg.hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.out_dim),
        )

    def fit_normalisation(self, features: torch.Tensor, eps: float = 1e-4) -> None:
        """Set the input standardisation from a [N, in_dim] sample of training features."""
        with torch.no_grad():
            self.mean.copy_(features.mean(dim=0))
            self.std.copy_(features.std(dim=0).clamp_min(eps))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised output (for losses that want it)."""
        return self.net((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(x), dim=-1)
