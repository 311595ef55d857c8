"""Schedules as small closures of the (0-based) epoch.

The progressive schedule of PSD: t(e) = 0 during the ``warmup`` epochs, then rises linearly
to 1 over ``ramp`` epochs, t(e) = min(1, (e − warmup + 1) / ramp) (a step to 1 if ramp = 0).
The labeled share of each batch is r(e) = 1 − (1 − r_min)·t(e) and the weight of the soft
part (soft triplets + distillation) is w_soft(e) = t(e).
"""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[int], float]


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
