"""Small real media files the tests make themselves (so a fresh clone tests the whole path)."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image

COLOURS = [(220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 230, 30), (200, 30, 200)]


def tone(freq: float, seconds: float, rate: int = 44100, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: Path, freq: float = 440.0, seconds: float = 1.0, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(freq, seconds, rate), rate)
    return path


def write_png(path: Path, colour: tuple[int, int, int] = (200, 30, 30), size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    img.save(path)
    return path


def write_mp4(
    path: Path,
    seconds: float = 5.0,
    fps: int = 10,
    size: tuple[int, int] = (96, 64),
    freq: float = 440.0,
    audio: bool = True,
    colour_every: float = 1.0,
) -> Path:
    """H.264 + AAC video: the frame colour changes every ``colour_every`` seconds
    (COLOURS[int(t / colour_every) % 5]) and a sine tone plays throughout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = 44100
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height = size
        v.pix_fmt = "yuv420p"
        a = out.add_stream("aac", rate=rate) if audio else None
        if a is not None:
            a.layout = "mono"
        encode_frames(out, v, seconds, fps, size, colour_every)
        if a is not None:
            encode_audio(out, a, tone(freq, seconds, rate), rate, step=1024)
    return path


def write_truncated(src: Path, dst: Path, keep: float = 0.3) -> Path:
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def write_mkv_empty_audio(path: Path, seconds: float = 5.0, fps: int = 10) -> Path:
    """A Matroska video whose Opus audio track is declared but carries no packet at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (96, 64)
    with av.open(str(path), "w", format="matroska") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height = size
        v.pix_fmt = "yuv420p"
        a = out.add_stream("libopus", rate=48000)
        a.layout = "mono"
        encode_frames(out, v, seconds, fps, size)
        del a  # declared, never fed
    return path


def encode_frames(
    out: av.container.OutputContainer,
    stream: av.video.VideoStream,
    seconds: float,
    fps: int,
    size: tuple[int, int],
    colour_every: float = 1.0,
) -> None:
    """Mux ``seconds`` of solid frames, COLOURS[int(t / colour_every) % 5], then flush."""
    for i in range(int(seconds * fps)):
        arr = np.empty((size[1], size[0], 3), np.uint8)
        arr[:] = COLOURS[int(i / fps / colour_every) % len(COLOURS)]
        frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
        frame.pts = i
        frame.time_base = fractions.Fraction(1, fps)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def encode_audio(
    out: av.container.OutputContainer,
    stream: av.audio.AudioStream,
    samples: np.ndarray,
    rate: int,
    step: int = 960,
) -> None:
    """Mux mono float samples in frames of ``step`` samples, then flush the encoder."""
    for k in range(0, len(samples), step):
        chunk = np.ascontiguousarray(samples[k : k + step][None, :], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = k
        frame.time_base = fractions.Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
