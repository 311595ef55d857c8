"""Training pairs from a media folder (media mode of ``avsearch train``).

Every file is decoded once and its windows' backbone features are cached in the index
directory (:class:`avsearch.store.features.FeatureCache`), so a second run decodes nothing.

Pairs:
- a video window gives the pair (its audio, its centre frame): a real audio-visual pair;
- separate sounds and images (audio files, image files) are paired **within a label**: each
  audio window is paired with a visual item of the same label, drawn seeded and cycling through
  that label's visual items (the AV-Digits construction). A sound or image whose label is
  unknown cannot be paired this way and is left out (counted in ``BuiltPairs.unpaired``).

Labels come from a CSV (``path,label``) or each file's parent folder name. Hiding labels for
``--labeled-ratio`` happens later, on the pairs: hidden pairs still train as unlabeled pairs.

With augmentation or fine-tuning, :func:`add_views` replaces a modality's cached feature
vectors by per-window *views* (``[V, ...]``: features of V augmented versions, or the
activations at the cut of a fine-tuned backbone). Those are computed from a fresh decode:
the feature cache only holds features of the un-augmented windows through the pretrained
backbones, so it is bypassed for fine-tuned or augmented towers and used for the others.
``build_pairs`` works on either (it stacks whatever each window holds).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from avsearch.encoders.backbones import Backbones
from avsearch.errors import MediaError, UsageError
from avsearch.media.decode import WindowSpec, file_pieces
from avsearch.media.discover import MediaFile, content_hash, discover, read_problem
from avsearch.store.features import CachedWindow, FeatureCache

log = logging.getLogger(__name__)

FEATURES_DB = "features.sqlite"


@dataclass
class FileFeatures:
    file: MediaFile
    label: str | None
    windows: list[CachedWindow]


@dataclass
class ExtractStats:
    files: int = 0
    decoded: int = 0
    from_cache: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def extract_features(
    paths: list[Path],
    cache_dir: Path,
    backbones: Backbones,
    spec: WindowSpec,
    labels: Callable[[Path], str | None],
    *,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
    image_size: int = 224,
    batch_size: int = 32,
) -> tuple[list[FileFeatures], ExtractStats]:
    report = progress or (lambda e, d: None)
    roots = [p.expanduser().resolve() for p in paths]
    for root in roots:
        if not root.exists():
            raise UsageError(f"{root} does not exist")
    files = list(discover(roots, exclude=[cache_dir]))
    report("discovered", {"files": len(files)})
    stats = ExtractStats(files=len(files))
    key = backbones.key(spec.samples)
    cache = FeatureCache(cache_dir / FEATURES_DB)
    out: list[FileFeatures] = []
    try:
        for f in files:
            try:
                if f.problem is not None:  # a dangling link, a FIFO, ...: never opened
                    raise MediaError(f.path, f.problem)
                try:
                    digest = content_hash(f.path)
                except OSError as exc:  # vanished or unreadable since the walk
                    raise MediaError(f.path, read_problem(exc)) from exc
            except MediaError as exc:
                stats.failures.append((str(f.path), exc.reason))
                log.warning("skipping %s: %s", f.path, exc.reason)
                report("file", {"path": str(f.path), "ok": False})
                continue
            windows = cache.get(digest, key)
            if windows is None:
                try:
                    windows = _encode_file(f, backbones, spec, image_size, batch_size)
                except MediaError as exc:
                    stats.failures.append((str(f.path), exc.reason))
                    log.warning("skipping %s: %s", f.path, exc.reason)
                    report("file", {"path": str(f.path), "ok": False})
                    continue
                cache.put(digest, key, windows)
                stats.decoded += 1
            else:
                stats.from_cache += 1
            out.append(FileFeatures(f, labels(f.path), windows))
            report("file", {"path": str(f.path), "ok": True})
    finally:
        cache.close()
    return out, stats


def _encode_file(
    f: MediaFile, backbones: Backbones, spec: WindowSpec, image_size: int, batch_size: int
) -> list[CachedWindow]:
    pieces = list(file_pieces(f.path, f.kind, spec, image_size))
    if not pieces:
        raise MediaError(f.path, "no audio or video stream")
    windows: list[CachedWindow] = []
    for modality in ("audio", "visual"):
        mine = [p for p in pieces if p.modality == modality]
        for i in range(0, len(mine), batch_size):
            chunk = mine[i : i + batch_size]
            feats = backbones.features(modality, np.stack([p.data for p in chunk]))
            windows += [
                CachedWindow(modality, p.index, p.start, p.end, v, p.silent)
                for p, v in zip(chunk, feats, strict=True)
            ]
    return windows


Encoder = Callable[[str, np.ndarray, int], np.ndarray]
"""(modality, raw batch, seed) -> [B, V, ...] views of each item; the seed is derived from
the file's path and the batch's first window, so every window draws its own augmentation."""


def add_views(
    files: list[FileFeatures],
    modalities: tuple[str, ...],
    encode: Encoder,
    spec: WindowSpec,
    *,
    image_size: int = 224,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
    batch_size: int = 32,
    failures: list[tuple[str, str]] | None = None,
) -> int:
    """Decode ``files`` again and set each window's vector of ``modalities`` to its views
    (``encode``); the other modalities' vectors become one-view ``[1, D]`` arrays. Returns
    the number of files decoded.

    A file that no longer decodes, or decodes to other windows than its cached features
    (changed on disk since), is reported, appended to ``failures`` as ``(path, reason)`` and
    removed from ``files``: the rest trains, as when the first pass skips a file."""
    report = progress or (lambda e, d: None)
    if modalities:
        report("discovered", {"files": len(files), "stage": "views"})
    kept: list[FileFeatures] = []
    for f in files:
        views: dict[tuple[str, int], np.ndarray] = {}
        if modalities:
            try:
                views = _file_views(f, modalities, encode, spec, image_size, batch_size)
            except MediaError as exc:
                log.warning("skipping %s in the views pass: %s", f.file.path, exc.reason)
                if failures is not None:
                    failures.append((str(f.file.path), exc.reason))
                report("file", {"path": str(f.file.path), "ok": False})
                continue
            report("file", {"path": str(f.file.path), "ok": True})
        f.windows = [
            replace(w, vector=views[(w.modality, w.idx)])
            if w.modality in modalities
            else replace(w, vector=np.asarray(w.vector)[None])
            for w in f.windows
        ]
        kept.append(f)
    decoded = len(files) if modalities else 0
    files[:] = kept
    return decoded


def _file_views(
    f: FileFeatures,
    modalities: tuple[str, ...],
    encode: Encoder,
    spec: WindowSpec,
    image_size: int,
    batch_size: int,
) -> dict[tuple[str, int], np.ndarray]:
    views: dict[tuple[str, int], np.ndarray] = {}
    pieces = list(file_pieces(f.file.path, f.file.kind, spec, image_size))
    for modality in modalities:
        wanted = {w.idx for w in f.windows if w.modality == modality}
        chosen = [p for p in pieces if p.modality == modality and p.index in wanted]
        if len(chosen) != len(wanted):
            raise MediaError(f.file.path, "decoded differently from the cached features")
        for i in range(0, len(chosen), batch_size):
            chunk = chosen[i : i + batch_size]
            seed = zlib.crc32(f"{f.file.path}#{modality}#{chunk[0].index}".encode())
            out = encode(modality, np.stack([p.data for p in chunk]), seed)
            for p, v in zip(chunk, out, strict=True):
                views[(modality, p.index)] = v
    return views


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    arr = np.stack(rows)
    return arr if arr.dtype == np.float16 else arr.astype(np.float32, copy=False)


@dataclass
class BuiltPairs:
    audio: np.ndarray  # [N, Da]
    visual: np.ndarray  # [N, Dv]
    labels: np.ndarray  # [N] int, index into class_names
    class_names: list[str]
    sources: list[str]  # "path#k" of the audio side, for logs
    video_pairs: int = 0
    label_pairs: int = 0
    unpaired: int = 0


def build_pairs(files: list[FileFeatures], seed: int = 0) -> BuiltPairs:
    """Video windows pair with themselves; separate sounds and images pair within a label."""
    rng = np.random.default_rng(seed)
    labelled = sorted({f.label for f in files if f.label is not None})
    if not labelled:
        raise UsageError(
            "no labelled media: labels come from --labels CSV or the files' parent folder names"
        )
    index = {name: i for i, name in enumerate(labelled)}
    a_rows: list[np.ndarray] = []
    v_rows: list[np.ndarray] = []
    ys: list[int] = []
    sources: list[str] = []
    video_pairs = 0
    unpaired = 0
    loose_audio: dict[str, list[tuple[str, np.ndarray]]] = {}
    loose_visual: dict[str, list[np.ndarray]] = {}
    for f in files:
        audio = {w.idx: w for w in f.windows if w.modality == "audio"}
        visual = {w.idx: w for w in f.windows if w.modality == "visual"}
        if f.file.kind == "video" and f.label is not None:
            for k in sorted(set(audio) & set(visual)):
                a_rows.append(audio[k].vector)
                v_rows.append(visual[k].vector)
                ys.append(index[f.label])
                sources.append(f"{f.file.path}#{k}")
                video_pairs += 1
            continue
        if f.label is None:
            unpaired += len(f.windows)
            continue
        for k, w in sorted(audio.items()):
            loose_audio.setdefault(f.label, []).append((f"{f.file.path}#{k}", w.vector))
        for _, w in sorted(visual.items()):
            loose_visual.setdefault(f.label, []).append(w.vector)
    label_pairs = 0
    for label in sorted(loose_audio):
        visuals = loose_visual.get(label, [])
        if not visuals:
            unpaired += len(loose_audio[label])
            continue
        order = rng.permutation(len(visuals))
        for n, (src, vec) in enumerate(loose_audio[label]):
            a_rows.append(vec)
            v_rows.append(visuals[order[n % len(visuals)]])
            ys.append(index[label])
            sources.append(src)
            label_pairs += 1
    for label, visuals in loose_visual.items():
        if label not in loose_audio:
            unpaired += len(visuals)
    if not a_rows:
        raise UsageError(
            "no audio-visual pairs: give videos, or sounds and images that share labels",
            hint="labels come from --labels CSV or each file's parent folder",
        )
    return BuiltPairs(
        _stack(a_rows),
        _stack(v_rows),
        np.array(ys, np.int64),
        labelled,
        sources,
        video_pairs,
        label_pairs,
        unpaired,
    )
