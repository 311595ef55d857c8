"""Clip export: each hit of a query as a playable file, named by rank and source, plus a contact
sheet of the hits' pictures (``avsearch query ... --export DIR [--pad SEC]``).

- A hit in a **video** becomes a clip of the same container, ``pad`` seconds of context on each
  side. The packets are copied as they are (no re-encoding, no loss) from the keyframe at or
  before the padded start, so the clip may begin up to one keyframe interval earlier than asked;
  only when that keyframe lies more than ``MAX_LEAD`` seconds too early, or the copy fails, is
  the range re-encoded (H.264 + AAC in MP4, exactly the padded range).
- A hit in a **sound** file becomes a WAV of the padded range (mono, 44.1 kHz, 16-bit).
- A hit in an **image** is copied as it is.
- ``contact_sheet.png``: the picture of every hit that has one (images, and the frame at the
  middle of a video hit), in rank order, labelled by rank.

Names: ``<rank, 2 digits>_<source file stem>[_<start>-<end>s].<ext>``, e.g.
``01_dog.webp``, ``02_example3_0.00-4.01s.mp4``, ``03_owl_0.00-3.29s.wav``.
A hit whose source cannot be read is named under ``failures``; the others are written.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import soundfile as sf
from PIL import Image, ImageDraw

from avsearch.errors import AvsearchError, MediaError, UsageError
from avsearch.media import excerpt
from avsearch.media.discover import media_kind
from avsearch.media.paths import display_path, path_fields
from avsearch.query import Hit, QueryResult

log = logging.getLogger(__name__)

MAX_LEAD = 5.0  # seconds a copied clip may start before its padded start; more: re-encode
WAV_RATE = 44_100
SHEET_CELL = 200  # pixels per contact-sheet cell
SHEET_COLUMNS = 4
CONTACT_SHEET = "contact_sheet.png"


@dataclass
class Exported:
    rank: int
    source: str
    path: Path
    method: str  # "copy" (packets copied) | "reencode" | "wav" | "image"
    start: float | None = None  # the range written (copy: from the keyframe before)
    end: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            **path_fields(self.source, "source"),
            **path_fields(self.path),
            "method": self.method,
            "start": None if self.start is None else round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3),
        }


@dataclass
class ExportSummary:
    dir: Path
    files: list[Exported] = field(default_factory=list)
    contact_sheet: Path | None = None
    failures: list[str] = field(default_factory=list)  # "source: reason"

    def to_json(self) -> dict[str, Any]:
        return {
            "dir": str(self.dir),
            "files": [f.to_json() for f in self.files],
            "contact_sheet": None if self.contact_sheet is None else str(self.contact_sheet),
            "failures": self.failures,
        }


def check_export_dir(path: Path) -> Path:
    """``path`` made absolute and created when missing; UsageError when nothing can be written
    into it (checked by creating and removing a temporary file, so it holds for root too)."""
    path = path.expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".avsearch-", delete=True):
            pass
    except (FileExistsError, NotADirectoryError):
        raise UsageError(
            f"cannot export into {display_path(path)}: it is a file, or lies under one",
            hint="give --export a folder (it is created when missing)",
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot export into {display_path(path)}: {exc.strerror or exc}",
            hint="give --export a folder you can write to",
        ) from exc
    return path


def file_name(hit: Hit, start: float | None = None, end: float | None = None) -> str:
    """``<rank>_<stem>[_<start>-<end>s]`` (no extension); characters other than letters,
    digits, ``-``, ``_`` and ``.`` become ``_``, bytes that are not UTF-8 too."""
    stem = display_path(Path(hit.path).stem).replace("\\x", "_")
    stem = re.sub(r"[^\w.\-]+", "_", stem).strip("._") or "hit"
    span = "" if start is None or end is None else f"_{start:.2f}-{end:.2f}s"
    return f"{hit.rank:02d}_{stem[:80]}{span}"


def export_hits(result: QueryResult, out_dir: Path, *, pad: float = 1.0) -> ExportSummary:
    """Write every hit of ``result`` into ``out_dir`` (see the module docstring)."""
    summary = ExportSummary(out_dir)
    pictures: list[tuple[int, Image.Image]] = []
    for hit in result.results:
        src = Path(hit.path)
        kind = media_kind(src) or "image"
        try:
            if kind == "image":
                target = out_dir / (file_name(hit) + src.suffix.lower())
                shutil.copyfile(src, target)
                summary.files.append(Exported(hit.rank, hit.path, target, "image"))
                pictures.append((hit.rank, excerpt.picture(src, "image", None)))
            elif kind == "audio":
                summary.files.append(_sound(hit, src, out_dir, pad))
            else:
                summary.files.append(_video(hit, src, out_dir, pad))
                mid = ((hit.start or 0.0) + (hit.end or hit.start or 0.0)) / 2
                pictures.append((hit.rank, excerpt.picture(src, "video", mid)))
        except (AvsearchError, OSError, ValueError) as exc:
            reason = exc.message if isinstance(exc, AvsearchError) else str(exc)
            summary.failures.append(f"{display_path(src)}: {reason}")
            log.warning("not exported: %s: %s", display_path(src), reason)
    if pictures:
        summary.contact_sheet = out_dir / CONTACT_SHEET
        contact_sheet(pictures).save(summary.contact_sheet, optimize=True)
    return summary


def _range(hit: Hit, pad: float, duration: float | None) -> tuple[float, float]:
    start = max(0.0, (hit.start or 0.0) - pad)
    end = (hit.end if hit.end is not None else start) + pad
    if duration is not None:
        end = min(end, duration)
    return start, max(end, start)


def _sound(hit: Hit, src: Path, out_dir: Path, pad: float) -> Exported:
    start, end = _range(hit, pad, None)
    samples = excerpt.audio_range(src, start, end, WAV_RATE)
    if samples.size == 0:
        raise MediaError(src, f"no sound in {start:.2f}-{end:.2f} s")
    end = start + samples.size / WAV_RATE
    target = out_dir / (file_name(hit, start, end) + ".wav")
    sf.write(target, samples, WAV_RATE, subtype="PCM_16")
    return Exported(hit.rank, hit.path, target, "wav", start, end)


def _video(hit: Hit, src: Path, out_dir: Path, pad: float) -> Exported:
    duration = _duration(src)
    start, end = _range(hit, pad, duration)
    if end - start <= 0:
        raise MediaError(src, f"the hit's range lies past the end of the file ({duration} s)")
    suffix = src.suffix.lower()
    target = out_dir / (file_name(hit, start, end) + suffix)
    try:
        began = copy_range(src, target, start, end)
    except (av.error.FFmpegError, MediaError, ValueError) as exc:
        log.info("%s: packets cannot be copied (%s); re-encoding", display_path(src), exc)
        began = None
    if began is not None and start - began <= MAX_LEAD:
        named = out_dir / (file_name(hit, began, end) + suffix)  # the range it holds
        target.replace(named)
        return Exported(hit.rank, hit.path, named, "copy", began, end)
    target.unlink(missing_ok=True)
    target = target.with_suffix(".mp4")
    excerpt.transcode(src, start, end, target, fmt="mp4", video_codec="libx264", audio_codec="aac")
    return Exported(hit.rank, hit.path, target, "reencode", start, end)


def _duration(path: Path) -> float | None:
    try:
        with av.open(str(path), metadata_errors="replace") as c:
            return float(c.duration / av.time_base) if c.duration else None
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"cannot open: {exc}") from exc


def copy_range(src: Path, target: Path, start: float, end: float) -> float | None:
    """Copy the packets of the first video stream and first audio stream from the keyframe at
    or before ``start`` up to ``end`` (seconds) into ``target`` (same container kind), the
    timestamps shifted to begin at 0. Returns the time the copy begins at (that keyframe), or
    None when there is no such keyframe to start from."""
    with av.open(str(src), metadata_errors="replace") as inp:
        if not inp.streams.video:
            raise MediaError(src, "no video stream")
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        streams = [s for s in (vin, ain) if s is not None]
        base = float(vin.start_time * vin.time_base) if vin.start_time is not None else 0.0
        seek_to = _seek_point(inp, vin, base, start)
        if seek_to is None:
            return None
        inp.seek(int((base + seek_to) / vin.time_base), stream=vin, backward=True)
        with av.open(str(target), "w") as out:
            outs = {s.index: out.add_stream_from_template(s) for s in streams}
            began: float | None = None
            zero = 0.0
            last_dts: dict[int, int] = {}
            for packet in inp.demux(streams):
                if packet.dts is None or packet.size == 0:
                    continue
                t = float(packet.dts * packet.time_base) - base
                if began is None:
                    if packet.stream is not vin or not packet.is_keyframe:
                        continue
                    began = max(0.0, float((packet.pts or packet.dts) * packet.time_base) - base)
                    zero = t  # (decode time of that keyframe: every copied dts stays >= 0)
                if t >= end and packet.stream is vin:
                    break
                if t >= end or t < zero - 1e-3:
                    continue
                shift = math.floor((zero + base) / packet.time_base)
                packet.pts = None if packet.pts is None else packet.pts - shift
                packet.dts -= shift
                idx = packet.stream.index
                if idx in last_dts and packet.dts <= last_dts[idx]:
                    continue  # keeps the muxer's timestamps increasing
                last_dts[idx] = packet.dts
                packet.stream = outs[idx]
                out.mux(packet)
    if began is None:
        target.unlink(missing_ok=True)
    return began


def _seek_point(
    inp: av.container.InputContainer, vin: av.VideoStream, base: float, start: float
) -> float | None:
    """A time to seek to whose first keyframe is at or before ``start``: some demuxers land on
    the keyframe after the target, so earlier targets are tried, down to the beginning."""
    for back in (0.0, 2.0, 10.0, 60.0, math.inf):
        target = max(0.0, start - back)
        inp.seek(int((base + target) / vin.time_base), stream=vin, backward=True)
        for packet in inp.demux(vin):
            if packet.dts is None or not packet.is_keyframe:
                continue
            first = float((packet.pts or packet.dts) * packet.time_base) - base
            if first <= start + 1e-3:
                return target
            break
        if target == 0.0:
            return None
    return None


def contact_sheet(pictures: list[tuple[int, Image.Image]]) -> Image.Image:
    """The pictures in a grid of ``SHEET_COLUMNS`` cells of ``SHEET_CELL`` pixels, each
    labelled ``#rank``."""
    cols = min(SHEET_COLUMNS, len(pictures))
    rows = math.ceil(len(pictures) / cols)
    cell, label = SHEET_CELL, 18
    sheet = Image.new("RGB", (cols * cell, rows * (cell + label)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, (rank, img) in enumerate(pictures):
        x, y = (n % cols) * cell, (n // cols) * (cell + label)
        thumb = img.convert("RGB")
        thumb.thumbnail((cell - 8, cell - 8))
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        draw.text((x + 6, y + cell), f"#{rank}", fill=(0, 0, 0))
    return sheet
