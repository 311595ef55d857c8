"""Typed configuration: defaults < avsearch.yaml < environment < command-line flags.

Every command has a frozen dataclass of its options (``EmbedConfig``, ``QueryConfig``,
``TrainOptions``, ``EvalOptions``). The CLI builds one from the defaults, overlays the
command's section of ``avsearch.yaml`` (``embed:``, ``query:``, ``train:``, ``eval:``), then
the flags the user actually gave. The file's top level holds ``index:`` and those sections,
nothing else; a section's keys are the fields of its command's dataclass (a flag's name with
``_`` for ``-``: ``--batch-size`` → ``batch_size``). An unknown key names the file, the section
and the key and lists the valid ones; a bad value is named as the user gave it: by its flag
(``--top``) or by its key (``query.top in ./avsearch.yaml``). Variants are made with
``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from avsearch.errors import ConfigError

CONFIG_FILENAME = "avsearch.yaml"
INDEX_ENV = "AVSEARCH_INDEX"
DEFAULT_INDEX_DIRNAME = ".avsearch"
DEFAULT_MODEL = "default"

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})


@dataclass(frozen=True)
class EmbedConfig:
    model: str = DEFAULT_MODEL
    window: float | None = None  # seconds; None = the audio backbone's native block
    min_tail: float = 0.5  # a trailing partial window shorter than this is dropped (unless alone)
    workers: int = 2  # decode threads running ahead of the encoder (2 measured fastest here)
    batch_size: int = 32
    commit_every: float = 5.0  # seconds between manifest commits
    rebuild: bool = False  # wipe an index built with another model and re-encode everything
    follow_symlinks: bool = False
    # backbone feature cache (shared with `train`): files found there are not decoded again
    feature_cache: str | None = None  # its path; None = features.sqlite in the index dir
    write_features: bool = True  # add the features of the files this run encodes to it
    # globs of files/folders kept out of the index (and removed from it); see media.discover
    exclude: str | list | None = None
    # the precision towers run their networks at where they can: fp32, or bf16 (faster on
    # CPUs with bfloat16 units such as Intel AMX; features a few percent apart: docs/benchmarks.md)
    precision: str = "fp32"


@dataclass(frozen=True)
class QueryConfig:
    model: str | None = None  # None = the model the index was built with
    top: int = 10
    start: float | None = None
    end: float | None = None
    target: str | None = None  # "audio" | "visual" | None = the other modality
    segments: bool = False
    min_confidence: float | None = None  # drop hits below this confidence (avsearch.calibrate)
    pad: float = 1.0  # seconds of context around a hit cut by --export (avsearch.export)
    space: str | None = None  # "heads" | "native" | None = by the query (avsearch.spaces)
    no_bridge: bool = False  # cross-modal: the heads alone, no fusion with the bridge


@dataclass(frozen=True)
class TrainOptions:
    """The options of ``avsearch train`` (flags, and the keys of ``train:``); None = the
    method's own default. Turned into a ``TrainConfig`` by :mod:`avsearch.train.options`."""

    method: str = "psd"
    labeled_ratio: float = 1.0
    labels: str | list | None = None  # CSV(s) path,label (media mode); several are merged
    features: str | None = None  # HDF5 feature file (feature mode)
    epochs: int | None = None
    batch_size: int | None = None
    dim: int | None = None
    seed: int = 0
    out: str = "avsearch-model"
    no_soft: bool = False  # psd ablations
    no_distill: bool = False
    no_dis: bool = False
    no_progressive: bool = False
    dis_mode: str | None = None  # psd
    teacher: str | None = None  # psd
    augment: bool = False  # media mode
    views: int | None = None  # with augment
    audio_backbone: str | None = None  # media mode
    audio_head_parts: str | None = None  # media mode: parts of a composite the head reads
    bridge_map_alpha: float | None = None  # media mode, soundnet in the audio tower; 0 = none
    bridge_memory_k: int | None = None  # with the bridge map; 0 = no memory
    sampler: str | None = None  # random | balanced (avsearch.train.sampler)
    per_class: int | None = None  # with sampler balanced


@dataclass(frozen=True)
class EvalOptions:
    """The options of ``avsearch eval`` (flags, and the keys of ``eval:``)."""

    labels: str | None = None
    plot: str | None = None
    features: str | None = None
    model: str | None = None
    no_bridge: bool = False  # rank in the heads' space alone (no fusion with the bridge)


