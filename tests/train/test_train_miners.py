"""Miners return valid cross-modal index triplets that respect labels / soft alignments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from avsearch.train.losses import CosineDistance
from avsearch.train.miners import LabelTripletMiner, SoftAlignmentMiner, soft_alignment


def seeded(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


@pytest.mark.parametrize("strategy", ["hard", "semihard"])
def test_label_miner_valid_triplets(strategy: str) -> None:
    q, r = seeded(20, 6, 0), seeded(15, 6, 1)
    ql = torch.arange(20) % 3
    rl = torch.arange(15) % 3
    t = LabelTripletMiner(strategy, margin=0.5).mine(q, ql, r, rl)
    assert len(t) > 0
    assert int(t.anchor.max()) < 20 and int(t.positive.max()) < 15 and int(t.negative.max()) < 15
    assert torch.equal(ql[t.anchor], rl[t.positive])
    assert not (ql[t.anchor] == rl[t.negative]).any()
    d = CosineDistance().pairwise(q, r)
    d_ap, d_an = d[t.anchor, t.positive], d[t.anchor, t.negative]
    if strategy == "semihard":
        assert (d_an > d_ap).all() and (d_an < d_ap + 0.5).all()
    else:
        assert len(t) == 20  # one triplet per anchor
        for a, p, n in zip(t.anchor, t.positive, t.negative, strict=True):
            same = rl == ql[a]
            assert d[a, p] == d[a][same].max()
            assert d[a, n] == d[a][~same].min()


def test_label_miner_hard_by_hand() -> None:
    q = torch.tensor([[1.0, 0.0]])
    r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    t = LabelTripletMiner("hard").mine(q, torch.tensor([0]), r, torch.tensor([0, 0, 1, 1]))
    # farthest positive: r1 (d = 1); closest negative: r2 (d = 0.4)
    assert (t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()) == ([0], [1], [2])


def test_label_miner_no_negative_gives_nothing() -> None:
    q, r = seeded(4, 3, 0), seeded(4, 3, 1)
    labels = torch.zeros(4, dtype=torch.long)
    assert len(LabelTripletMiner("hard").mine(q, labels, r, labels)) == 0
    assert len(LabelTripletMiner("semihard").mine(q, labels, r, labels)) == 0


def test_miners_run_without_grad() -> None:
    q = seeded(6, 4, 0).requires_grad_(True)
    r = seeded(6, 4, 1)
    t = LabelTripletMiner("hard").mine(q, torch.arange(6) % 2, r, torch.arange(6) % 2)
    assert not t.anchor.requires_grad
    p = torch.full((6, 2), 0.5)
    s = SoftAlignmentMiner().mine(q, p, r, p, own=torch.arange(6))
    assert s.weight is None or not s.weight.requires_grad


def test_soft_alignment_counts_own_pair() -> None:
    p_q = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    p_r = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    s = soft_alignment(p_q, p_r, own=torch.tensor([1, 2]))
    assert s[0, 0].item() == pytest.approx(0.82)
    assert s[0, 1].item() == 1.0  # own pair, although the distributions disagree
    assert s[1, 2].item() == 1.0
    assert s[1, 0].item() == pytest.approx(0.5)


def test_soft_miner_by_hand() -> None:
    # Query 0 leans to class 0 (p = [.9, .1]); its own pair is ref 2. s with ref 0 = .9
    # (positive), with ref 1 = .1 (negative at threshold .1), with ref 2 = 1 (own pair).
    q = torch.tensor([[1.0, 0.0]])
    r = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    p_q = torch.tensor([[0.9, 0.1]])
    p_r = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    t = SoftAlignmentMiner("hard", pos_threshold=0.5, neg_threshold=0.1).mine(
        q, p_q, r, p_r, own=torch.tensor([2])
    )
    # positives {0 (s .9, d 1), 2 (own, d .4)} → farthest = 0; negatives {1 (s .1)} → 1.
    assert (t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()) == ([0], [0], [1])
    assert t.weight is not None
    assert t.weight.tolist() == pytest.approx([0.9 * (1 - 0.1)])


@pytest.mark.parametrize("strategy", ["hard", "semihard"])
def test_soft_miner_respects_thresholds(strategy: str) -> None:
    g = torch.Generator().manual_seed(3)
    p_q = torch.softmax(3 * torch.randn(12, 4, generator=g), dim=-1)
    p_r = torch.softmax(3 * torch.randn(10, 4, generator=g), dim=-1)
    own = torch.tensor([i % 10 for i in range(12)])
    q, r = seeded(12, 5, 4), seeded(10, 5, 5)
    miner = SoftAlignmentMiner(strategy, margin=1.0, pos_threshold=0.4, neg_threshold=0.2)
    t = miner.mine(q, p_q, r, p_r, own=own)
    s = soft_alignment(p_q, p_r, own)
    assert len(t) > 0 and t.weight is not None
    assert (s[t.anchor, t.positive] >= 0.4).all()
    assert (s[t.anchor, t.negative] <= 0.2).all()
    expected = s[t.anchor, t.positive] * (1 - s[t.anchor, t.negative])
    assert torch.allclose(t.weight, expected)
