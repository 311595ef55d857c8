"""Decode media into per-window payloads: mono float32 audio at the backbone's rate, and RGB
frames (for video, the frame nearest each window centre).

Audio files go through soundfile (wav, flac, ogg/oga), with PyAV as the fallback and for mp3/m4a;
video audio tracks and frames through PyAV; images through Pillow with EXIF orientation applied.
Everything streams: a long file never sits in memory whole.
"""

from __future__ import annotations

import fractions
import itertools
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
import soundfile as sf
from PIL import Image, ImageOps

from avsearch.errors import ImageTooLargeError, MediaError, NoAudioError
from avsearch.media.image import square_rgb
from avsearch.media.segment import WindowSpec, window_count, window_index

log = logging.getLogger(__name__)

Modality = Literal["audio", "visual"]
SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga"})
MAX_IMAGE_PIXELS = 200_000_000
MAX_BAD_PACKET_SHARE = 0.5  # more damaged packets than this and the stream counts as unreadable
# A window whose peak is below this (-120 dBFS) is digital silence: below the smallest step of
# 16-bit audio (3e-5), so only exact zeros (or codec rounding of them) fall under it.
SILENCE_PEAK = 1e-6
# Seeking (a query's --start) lands this far before the first sample wanted, so that decoders
# (MP3's bit reservoir, AAC's overlapping transforms) and the resampler settle before it.
SEEK_PREROLL = 0.5

Image.MAX_IMAGE_PIXELS = None  # we check the limit ourselves, with a typed error


@dataclass(frozen=True)
class Piece:
    """One window's payload for one modality."""

    modality: Modality
    index: int
    start: float
    end: float
    data: np.ndarray  # audio: float32 [samples]; visual: uint8 [H, W, 3] RGB
    padded: bool = False
    silent: bool = False  # audio only: digital silence (peak below SILENCE_PEAK)


def is_silent(samples: np.ndarray) -> bool:
    """True when a window holds digital silence: its peak is below ``SILENCE_PEAK``."""
    return samples.size == 0 or float(np.max(np.abs(samples))) < SILENCE_PEAK


# ---------------------------------------------------------------------------------------- audio


def _resampler(rate: int) -> av.AudioResampler:
    return av.AudioResampler(format="flt", layout="mono", rate=rate)


def _frames_to_mono(frames: list[av.AudioFrame]) -> np.ndarray:
    if not frames:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)


def _sound_file(path: Path) -> sf.SoundFile:
    """Open with soundfile by the path's bytes: it cannot encode a str holding the surrogate
    escapes of a non-UTF-8 file name (PyAV and Pillow take such a str as it is)."""
    return sf.SoundFile(os.fsencode(path))


def _drop(chunk: np.ndarray, drop: int) -> tuple[np.ndarray, int]:
    """``chunk`` without its first ``drop`` samples, and how many are still to drop after it."""
    cut = min(drop, chunk.size)
    return chunk[cut:], drop - cut


class _SeekMissed(Exception):
    """A seek landed after its target, or where no timestamp places it: decode from the start."""


