"""The model directory format.

A model directory holds ``config.yaml`` (backbones and their weight hashes, segmenting, head
sizes, embedding dim, training recipe and data) and ``heads.safetensors`` (keys ``audio.*``,
``visual.*``, optionally ``classifier.*``). Its fingerprint, a sha256 over config and weight
files, is stored in every index built with it.

Each tower of ``config.yaml`` names its backbone (see :mod:`avsearch.encoders.registry`)::

    audio:
      backbone: [aisfx, words]   # a list: these towers side by side, features concatenated in
                                 # order (512 + 2048 = 2560 = head.in_dim)
      backbone_sha256: c1d1...   # sha256 of the weights of its first part that has weights
      backbone_weights: null     # or a .safetensors file in this directory replacing them
      head: {in_dim: 2560, out_dim: 128, hidden: 512, dropout: 0.1}
    visual:
      backbone: efficientnet-lite0
      ...

Two optional sections describe the model's further vector spaces: ``native:`` (per modality the
backbone parts, dimension and centring of its native space, whose statistics are in
``native.safetensors``; :mod:`avsearch.encoders.native`) and ``fusion:`` (how cross-modal
search fuses the heads with the zero-shot bridge: ``{bridge: gated, low: 0.5, high: 0.7,
weight: 4}`` or ``{bridge: off}``; :mod:`avsearch.encoders.bridge`). A third, ``bridge_map:``,
declares the learned correction of the bridge's audio side that ``avsearch train`` fits, whose
values are in ``bridge_map.safetensors`` (:mod:`avsearch.encoders.bridge_map`).

``backbone`` is one registered name or a list of them (``aisfx+words`` is the same list written
as one name). Registered composites keep older directories loading unchanged: ``aisfx-words``
is ``[aisfx, words]``, ``aisfx-cepstra`` is ``[aisfx, cepstra]``. The other parts of a list
find their own weights (installed, or ``$AVSEARCH_<NAME>_WEIGHTS``).

Loading is safe on a model directory from anywhere: weights are read from safetensors files only
(never a pickle, which can run code; a pickle renamed ``.safetensors`` is refused by its header),
``config.yaml`` with ``yaml.safe_load``, and a ``backbone_weights`` path must name a
``.safetensors`` file inside the directory (no absolute path, no ``..``, no symlink leading out).

Reading a config and fingerprinting a directory import no torch (``embed`` on an unchanged folder
needs only those); loading weights does.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from avsearch.encoders.files import (
    check_safetensors,
    load_safetensors,
    models_root,
    sha256_file,
)
from avsearch.encoders.head_config import HeadConfig
from avsearch.encoders.registry import SEPARATOR, backbone_name
from avsearch.errors import ModelError

if TYPE_CHECKING:
    from torch import nn

    from avsearch.encoders.heads import ProjectionHead

__all__ = [
    "CONFIG",
    "FORMAT_VERSION",
    "HEADS",
    "HashCache",
    "ModelConfig",
    "TowerConfig",
    "backbone_weights_path",
    "check_safetensors",
    "contained_weights_path",
    "fingerprint",
    "list_model_dirs",
    "load_config",
    "load_heads",
    "load_safetensors",
    "models_root",
    "resolve_model_dir",
    "save_model_dir",
    "sha256_file",
    "update_training_info",
    "write_config",
]

FORMAT_VERSION = 1
CONFIG = "config.yaml"
HEADS = "heads.safetensors"


@dataclass(frozen=True)
class TowerConfig:
    backbone: str  # a registered name, or a composite's parts joined by "+" (a list in YAML)
    head: HeadConfig
    backbone_weights: str | None = None  # relative to the model dir; None = backbone default
    backbone_sha256: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    name: str
    embedding_dim: int
    audio: TowerConfig
    visual: TowerConfig
    window_seconds: float | None = None  # None = the audio backbone's native block
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    native: dict[str, Any] = field(default_factory=dict)  # see avsearch.encoders.native
    fusion: dict[str, Any] = field(default_factory=dict)  # see avsearch.encoders.bridge
    bridge_map: dict[str, Any] = field(default_factory=dict)  # see encoders.bridge_map

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for modality in ("audio", "visual"):  # a composite is written as the list of its parts
            name = out[modality]["backbone"]
            if SEPARATOR in name:
                out[modality]["backbone"] = name.split(SEPARATOR)
        for key in ("native", "fusion", "bridge_map"):  # (absent rather than empty: older files)
            if not out[key]:
                del out[key]
        for modality in ("audio", "visual"):  # head parts: a list, absent when all are read
            head = out[modality]["head"]
            if head.get("parts"):
                head["parts"] = list(head["parts"])
            else:
                head.pop("parts", None)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: Path) -> ModelConfig:
        try:
            version = int(raw.get("format_version", 1))
            if version > FORMAT_VERSION:
                raise ModelError(f"{source}: model format {version} is newer than this avsearch")
            towers = {
                m: TowerConfig(
                    backbone=backbone_name(raw[m]["backbone"]),
                    head=_head(raw[m]["head"]),
                    backbone_weights=raw[m].get("backbone_weights"),
                    backbone_sha256=raw[m].get("backbone_sha256"),
                )
                for m in ("audio", "visual")
            }
            return cls(
                name=str(raw["name"]),
                embedding_dim=int(raw["embedding_dim"]),
                audio=towers["audio"],
                visual=towers["visual"],
                window_seconds=raw.get("window_seconds"),
                description=str(raw.get("description", "")),
                training=dict(raw.get("training") or {}),
                format_version=version,
                native=_section(raw, "native"),
                fusion=_section(raw, "fusion"),
                bridge_map=_section(raw, "bridge_map"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: invalid model config ({exc!r})") from exc


def _head(raw: dict[str, Any]) -> HeadConfig:
    """A ``head:`` mapping; ``parts`` a list of names (or one)."""
    parts = raw.get("parts") or ()
    if isinstance(parts, str):
        parts = (parts,)
    return HeadConfig(**{**raw, "parts": tuple(str(p) for p in parts)})


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ValueError(f"{key}: expected a mapping, got {value!r}")
    return dict(value)


def resolve_model_dir(name_or_dir: str) -> Path:
    """A path to a model directory, or the name of a shipped one (``default``)."""
    candidate = Path(name_or_dir).expanduser()
    if (candidate / CONFIG).is_file():
        return candidate.resolve()
    shipped = models_root() / name_or_dir
    if (shipped / CONFIG).is_file():
        return shipped.resolve()
    known = list_model_dirs()
    raise ModelError(
        f"no model {name_or_dir!r}: not a model directory and not a shipped model",
        hint=f"shipped models: {', '.join(p.name for p in known) or 'none'}; "
        "a model directory holds config.yaml and heads.safetensors",
    )


def list_model_dirs() -> list[Path]:
    root = models_root()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / CONFIG).is_file())


def load_config(model_dir: Path) -> ModelConfig:
    path = model_dir / CONFIG
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: cannot read model config ({exc})") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: expected a mapping")
    config = ModelConfig.from_dict(raw, path)
    for modality in ("audio", "visual"):
        weights = getattr(config, modality).backbone_weights
        if weights is not None:
            contained_weights_path(model_dir, weights, f"{modality}.backbone_weights")
    return config


def contained_weights_path(model_dir: Path, value: object, key: str) -> Path:
    """The file a config's weights entry names, refused (ModelError naming ``key``) unless it is
    a relative ``.safetensors`` path that stays inside ``model_dir``, symlinks resolved."""
    where = f"{model_dir / CONFIG}: {key}"
    if not isinstance(value, str) or not value.strip():
        raise ModelError(f"{where} must be a file name, got {value!r}")
    rel = Path(value)
    if rel.is_absolute() or value.startswith("~"):
        raise ModelError(
            f"{where} is the absolute path {value!r}; weights must lie inside the model "
            "directory, named relative to it",
            hint="copy the file into the model directory and give its name",
        )
    if ".." in rel.parts:
        raise ModelError(
            f"{where} ({value!r}) leads out of the model directory with '..'",
            hint="copy the file into the model directory and give its name",
        )
    if rel.suffix != ".safetensors":
        raise ModelError(
            f"{where} ({value!r}) is not a .safetensors file; model directories load "
            "safetensors weights only",
            hint="convert the weights to safetensors (safetensors.torch.save_file)",
        )
    root = model_dir.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise ModelError(
            f"{where} ({value!r}) is a symbolic link leading out of the model directory "
            f"(to {path})",
            hint="copy the file into the model directory instead of linking to it",
        )
    return path


def write_side_file(model_dir: Path, name: str, tensors: dict[str, Any]) -> None:
    """Write a model directory's further statistics file ``name`` (numpy arrays, safetensors)
    atomically: a temporary file, then renamed."""
    from safetensors.numpy import save_file

    tmp = model_dir / f".{name}.tmp"
    save_file(tensors, str(tmp), metadata={"format_version": "1"})
    tmp.replace(model_dir / name)


def read_side_file(model_dir: Path, name: str, declared: str, what: str) -> dict[str, Any]:
    """The numpy arrays of a further statistics file ``name`` that config.yaml declares
    (``declared``: "a native space"); ModelError when it is missing, not safetensors (by its
    header: a pickle is never read) or damaged (``what`` names it in the message)."""
    from safetensors.numpy import load_file

    path = model_dir / name
    if not path.is_file():
        raise ModelError(f"{model_dir}: config.yaml declares {declared}, {name} is missing")
    check_safetensors(path, what)
    try:
        return dict(load_file(str(path)))
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise ModelError(f"{path}: cannot read the {what}: {exc}") from exc


def fingerprint(model_dir: Path, hashes: HashCache | None = None) -> str:
    """sha256 over config.yaml and every weights file in the directory, in name order.

    With ``hashes``, a file whose (size, mtime, ctime, inode) it recorded is not read again."""
    h = hashlib.sha256()
    files = [model_dir / CONFIG, *sorted(model_dir.glob("*.safetensors"))]
    for path in files:
        h.update(path.name.encode())
        h.update((hashes.sha256(path) if hashes is not None else sha256_file(path)).encode())
    return h.hexdigest()


class HashCache:
    """sha256 of files, remembered in a small JSON file by (resolved path, size, mtime_ns,
    ctime_ns, inode): the same test ``embed`` trusts for media files, plus the ctime and inode,
    which a copy or an edit always changes. Only a cache: an unreadable one counts as empty, and
    one that cannot be written is left as it was."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dirty = False
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            self.entries: dict[str, list[Any]] = dict(raw["files"]) if raw.get("v") == 1 else {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            self.entries = {}

    def sha256(self, path: Path) -> str:
        real = os.path.realpath(path)
        st = os.stat(real)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        entry = self.entries.get(real)
        if isinstance(entry, list) and entry[:4] == stamp and isinstance(entry[-1], str):
            return entry[-1]
        digest = sha256_file(Path(real))
        self.entries[real] = [*stamp, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        """Write the entries (temp file + rename) when something was hashed anew."""
        if not self.dirty:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({"v": 1, "files": self.entries}), encoding="utf-8")
            tmp.replace(self.path)
            self.dirty = False
        except OSError:
            tmp.unlink(missing_ok=True)


def backbone_weights_path(model_dir: Path, tower: TowerConfig, modality: str) -> Path | None:
    """The weights file the tower's ``backbone_weights`` names inside ``model_dir`` (checked:
    contained, and safetensors by its header), for its backbone's primary part; None when the
    tower uses its backbone's installed weights."""
    if tower.backbone_weights is None:
        return None
    key = f"{modality}.backbone_weights"
    path = contained_weights_path(model_dir, tower.backbone_weights, key)
    if not path.is_file():
        raise ModelError(f"{model_dir}: backbone weights {tower.backbone_weights!r} not found")
    check_safetensors(path, f"{tower.backbone} backbone weights")
    return path


def save_model_dir(
    model_dir: Path,
    config: ModelConfig,
    heads: dict[str, nn.Module],
    extra_files: dict[str, dict[str, Any]] | None = None,
) -> str:
    """Write config + weights; returns the fingerprint. Files are written then renamed."""
    from safetensors.torch import save_file

    model_dir.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{prefix}.{key}": value.detach().contiguous().cpu()
        for prefix, module in heads.items()
        for key, value in module.state_dict().items()
    }
    tmp = model_dir / f".{HEADS}.tmp"
    save_file(tensors, str(tmp), metadata={"format_version": str(FORMAT_VERSION)})
    tmp.replace(model_dir / HEADS)
    for name, state in (extra_files or {}).items():
        tmp = model_dir / f".{name}.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
        tmp.replace(model_dir / name)
    text = yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
    tmp = model_dir / f".{CONFIG}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(model_dir / CONFIG)
    return fingerprint(model_dir)


def load_heads(model_dir: Path, config: ModelConfig) -> tuple[ProjectionHead, ProjectionHead]:
    from avsearch.encoders.heads import ProjectionHead

    path = model_dir / HEADS
    if not path.exists():
        raise ModelError(f"{model_dir}: {HEADS} is missing")
    state = load_safetensors(path, "projection heads")
    heads = []
    for modality, tower in (("audio", config.audio), ("visual", config.visual)):
        head = ProjectionHead(tower.head)
        prefix = f"{modality}."
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            head.load_state_dict(sub, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"{path}: {modality} head does not match config ({exc})") from exc
        head.eval()
        heads.append(head)
    return heads[0], heads[1]


def update_training_info(model_dir: Path, extra: dict[str, Any]) -> str:
    """Merge ``extra`` into the config's ``training`` section (atomically); new fingerprint."""
    config = load_config(model_dir)
    return write_config(model_dir, replace(config, training={**config.training, **extra}))


def write_config(model_dir: Path, config: ModelConfig) -> str:
    """Write ``config.yaml`` (temp file + rename); the directory's new fingerprint."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
    tmp = model_dir / f".{CONFIG}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(model_dir / CONFIG)
    return fingerprint(model_dir)
