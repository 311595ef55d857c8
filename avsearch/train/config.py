"""The training configuration: one frozen dataclass, three method presets.

``TrainConfig`` holds every knob of the training loop (DESIGN.md sections 2 and 5; the
equations are in docs/method.md). ``for_method`` gives the presets the benchmark compares:

- ``supervised``: the label loss ``l_lab`` only (shared classifier on both towers).
- ``triplet``: ``l_lab`` + the cross-modal triplet loss on hard triplets mined from labels;
  only labeled items are used.
- ``psd``: progressive self-distillation, every part on: ``l_lab``, hard label triplets, soft
  triplets from teacher alignments, distillation KL, the cross-modal decorrelation ``l_dis``,
  and the progressive labeled-share schedule.

Each part has its own switch (``use_*``, ``progressive``), so an ablation is
``for_method("psd", use_dis=False)``. Invalid values raise ``UsageError`` naming the CLI flag
(``--labeled-ratio must be in (0, 1], got 1.5``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from avsearch.errors import UsageError

METHODS = ("psd", "triplet", "supervised")
DIS_MODES = ("decorrelation", "paired")
TEACHERS = ("ema", "snapshot")
MINER_STRATEGIES = ("hard", "semihard")
LR_SCHEDULES = ("cosine", "constant")
FINETUNE = ("none", "audio", "visual", "both")
BN_MODES = ("frozen", "train")
# audio backbones of avsearch.encoders.registry (kept torch-free here; a test checks they agree)
AUDIO_BACKBONES = ("aisfx", "aisfx-cepstra", "aisfx-words", "soundnet")
# audio backbones with a part outside autograd (onnxruntime, numpy resampling): heads only
FROZEN_AUDIO_BACKBONES = ("aisfx-words", "soundnet")
# the audio backbone of `avsearch train` when none is named: the default model's, unless the
# audio tower is to be fine-tuned, which the word model cannot be
DEFAULT_AUDIO_BACKBONE = "aisfx-words"
FINETUNE_AUDIO_BACKBONE = "aisfx-cepstra"


def media_audio_backbone(finetune: str | None) -> str:
    """The audio backbone a media run uses when none is named (``--audio-backbone``)."""
    return FINETUNE_AUDIO_BACKBONE if finetune in ("audio", "both") else DEFAULT_AUDIO_BACKBONE


def flag(name: str) -> str:
    """The CLI flag of a config field: ``labeled_ratio`` → ``--labeled-ratio``."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class TrainConfig:
    method: str = "psd"
    labeled_ratio: float = 1.0
    # optimisation
    epochs: int = 50  # 30 left psd under-trained at low ratios (best epoch = last; see patience)
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"
    # heads and classifier
    dim: int = 128
    hidden: int = 512
    dropout: float = 0.1
    classifier_scale: float = 16.0
    # losses
    margin: float = 0.2
    temperature: float = 2.0
    w_lab: float = 1.0
    w_cross: float = 1.0
    w_sd: float = 0.3
    w_dis: float = 0.1
    dis_mode: str = "decorrelation"
    dis_offdiag: float = 5e-3
    # switches (ablations)
    use_lab: bool = True
    use_cross_hard: bool = True
    use_cross_soft: bool = True
    use_distill: bool = True
    use_dis: bool = True
    progressive: bool = True
    # data: re-draw the visual partner of each labeled pair among the labeled items of its class
    # every epoch (pairs formed within a class carry no more than the class; see docs/method.md)
    repair_labeled: bool = True
    # miners
    miner: str = "semihard"
    soft_miner: str = "hard"
    soft_pos_threshold: float = 0.5
    soft_neg_threshold: float = 0.1
    # teacher
    teacher: str = "ema"
    ema_decay: float = 0.99
    # progressive schedule (epochs are 0-based)
    warmup_epochs: int = 5
    ramp_epochs: int = 10
    labeled_floor: float = 0.8  # 0.5 hid too many of few labels: 0.639 vs 0.701 MAP at r=0.05
    min_labeled_batch_share: float = 0.5
    # data, reproducibility, early stopping
    seed: int = 0
    val_fraction: float = 0.1
    # 0 = no early stopping (the best validation epoch is still kept): with 10, 28 of 48
    # AV-Digits runs stopped early, often on an early best epoch picked on 10-20 validation
    # items (bench/train_methods.py)
    patience: int = 0
    # backbone fine-tuning and augmentation (media mode; docs/method.md, "Fine-tuning")
    finetune: str = "none"  # none | audio | visual | both
    unfreeze_blocks: int = 1  # last N blocks of each fine-tuned backbone
    finetune_epochs: int = 3  # second stage: tails + heads, warm-started from the heads stage
    bn_mode: str = "frozen"  # BatchNorm of unfrozen blocks: frozen statistics | train
    backbone_lr_scale: float = 0.1  # backbone learning rate = lr * this
    # the heads stage competes as "epoch -1" of the tails stage: kept (backbones unchanged)
    # when no tails epoch reaches its validation MAP
    keep_better_heads: bool = True
    # media mode: the audio backbone under the heads; aisfx-words (the default model's) adds
    # a spoken-word embedding to aisfx, which carries words across voices (docs/benchmarks.md,
    # "loso_heads"), but cannot be fine-tuned; aisfx-cepstra adds an order-keeping cepstral
    # template instead and can; aisfx alone is the plain sound-effects embedding
    audio_backbone: str = DEFAULT_AUDIO_BACKBONE
    augment: bool = False  # seeded waveform / image augmentation (avsearch.train.augment defaults)
    views: int = 4  # stored views per item with --augment: view 0 as decoded + views-1 augmented

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def finetuned(self) -> tuple[str, ...]:
        """The modalities whose backbone is fine-tuned."""
        return {"none": (), "audio": ("audio",), "visual": ("visual",)}.get(
            self.finetune, ("audio", "visual")
        )

    @property
    def n_views(self) -> int:
        """Views stored per item: ``views`` with augmentation, else 1."""
        return self.views if self.augment else 1

    @property
    def uses_unlabeled(self) -> bool:
        """Whether batches draw unlabeled items (only the soft parts consume them)."""
        return self.use_cross_soft or self.use_distill

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise UsageError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**raw)

    def replace(self, **overrides: Any) -> TrainConfig:
        return _replace(self, overrides)


