"""The objective of one batch: the loss parts composed from losses, miners and teacher.

``Objective(cfg, n_classes)(nets, teacher, audio, visual, codes, share, w_soft)`` splits the
batch into labeled items in use and the soft set, mines triplets, and returns the weighted
total with every unweighted part (docs/method.md, "One training step"). Parts that are
switched off, or have nothing to work on in this batch, are absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from avsearch.train.config import TrainConfig
from avsearch.train.losses import (
    CrossModalInfoNCELoss,
    CrossModalTripletLoss,
    DecorrelationLoss,
    DistillationLoss,
    LabelLoss,
    PairedDistanceLoss,
    label_positives,
)
from avsearch.train.miners import LabelTripletMiner, SoftAlignmentMiner
from avsearch.train.nets import AVNets
from avsearch.train.teacher import EMATeacher

PARTS = ("lab", "nce", "cross_hard", "cross_soft", "sd", "dis")


@dataclass(frozen=True)
class StepLoss:
    total: Tensor
    parts: dict[str, Tensor]
    triplets: dict[str, int]


def split_batch(codes: Tensor, share: float) -> tuple[Tensor, Tensor]:
    """(labeled positions in use, soft positions) of a batch; codes < 0 mark unlabeled items.

    The first ⌈share · n_labeled⌉ labeled positions (batch order is random) keep their labels;
    the other labeled positions and all unlabeled ones form the soft set.
    """
    labeled = torch.nonzero(codes >= 0).flatten()
    n_use = math.ceil(share * len(labeled) - 1e-9)
    soft = torch.cat([labeled[n_use:], torch.nonzero(codes < 0).flatten()])
    return labeled[:n_use], soft


class Objective:
    def __init__(self, cfg: TrainConfig, n_classes: int) -> None:
        self.cfg = cfg
        self.n_classes = n_classes
        self.label_loss = LabelLoss()
        self.triplet = CrossModalTripletLoss(cfg.margin)
        self.miner = LabelTripletMiner(cfg.miner, cfg.margin)
        self.soft_miner = SoftAlignmentMiner(
            cfg.soft_miner, cfg.margin, cfg.soft_pos_threshold, cfg.soft_neg_threshold
        )
        self.distill = DistillationLoss(cfg.temperature)
        self.nce = CrossModalInfoNCELoss(cfg.nce_temperature)
        self.dis = (
            DecorrelationLoss(cfg.dis_offdiag)
            if cfg.dis_mode == "decorrelation"
            else PairedDistanceLoss()
        )

    def __call__(
        self,
        nets: AVNets,
        teacher: EMATeacher,
        audio: Tensor,
        visual: Tensor,
        codes: Tensor,
        share: float,
        w_soft: float,
    ) -> StepLoss:
        cfg = self.cfg
        use, soft = split_batch(codes, share)
        x, z = nets(audio, visual)
        la, lv = nets.classifier(x), nets.classifier(z)
        parts: dict[str, Tensor] = {}
        counts: dict[str, int] = {}
        if cfg.use_lab and len(use):
            parts["lab"] = self.label_loss(la[use], lv[use], codes[use])
        if cfg.use_nce:
            known = torch.zeros(len(codes), dtype=torch.bool)
            known[use] = True
            parts["nce"] = self.nce(x, z, label_positives(codes, known))
        if cfg.use_cross_hard and len(use):
            y = codes[use]
            t_av = self.miner.mine(x[use], y, z[use], y).remap(use, use)
            t_va = self.miner.mine(z[use], y, x[use], y).remap(use, use)
            parts["cross_hard"] = self.triplet(x, z, t_av, t_va)
            counts["hard"] = len(t_av) + len(t_va)
        if w_soft > 0 and len(soft) and (cfg.use_cross_soft or cfg.use_distill):
            p_a, p_v = teacher.distributions(audio, visual, cfg.temperature)
            if cfg.use_cross_soft:
                one_hot = F.one_hot(codes[use], self.n_classes).to(p_a.dtype)
                q_a, q_v = p_a.clone(), p_v.clone()
                q_a[use], q_v[use] = one_hot, one_hot
                t_av = self.soft_miner.mine(x[soft], q_a[soft], z, q_v, own=soft)
                t_va = self.soft_miner.mine(z[soft], q_v[soft], x, q_a, own=soft)
                parts["cross_soft"] = self.triplet(
                    x, z, t_av.remap(soft, None), t_va.remap(soft, None)
                )
                counts["soft"] = len(t_av) + len(t_va)
            if cfg.use_distill:
                parts["sd"] = 0.5 * (
                    self.distill(la[soft], p_a[soft]) + self.distill(lv[soft], p_v[soft])
                )
        if cfg.use_dis:
            parts["dis"] = self.dis(x, z)
        weights = {
            "lab": cfg.w_lab,
            "nce": cfg.w_nce,
            "cross_hard": cfg.w_cross,
            "cross_soft": cfg.w_cross * w_soft,
            "sd": cfg.w_sd * w_soft,
            "dis": cfg.w_dis,
        }
        total = sum((weights[k] * t for k, t in parts.items()), x.new_zeros(()))
        return StepLoss(total, parts, counts)
