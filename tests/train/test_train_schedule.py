"""Schedules at given epochs, and the teacher's update rules."""

from __future__ import annotations

import pytest
import torch

from avsearch.encoders.heads import HeadConfig
from avsearch.train.nets import AVNets
from avsearch.train.schedule import (
    constant,
    cosine_lr,
    labeled_share,
    one_cycle,
    progress,
    soft_weight,
)
from avsearch.train.teacher import EMATeacher, SnapshotTeacher, make_teacher


def test_progressive_schedule_at_epochs() -> None:
    r = labeled_share(warmup_epochs=2, ramp_epochs=4, floor=0.2)
    w = soft_weight(warmup_epochs=2, ramp_epochs=4)
    expected_r = {0: 1.0, 1: 1.0, 2: 0.8, 3: 0.6, 4: 0.4, 5: 0.2, 6: 0.2, 50: 0.2}
    expected_w = {0: 0.0, 1: 0.0, 2: 0.25, 3: 0.5, 4: 0.75, 5: 1.0, 9: 1.0}
    for epoch, value in expected_r.items():
        assert r(epoch) == pytest.approx(value), epoch
    for epoch, value in expected_w.items():
        assert w(epoch) == pytest.approx(value), epoch


def test_schedule_without_ramp_is_a_step() -> None:
    t = progress(3, 0)
    assert [t(e) for e in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert labeled_share(0, 0, 0.5)(0) == 0.5
    assert soft_weight(1, 2, max_weight=2.0)(1) == pytest.approx(1.0)
    assert constant(0.3)(99) == 0.3
    with pytest.raises(ValueError):
        labeled_share(1, 1, 0.0)


def test_cosine_lr() -> None:
    lr = cosine_lr(1.0, 10, min_factor=0.1)
    assert lr(0) == pytest.approx(1.0)
    assert lr(5) == pytest.approx(0.55)
    assert lr(10) == pytest.approx(0.1)
    assert all(lr(e) > lr(e + 1) for e in range(9))


def nets() -> AVNets:
    torch.manual_seed(0)
    return AVNets(HeadConfig(3, 2, 4, 0.5), HeadConfig(5, 2, 4, 0.5), 3, 16.0)


def test_ema_teacher_update_and_eval_mode() -> None:
    student = nets()
    teacher = make_teacher("ema", student, decay=0.9)
    assert isinstance(teacher, EMATeacher)
    assert not teacher.module.training
    assert all(not p.requires_grad for p in teacher.module.parameters())

    def perturb() -> None:
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))
            student.audio.mean.add_(1.0)

    perturb()
    teacher.step(student)  # k = 1: d_1 = min(0.9, 0) = 0, the teacher copies the student
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in student.state_dict().items())
    expected_decay = {2: 0.5, 3: 2 / 3, 50: 0.9}
    for k in range(2, 51):
        before = {key: v.clone() for key, v in teacher.state_dict().items()}
        perturb()
        student.train()
        teacher.step(student)
        if k not in expected_decay:
            continue
        d = expected_decay[k]
        after = teacher.state_dict()
        for key, s in student.state_dict().items():
            if key.endswith(("mean", "std")):
                assert torch.equal(after[key], s)  # buffers are copied
            else:
                assert torch.allclose(after[key], d * before[key] + (1 - d) * s, atol=1e-6)
    assert int(teacher.state_dict()["ema_updates"]) == 50
    assert not teacher.module.training
    p_a, p_v = teacher.distributions(torch.randn(4, 3), torch.randn(4, 5), 2.0)
    assert p_a.shape == (4, 3) and torch.allclose(p_a.sum(-1), torch.ones(4))
    assert not p_v.requires_grad
    clone = make_teacher("ema", nets(), decay=0.9)
    clone.load_state_dict(teacher.state_dict())
    assert clone.updates == 50


def test_snapshot_teacher_changes_only_at_epoch_end() -> None:
    student = nets()
    teacher = make_teacher("snapshot", student)
    assert isinstance(teacher, SnapshotTeacher)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(2.0)
    teacher.step(student)
    assert not torch.equal(teacher.module.classifier.weight, student.classifier.weight)
    teacher.end_epoch(student)
    assert torch.equal(teacher.module.classifier.weight, student.classifier.weight)
    assert not teacher.module.training


@pytest.mark.parametrize("total", [1, 7, 40])
def test_one_cycle_matches_torch(total: int) -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([param], lr=2e-3)
    reference = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=total)
    mine = one_cycle(2e-3, total)
    for step in range(total):
        group = opt.param_groups[0]
        lr, beta1 = mine(step)
        assert lr == pytest.approx(group["lr"], rel=1e-12, abs=1e-18)
        assert beta1 == pytest.approx(group["betas"][0], rel=1e-12)
        opt.step()
        if step < total - 1:
            reference.step()
    if total > 1:  # one step only: torch (and so this) starts in the annealing phase
        assert mine(0)[0] == pytest.approx(2e-3 / 25)
    assert max(mine(k)[0] for k in range(total)) <= 2e-3 * (1 + 1e-12)
