"""Schedules as small closures of the (0-based) epoch.

The progressive schedule of PSD: t(e) = 0 during the ``warmup`` epochs, then rises linearly
to 1 over ``ramp`` epochs, t(e) = min(1, (e − warmup + 1) / ramp) (a step to 1 if ramp = 0).
The labeled share of each batch is r(e) = 1 − (1 − r_min)·t(e) and the weight of the soft
part (soft triplets + distillation) is w_soft(e) = t(e).

``one_cycle`` is a per-step schedule (the ``infonce`` method's): the learning rate and Adam's
β₁ of optimizer step k, as ``torch.optim.lr_scheduler.OneCycleLR`` gives them, as a pure
function of k, so a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[int], float]
StepSchedule = Callable[[int], tuple[float, float]]


def progress(warmup_epochs: int, ramp_epochs: int) -> Schedule:
    """t(e): 0 in warm-up, then a linear ramp to 1."""

    def t(epoch: int) -> float:
        if epoch < warmup_epochs:
            return 0.0
        if ramp_epochs <= 0:
            return 1.0
        return min(1.0, (epoch - warmup_epochs + 1) / ramp_epochs)

    return t


def labeled_share(warmup_epochs: int, ramp_epochs: int, floor: float) -> Schedule:
    """r(e): share of each batch's labeled items whose labels are used; 1.0 → ``floor``."""
    if not 0 < floor <= 1:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    t = progress(warmup_epochs, ramp_epochs)
    return lambda epoch: 1.0 - (1.0 - floor) * t(epoch)


def soft_weight(warmup_epochs: int, ramp_epochs: int, max_weight: float = 1.0) -> Schedule:
    """w_soft(e): weight of the soft part, 0 in warm-up rising to ``max_weight``."""
    t = progress(warmup_epochs, ramp_epochs)
    return lambda epoch: max_weight * t(epoch)


def constant(value: float) -> Schedule:
    return lambda epoch: value


def cosine_lr(base_lr: float, epochs: int, min_factor: float = 0.05) -> Schedule:
    """lr(e) = base · (f + (1 − f) · ½(1 + cos(π e / epochs))), f = ``min_factor``."""

    def lr(epoch: int) -> float:
        c = 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / max(epochs, 1)))
        return base_lr * (min_factor + (1.0 - min_factor) * c)

    return lr


def one_cycle(
    max_lr: float,
    total_steps: int,
    *,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> StepSchedule:
    """(lr, β₁) of optimizer step k = 0, 1, ... (torch's ``OneCycleLR``, cosine annealing).

    Phase 1, steps 0 → p = pct_start·T − 1: lr rises from max_lr/div_factor to max_lr while
    β₁ falls from max_momentum to base_momentum; phase 2, steps p → T − 1: lr falls to
    max_lr/(div_factor·final_div_factor) while β₁ rises back. Within a phase, at fraction f
    of it, a value goes from a to b as b + (a − b)·½(1 + cos(π f)).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be ≥ 1, got {total_steps}")
    initial = max_lr / div_factor
    final = initial / final_div_factor
    p_end = float(pct_start * total_steps) - 1
    phases = (
        (p_end, (initial, max_lr), (max_momentum, base_momentum)),
        (total_steps - 1.0, (max_lr, final), (base_momentum, max_momentum)),
    )

    def anneal(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def at(step: int) -> tuple[float, float]:
        start_step = 0.0
        for i, (end_step, lrs, moms) in enumerate(phases):
            if step <= end_step or i == len(phases) - 1:
                pct = (step - start_step) / (end_step - start_step)
                return anneal(*lrs, pct), anneal(*moms, pct)
            start_step = end_step
        raise AssertionError("unreachable")  # pragma: no cover

    return at
