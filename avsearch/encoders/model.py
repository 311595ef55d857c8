"""AVModel: two frozen towers + two projection heads, loaded from a model directory.

Towers are loaded lazily, so querying with an image never loads the audio network. With
``AVModel.load(..., lazy=True)`` the heads are too, and importing this module imports no torch:
``embed`` on an unchanged folder reads the config and the fingerprint, and nothing else. The
window, sample rate and image size come from what the towers declare in the registry, which
loads nothing either.

Besides the heads' shared space a model may have further vector spaces, computed from the same
tower features (:meth:`AVModel.space_vectors`): ``native`` (:mod:`avsearch.encoders.native`,
when the directory has ``native.safetensors``) for same-modality search, and ``bridge``
(:mod:`avsearch.encoders.bridge`, when the audio tower includes ``soundnet``) fused with the
heads in cross-modal search by the config's ``fusion:`` rule. :meth:`AVModel.spaces_stamp`
describes them without loading anything (what an index records).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from avsearch.encoders import model_dir as md
from avsearch.errors import ModelError

if TYPE_CHECKING:
    from avsearch.encoders.backbones import Backbones
    from avsearch.encoders.bridge import BridgeSpace, FusionRule
    from avsearch.encoders.bridge_map import BridgeMap
    from avsearch.encoders.heads import ProjectionHead
    from avsearch.encoders.native import NativeSpace
    from avsearch.encoders.tower import Precision, Tower
    from avsearch.media.decode import WindowSpec


def describe_spaces(config: md.ModelConfig) -> dict[str, Any]:
    """A model's further spaces as ``avsearch models`` lists them (from its config alone):
    ``{"native": {"audio": 256, ...} | {"off": why}, "bridge": {rule} | {"off": why}}``; a
    bridge whose audio side a learned map corrects also says ``audio_map``."""
    from avsearch.encoders.bridge import FusionRule, bridge_off_reason
    from avsearch.encoders.native import declared_dims

    dims = declared_dims(config.native)
    native: dict[str, Any] = (
        {m: {"dim": d, "parts": config.native[m].get("parts")} for m, d in dims.items()}
        if dims
        else {"off": "no native.safetensors: same-modality search uses the heads' space"}
    )
    why = bridge_off_reason(config.audio.backbone, config.visual.backbone)
    rule = FusionRule.from_config(config.fusion, f"{config.name}: config.yaml")
    if why is None and not rule.on:
        why = "its config.yaml says fusion: {bridge: off}"
    bridge = {"off": why} if why is not None else rule.to_config()
    if why is None and config.bridge_map:  # the audio side corrected by a learned map
        bridge["audio_map"] = {"alpha": config.bridge_map.get("alpha")}
        memory = config.bridge_map.get("memory")
        if memory:  # (its memory of training sounds: how many, how many neighbours)
            bridge["audio_map"]["memory"] = {k: memory.get(k) for k in ("windows", "k")}
    return {"native": native, "bridge": bridge}


class AVModel:
    def __init__(
        self,
        directory: Path,
        config: md.ModelConfig,
        fingerprint: str,
        *,
        lazy: bool = False,
        user_weights: Mapping[str, Path] | None = None,
        precision: Precision = "fp32",
    ) -> None:
        self.directory = directory
        self.config = config
        self.fingerprint = fingerprint
        self.user_weights = dict(user_weights or {})
        self.precision: Precision = precision  # the towers' networks' (AVModel.load)
        if lazy:  # cheap checks now (the file is there and is safetensors), the weights on use
            heads = directory / md.HEADS
            if not heads.exists():
                raise ModelError(f"{directory}: {md.HEADS} is missing")
            md.check_safetensors(heads, "projection heads")
        else:
            _ = self.heads, self.backbones

    @classmethod
    def load(
        cls,
        name_or_dir: str | Path,
        *,
        lazy: bool = False,
        hashes: md.HashCache | None = None,
        user_weights: Mapping[str, Path] | None = None,
        precision: Precision = "fp32",
    ) -> AVModel:
        """The model ``name_or_dir`` names. ``lazy``: load the heads on first use (the backbones
        always are); ``hashes``: a cache of file hashes for the fingerprint; ``user_weights``:
        weights files the user gave, by backbone name (``{"vggish": PATH}``; see
        :mod:`avsearch.encoders.registry`), checked against the config's sha256;
        ``precision``: the precision towers run their networks at where they can (``bf16``:
        faster on CPUs with bfloat16 units, features a few percent apart from float32's)."""
        directory = md.resolve_model_dir(str(name_or_dir))
        config = md.load_config(directory)
        fingerprint = md.fingerprint(directory, hashes)
        return cls(
            directory,
            config,
            fingerprint,
            lazy=lazy,
            user_weights=user_weights,
            precision=precision,
        )

    @cached_property
    def heads(self) -> tuple[ProjectionHead, ProjectionHead]:
        return md.load_heads(self.directory, self.config)

    @cached_property
    def backbones(self) -> Backbones:
        from avsearch.encoders.backbones import Backbones

        config = self.config
        return Backbones(
            config.audio.backbone,
            config.visual.backbone,
            md.backbone_weights_path(self.directory, config.audio, "audio"),
            md.backbone_weights_path(self.directory, config.visual, "visual"),
            config.audio.backbone_sha256,
            config.visual.backbone_sha256,
            self.user_weights,
            self.precision,
        )

    @property
    def audio_head(self) -> ProjectionHead:
        return self.heads[0]

    @property
    def visual_head(self) -> ProjectionHead:
        return self.heads[1]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def dim(self) -> int:
        return self.config.embedding_dim

    @property
    def audio_backbone(self) -> Tower:
        return self.backbones.audio

    @property
    def visual_backbone(self) -> Tower:
        return self.backbones.visual

    @property
    def sample_rate(self) -> int:
        """The rate the audio tower declares."""
        return self.backbones.audio_input.sample_rate

    def window_spec(self, window: float | None = None, min_tail: float = 0.5) -> WindowSpec:
        """The windowing: ``window`` seconds, else the config's ``window_seconds``, else the
        audio tower's native window."""
        from avsearch.media.decode import WindowSpec

        seconds = window or self.config.window_seconds
        if seconds is None:
            return WindowSpec(self.backbones.audio_input.window_samples, self.sample_rate, min_tail)
        return WindowSpec.from_seconds(float(seconds), self.sample_rate, min_tail)

    @property
    def image_size(self) -> int:
        """The image size the visual tower declares."""
        return self.backbones.image_input.size

    def feature_key(self, spec: WindowSpec) -> str:
        """The key of this model's raw backbone features in the feature cache
        (:class:`avsearch.store.features.FeatureCache`): backbones, weights and windowing."""
        return self.backbones.key(spec.samples, spec.min_tail)

    def context_windows(self, modality: str) -> int:
        """How many consecutive windows the tower of ``modality`` hears together (loads it)."""
        return self.backbones.context_windows(modality)

    def features(
        self, modality: str, batch: np.ndarray, runs: Sequence[int] | None = None
    ) -> np.ndarray:
        """Raw backbone features of decoded windows (loads that backbone on first use);
        ``runs``: see :mod:`avsearch.encoders.tower`."""
        return self.backbones.features(modality, batch, runs)

    def head_columns(self, modality: str) -> np.ndarray | None:
        """The feature columns the head of ``modality`` reads (its ``parts``); None: all."""
        return self._head_columns[modality]

    @cached_property
    def _head_columns(self) -> dict[str, np.ndarray | None]:
        """Per modality, once (``project`` runs per batch)."""
        from avsearch.encoders.native import part_columns

        out: dict[str, np.ndarray | None] = {}
        for modality, tower in (("audio", self.config.audio), ("visual", self.config.visual)):
            parts = tower.head.parts
            out[modality] = part_columns(tower.backbone, parts) if parts else None
        return out

    def project(self, modality: str, features: np.ndarray) -> np.ndarray:
        """The heads alone: raw backbone features → unit vectors."""
        import torch

        head = self.audio_head if modality == "audio" else self.visual_head
        x = np.asarray(features, np.float32)
        cols = self.head_columns(modality)
        if cols is not None:
            x = x[:, cols]
        with torch.inference_mode():
            return head(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    def embed(
        self, modality: str, batch: np.ndarray, runs: Sequence[int] | None = None
    ) -> np.ndarray:
        return self.project(modality, self.features(modality, batch, runs))

    # ------------------------------------------------------------------------ further spaces
    @cached_property
    def native(self) -> NativeSpace | None:
        """The native spaces (``native.safetensors``); None when the model has none."""
        from avsearch.encoders.native import load_native

        return load_native(self.directory, self.config.native)

    @cached_property
    def fusion(self) -> FusionRule:
        from avsearch.encoders.bridge import FusionRule

        return FusionRule.from_config(self.config.fusion, str(self.directory / md.CONFIG))

    @property
    def bridge_off(self) -> str | None:
        """Why the model has no bridge space (None: it has one); nothing is loaded."""
        from avsearch.encoders.bridge import bridge_off_reason

        why = bridge_off_reason(self.config.audio.backbone, self.config.visual.backbone)
        if why is None and not self.fusion.on:
            return "its config.yaml says fusion: {bridge: off}"
        return why

    @cached_property
    def bridge(self) -> BridgeSpace | None:
        """The bridge space; None when the model has none (:attr:`bridge_off`)."""
        if self.bridge_off is not None:
            return None
        from avsearch.encoders.bridge import BridgeSpace

        return BridgeSpace(
            self.config.audio.backbone,
            self.config.visual.backbone,
            self._image_classifier,
            audio_map=self.bridge_map,
        )

    @cached_property
    def bridge_map(self) -> BridgeMap | None:
        """The learned correction of the bridge's audio side (``bridge_map.safetensors``);
        None when the model has none."""
        from avsearch.encoders.bridge_map import load_bridge_map

        return load_bridge_map(self.directory, self.config.bridge_map)

    def _image_classifier(self) -> tuple[np.ndarray, np.ndarray]:
        """EfficientNet-Lite0's ``_fc`` (weight, bias), from the visual tower (loaded now if it
        is not yet: its weights file is checked as for encoding)."""
        from avsearch.encoders.bridge import image_classifier

        found = image_classifier(self.backbones.visual)
        if found is None:
            raise ModelError(
                f"{self.directory}: the visual tower has no EfficientNet-Lite0 classifier"
            )
        return found

    def spaces_stamp(self) -> dict[str, dict[str, Any]]:
        """What an index records of the further spaces (nothing is loaded): per space, its
        dimension per modality and an id of what makes its vectors, or ``{"off": why}``."""
        from avsearch.encoders.bridge import N_GROUPS, constants_id
        from avsearch.encoders.native import declared_dims

        out: dict[str, dict[str, Any]] = {}
        dims = declared_dims(self.config.native)
        if dims:
            out["native"] = {**dims, "id": self.fingerprint[:16]}
        else:
            out["native"] = {
                "off": "the model has no native space (native.safetensors): same-modality "
                "search uses the heads' space"
            }
        why = self.bridge_off
        if why is None:
            vis = self.config.visual.backbone_sha256 or ""
            ident = f"{constants_id()}-{vis[:16]}"
            if self.config.bridge_map:  # the map is the model's: its fingerprint names it
                ident += f"-{self.fingerprint[:16]}"
            out["bridge"] = {
                "audio": N_GROUPS,
                "visual": N_GROUPS,
                "id": ident,
                "fusion": self.fusion.to_config(),
            }
        else:
            out["bridge"] = {"off": f"no zero-shot bridge: {why}"}
        return out

    def space_vectors(self, modality: str, features: np.ndarray) -> dict[str, np.ndarray]:
        """The vectors of tower features ``[B, D]`` in each further space the model has for
        ``modality`` (``{"native": [B, d], "bridge": [B, 58]}``; a space it lacks is absent)."""
        out: dict[str, np.ndarray] = {}
        native = self.native
        if native is not None and modality in native.towers:
            out["native"] = native.towers[modality].vectors(features)
        if self.bridge is not None:
            out["bridge"] = self.bridge.vectors(modality, features)  # type: ignore[arg-type]
        return out