SECTIONS: dict[str, type] = {
    "embed": EmbedConfig,
    "query": QueryConfig,
    "train": TrainOptions,
    "eval": EvalOptions,
}
TOP_LEVEL = ("index", *SECTIONS)

T = TypeVar("T")


class FileConfig(dict[str, Any]):
    """The top level of avsearch.yaml, remembering which file it came from."""

    def __init__(self, data: dict[str, Any], path: Path | None = None) -> None:
        super().__init__(data)
        self.path = path


class Section(dict[str, Any]):
    """One command's section of avsearch.yaml (keys checked, ``-`` read as ``_``)."""

    def __init__(self, data: dict[str, Any], name: str, path: Path | None = None) -> None:
        super().__init__(data)
        self.name = name
        self.path = path

    def key_name(self, key: str) -> str:
        """How an error names a key of this section: ``train.labeled_ratio in PATH``."""
        return f"{self.name}.{key} in {self.path or CONFIG_FILENAME}"


def load_config_file(path: Path | None) -> FileConfig:
    """Read ``avsearch.yaml`` (``path`` or the current directory's); empty when there is none.

    The top level may hold only ``index`` and the command sections (``TOP_LEVEL``), each
    section a mapping; the keys inside a section are checked by :func:`section`.
    """
    explicit = path is not None
    path = path if path is not None else Path.cwd() / CONFIG_FILENAME
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {path} does not exist")
        return FileConfig({}, None)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return FileConfig({}, path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with `index:` and command sections")
    for key, value in data.items():
        if key not in TOP_LEVEL:
            hint = (
                f"command options go in their command's section, e.g. `{_owner(key)}:` with "
                f"`{key}: ...` under it"
                if _owner(key)
                else None
            )
            raise ConfigError(
                f"{path}: unknown top-level key {key!r}; valid: {', '.join(TOP_LEVEL)}", hint=hint
            )
        if key in SECTIONS and value is not None and not isinstance(value, dict):
            raise ConfigError(f"{path}: `{key}:` must be a mapping of option names to values")
        if key == "index" and not isinstance(value, str):
            raise ConfigError(f"index in {path} must be a folder path, got {value!r}")
    return FileConfig(data, path)


def _owner(key: Any) -> str | None:
    """The first command that has option ``key``, if any."""
    name = str(key).replace("-", "_")
    for section_name, cls in SECTIONS.items():
        if name in {f.name for f in fields(cls)}:
            return section_name
    return None


def section(config: dict[str, Any], name: str) -> Section:
    """The command's section of the file (``embed:`` etc.), every key and value type checked."""
    path = getattr(config, "path", None)
    raw = config.get(name) or {}
    where = path or CONFIG_FILENAME
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: `{name}:` must be a mapping of option names to values")
    types = {f.name: str(f.type) for f in fields(SECTIONS[name])}
    out = Section({}, name, path)
    for key, value in raw.items():
        norm = str(key).replace("-", "_")
        if norm not in types:
            raise ConfigError(
                f"{where}: unknown key {key!r} in section `{name}:`; valid keys: {', '.join(types)}"
            )
        expected = _type_problem(value, types[norm])
        if expected is not None:
            raise ConfigError(f"{out.key_name(norm)} must be {expected}, got {value!r}")
        out[norm] = value
    return out


def _type_problem(value: Any, annotation: str) -> str | None:
    """None when ``value`` fits a field annotated ``annotation`` (``int``, ``float | None``,
    ...), else what it should be (``an integer``)."""
    kinds = [part.strip() for part in annotation.split("|")]
    if value is None:
        return None if "None" in kinds else _describe(kinds)
    for kind in kinds:
        if kind == "bool" and isinstance(value, bool):
            return None
        if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            return None
        if (
            kind == "float"
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        ):
            return None
        if kind == "str" and isinstance(value, str):
            return None
        if kind == "list" and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return None
    return _describe(kinds)


def _describe(kinds: list[str]) -> str:
    words = {
        "bool": "true or false",
        "int": "an integer",
        "float": "a number",
        "str": "a string",
        "list": "a list of strings",
    }
    return " or ".join(words[k] for k in kinds if k in words)


def option_name(key: str, file_values: dict[str, Any], flags: dict[str, Any]) -> str:
    """How to name option ``key`` to the user: its flag when given as one, its avsearch.yaml
    key when it came from the file, else its flag."""
    flag = "--" + key.replace("_", "-")
    if flags.get(key) is not None:
        return flag
    if key in file_values and isinstance(file_values, Section):
        return file_values.key_name(key)
    return flag


def build(cls: type[T], file_values: dict[str, Any], flags: dict[str, Any]) -> T:
    """Defaults < file values < flags (a flag left at None does not override); values are
    checked, an error naming each option as the user gave it (:func:`option_name`)."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in file_values.items():
        key = key.replace("-", "_")
        if key in names:
            values[key] = value
    values.update({k: v for k, v in flags.items() if v is not None and k in names})
    try:
        obj = cls(**values)
    except TypeError as exc:  # pragma: no cover - defensive
        raise ConfigError(str(exc)) from exc
    validate(obj, lambda key: option_name(key, file_values, flags))
    return obj


def validate(obj: Any, name: Callable[[str], str] | None = None) -> None:
    """Check the values of an ``EmbedConfig`` / ``QueryConfig`` (``name`` names an option in
    a message; default: its flag)."""
    n = name or (lambda key: "--" + key.replace("_", "-"))
    if isinstance(obj, EmbedConfig):
        if obj.window is not None and not 0.1 <= float(obj.window) <= 60.0:
            raise ConfigError(f"{n('window')} must be between 0.1 and 60 seconds, got {obj.window}")
        if obj.workers < 1:
            raise ConfigError(f"{n('workers')} must be at least 1, got {obj.workers}")
        if obj.batch_size < 1:
            raise ConfigError(f"{n('batch_size')} must be at least 1, got {obj.batch_size}")
        if obj.min_tail < 0:
            raise ConfigError(f"{n('min_tail')} must not be negative, got {obj.min_tail}")
        if obj.commit_every <= 0:
            raise ConfigError(f"{n('commit_every')} must be positive, got {obj.commit_every}")
        if any(not p.strip() for p in exclude_patterns(obj.exclude)):
            raise ConfigError(f"{n('exclude')} must not be empty")
        if obj.precision not in ("fp32", "bf16"):
            raise ConfigError(f"{n('precision')} must be fp32 or bf16, got {obj.precision!r}")
    if isinstance(obj, QueryConfig):
        if obj.top < 1:
            raise ConfigError(f"{n('top')} must be at least 1, got {obj.top}")
        if obj.target not in (None, "audio", "visual"):
            raise ConfigError(f"{n('target')} must be 'audio' or 'visual', got {obj.target!r}")
        if obj.start is not None and obj.start < 0:
            raise ConfigError(f"{n('start')} must not be negative")
        if obj.start is not None and obj.end is not None and obj.end <= obj.start:
            raise ConfigError(f"{n('end')} ({obj.end}) must be after {n('start')} ({obj.start})")
        if obj.min_confidence is not None and not 0.0 <= obj.min_confidence <= 1.0:
            raise ConfigError(
                f"{n('min_confidence')} must be between 0 and 1, got {obj.min_confidence}"
            )
        if obj.space not in (None, "heads", "native"):
            raise ConfigError(f"{n('space')} must be heads or native, got {obj.space!r}")
        if not 0.0 <= obj.pad <= 60.0:
            raise ConfigError(f"{n('pad')} must be between 0 and 60 seconds, got {obj.pad}")


def exclude_patterns(value: str | list | tuple | None) -> tuple[str, ...]:
    """``EmbedConfig.exclude`` as a tuple of globs (one string, a list of them, or none)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def resolve_index_dir(flag: Path | None, file_values: dict[str, Any]) -> Path:
    """--index flag > AVSEARCH_INDEX > avsearch.yaml `index:` > ./.avsearch."""
    if flag is not None:
        return flag.expanduser().resolve()
    env = os.environ.get(INDEX_ENV)
    if env:
        return Path(env).expanduser().resolve()
    if file_values.get("index"):
        return Path(str(file_values["index"])).expanduser().resolve()
    return (Path.cwd() / DEFAULT_INDEX_DIRNAME).resolve()


def as_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)
