"""The self-distillation teacher: a frozen copy of the student, always in eval mode.

Like open_clip's distillation task, the teacher is held apart from the optimizer: no
gradients, dropout off. Two kinds (``make_teacher``):

- ``EMATeacher``: after the k-th optimizer step (k = 1, 2, ...) θ_T ← d_k·θ_T + (1 − d_k)·θ_S
  with d_k = min(d, 1 − 1/k) (Mean-Teacher ramp: early on the teacher averages the few
  states there are instead of clinging to the random initialisation); buffers, e.g. the
  heads' input standardisation, are copied.
- ``SnapshotTeacher``: θ_T ← θ_S at the end of every epoch (the previous epoch's model).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from avsearch.train.nets import AVNets

UPDATES = "ema_updates"


class EMATeacher:
    kind = "ema"

    def __init__(self, student: AVNets, decay: float = 0.99) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module: AVNets = copy.deepcopy(student)
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def step(self, student: nn.Module) -> None:
        """Called after every optimizer step."""
        self.updates += 1
        decay = min(self.decay, 1.0 - 1.0 / self.updates)
        for t, s in zip(self.module.parameters(), student.parameters(), strict=True):
            t.mul_(decay).add_(s.detach(), alpha=1.0 - decay)
        self._copy_buffers(student)

    def end_epoch(self, student: nn.Module) -> None:
        """Called at the end of every epoch."""

    @torch.no_grad()
    def _copy_buffers(self, student: nn.Module) -> None:
        for t, s in zip(self.module.buffers(), student.buffers(), strict=True):
            t.copy_(s)

    @torch.no_grad()
    def distributions(
        self, audio: Tensor, visual: Tensor, temperature: float
    ) -> tuple[Tensor, Tensor]:
        self.module.eval()
        return self.module.distributions(audio, visual, temperature)

    def state_dict(self) -> dict[str, Tensor]:
        """The teacher's weights plus ``ema_updates`` (the step count k)."""
        return {**self.module.state_dict(), UPDATES: torch.tensor(self.updates)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        weights = {k: v for k, v in state.items() if k != UPDATES}
        self.updates = int(state[UPDATES]) if UPDATES in state else 0
        self.module.load_state_dict(weights, strict=True)
        self.module.eval()


class SnapshotTeacher(EMATeacher):
    kind = "snapshot"

    def __init__(self, student: AVNets) -> None:
        super().__init__(student, decay=0.0)

    def step(self, student: nn.Module) -> None:
        """A snapshot teacher changes only at epoch ends."""

    @torch.no_grad()
    def end_epoch(self, student: nn.Module) -> None:
        self.module.load_state_dict(student.state_dict(), strict=True)
        self.module.eval()


def make_teacher(kind: str, student: AVNets, decay: float = 0.99) -> EMATeacher:
    if kind == "ema":
        return EMATeacher(student, decay)
    if kind == "snapshot":
        return SnapshotTeacher(student)
    raise ValueError(f"unknown teacher {kind!r}; use ema or snapshot")
