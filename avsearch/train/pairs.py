"""Training pairs from a media folder (media mode of ``avsearch train``).

Every file is decoded once and its windows' backbone features are cached in the index
directory (:class:`avsearch.store.features.FeatureCache`), so a second run decodes nothing.

Pairs:
- a video window gives the pair (its audio, its centre frame): a real audio-visual pair, with
  the video's label when it has one, else as an unlabeled pair (label ``UNLABELED``), which
  methods that learn from unlabeled pairs use (``psd``'s soft part, ``infonce``);
- separate sounds and images (audio files, image files) are paired **within a label**: a
  label's audio windows and visual items are matched up, the visual items in a seeded order,
  the shorter side cycling, so every item of both sides is in at least one pair (the AV-Digits
  construction, without leaving images out). A sound or image whose label is
  unknown cannot be paired this way and is left out (counted in ``BuiltPairs.unpaired``).

Labels come from a CSV (``path,label``) or each file's parent folder name. Hiding labels for
``--labeled-ratio`` happens later, on the pairs: hidden pairs still train as unlabeled pairs.

Decoding and feature extraction are the stages of :mod:`avsearch.stages` (reader, mapper,
feature-cache writer), as for ``embed``. With augmentation or fine-tuning, :func:`add_views`
replaces a modality's cached feature vectors by per-window *views* (``[V, ...]``: features of V
augmented versions, or the activations at the cut of a fine-tuned backbone). Those are computed
from a fresh decode:
the feature cache only holds features of the un-augmented windows through the pretrained
backbones, so it is bypassed for fine-tuned or augmented towers and used for the others.
``build_pairs`` works on either (it stacks whatever each window holds).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from avsearch.errors import MediaError, UsageError
from avsearch.media.discover import MediaFile, discover
from avsearch.media.segment import WindowSpec
from avsearch.stages.mapper import Mapper
from avsearch.stages.reader import DONE, PIECE, Job, Reader, new_jobs
from avsearch.stages.runner import run
from avsearch.stages.writers import FeatureWriter, ViewEncoder, write_views
from avsearch.store.features import CachedWindow, FeatureCache

if TYPE_CHECKING:
    from avsearch.encoders.backbones import Backbones
    from avsearch.media.decode import Piece

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
    workers: int = 2,
) -> tuple[list[FileFeatures], ExtractStats]:
    """The backbone features of every window of the media files under ``paths``, in the
    order found: from the feature cache in ``cache_dir``, else read, mapped (features only)
    and written to it by the stages (:mod:`avsearch.stages`)."""
    report = progress or (lambda e, d: None)
    roots = [p.expanduser().resolve() for p in paths]
    for root in roots:
        if not root.exists():
            raise UsageError(f"{root} does not exist")
    files = list(discover(roots, exclude=[cache_dir]))
    report("discovered", {"files": len(files)})
    jobs, unread = new_jobs(files)
    stats = ExtractStats(files=len(files))
    for failure in unread:  # a dangling link, a FIFO, a file gone since the walk: never opened
        stats.failures.append((failure.path, failure.reason))
        log.warning("skipping %s: %s", failure.path, failure.reason)
        report("file", {"path": failure.path, "ok": False})
    key = backbones.key(spec.samples)
    windows: dict[int, list[CachedWindow]] = {}
    cache = FeatureCache(cache_dir / FEATURES_DB)
    try:
        for j, job in enumerate(jobs):
            if (hit := cache.get(job.digest, key)) is not None:
                windows[j] = hit
                report("file", {"path": str(job.file.path), "ok": True})
        stats.from_cache = len(windows)
        todo = [j for j in range(len(jobs)) if j not in windows]
        if todo:
            read = [jobs[j] for j in todo]
            decoded: dict[int, list[CachedWindow]] = {}
            failed = run(
                read,
                Reader(read, spec, image_size, workers),
                Mapper(backbones, batch_size, features=True, heads=False),
                [FeatureWriter(cache, key, read, kept=decoded)],
                report=report,
                commit_every=5.0,
            )
            windows.update({todo[k]: w for k, w in decoded.items()})
            stats.decoded = len(decoded)
            stats.failures += [(str(read[k].file.path), why) for k, why in failed.items()]
    finally:
        cache.close()
    out = [
        FileFeatures(jobs[j].file, labels(jobs[j].file.path), windows[j]) for j in sorted(windows)
    ]
    return out, stats


Encoder = ViewEncoder


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
    workers: int = 2,
) -> int:
    """Decode ``files`` again (the reader stage) and set each window's vector of
    ``modalities`` to its views (``encode``; :func:`avsearch.stages.writers.write_views`); the
    other modalities' vectors become one-view ``[1, D]`` arrays. Returns the number of files
    decoded.

    A file that no longer decodes, or decodes to other windows than its cached features
    (changed on disk since), is reported, appended to ``failures`` as ``(path, reason)`` and
    removed from ``files``: the rest trains, as when the first pass skips a file."""
    report = progress or (lambda e, d: None)
    if not modalities:
        for f in files:
            f.windows = write_views(f.file.path, f.windows, [], (), encode, batch_size)
        return 0
    report("discovered", {"files": len(files), "stage": "views"})
    pieces: dict[int, list[Piece]] = {}
    dropped: set[int] = set()
    reader = Reader([Job(f.file, "new", "") for f in files], spec, image_size, workers)
    try:
        for event in reader:
            if event is None:
                continue
            kind, j, payload = event
            path = files[j].file.path
            if kind == PIECE:
                if payload.modality in modalities:
                    pieces.setdefault(j, []).append(payload)
                continue
            try:
                if kind != DONE:
                    raise MediaError(path, payload)
                got = pieces.pop(j, [])
                files[j].windows = write_views(
                    path, files[j].windows, got, modalities, encode, batch_size
                )
            except MediaError as exc:
                pieces.pop(j, None)
                dropped.add(j)
                log.warning("skipping %s in the views pass: %s", path, exc.reason)
                if failures is not None:
                    failures.append((str(path), exc.reason))
            report("file", {"path": str(path), "ok": j not in dropped})
    finally:
        reader.close()
    decoded = len(files)
    files[:] = [f for j, f in enumerate(files) if j not in dropped]
    return decoded


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    arr = np.stack(rows)
    return arr if arr.dtype == np.float16 else arr.astype(np.float32, copy=False)


UNLABELED = -1  # the label of a pair whose video has none


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
    unlabeled_pairs: int = 0  # video pairs without a label (label UNLABELED)

    @property
    def known(self) -> np.ndarray:
        """Which pairs have a label."""
        return self.labels != UNLABELED


def build_pairs(files: list[FileFeatures], seed: int = 0) -> BuiltPairs:
    """Video windows pair with themselves (labeled or not); separate sounds and images pair
    within a label."""
    rng = np.random.default_rng(seed)
    labelled = sorted({f.label for f in files if f.label is not None})
    index = {name: i for i, name in enumerate(labelled)}
    a_rows: list[np.ndarray] = []
    v_rows: list[np.ndarray] = []
    ys: list[int] = []
    sources: list[str] = []
    video_pairs = 0
    unlabeled_pairs = 0
    unpaired = 0
    loose_audio: dict[str, list[tuple[str, np.ndarray]]] = {}
    loose_visual: dict[str, list[np.ndarray]] = {}
    for f in files:
        audio = {w.idx: w for w in f.windows if w.modality == "audio"}
        visual = {w.idx: w for w in f.windows if w.modality == "visual"}
        if f.file.kind == "video":
            for k in sorted(set(audio) & set(visual)):
                a_rows.append(audio[k].vector)
                v_rows.append(visual[k].vector)
                ys.append(UNLABELED if f.label is None else index[f.label])
                sources.append(f"{f.file.path}#{k}")
                video_pairs += 1
                unlabeled_pairs += f.label is None
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
        sounds = loose_audio[label]
        # every item of both sides is used: the shorter side cycles (500 images of a digit
        # and 225 clips give 500 pairs, not 225 that leave 275 images out)
        for n in range(max(len(sounds), len(visuals))):
            src, vec = sounds[n % len(sounds)]
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
    if not labelled and unlabeled_pairs < 2:
        raise UsageError("too few pairs: no label, and fewer than 2 video windows")
    return BuiltPairs(
        _stack(a_rows),
        _stack(v_rows),
        np.array(ys, np.int64),
        labelled,
        sources,
        video_pairs,
        label_pairs,
        unpaired,
        unlabeled_pairs,
    )