def _soundfile_chunks(
    path: Path, rate: int, skip: int = 0, block: int = 1 << 16
) -> Iterator[np.ndarray]:
    with _sound_file(path) as fh:
        src_rate = int(fh.samplerate)
        if fh.frames == 0:
            return
        resampler = _resampler(rate) if src_rate != rate else None
        first = 0  # the source frame read first: one where both rates meet on a whole sample
        if skip and fh.seekable():
            step = src_rate // math.gcd(src_rate, rate)
            preroll = round(SEEK_PREROLL * src_rate) if resampler is not None else 0
            first = min(max(0, skip * src_rate // rate - preroll) // step * step, fh.frames)
            fh.seek(first)
        drop = skip - first * rate // src_rate
        offset = 0
        for chunk in fh.blocks(blocksize=block, dtype="float32", always_2d=True):
            mono = np.ascontiguousarray(chunk.mean(axis=1), dtype=np.float32)
            if resampler is not None:
                frame = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
                frame.sample_rate = src_rate
                frame.pts = offset
                frame.time_base = fractions.Fraction(1, src_rate)
                offset += len(mono)
                mono = _frames_to_mono(resampler.resample(frame))
            mono, drop = _drop(mono, drop)
            yield mono
        if resampler is not None:
            yield _drop(_frames_to_mono(resampler.resample(None)), drop)[0]


def _open(path: Path) -> av.container.InputContainer:
    """Open a media container, or raise MediaError naming the file and the reason.

    A str path holding the surrogate escapes of a non-UTF-8 file name works as it is. Tags that
    are not UTF-8 (old taggers write Latin-1) are read with replacement characters rather than
    failing the whole file: nothing here uses tags.
    """
    try:
        return av.open(str(path), metadata_errors="replace")
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(path, f"cannot open: {exc}") from exc


def _place(frame: av.AudioFrame, begin: float, skip: int, rate: int) -> tuple[int, int]:
    """For the first frame after a seek: (output samples to drop, source samples to skip), so
    that resampling starts on a source sample that falls on the output grid, as in a whole
    decode, and the output starts at sample ``skip``. ``_SeekMissed`` when it is past that."""
    if frame.time is None:
        raise _SeekMissed
    src = frame.sample_rate
    first = round((frame.time - begin) * src)  # its first sample's index in a whole decode
    lead = -first % (src // math.gcd(src, rate))
    drop = skip - (first + lead) * rate // src
    if drop < 0:
        raise _SeekMissed
    return drop, lead


def _trim(frame: av.AudioFrame, n: int) -> tuple[av.AudioFrame | None, int]:
    """``frame`` without its first ``n`` samples (None when none is left), and how many are
    still to skip after it."""
    if n >= frame.samples:
        return None, n - frame.samples
    arr = frame.to_ndarray()
    per = 1 if frame.format.is_planar else len(frame.layout.channels)
    cut = np.ascontiguousarray(arr[:, n * per :])
    out = av.AudioFrame.from_ndarray(cut, format=frame.format.name, layout=frame.layout.name)
    out.sample_rate = frame.sample_rate
    return out, 0


def _pyav_audio_chunks(
    path: Path, rate: int, skip: int = 0, *, seek: bool = True
) -> Iterator[np.ndarray]:
    """Decode the first audio stream from output sample ``skip`` on, skipping damaged packets
    (counted, logged). With ``seek``, it seeks to ``SEEK_PREROLL`` before that sample, placed by
    the first frame's timestamp (``_SeekMissed`` when that lands after it or has none)."""
    with _open(path) as container:
        if not container.streams.audio:
            raise NoAudioError(path, "no audio stream")
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        begin = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        drop: int | None = skip  # None: placed by the first frame after seeking
        lead = 0  # source samples still to skip before resampling (see _place)
        if seek and skip / rate > SEEK_PREROLL:
            target = begin + skip / rate - SEEK_PREROLL
            container.seek(int(target / stream.time_base), stream=stream)
            drop = None
        resampler = _resampler(rate)
        packets = bad = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                packets += 1
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as exc:
                    bad += 1
                    log.debug("%s: damaged audio packet skipped (%s)", path, exc)
                    continue
                out: list[av.AudioFrame] = []
                for frame in frames:
                    if drop is None:
                        drop, lead = _place(frame, begin, skip, rate)
                    if lead:
                        trimmed, lead = _trim(frame, lead)
                        if trimmed is None:
                            continue
                        frame = trimmed
                    frame.pts = None  # let the resampler follow sample counts, not damaged pts
                    try:
                        out.extend(resampler.resample(frame))
                    except ValueError:  # the stream changed rate/layout/format mid-way
                        log.debug("%s: audio format changed mid-stream; resampling anew", path)
                        out.extend(resampler.resample(None))
                        resampler = _resampler(rate)
                        out.extend(resampler.resample(frame))
                chunk = _frames_to_mono(out)
                if drop is not None:  # (else the chunk is empty: no frame yet)
                    chunk, drop = _drop(chunk, drop)
                yield chunk
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"audio stream cannot be read: {exc}") from exc
        yield _drop(_frames_to_mono(resampler.resample(None)), drop or 0)[0]
        if packets and bad / packets > MAX_BAD_PACKET_SHARE:
            raise MediaError(path, f"audio stream is damaged ({bad} of {packets} packets)")
        if bad:
            log.warning("%s: skipped %d damaged audio packet(s) of %d", path, bad, packets)


def audio_chunks(
    path: Path, rate: int, *, prefer_soundfile: bool = True, skip: int = 0
) -> Iterator[np.ndarray]:
    """Mono float32 chunks at ``rate`` Hz for an audio file or a video's first audio track,
    from output sample ``skip`` on: seeking near it, then dropping what precedes it exactly."""
    if prefer_soundfile and path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        try:
            with _sound_file(path):
                pass
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            log.debug("%s: soundfile cannot open it (%s); trying PyAV", path, exc)
        else:
            try:
                yield from _soundfile_chunks(path, rate, skip)
                return
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise MediaError(path, f"audio cannot be decoded: {exc}") from exc
    try:
        yield from _pyav_audio_chunks(path, rate, skip)
    except _SeekMissed:
        log.debug("%s: the seek missed; decoding from the start", path)
        yield from _pyav_audio_chunks(path, rate, skip, seek=False)


def audio_pieces(path: Path, spec: WindowSpec, *, start: float = 0.0) -> Iterator[Piece]:
    """Cut the audio of ``path`` into windows, streaming; the tail follows ``spec.min_tail``.
    With ``start`` (seconds), from the window holding it on: the same windows a whole decode
    gives there, read after a seek (none when it lies past the end)."""
    n = spec.samples
    buf = np.zeros(0, dtype=np.float32)
    k = window_index(start, spec.seconds) if start > 0 else 0
    total = 0
    for chunk in audio_chunks(path, spec.sample_rate, skip=k * n):
        if chunk.size == 0:
            continue
        if not np.all(np.isfinite(chunk)):
            chunk = np.nan_to_num(chunk, nan=0.0, posinf=0.0, neginf=0.0)
        total += chunk.size
        buf = np.concatenate([buf, chunk]) if buf.size else chunk
        while buf.size >= n:
            window = np.ascontiguousarray(buf[:n])
            yield Piece(
                "audio",
                k,
                round(k * spec.seconds, 6),
                round((k + 1) * spec.seconds, 6),
                window,
                silent=is_silent(window),
            )
            buf = buf[n:]
            k += 1
    if total == 0:
        if k:  # (a range past the end)
            return
        raise NoAudioError(path, "no audio samples could be decoded")
    tail = buf.size / spec.sample_rate
    if buf.size and (k == 0 or tail >= spec.min_tail):
        padded = np.zeros(n, dtype=np.float32)
        padded[: buf.size] = buf
        yield Piece(
            "audio",
            k,
            round(k * spec.seconds, 6),
            round(k * spec.seconds + tail, 6),
            padded,
            padded=True,
            silent=is_silent(buf),
        )


# ---------------------------------------------------------------------------------------- video


def has_audio_stream(path: Path) -> bool:
    with _open(path) as container:
        return bool(container.streams.audio)


def _frame_time(frame: av.VideoFrame, offset: float, count: int, rate: float) -> float:
    if frame.time is not None:
        return float(frame.time) - offset
    return count / rate if rate else 0.0


def video_pieces(
    path: Path, spec: WindowSpec, image_size: int = 224, *, start: float = 0.0
) -> Iterator[Piece]:
    """For each window, the decoded frame nearest its centre, as a square RGB array of side
    ``image_size`` (:func:`avsearch.media.image.square_rgb`). With ``start`` (seconds), from
    the window holding it on, decoded from the keyframe before that window: the same windows a
    whole decode gives there."""
    with _open(path) as container:
        if not container.streams.video:
            return
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        offset = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        rate = float(stream.average_rate or 25)
        duration = float(container.duration / av.time_base) if container.duration else None
        limit = window_count(duration, spec.seconds, spec.min_tail) if duration else None
        w = spec.seconds

        def emit(k: int, frame: av.VideoFrame, t: float) -> Piece:
            end = (k + 1) * w if duration is None else min((k + 1) * w, max(duration, t))
            img = square_rgb(frame.to_image(), image_size)
            return Piece("visual", k, round(k * w, 6), round(end, 6), img)

        prev: tuple[av.VideoFrame, float] | None = None
        k = window_index(start, w) if start > 0 else 0
        if limit is not None and k >= limit:
            return
        count = 0
        decoded = 0
        try:
            frames = _frames_from(container, stream, offset + k * w) if k else None
            for frame in frames or container.decode(stream):
                t = _frame_time(frame, offset, count, rate)
                count += 1
                decoded += 1
                while t > (k + 0.5) * w and (limit is None or k < limit):
                    best = _nearest(prev, (frame, t), k, w)
                    if best is not None:
                        yield emit(k, *best)
                    k += 1
                if limit is not None and k >= limit:
                    break
                prev = (frame, t)
        except av.error.FFmpegError as exc:
            if decoded == 0:
                raise MediaError(path, f"video stream cannot be decoded: {exc}") from exc
            log.warning("%s: video decoding stopped early at frame %d (%s)", path, decoded, exc)
        if decoded == 0:
            raise MediaError(path, "no video frames could be decoded")
        if prev is not None and (limit is None or k < limit):
            last_k = window_index(prev[1], w)
            if last_k == k:
                yield emit(k, *prev)


def _frames_from(
    container: av.container.InputContainer, stream: av.video.VideoStream, t: float
) -> Iterator[av.VideoFrame] | None:
    """The frames of ``stream`` from the keyframe at or before ``t`` (stream seconds) on; None
    (decode from the start) when the seek lands after ``t`` or where no timestamp places it."""
    container.seek(int(t / stream.time_base), stream=stream)
    frames = container.decode(stream)
    first = next(frames, None)
    if first is not None and first.time is not None and first.time <= t + 1e-6:
        return itertools.chain([first], frames)
    container.seek(stream.start_time or 0, stream=stream)
    return None


def _nearest(
    prev: tuple[av.VideoFrame, float] | None, cur: tuple[av.VideoFrame, float], k: int, w: float
) -> tuple[av.VideoFrame, float] | None:
    centre = (k + 0.5) * w
    cands = [c for c in (prev, cur) if c is not None and k * w <= c[1] < (k + 1) * w]
    if not cands:
        return None
    return min(cands, key=lambda c: abs(c[1] - centre))


# ---------------------------------------------------------------------------------------- image


def load_image(path: Path) -> Image.Image:
    """Open an image with EXIF orientation applied; typed errors for damaged or huge files."""
    try:
        with Image.open(path) as img:
            pixels = img.width * img.height
            if pixels > MAX_IMAGE_PIXELS:
                raise ImageTooLargeError(path, pixels, MAX_IMAGE_PIXELS)
            img.draft("RGB", (512, 512))
            img.load()
            return ImageOps.exif_transpose(img) or img
    except ImageTooLargeError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(path, f"image cannot be decoded: {exc}") from exc
    except MemoryError as exc:  # a damaged chunk length can claim gigabytes
        reason = "image cannot be decoded: it claims more memory than it has"
        raise MediaError(path, reason) from exc


def image_pieces(path: Path, image_size: int = 224) -> Iterator[Piece]:
    img = load_image(path)
    yield Piece("visual", 0, 0.0, 0.0, square_rgb(img, image_size))


def file_pieces(path: Path, kind: str, spec: WindowSpec, image_size: int = 224) -> Iterator[Piece]:
    """All pieces of one file: video → audio windows then visual windows; audio; image."""
    if kind == "image":
        yield from image_pieces(path, image_size)
    elif kind == "audio":
        yield from audio_pieces(path, spec)
    elif kind == "video":
        if has_audio_stream(path):
            try:
                yield from audio_pieces(path, spec)
            except NoAudioError:  # a declared track with no samples: index the frames alone
                log.info("%s: its audio track holds no samples; indexing its frames", path)
        yield from video_pieces(path, spec, image_size)
    else:  # pragma: no cover - discover() never yields another kind
        raise MediaError(path, f"unsupported media kind {kind!r}")


def decode_query(
    path: Path,
    kind: str,
    spec: WindowSpec,
    start: float | None,
    end: float | None,
    modality: Modality,
    image_size: int = 224,
) -> Iterator[Piece]:
    """Pieces of ``modality`` of a query file, restricted to [start, end) when given: a range
    is read after a seek to it (``audio_pieces``, ``video_pieces``), up to its end."""
    if kind == "image":
        if modality == "visual":
            yield from image_pieces(path, image_size)
        return
    lo = start or 0.0
    hi = end if end is not None else float("inf")
    if modality == "audio":
        pieces = audio_pieces(path, spec, start=lo)
    else:
        pieces = video_pieces(path, spec, image_size, start=lo)
    try:
        for p in pieces:
            if p.start >= hi:
                return
            if max(p.end, p.start + 1e-6) > lo:
                yield p
    finally:
        pieces.close()
