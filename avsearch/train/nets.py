"""The trained networks: two projection heads and one shared cosine classifier.

``AVNets`` bundles the audio head f_a, the visual head f_v (``ProjectionHead``: standardise,
MLP, L2-normalise) and the classifier g shared by both modalities, so a teacher can be one
deep copy of the whole student. The towers' inputs are the frozen backbones' features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avsearch.encoders.heads import HeadConfig, ProjectionHead


class CosineClassifier(nn.Module):
    """g(e) = s · cos(e, w_c) for every class c: logits of an L2-normalised embedding."""

    def __init__(self, dim: int, n_classes: int, scale: float = 16.0) -> None:
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)

    def forward(self, emb: Tensor) -> Tensor:
        return self.scale * F.normalize(emb, dim=-1) @ F.normalize(self.weight, dim=-1).T


class AVNets(nn.Module):
    def __init__(
        self,
        audio: HeadConfig,
        visual: HeadConfig,
        n_classes: int,
        classifier_scale: float,
    ) -> None:
        super().__init__()
        if audio.out_dim != visual.out_dim:
            raise ValueError(f"head output dims differ: {audio.out_dim} vs {visual.out_dim}")
        self.audio = ProjectionHead(audio)
        self.visual = ProjectionHead(visual)
        self.classifier = CosineClassifier(audio.out_dim, n_classes, classifier_scale)

    def head(self, modality: str) -> ProjectionHead:
        return self.audio if modality == "audio" else self.visual

    def forward(self, audio: Tensor, visual: Tensor) -> tuple[Tensor, Tensor]:
        """(x, z): the L2-normalised audio and visual embeddings."""
        return self.audio(audio), self.visual(visual)

    @torch.no_grad()
    def distributions(
        self, audio: Tensor, visual: Tensor, temperature: float
    ) -> tuple[Tensor, Tensor]:
        """(p_a, p_v) = softmax(g(f_a(a)) / τ), softmax(g(f_v(v)) / τ)."""
        x, z = self(audio, visual)
        p_a = F.softmax(self.classifier(x) / temperature, dim=-1)
        p_v = F.softmax(self.classifier(z) / temperature, dim=-1)
        return p_a, p_v
