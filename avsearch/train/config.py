"""The training configuration: one frozen dataclass, four method presets.

``TrainConfig`` holds every knob of the training loop (DESIGN.md sections 2 and 5; the
equations are in docs/method.md). ``for_method`` gives the presets the benchmark compares:

- ``supervised``: the label loss ``l_lab`` only (shared classifier on both towers).
- ``triplet``: ``l_lab`` + the cross-modal triplet loss on hard triplets mined from labels;
  only labeled items are used.
- ``psd``: progressive self-distillation, every part on: ``l_lab``, hard label triplets, soft
  triplets from teacher alignments, distillation KL, the cross-modal decorrelation ``l_dis``,
  and the progressive labeled-share schedule.
- ``infonce``: supervised cross-modal InfoNCE (items of the same label are positives; a pair
  whose label is hidden has only its own partner as positive, as in CLIP) + ``l_lab`` on the
  labeled pairs, AdamW with a one-cycle learning rate (the default model's recipe). The only
  method that trains without any label (``--labeled-ratio 0``).

Each part has its own switch (``use_*``, ``progressive``), so an ablation is
``for_method("psd", use_dis=False)``. Invalid values raise ``OptionValueError`` (a
``UsageError``) naming the CLI flag (``--labeled-ratio must be in [0, 1], got 1.5``); its
``option`` field lets the CLI name the avsearch.yaml key instead when the value came from there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from avsearch.encoders.registry import BACKBONES
from avsearch.encoders.registry import names as registered_backbones
from avsearch.errors import ModelError, UsageError

METHODS = ("psd", "triplet", "supervised", "infonce")
DIS_MODES = ("decorrelation", "paired")
TEACHERS = ("ema", "snapshot")
MINER_STRATEGIES = ("hard", "semihard")
LR_SCHEDULES = ("cosine", "constant", "one-cycle")
# how batches are drawn: pairs in proportion (random) or M per label (balanced; train.sampler)
SAMPLERS = ("random", "balanced")
DEFAULT_PER_CLASS = 4  # --per-class: pairs of each label in a balanced batch
# the audio backbones of avsearch.encoders.registry (reading it imports no torch)
AUDIO_BACKBONES = registered_backbones("audio")
# the audio backbone of `avsearch train` (media mode) when none is named: the default model's
DEFAULT_AUDIO_BACKBONE = "aisfx"  # the default model's audio tower
# views per item with --augment: view 0 as decoded + 2 augmented (what docs/benchmarks.md used)
DEFAULT_VIEWS = 3
DEFAULT_BRIDGE_MAP_ALPHA = 0.5  # (avsearch.encoders.bridge_map.DEFAULT_ALPHA)
DEFAULT_BRIDGE_MEMORY_K = 5  # (avsearch.encoders.bridge_map.DEFAULT_K)


VISUAL_BACKBONE = "efficientnet-lite0"  # every trained model's visual tower


def has_bridge(audio_backbone: str) -> bool:
    """Whether a model trained on this audio tower has the zero-shot bridge (a soundnet part):
    its fusion rule, its bridge map and their options."""
    from avsearch.encoders.bridge import bridge_off_reason

    return bridge_off_reason(audio_backbone, VISUAL_BACKBONE) is None


def flag(name: str) -> str:
    """The CLI flag of a config field: ``labeled_ratio`` → ``--labeled-ratio``."""
    return "--" + name.replace("_", "-")


class OptionValueError(UsageError):
    """A training option has an invalid value; ``option`` is the config field it belongs to."""

    def __init__(self, option: str, rule: str, value: Any) -> None:
        super().__init__(f"{flag(option)} must be {rule}, got {value!r}")
        self.option = option
        self.rule = rule
        self.value = value

    def named(self, name: str) -> UsageError:
        """The same error with the option called ``name`` (e.g. an avsearch.yaml key)."""
        return UsageError(f"{name} must be {self.rule}, got {self.value!r}")


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
    temperature: float = 2.0  # distillation τ
    nce_temperature: float = 0.1  # τ of the cross-modal InfoNCE logits
    w_lab: float = 1.0
    w_cross: float = 1.0
    w_sd: float = 0.3
    w_dis: float = 0.1
    w_nce: float = 1.0
    dis_mode: str = "decorrelation"
    dis_offdiag: float = 5e-3
    # switches (ablations)
    use_lab: bool = True
    use_cross_hard: bool = True
    use_cross_soft: bool = True
    use_distill: bool = True
    use_dis: bool = True
    use_nce: bool = False
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
    # batches: "random" draws pairs in proportion (avsearch.train.data.epoch_batches);
    # "balanced" holds per_class labeled pairs of each of batch_size // per_class labels, the
    # hidden-label pairs filling the rest (avsearch.train.sampler.balanced_batches)
    sampler: str = "random"
    per_class: int = DEFAULT_PER_CLASS
    # data, reproducibility, early stopping
    seed: int = 0
    val_fraction: float = 0.1
    # 0 = no early stopping (the best validation epoch is still kept): with 10, 28 of 48
    # AV-Digits runs stopped early, often on an early best epoch picked on 10-20 validation
    # items (bench/train_methods.py)
    patience: int = 0
    # media mode: the audio backbone under the heads; aisfx-words (the default model's) adds
    # a spoken-word embedding to aisfx, which carries words across voices (docs/benchmarks.md);
    # aisfx-cepstra adds an order-keeping cepstral template instead; aisfx alone is the plain
    # sound-effects embedding
    audio_backbone: str = DEFAULT_AUDIO_BACKBONE
    # media mode: the parts of a composite audio tower its head reads, "+"-joined ("" = all):
    # "aisfx" of aisfx+soundnet keeps SoundNet for the zero-shot bridge alone
    audio_head_parts: str = ""
    # media mode: train on views of each item, computed once through the frozen backbones
    # (avsearch.train.augment.DEFAULT_AUDIO_AUGMENT / DEFAULT_VISUAL_AUGMENT)
    augment: bool = False
    views: int = DEFAULT_VIEWS  # stored views per item with augment: view 0 + views-1 augmented
    # media mode, an audio tower with soundnet: the ridge penalty of the learned correction of
    # the bridge's audio side (avsearch.encoders.bridge_map); 0 = no map
    bridge_map_alpha: float = DEFAULT_BRIDGE_MAP_ALPHA
    # with the map: neighbours in its memory of training sounds (bridge_map.BridgeMemory); 0 = no
    # memory
    bridge_memory_k: int = DEFAULT_BRIDGE_MEMORY_K

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def n_views(self) -> int:
        """Views stored per item: ``views`` with augmentation, else 1."""
        return self.views if self.augment else 1

    @property
    def uses_unlabeled(self) -> bool:
        """Whether batches draw unlabeled items (the soft parts and InfoNCE consume them)."""
        return self.use_cross_soft or self.use_distill or self.use_nce

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


_OFF = dict(
    use_lab=True,
    use_cross_hard=False,
    use_cross_soft=False,
    use_distill=False,
    use_dis=False,
    use_nce=False,
    progressive=False,
)
_PRESETS: dict[str, dict[str, Any]] = {
    "supervised": dict(_OFF),
    "triplet": {**_OFF, "use_cross_hard": True},
    "psd": {
        **_OFF,
        "use_cross_hard": True,
        "use_cross_soft": True,
        "use_distill": True,
        "use_dis": True,
        "progressive": True,
    },
    # the recipe of the default model (bench/train_default.py): 40 epochs of 256 at lr 2e-3
    # one-cycle; every pair in the batches, labeled or not, in proportion
    "infonce": {
        **_OFF,
        "use_nce": True,
        "epochs": 40,
        "batch_size": 256,
        "lr": 2e-3,
        "lr_schedule": "one-cycle",
        "min_labeled_batch_share": 0.0,
    },
}


def for_method(method: str, **overrides: Any) -> TrainConfig:
    """The preset of ``method`` (psd | triplet | supervised | infonce) with ``overrides``."""
    if method not in _PRESETS:
        raise OptionValueError("method", f"one of {', '.join(METHODS)}", method)
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
        raise OptionValueError(name, rule, value)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _audio_composite(value: Any) -> bool:
    """``a+b``: two or more registered audio backbones joined by ``+``."""
    parts = value.split("+") if isinstance(value, str) else []
    return len(parts) > 1 and all(p in AUDIO_BACKBONES for p in parts)


def _audio_parts(backbone: str) -> list[str]:
    """The atomic parts of an audio backbone name ([] when it is not one)."""
    try:
        return [a.name for a in BACKBONES.parts(backbone)]
    except ModelError:  # (an invalid backbone is reported by its own check)
        return []


def _validate(c: TrainConfig) -> None:
    choices = {
        "method": METHODS,
        "dis_mode": DIS_MODES,
        "teacher": TEACHERS,
        "miner": MINER_STRATEGIES,
        "soft_miner": MINER_STRATEGIES,
        "lr_schedule": LR_SCHEDULES,
        "audio_backbone": AUDIO_BACKBONES,
        "sampler": SAMPLERS,
    }
    for name, allowed in choices.items():
        value = getattr(c, name)
        if name == "audio_backbone" and _audio_composite(value):
            continue  # several registered audio backbones side by side: aisfx+soundnet
        _need(value in allowed, name, f"one of {', '.join(allowed)}", value)
    if c.audio_head_parts:
        atoms = _audio_parts(c.audio_backbone)
        wanted = c.audio_head_parts.split("+")
        _need(
            all(p in atoms for p in wanted) and len(set(wanted)) == len(wanted),
            "audio_head_parts",
            f"parts of the audio backbone ({', '.join(atoms)}), joined by +",
            c.audio_head_parts,
        )
    ints_min = {
        "epochs": 1,
        "batch_size": 2,
        "dim": 1,
        "hidden": 1,
        "seed": 0,
        "warmup_epochs": 0,
        "ramp_epochs": 0,
        "patience": 0,
        "views": 1,
        "per_class": 1,
        "bridge_memory_k": 0,
    }
    for name, low in ints_min.items():
        value = getattr(c, name)
        _need(_is_int(value) and value >= low, name, f"an integer ≥ {low}", value)
    positive = ("lr", "temperature", "nce_temperature", "classifier_scale")
    for name in positive:
        value = getattr(c, name)
        _need(_is_num(value) and value > 0, name, "a positive number", value)
    non_negative = (
        "weight_decay",
        "bridge_map_alpha",
        "margin",
        "w_lab",
        "w_cross",
        "w_sd",
        "w_dis",
        "w_nce",
        "dis_offdiag",
    )
    for name in non_negative:
        value = getattr(c, name)
        _need(_is_num(value) and value >= 0, name, "a number ≥ 0", value)
    unit = ("labeled_ratio", "soft_pos_threshold", "soft_neg_threshold", "min_labeled_batch_share")
    for name in unit:
        value = getattr(c, name)
        _need(_is_num(value) and 0 <= value <= 1, name, "in [0, 1]", value)
    _need(
        _is_num(c.labeled_floor) and 0 < c.labeled_floor <= 1,
        "labeled_floor",
        "in (0, 1]",
        c.labeled_floor,
    )
    _need(_is_num(c.dropout) and 0 <= c.dropout < 1, "dropout", "in [0, 1)", c.dropout)
    _need(_is_num(c.ema_decay) and 0 <= c.ema_decay < 1, "ema_decay", "in [0, 1)", c.ema_decay)
    _need(
        _is_num(c.val_fraction) and 0 <= c.val_fraction < 1,
        "val_fraction",
        "in [0, 1)",
        c.val_fraction,
    )
    switches = ("use_lab", "use_cross_hard", "use_cross_soft", "use_distill", "use_dis",
                "use_nce", "progressive", "repair_labeled", "augment")  # fmt: skip
    for name in switches:
        _need(isinstance(getattr(c, name), bool), name, "true or false", getattr(c, name))
    if c.soft_neg_threshold >= c.soft_pos_threshold:
        raise UsageError(
            f"--soft-neg-threshold ({c.soft_neg_threshold}) must be below "
            f"--soft-pos-threshold ({c.soft_pos_threshold})"
        )
    parts = (c.use_lab, c.use_cross_hard, c.use_cross_soft, c.use_distill, c.use_dis, c.use_nce)
    if not any(parts):
        raise UsageError("every loss is switched off: enable at least one of the use_* parts")
    if c.sampler == "balanced":
        _need(
            c.per_class <= c.batch_size // 2,
            "per_class",
            f"at most half of --batch-size ({c.batch_size // 2}), so a batch holds 2 labels "
            "or more",
            c.per_class,
        )
        _need(
            c.labeled_ratio > 0,
            "sampler",
            "random with --labeled-ratio 0 (balanced batches need labels)",
            c.sampler,
        )
    if c.labeled_ratio == 0 and not c.use_nce:
        raise OptionValueError(
            "labeled_ratio",
            f"above 0 for --method {c.method}, which learns from labels (--method infonce "
            "also learns from the pairs themselves)",
            c.labeled_ratio,
        )
