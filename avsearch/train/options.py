"""From the options of ``avsearch train`` to a ``TrainConfig``, and the command that repeats it.

The options (``avsearch.config.TrainOptions``) come from flags and the ``train:`` section of
avsearch.yaml. :func:`plan_train` checks that each given option applies (an option that
means nothing for the chosen method or mode is refused, never dropped: ``--no-soft`` with
``--method infonce`` is a usage error), builds the method's ``TrainConfig`` with the options
applied, and writes the canonical command line of the run (:func:`train_command`): the paths
as given, then every option that applies with its effective value, in one fixed order, so
the defaults of the method and any value taken from avsearch.yaml are spelt out. Errors name
each option as the user gave it (``name``: a flag, or an avsearch.yaml key).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from avsearch.errors import UsageError
from avsearch.train.config import OptionValueError, TrainConfig, for_method, has_bridge

# options only the psd method reads; and options only media mode reads
PSD_ONLY = ("no_soft", "no_distill", "no_dis", "no_progressive", "dis_mode", "teacher")
MEDIA_ONLY = (
    "labels",
    "audio_backbone",
    "audio_head_parts",
    "augment",
    "views",
    "bridge_map_alpha",
    "bridge_memory_k",
)
# psd ablation switches: option -> the TrainConfig switch it turns off
ABLATIONS = {
    "no_soft": "use_cross_soft",
    "no_distill": "use_distill",
    "no_dis": "use_dis",
    "no_progressive": "progressive",
}
# TrainConfig fields set straight from the option of the same name
DIRECT = (
    "labeled_ratio",
    "seed",
    "epochs",
    "batch_size",
    "dim",
    "dis_mode",
    "teacher",
    "augment",
    "views",
    "audio_backbone",
    "audio_head_parts",
    "bridge_map_alpha",
    "bridge_memory_k",
    "sampler",
    "per_class",
)


@dataclass(frozen=True)
class TrainPlan:
    cfg: TrainConfig
    mode: str  # "media" | "features"
    command: str


def label_files(value: str | list[str] | None) -> list[str]:
    """The labels CSVs an option holds: none, one, or several (``--labels`` repeated)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def plan_train(
    paths: list[str],
    options: Any,
    given: set[str],
    name: Callable[[str], str] = _flag,
) -> TrainPlan:
    """The ``TrainConfig``, mode and canonical command of ``avsearch train PATHS`` with
    ``options`` (a ``TrainOptions``; ``given`` = the option names set by a flag or by
    avsearch.yaml, ``name`` = how to call an option in an error)."""
    if not paths and options.features is None:
        raise UsageError("give media folders or --features FILE.h5")
    if paths and options.features is not None:
        raise UsageError(f"give media folders or {name('features')}, not both")
    mode = "features" if options.features is not None else "media"
    for key in sorted(given):
        if key in PSD_ONLY and options.method != "psd":
            raise UsageError(f"{name(key)} applies only to --method psd, not {options.method}")
        if key in MEDIA_ONLY and mode == "features":
            raise UsageError(
                f"{name(key)} applies to media folders, not to a feature file ({name('features')})"
            )
    if "views" in given and not options.augment:
        raise UsageError(f"{name('views')} applies only with --augment")
    if "per_class" in given and options.sampler != "balanced":
        raise UsageError(f"{name('per_class')} applies only with --sampler balanced")
    overrides: dict[str, Any] = {}
    for key in DIRECT:
        value = getattr(options, key)
        if value is not None:
            overrides[key] = value
    for key, switch in ABLATIONS.items():
        if getattr(options, key):
            overrides[switch] = False
    try:
        cfg = for_method(options.method, **overrides)
    except OptionValueError as exc:
        if exc.option in DIRECT or exc.option == "method":
            raise exc.named(name(exc.option)) from None
        raise
    for key in ("bridge_map_alpha", "bridge_memory_k"):
        if key in given and not has_bridge(cfg.audio_backbone):
            raise UsageError(
                f"{name(key)} applies to an audio backbone with soundnet (the zero-shot "
                f"bridge's audio side), not {cfg.audio_backbone}",
                hint="--audio-backbone aisfx+soundnet",
            )
    if "bridge_memory_k" in given and not cfg.bridge_map_alpha and cfg.bridge_memory_k:
        raise UsageError(
            f"{name('bridge_memory_k')} applies with the bridge map, which "
            f"{name('bridge_map_alpha')} 0 switches off"
        )
    return TrainPlan(cfg, mode, train_command(paths, options, cfg, mode))


def train_command(paths: list[str], options: Any, cfg: TrainConfig, mode: str) -> str:
    """``avsearch train PATHS... --options`` with every option that applies spelt out, in
    one fixed order (docstring of the module)."""
    parts = ["avsearch", "train", *paths]
    if mode == "features":
        parts += ["--features", str(options.features)]
    else:
        for csv_path in label_files(options.labels):
            parts += ["--labels", csv_path]
    parts += ["--method", cfg.method, "--labeled-ratio", repr(float(cfg.labeled_ratio))]
    parts += ["--epochs", str(cfg.epochs), "--batch-size", str(cfg.batch_size)]
    parts += ["--dim", str(cfg.dim), "--seed", str(cfg.seed)]
    parts += ["--sampler", cfg.sampler]
    if cfg.sampler == "balanced":
        parts += ["--per-class", str(cfg.per_class)]
    if cfg.method == "psd":
        parts += ["--dis-mode", cfg.dis_mode, "--teacher", cfg.teacher]
        parts += [_flag(key) for key in ABLATIONS if getattr(options, key)]
    if mode == "media":
        parts += ["--audio-backbone", cfg.audio_backbone]
        if cfg.audio_head_parts:
            parts += ["--audio-head-parts", cfg.audio_head_parts]
        if has_bridge(cfg.audio_backbone):
            parts += ["--bridge-map-alpha", repr(float(cfg.bridge_map_alpha))]
            if cfg.bridge_map_alpha:
                parts += ["--bridge-memory-k", str(cfg.bridge_memory_k)]
        parts += ["--augment", "--views", str(cfg.views)] if cfg.augment else ["--no-augment"]
    parts += ["--out", str(options.out)]
    return shlex.join(parts)