_PRESETS: dict[str, dict[str, Any]] = {
    "supervised": dict(
        use_lab=True,
        use_cross_hard=False,
        use_cross_soft=False,
        use_distill=False,
        use_dis=False,
        progressive=False,
    ),
    "triplet": dict(
        use_lab=True,
        use_cross_hard=True,
        use_cross_soft=False,
        use_distill=False,
        use_dis=False,
        progressive=False,
    ),
    "psd": dict(
        use_lab=True,
        use_cross_hard=True,
        use_cross_soft=True,
        use_distill=True,
        use_dis=True,
        progressive=True,
    ),
}


def for_method(method: str, **overrides: Any) -> TrainConfig:
    """The preset of ``method`` (psd | triplet | supervised) with ``overrides`` applied."""
    if method not in _PRESETS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    return _replace(TrainConfig(method=method), {**_PRESETS[method], **overrides})


def _replace(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UsageError(f"unknown training option(s): {', '.join(unknown)}")
    return replace(cfg, **overrides)


# ------------------------------------------------------------------------------ validation
def _need(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise UsageError(f"{flag(name)} must be {rule}, got {value!r}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _validate(c: TrainConfig) -> None:
    choices = {
        "method": METHODS,
        "dis_mode": DIS_MODES,
        "teacher": TEACHERS,
        "miner": MINER_STRATEGIES,
        "soft_miner": MINER_STRATEGIES,
        "lr_schedule": LR_SCHEDULES,
        "finetune": FINETUNE,
        "bn_mode": BN_MODES,
        "audio_backbone": AUDIO_BACKBONES,
    }
    for name, allowed in choices.items():
        value = getattr(c, name)
        _need(value in allowed, name, f"one of {', '.join(allowed)}", value)
    ints_min = {
        "epochs": 1,
        "batch_size": 2,
        "dim": 1,
        "hidden": 1,
        "seed": 0,
        "warmup_epochs": 0,
        "ramp_epochs": 0,
        "patience": 0,
        "unfreeze_blocks": 1,
        "finetune_epochs": 1,
        "views": 1,
    }
    for name, low in ints_min.items():
        value = getattr(c, name)
        _need(_is_int(value) and value >= low, name, f"an integer ≥ {low}", value)
    positive = ("lr", "temperature", "classifier_scale")
    for name in positive:
        value = getattr(c, name)
        _need(_is_num(value) and value > 0, name, "a positive number", value)
    non_negative = (
        "backbone_lr_scale",
        "weight_decay",
        "margin",
        "w_lab",
        "w_cross",
        "w_sd",
        "w_dis",
        "dis_offdiag",
    )
    for name in non_negative:
        value = getattr(c, name)
        _need(_is_num(value) and value >= 0, name, "a number ≥ 0", value)
    unit = ("soft_pos_threshold", "soft_neg_threshold", "min_labeled_batch_share")
    for name in unit:
        value = getattr(c, name)
        _need(_is_num(value) and 0 <= value <= 1, name, "in [0, 1]", value)
    for name in ("labeled_ratio", "labeled_floor"):
        value = getattr(c, name)
        _need(_is_num(value) and 0 < value <= 1, name, "in (0, 1]", value)
    _need(_is_num(c.dropout) and 0 <= c.dropout < 1, "dropout", "in [0, 1)", c.dropout)
    _need(_is_num(c.ema_decay) and 0 <= c.ema_decay < 1, "ema_decay", "in [0, 1)", c.ema_decay)
    _need(
        _is_num(c.val_fraction) and 0 <= c.val_fraction < 1,
        "val_fraction",
        "in [0, 1)",
        c.val_fraction,
    )
    switches = ("use_lab", "use_cross_hard", "use_cross_soft", "use_distill", "use_dis",
                "progressive", "augment", "keep_better_heads")  # fmt: skip
    for name in switches:
        _need(isinstance(getattr(c, name), bool), name, "true or false", getattr(c, name))
    if c.soft_neg_threshold >= c.soft_pos_threshold:
        raise UsageError(
            f"--soft-neg-threshold ({c.soft_neg_threshold}) must be below "
            f"--soft-pos-threshold ({c.soft_pos_threshold})"
        )
    if c.audio_backbone in FROZEN_AUDIO_BACKBONES and "audio" in c.finetuned:
        raise UsageError(
            f"--audio-backbone {c.audio_backbone} cannot be fine-tuned (its word model runs in "
            "onnxruntime, outside autograd): use --finetune visual, or --audio-backbone "
            "aisfx-cepstra to fine-tune aisfx"
        )
    if not (c.use_lab or c.use_cross_hard or c.use_cross_soft or c.use_distill or c.use_dis):
        raise UsageError("every loss is switched off: enable at least one of the use_* parts")
