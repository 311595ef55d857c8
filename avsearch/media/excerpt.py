"""Excerpts of media files for people: a range of sound, the frame at a time, a short clip, a
spectrogram picture, a thumbnail, each encoded small (for the results page and clip export).

Reading goes through the decoders the index uses (``audio_chunks`` seeks, then drops exactly
what precedes the start); writing through PyAV (Opus in Ogg for sound, VP8 + Opus in WebM for
video clips: both play in every browser without a plug-in) and Pillow (WebP thumbnails, JPEG
when Pillow has no WebP encoder). Every function raises MediaError naming the file when it
cannot read or write it.
"""

from __future__ import annotations

import contextlib
import fractions
import io
import logging
from pathlib import Path

import av
import numpy as np
from PIL import Image, features

from avsearch.errors import MediaError
from avsearch.media.decode import audio_chunks, load_image
from avsearch.media.image import to_rgb

log = logging.getLogger(__name__)

OPUS_RATE = 48_000  # the rate Opus encodes at
SPECTRO_RATE = 16_000


def audio_range(path: Path, start: float, end: float, rate: int = OPUS_RATE) -> np.ndarray:
    """Mono float32 samples of ``[start, end)`` seconds of ``path`` (an audio file or a video's
    sound) at ``rate`` Hz; shorter when the file ends first, empty when it starts after it."""
    first = max(0, round(start * rate))
    want = max(0, round((end - start) * rate))
    parts: list[np.ndarray] = []
    got = 0
    try:
        with contextlib.closing(audio_chunks(path, rate, skip=first)) as chunks:
            for chunk in chunks:
                part = chunk[: want - got]
                parts.append(part)
                got += part.size
                if got >= want:
                    break
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(path, f"audio cannot be read: {exc}") from exc
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return np.nan_to_num(out.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def frame_at(path: Path, t: float) -> Image.Image:
    """The decoded video frame nearest ``t`` seconds (from the keyframe before it on)."""
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            offset = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
            if t > 0:
                container.seek(int((offset + t) / stream.time_base), stream=stream)
            best: tuple[float, av.VideoFrame] | None = None
            for frame in container.decode(stream):
                ft = float(frame.time) - offset if frame.time is not None else 0.0
                if best is None or abs(ft - t) < best[0]:
                    best = (abs(ft - t), frame)
                if ft >= t:
                    break
            if best is None:
                raise MediaError(path, f"no video frame at {t:.2f} s")
            return best[1].to_image()
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"video cannot be read: {exc}") from exc


def picture(path: Path, kind: str, t: float | None) -> Image.Image:
    """The picture of a hit: the image itself, or a video's frame at ``t``."""
    if kind == "image":
        return load_image(path)
    return frame_at(path, t or 0.0)


def thumbnail(img: Image.Image, max_side: int = 240, quality: int = 70) -> tuple[bytes, str]:
    """(bytes, MIME type) of ``img`` scaled to fit ``max_side``, as WebP (JPEG without it)."""
    small = to_rgb(img).copy()
    small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if features.check("webp"):
        small.save(buf, "WEBP", quality=quality, method=4)
        return buf.getvalue(), "image/webp"
    small.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue(), "image/jpeg"


def _colormap(x: np.ndarray) -> np.ndarray:
    """0..1 -> RGB uint8 along a dark-blue, purple, orange, pale-yellow ramp."""
    anchors = np.array(
        [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
         [250, 193, 39], [252, 255, 164]],
        dtype=np.float64,
    )  # fmt: skip
    pos = np.clip(x, 0.0, 1.0) * (len(anchors) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(anchors) - 2)
    frac = (pos - lo)[..., None]
    out = anchors[lo] * (1 - frac) + anchors[lo + 1] * frac
    return out.round().astype(np.uint8)


def spectrogram(
    samples: np.ndarray, rate: int = SPECTRO_RATE, size: tuple[int, int] = (240, 96)
) -> Image.Image:
    """A log-power spectrogram picture of mono ``samples`` (time left to right, low frequencies
    at the bottom), ``size`` = (width, height); 60 dB of range below the loudest bin."""
    n_fft, hop = 512, 128
    x = np.asarray(samples, dtype=np.float64)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    count = 1 + (x.size - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:count]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    db = 10.0 * np.log10(power + 1e-12)
    db = (db - (db.max() - 60.0)) / 60.0
    img = Image.fromarray(_colormap(db.T[::-1]))  # [freq (high first), time, 3]
    return img.resize(size, Image.Resampling.BILINEAR)


