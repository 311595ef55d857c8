"""One batch of the objective: which parts run, and the batch split by the labeled share."""

from __future__ import annotations

import pytest
import torch

from avsearch.encoders.heads import HeadConfig
from avsearch.train.config import for_method
from avsearch.train.nets import AVNets
from avsearch.train.objective import Objective, split_batch
from avsearch.train.teacher import make_teacher


def test_split_batch() -> None:
    codes = torch.tensor([2, -1, 0, 1, -1, 3, 0, -1])
    use, soft = split_batch(codes, 1.0)
    assert use.tolist() == [0, 2, 3, 5, 6] and sorted(soft.tolist()) == [1, 4, 7]
    use, soft = split_batch(codes, 0.5)  # ceil(0.5 · 5) = 3 labels kept
    assert use.tolist() == [0, 2, 3] and sorted(soft.tolist()) == [1, 4, 5, 6, 7]
    use, soft = split_batch(codes, 0.01)
    assert use.tolist() == [0]


def batch() -> tuple[AVNets, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    nets = AVNets(HeadConfig(6, 4, 8, 0.0), HeadConfig(5, 4, 8, 0.0), 3, 16.0)
    a, v = torch.randn(12, 6), torch.randn(12, 5)
    codes = torch.tensor([0, 1, 2, 0, 1, 2, -1, -1, -1, -1, -1, -1])
    return nets, a, v, codes


@pytest.mark.parametrize(
    ("method", "w_soft", "parts"),
    [
        ("supervised", 1.0, {"lab"}),
        ("triplet", 1.0, {"lab", "cross_hard"}),
        ("psd", 0.0, {"lab", "cross_hard", "dis"}),
        ("psd", 0.5, {"lab", "cross_hard", "cross_soft", "sd", "dis"}),
        ("infonce", 0.0, {"lab", "nce"}),
    ],
)
def test_parts_by_method(method: str, w_soft: float, parts: set[str]) -> None:
    nets, a, v, codes = batch()
    cfg = for_method(method, margin=0.5, soft_pos_threshold=0.3, soft_neg_threshold=0.2)
    objective = Objective(cfg, 3)
    out = objective(nets, make_teacher("ema", nets), a, v, codes, 1.0, w_soft)
    assert set(out.parts) == parts
    weights = {
        "lab": 1.0,
        "cross_hard": 1.0,
        "cross_soft": w_soft,
        "sd": cfg.w_sd * w_soft,
        "dis": cfg.w_dis,
        "nce": cfg.w_nce,
    }
    expected = sum(weights[k] * float(t.detach()) for k, t in out.parts.items())
    assert float(out.total.detach()) == pytest.approx(expected, rel=1e-6)
    out.total.backward()
    assert all(p.grad is not None for p in nets.audio.parameters())
    if "cross_soft" in parts:
        assert out.triplets["soft"] > 0  # at least the own pairs of the 6 unlabeled items


def test_soft_part_off_when_no_soft_items() -> None:
    nets, a, v, codes = batch()
    labeled_only = codes.clamp_min(0)
    out = Objective(for_method("psd"), 3)(
        nets, make_teacher("ema", nets), a, v, labeled_only, 1.0, 1.0
    )
    assert "cross_soft" not in out.parts and "sd" not in out.parts


def test_infonce_without_labels_is_the_pairs_alone() -> None:
    nets, a, v, codes = batch()
    out = Objective(for_method("infonce"), 3)(
        nets, make_teacher("ema", nets), a, v, torch.full_like(codes, -1), 1.0, 0.0
    )
    assert set(out.parts) == {"nce"}
    # own pairs only: the CLIP loss of the batch
    x, z = nets(a, v)
    logits = x @ z.T / 0.1
    target = torch.arange(12)
    clip = 0.5 * (
        torch.nn.functional.cross_entropy(logits, target)
        + torch.nn.functional.cross_entropy(logits.T, target)
    )
    assert float(out.parts["nce"].detach()) == pytest.approx(float(clip.detach()), rel=1e-5)
