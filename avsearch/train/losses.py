"""Distances, index triplets, reducers and the training losses (docs/method.md).

Composed like pytorch-metric-learning: a loss takes a ``distance`` and a ``reducer``; miners
(``avsearch.train.miners``) return ``Triplets`` of indices that a loss consumes. Cross-modal
triplets index two tensors: anchors index the query modality, positives and negatives the
other one (``a2v``: audio anchors vs visual positives/negatives; ``v2a`` the reverse).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Reducer = Callable[[Tensor, Tensor | None], Tensor]


class CosineDistance:
    """d(u, v) = 1 − cos(u, v), in [0, 2]."""

    def pairwise(self, query: Tensor, ref: Tensor) -> Tensor:
        """[Q, R] distances between every query row and every reference row."""
        return 1.0 - F.normalize(query, dim=-1) @ F.normalize(ref, dim=-1).T

    def paired(self, x: Tensor, y: Tensor) -> Tensor:
        """[N] distances between row i of x and row i of y."""
        return 1.0 - (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(dim=-1)


@dataclass(frozen=True)
class Triplets:
    """Index triplets (anchor in the query tensor; positive, negative in the reference one)."""

    anchor: Tensor
    positive: Tensor
    negative: Tensor
    weight: Tensor | None = None

    def __len__(self) -> int:
        return int(self.anchor.numel())

    @staticmethod
    def empty() -> Triplets:
        z = torch.zeros(0, dtype=torch.long)
        return Triplets(z, z, z)

    def remap(self, query_index: Tensor | None, ref_index: Tensor | None) -> Triplets:
        """Translate indices into a subset to indices into the full tensors."""
        a = self.anchor if query_index is None else query_index[self.anchor]
        p = self.positive if ref_index is None else ref_index[self.positive]
        n = self.negative if ref_index is None else ref_index[self.negative]
        return Triplets(a, p, n, self.weight)


def mean_reducer(losses: Tensor, weights: Tensor | None) -> Tensor:
    """Mean over triplets of w·l (w = 1 without weights); 0 when there is no triplet."""
    if losses.numel() == 0:
        return losses.sum()
    return (losses if weights is None else losses * weights).mean()


def avg_nonzero_reducer(losses: Tensor, weights: Tensor | None) -> Tensor:
    """Mean of w·l over the triplets that still violate the margin (l > 0)."""
    terms = losses if weights is None else losses * weights
    active = losses > 0
    if not bool(active.any()):
        return losses.sum() * 0.0
    return terms[active].sum() / active.sum()


class CrossModalTripletLoss(nn.Module):
    """l = reduce over triplets (a, p, n) of w · max(0, d(q_a, r_p) − d(q_a, r_n) + m)."""

    def __init__(
        self,
        margin: float = 0.2,
        distance: CosineDistance | None = None,
        reducer: Reducer = mean_reducer,
    ) -> None:
        super().__init__()
        self.margin = margin
        self.distance = distance or CosineDistance()
        self.reducer = reducer

    def terms(self, query: Tensor, ref: Tensor, t: Triplets) -> Tensor:
        """Per-triplet hinge losses (unweighted), shape [len(t)]."""
        if len(t) == 0:
            return query.new_zeros(0)
        qa = query[t.anchor]
        d_ap = self.distance.paired(qa, ref[t.positive])
        d_an = self.distance.paired(qa, ref[t.negative])
        return F.relu(d_ap - d_an + self.margin)

    def forward(self, audio: Tensor, visual: Tensor, a2v: Triplets, v2a: Triplets) -> Tensor:
        losses = torch.cat([self.terms(audio, visual, a2v), self.terms(visual, audio, v2a)])
        weights = _cat_weights(a2v, v2a, audio)
        out = self.reducer(losses, weights)
        if losses.numel() == 0:
            return (audio.sum() + visual.sum()) * 0.0
        return out


def _cat_weights(a2v: Triplets, v2a: Triplets, like: Tensor) -> Tensor | None:
    if a2v.weight is None and v2a.weight is None:
        return None
    parts = [t.weight if t.weight is not None else like.new_ones(len(t)) for t in (a2v, v2a)]
    return torch.cat(parts).to(like.dtype)


class LabelLoss(nn.Module):
    """l_lab = ½ [CE(g(x_i), y_i) + CE(g(z_i), y_i)], means over the labeled items in use."""

    def forward(self, audio_logits: Tensor, visual_logits: Tensor, labels: Tensor) -> Tensor:
        return 0.5 * (
            F.cross_entropy(audio_logits, labels) + F.cross_entropy(visual_logits, labels)
        )


class DistillationLoss(nn.Module):
    """l_sd = τ² · mean_i KL(p_T,i ‖ softmax(s_i / τ)) — teacher probabilities as targets."""

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, student_logits: Tensor, teacher_probs: Tensor) -> Tensor:
        if student_logits.shape[0] == 0:
            return student_logits.sum() * 0.0
        log_q = F.log_softmax(student_logits / self.temperature, dim=-1)
        kl = F.kl_div(log_q, teacher_probs, reduction="batchmean")
        return kl * self.temperature**2


class DecorrelationLoss(nn.Module):
    """Barlow-Twins cross-correlation of audio vs visual embeddings pushed to the identity.

    Each embedding dimension is standardised over the batch (mean 0, biased std 1), then
    C = X̂ᵀ Ẑ / B and l_dis = (1/D) [Σ_k (1 − C_kk)² + λ Σ_{k≠l} C_kl²].
    """

    def __init__(self, offdiag_weight: float = 5e-3, eps: float = 1e-5) -> None:
        super().__init__()
        self.offdiag_weight = offdiag_weight
        self.eps = eps

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        n, d = x.shape
        if n < 2:
            return (x.sum() + z.sum()) * 0.0
        xs = (x - x.mean(0)) / (x.std(0, unbiased=False) + self.eps)
        zs = (z - z.mean(0)) / (z.std(0, unbiased=False) + self.eps)
        c = xs.T @ zs / n
        diag = torch.diagonal(c)
        on = (1.0 - diag).pow(2).sum()
        off = c.pow(2).sum() - diag.pow(2).sum()
        return (on + self.offdiag_weight * off) / d


class PairedDistanceLoss(nn.Module):
    """l_dis (paired variant) = mean_i ‖x_i − z_i‖²."""

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        if x.shape[0] == 0:
            return (x.sum() + z.sum()) * 0.0
        return (x - z).pow(2).sum(dim=-1).mean()


class CrossModalInfoNCELoss(nn.Module):
    """Supervised cross-modal InfoNCE over a batch of audio and visual embeddings.

    With logits S_ij = cos(x_i, z_j) / τ and a boolean positive matrix P (P_ij: audio i and
    visual j match; every row and column needs at least one), the target of audio anchor i is
    uniform over its positives, and likewise for visual anchor j:

        l_nce = ½ [ mean_i −Σ_j (P_ij / |P_i·|) log softmax_j(S_i·)
                  + mean_j −Σ_i (P_ij / |P_·j|) log softmax_i(S_·j) ]
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, x: Tensor, z: Tensor, positives: Tensor) -> Tensor:
        if x.shape[0] == 0:
            return (x.sum() + z.sum()) * 0.0
        pos = positives.to(x.dtype)
        if bool((pos.sum(1) == 0).any()) or bool((pos.sum(0) == 0).any()):
            raise ValueError("every audio and every visual item needs at least one positive")
        logits = F.normalize(x, dim=-1) @ F.normalize(z, dim=-1).T / self.temperature
        a2v = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
        v2a = -(pos / pos.sum(0, keepdim=True) * F.log_softmax(logits, dim=0)).sum(0).mean()
        return 0.5 * (a2v + v2a)


def label_positives(codes: Tensor, known: Tensor) -> Tensor:
    """[B, B] positives of a batch: pair i with itself, and with every pair j of the same
    label when both labels are known (``known``; ``codes`` < 0 are unknown)."""
    both = known[:, None] & known[None, :]
    same = (codes[:, None] == codes[None, :]) & both
    return same | torch.eye(len(codes), dtype=torch.bool, device=codes.device)
