"""Miners: under ``no_grad`` they pick cross-modal index triplets for a triplet loss.

A miner looks at query embeddings (one modality) and reference embeddings (the other) and
returns ``Triplets(anchor, positive, negative[, weight])``: anchors index the query rows,
positives and negatives index the reference rows. Both miners share one selection rule
(``strategy``), given masks of candidate positives and negatives per anchor:

- ``hard``: per anchor, the farthest candidate positive and the closest candidate negative
  (batch-hard); one triplet per anchor that has both.
- ``semihard``: per (anchor, positive) pair, the closest candidate negative that is farther
  than the positive but within the margin (d_ap < d_an < d_ap + m); pairs without such a
  negative give no triplet.

``LabelTripletMiner`` takes candidates from labels (same label = positive, other label =
negative). ``SoftAlignmentMiner`` takes them from soft alignment scores s_ij = p_q(i)·p_r(j)
of teacher class distributions (own pair counted as s_ii = 1): positive if s_ij ≥ τ_pos,
negative if s_ij ≤ τ_neg; each triplet is weighted s_ip · (1 − s_in).
"""

from __future__ import annotations

import torch
from torch import Tensor

from avsearch.train.losses import CosineDistance, Triplets

STRATEGIES = ("hard", "semihard")


def _select(
    dist: Tensor, pos: Tensor, neg: Tensor, strategy: str, margin: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(anchor, positive, negative) indices from distances [Q, R] and candidate masks."""
    inf = torch.tensor(float("inf"), dtype=dist.dtype)
    if strategy == "hard":
        ok = pos.any(dim=1) & neg.any(dim=1)
        p = torch.where(pos, dist, -inf).argmax(dim=1)
        n = torch.where(neg, dist, inf).argmin(dim=1)
        a = torch.nonzero(ok).flatten()
        return a, p[a], n[a]
    if strategy == "semihard":
        a, p = torch.nonzero(pos, as_tuple=True)
        if a.numel() == 0:
            return a, p, p
        d_ap = dist[a, p][:, None]
        d_an = dist[a]
        cand = neg[a] & (d_an > d_ap) & (d_an < d_ap + margin)
        n = torch.where(cand, d_an, inf).argmin(dim=1)
        keep = cand.any(dim=1)
        return a[keep], p[keep], n[keep]
    raise ValueError(f"unknown mining strategy {strategy!r}; use one of {STRATEGIES}")


def _check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mining strategy {strategy!r}; use one of {STRATEGIES}")
    return strategy


class LabelTripletMiner:
    """Cross-modal triplets from labels: positive = same label, negative = another label."""

    def __init__(
        self,
        strategy: str = "semihard",
        margin: float = 0.2,
        distance: CosineDistance | None = None,
    ) -> None:
        self.strategy = _check_strategy(strategy)
        self.margin = margin
        self.distance = distance or CosineDistance()

    @torch.no_grad()
    def mine(
        self, query: Tensor, query_labels: Tensor, ref: Tensor, ref_labels: Tensor
    ) -> Triplets:
        if query.shape[0] == 0 or ref.shape[0] == 0:
            return Triplets.empty()
        dist = self.distance.pairwise(query.detach(), ref.detach())
        same = query_labels[:, None] == ref_labels[None, :]
        a, p, n = _select(dist, same, ~same, self.strategy, self.margin)
        return Triplets(a, p, n)

    __call__ = mine


def soft_alignment(query_probs: Tensor, ref_probs: Tensor, own: Tensor | None = None) -> Tensor:
    """s_ij = p_q(i) · p_r(j), in [0, 1]; s[i, own[i]] = 1 (a pair is aligned with itself)."""
    s = query_probs @ ref_probs.T
    if own is not None:
        s = s.clone()
        s[torch.arange(len(own)), own] = 1.0
    return s.clamp(0.0, 1.0)


class SoftAlignmentMiner:
    """Soft cross-modal triplets from teacher distributions, weighted by alignment."""

    def __init__(
        self,
        strategy: str = "hard",
        margin: float = 0.2,
        pos_threshold: float = 0.5,
        neg_threshold: float = 0.1,
        distance: CosineDistance | None = None,
    ) -> None:
        if not 0 <= neg_threshold < pos_threshold <= 1:
            raise ValueError("need 0 ≤ neg_threshold < pos_threshold ≤ 1")
        self.strategy = _check_strategy(strategy)
        self.margin = margin
        self.pos_threshold = pos_threshold
        self.neg_threshold = neg_threshold
        self.distance = distance or CosineDistance()

    @torch.no_grad()
    def mine(
        self,
        query: Tensor,
        query_probs: Tensor,
        ref: Tensor,
        ref_probs: Tensor,
        own: Tensor | None = None,
    ) -> Triplets:
        """``own[i]``: the reference row paired with query row i (its own pair), if any."""
        if query.shape[0] == 0 or ref.shape[0] == 0:
            return Triplets.empty()
        s = soft_alignment(query_probs.detach(), ref_probs.detach(), own)
        pos = s >= self.pos_threshold
        neg = s <= self.neg_threshold
        dist = self.distance.pairwise(query.detach(), ref.detach())
        a, p, n = _select(dist, pos, neg, self.strategy, self.margin)
        weight = s[a, p] * (1.0 - s[a, n])
        return Triplets(a, p, n, weight)

    __call__ = mine