def encode_opus(samples: np.ndarray, rate: int = OPUS_RATE, bitrate: int = 32_000) -> bytes:
    """Mono float32 ``samples`` at ``rate`` (48 kHz) as Ogg/Opus bytes."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=rate)
        stream.layout = "mono"
        stream.bit_rate = bitrate
        _encode_audio(out, stream, samples, rate)
    return buf.getvalue()


def _encode_audio(
    out: av.container.OutputContainer, stream: av.AudioStream, samples: np.ndarray, rate: int
) -> None:
    step = 960  # 20 ms at 48 kHz, an Opus frame
    data = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    if data.size == 0:
        data = np.zeros(step, dtype=np.float32)
    for lo in range(0, data.size, step):
        frame = av.AudioFrame.from_ndarray(data[None, lo : lo + step], format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = lo
        frame.time_base = fractions.Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def video_clip(
    path: Path,
    start: float,
    end: float,
    *,
    max_side: int = 320,
    fps: int = 12,
    bitrate: int = 300_000,
    sound: bool = True,
) -> bytes:
    """``[start, end)`` of a video, transcoded small: WebM, VP8 at most ``max_side`` pixels and
    ``fps`` frames a second, with its sound as Opus when it has any."""
    buf = io.BytesIO()
    transcode(
        path, start, end, buf, fmt="webm", video_codec="libvpx", audio_codec="libopus",
        max_side=max_side, fps=fps, bitrate=bitrate, sound=sound,
    )  # fmt: skip
    return buf.getvalue()


def transcode(
    path: Path,
    start: float,
    end: float,
    out_file: io.BytesIO | Path,
    *,
    fmt: str,
    video_codec: str,
    audio_codec: str,
    max_side: int | None = None,
    fps: int | None = None,
    bitrate: int | None = None,
    sound: bool = True,
) -> None:
    """Decode ``[start, end)`` of a video and encode it into ``out_file`` (container ``fmt``):
    frames scaled to fit ``max_side`` (None: as they are) at ``fps`` (None: the source's rate,
    at most 60), the sound (mono, 48 kHz) with ``audio_codec`` when there is any."""
    samples = None
    if sound:
        try:
            samples = audio_range(path, start, end)
        except MediaError as exc:  # (a silent video: a clip without sound)
            log.debug("%s: clip without sound (%s)", path, exc)
    target = out_file if isinstance(out_file, io.BytesIO) else str(out_file)
    try:
        with av.open(str(path), metadata_errors="replace") as src:
            if not src.streams.video:
                raise MediaError(path, "no video stream")
            vin = src.streams.video[0]
            offset = float(vin.start_time * vin.time_base) if vin.start_time else 0.0
            rate = fps or min(60, max(1, round(float(vin.average_rate or 25))))
            width, height = vin.codec_context.width, vin.codec_context.height
            scale = 1.0 if max_side is None else min(1.0, max_side / max(width, height, 1))
            w, h = max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)
            with av.open(target, "w", format=fmt) as out:
                vout = out.add_stream(video_codec, rate=rate)
                vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
                if bitrate:
                    vout.bit_rate = bitrate
                aout = None
                if samples is not None and samples.size:
                    aout = out.add_stream(audio_codec, rate=OPUS_RATE)
                    aout.layout = "mono"
                    aout.bit_rate = 32_000 if audio_codec == "libopus" else 96_000
                if start > 0:
                    src.seek(int((offset + start) / vin.time_base), stream=vin)
                n = 0
                for frame in src.decode(vin):
                    t = float(frame.time) - offset if frame.time is not None else 0.0
                    if t >= end:
                        break
                    while t >= start + n / rate and start + n / rate < end:
                        img = frame.reformat(width=w, height=h, format="yuv420p")
                        img.pts = n
                        img.time_base = fractions.Fraction(1, rate)
                        out.mux(vout.encode(img))
                        n += 1
                out.mux(vout.encode(None))
                if aout is not None and samples is not None:
                    _encode_audio(out, aout, samples, OPUS_RATE)
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"video clip cannot be made: {exc}") from exc
