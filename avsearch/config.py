"""Typed configuration: defaults < avsearch.yaml < environment < command-line flags.

Every command has a frozen dataclass of its options. The CLI builds one from the defaults,
overlays the matching section of ``avsearch.yaml`` (``embed:``, ``query:`` … or top-level keys),
then the flags the user actually gave. Variants are made with ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import os
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


@dataclass(frozen=True)
class QueryConfig:
    model: str | None = None  # None = the model the index was built with
    top: int = 10
    start: float | None = None
    end: float | None = None
    target: str | None = None  # "audio" | "visual" | None = the other modality
    segments: bool = False


T = TypeVar("T")


def load_config_file(path: Path | None) -> dict[str, Any]:
    """Read ``avsearch.yaml`` (``path`` or the current directory's); {} when there is none."""
    explicit = path is not None
    path = path if path is not None else Path.cwd() / CONFIG_FILENAME
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {path} does not exist")
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    return data


def section(config: dict[str, Any], name: str) -> dict[str, Any]:
    """Top-level keys overlaid with the command's own section (``embed:`` etc.)."""
    merged = {k: v for k, v in config.items() if not isinstance(v, dict)}
    sub = config.get(name) or {}
    if not isinstance(sub, dict):
        raise ConfigError(f"avsearch.yaml: `{name}:` must be a mapping")
    merged.update(sub)
    return merged


def build(cls: type[T], file_values: dict[str, Any], flags: dict[str, Any]) -> T:
    """Defaults < file values < flags (a flag left at None does not override)."""
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
    validate(obj)
    return obj


def validate(obj: Any) -> None:
    if isinstance(obj, EmbedConfig):
        if obj.window is not None and not 0.1 <= float(obj.window) <= 60.0:
            raise ConfigError(f"--window must be between 0.1 and 60 seconds, got {obj.window}")
        if obj.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {obj.workers}")
        if obj.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {obj.batch_size}")
    if isinstance(obj, QueryConfig):
        if obj.top < 1:
            raise ConfigError(f"--top must be at least 1, got {obj.top}")
        if obj.target not in (None, "audio", "visual"):
            raise ConfigError(f"--target must be 'audio' or 'visual', got {obj.target!r}")
        if obj.start is not None and obj.start < 0:
            raise ConfigError("--start must not be negative")
        if obj.start is not None and obj.end is not None and obj.end <= obj.start:
            raise ConfigError(f"--end ({obj.end}) must be after --start ({obj.start})")


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
