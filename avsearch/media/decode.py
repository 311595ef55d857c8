"""Decode media into per-window payloads: mono float32 audio at the backbone's rate, and RGB
frames (for video, the frame nearest each window centre).

Audio files go through soundfile (wav, flac, ogg/oga), with PyAV as the fallback and for mp3/m4a;
video audio tracks and frames through PyAV; images through Pillow with EXIF orientation applied.
Everything streams: a long file never sits in memory whole.
"""

from __future__ import annotations

import fractions
import logging
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
from avsearch.media.segment import window_count, window_index

log = logging.getLogger(__name__)

Modality = Literal["audio", "visual"]
SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga"})
MAX_IMAGE_PIXELS = 200_000_000
MAX_BAD_PACKET_SHARE = 0.5  # more damaged packets than this and the stream counts as unreadable
# A window whose peak is below this (-120 dBFS) is digital silence: below the smallest step of
# 16-bit audio (3e-5), so only exact zeros (or codec rounding of them) fall under it.
SILENCE_PEAK = 1e-6

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


@dataclass(frozen=True)
class WindowSpec:
    """A window of ``samples`` audio samples at ``sample_rate`` (the audio backbone's rate)."""

    samples: int
    sample_rate: int
    min_tail: float = 0.5

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    @classmethod
    def from_seconds(cls, seconds: float, sample_rate: int, min_tail: float = 0.5) -> WindowSpec:
        return cls(round(seconds * sample_rate), sample_rate, min_tail)


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


def _soundfile_chunks(path: Path, rate: int, block: int = 1 << 16) -> Iterator[np.ndarray]:
    with _sound_file(path) as fh:
        src_rate = int(fh.samplerate)
        if fh.frames == 0:
            return
        resampler = _resampler(rate) if src_rate != rate else None
        offset = 0
        for chunk in fh.blocks(blocksize=block, dtype="float32", always_2d=True):
            mono = np.ascontiguousarray(chunk.mean(axis=1), dtype=np.float32)
            if resampler is None:
                yield mono
                continue
            frame = av.AudioFrame.from_ndarray(mono[np.newaxis, :], format="flt", layout="mono")
            frame.sample_rate = src_rate
            frame.pts = offset
            frame.time_base = fractions.Fraction(1, src_rate)
            offset += len(mono)
            yield _frames_to_mono(resampler.resample(frame))
        if resampler is not None:
            yield _frames_to_mono(resampler.resample(None))


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


def _pyav_audio_chunks(path: Path, rate: int) -> Iterator[np.ndarray]:
    """Decode the first audio stream, skipping damaged packets (counted, logged)."""
    with _open(path) as container:
        if not container.streams.audio:
            return
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
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
                    frame.pts = None  # let the resampler follow sample counts, not damaged pts
                    try:
                        out.extend(resampler.resample(frame))
                    except ValueError:  # the stream changed rate/layout/format mid-way
                        log.debug("%s: audio format changed mid-stream; resampling anew", path)
                        out.extend(resampler.resample(None))
                        resampler = _resampler(rate)
                        out.extend(resampler.resample(frame))
                yield _frames_to_mono(out)
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"audio stream cannot be read: {exc}") from exc
        yield _frames_to_mono(resampler.resample(None))
        if packets and bad / packets > MAX_BAD_PACKET_SHARE:
            raise MediaError(path, f"audio stream is damaged ({bad} of {packets} packets)")
        if bad:
            log.warning("%s: skipped %d damaged audio packet(s) of %d", path, bad, packets)


def audio_chunks(path: Path, rate: int, *, prefer_soundfile: bool = True) -> Iterator[np.ndarray]:
    """Mono float32 chunks at ``rate`` Hz for an audio file or a video's first audio track."""
    if prefer_soundfile and path.suffix.lower() in SOUNDFILE_EXTENSIONS:
        try:
            with _sound_file(path):
                pass
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            log.debug("%s: soundfile cannot open it (%s); trying PyAV", path, exc)
        else:
            try:
                yield from _soundfile_chunks(path, rate)
                return
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise MediaError(path, f"audio cannot be decoded: {exc}") from exc
    yield from _pyav_audio_chunks(path, rate)


def audio_pieces(path: Path, spec: WindowSpec) -> Iterator[Piece]:
    """Cut the audio of ``path`` into windows, streaming; the tail follows ``spec.min_tail``."""
    n = spec.samples
    buf = np.zeros(0, dtype=np.float32)
    k = 0
    total = 0
    for chunk in audio_chunks(path, spec.sample_rate):
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


def video_pieces(path: Path, spec: WindowSpec, image_size: int = 224) -> Iterator[Piece]:
    """For each window, the decoded frame nearest its centre, as a preprocessed RGB array."""
    from avsearch.encoders.efficientnet import preprocess_image

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
            img = preprocess_image(frame.to_image(), image_size)
            return Piece("visual", k, round(k * w, 6), round(end, 6), img)

        prev: tuple[av.VideoFrame, float] | None = None
        k = 0
        count = 0
        decoded = 0
        try:
            for frame in container.decode(stream):
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
    from avsearch.encoders.efficientnet import preprocess_image

    img = load_image(path)
    yield Piece("visual", 0, 0.0, 0.0, preprocess_image(img, image_size))


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
) -> list[Piece]:
    """Pieces of ``modality`` of a query file, restricted to [start, end) when given."""
    if kind == "image":
        return list(image_pieces(path, image_size)) if modality == "visual" else []
    if modality == "audio":
        pieces = list(audio_pieces(path, spec))
    else:
        pieces = list(video_pieces(path, spec, image_size))
    if start is None and end is None:
        return pieces
    lo = start or 0.0
    hi = end if end is not None else float("inf")
    return [p for p in pieces if p.start < hi and max(p.end, p.start + 1e-6) > lo]
