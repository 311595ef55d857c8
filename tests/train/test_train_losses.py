"""Losses checked against values worked out by hand on tiny embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from avsearch.train.losses import (
    CosineDistance,
    CrossModalInfoNCELoss,
    CrossModalTripletLoss,
    DecorrelationLoss,
    DistillationLoss,
    LabelLoss,
    PairedDistanceLoss,
    Triplets,
    avg_nonzero_reducer,
    label_positives,
)


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def idx(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def test_cosine_distance_by_hand() -> None:
    d = CosineDistance()
    q, r = t([1, 0]), t([1, 0], [0, 1], [-1, 0], [3, 3])
    expected = [[0.0, 1.0, 2.0, 1 - 1 / math.sqrt(2)]]
    assert torch.allclose(d.pairwise(q, r), torch.tensor(expected, dtype=torch.float64))
    assert torch.allclose(d.paired(t([2, 0], [0, 1]), t([0, 5], [0, 1])), t([1.0, 0.0])[0])


def test_triplet_known_violation() -> None:
    # audio 0 = (1, 0); visual 0 = (0, 1) is its positive at d = 1, visual 1 = (1, 0) its
    # negative at d = 0: loss = max(0, 1 − 0 + 0.2) = 1.2. The reverse direction: visual 0
    # anchor, audio 1 = (0, 1) positive (d = 0), audio 0 negative (d = 1): max(0, 0 − 1 + 0.2)
    # = 0. Mean over the two triplets = 0.6.
    audio, visual = t([1, 0], [0, 1]), t([0, 1], [1, 0])
    loss = CrossModalTripletLoss(margin=0.2)
    a2v = Triplets(idx(0), idx(0), idx(1))
    v2a = Triplets(idx(0), idx(1), idx(0))
    assert loss(audio, visual, a2v, Triplets.empty()).item() == pytest.approx(1.2)
    assert loss(audio, visual, a2v, v2a).item() == pytest.approx(0.6)
    nonzero = CrossModalTripletLoss(margin=0.2, reducer=avg_nonzero_reducer)
    assert nonzero(audio, visual, a2v, v2a).item() == pytest.approx(1.2)


def test_triplet_weights_and_gradient() -> None:
    audio = t([1, 0]).requires_grad_(True)
    visual = t([0, 1], [1, 0])
    a2v = Triplets(idx(0, 0), idx(0, 0), idx(1, 1), torch.tensor([0.5, 1.0]))
    loss = CrossModalTripletLoss(margin=0.2)(audio, visual, a2v, Triplets.empty())
    assert loss.item() == pytest.approx((0.5 * 1.2 + 1.0 * 1.2) / 2)
    loss.backward()
    assert audio.grad is not None and torch.isfinite(audio.grad).all()


def test_triplet_without_triplets_is_zero_with_graph() -> None:
    audio = t([1, 0]).requires_grad_(True)
    loss = CrossModalTripletLoss()(audio, t([0, 1]), Triplets.empty(), Triplets.empty())
    assert loss.item() == 0.0
    loss.backward()


def test_kl_known_value() -> None:
    # KL([.5, .5] ‖ [.25, .75]) = .5 ln 2 + .5 ln(2/3) = .5 ln(4/3).
    teacher = torch.tensor([[0.5, 0.5]])
    logits = torch.log(torch.tensor([[0.25, 0.75]]))
    assert DistillationLoss(1.0)(logits, teacher).item() == pytest.approx(0.5 * math.log(4 / 3))
    # At τ = 2 the student is softmax(s / 2) and the KL is scaled by τ² = 4.
    q = torch.softmax(logits / 2, dim=-1)[0]
    expected = 4 * float((teacher[0] * (teacher[0] / q).log()).sum())
    # (both sides in float32, computed differently: equal to float32 precision, not bit for bit;
    # on some CPUs they differ by 1.2e-6 relative)
    assert DistillationLoss(2.0)(logits, teacher).item() == pytest.approx(expected, rel=1e-5)
    assert DistillationLoss(1.0)(torch.log(teacher), teacher).item() == pytest.approx(0.0)


def test_decorrelation_identity_is_zero() -> None:
    # Columns standardised over the batch and orthogonal: C = I, so the loss is 0.
    x = t([1, 1], [1, -1], [-1, 1], [-1, -1])
    assert DecorrelationLoss()(x, x.clone()).item() == pytest.approx(0.0, abs=1e-8)


def test_decorrelation_by_hand() -> None:
    # z swaps the two dimensions of x: C = [[0, 1], [1, 0]], so (1/D)(2·1² + λ·2·1²).
    x = t([1, 1], [1, -1], [-1, 1], [-1, -1])
    z = x[:, [1, 0]]
    assert DecorrelationLoss(0.5)(x, z).item() == pytest.approx((2 + 0.5 * 2) / 2, rel=1e-4)


def test_paired_distance_and_label_loss() -> None:
    x, z = t([1, 0], [0, 1]), t([0, 1], [0, 1])
    assert PairedDistanceLoss()(x, z).item() == pytest.approx(1.0)  # (2 + 0) / 2
    logits = torch.tensor([[0.0, 0.0]])
    ce = LabelLoss()(logits, logits, torch.tensor([1]))
    assert ce.item() == pytest.approx(math.log(2))


def test_infonce_by_hand() -> None:
    # x = (1, 0), (0, 1); z = (1, 0), (0, 1): S = diag(1, 1) / τ with τ = 0.5, so
    # S = [[2, 0], [0, 2]]. Own pairs only: every row and column is −log(e² / (e² + 1)).
    x = t([1, 0], [0, 1])
    eye = torch.eye(2, dtype=torch.bool)
    loss = CrossModalInfoNCELoss(0.5)(x, x.clone(), eye)
    own = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert float(loss) == pytest.approx(own)
    # both items positives of each other: target ½, ½ per row: −½ [log p + log(1 − p)]
    p = math.exp(2) / (math.exp(2) + 1)
    both = CrossModalInfoNCELoss(0.5)(x, x.clone(), torch.ones(2, 2, dtype=torch.bool))
    assert float(both) == pytest.approx(-0.5 * (math.log(p) + math.log(1 - p)))
    # the two directions differ when P is not symmetric in its counts: rows of audio 0 have
    # 2 positives, column 1 has 2
    pos = torch.tensor([[True, True], [False, True]])
    x2, z2 = t([1, 0], [0.6, 0.8]), t([0, 1], [1, 0])
    s = (x2 @ z2.T) / 0.5
    ls_r, ls_c = torch.log_softmax(s, 1), torch.log_softmax(s, 0)
    a2v = -(0.5 * (ls_r[0, 0] + ls_r[0, 1]) + ls_r[1, 1]) / 2
    v2a = -(ls_c[0, 0] + 0.5 * (ls_c[0, 1] + ls_c[1, 1])) / 2
    got = CrossModalInfoNCELoss(0.5)(x2, z2, pos)
    assert float(got) == pytest.approx(float(0.5 * (a2v + v2a)))


def test_infonce_needs_a_positive_everywhere_and_has_gradients() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match="at least one positive"):
        CrossModalInfoNCELoss()(x, z, torch.zeros(3, 3, dtype=torch.bool))
    CrossModalInfoNCELoss()(x, z, torch.eye(3, dtype=torch.bool)).backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    empty = CrossModalInfoNCELoss()(x[:0], z[:0], torch.zeros(0, 0, dtype=torch.bool))
    assert float(empty.detach()) == 0.0


def test_label_positives() -> None:
    codes = idx(0, 1, 0, -1, 0)
    known = torch.tensor([True, True, True, False, False])  # item 4: label hidden
    pos = label_positives(codes, known)
    expected = [
        [1, 0, 1, 0, 0],
        [0, 1, 0, 0, 0],
        [1, 0, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1],
    ]
    assert pos.tolist() == [[bool(v) for v in row] for row in expected]
