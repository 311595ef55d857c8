"""Hostile media for the reliability tests, made on the spot with PyAV, soundfile, Pillow and numpy.

Nothing here is copied from ../shared: every file is generated, so a fresh clone tests the whole
corpus. ``build_corpus(root)`` writes one folder of good and bad files and returns what each one
is expected to do (``Case.expect``): ``"fail"`` (named in ``summary.failures``), ``"index"``
(indexed, no failure) or ``"either"`` (a truncated file whose head still decodes: indexing what
is readable and reporting the file as failed are both acceptable, but not a crash and not both).
"""

from __future__ import annotations

import fractions
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
import soundfile as sf
from PIL import Image

from tests.mediagen import encode_audio, tone, write_mp4, write_png, write_wav

Expect = Literal["fail", "index", "either"]

NON_UTF8_NAME = os.fsdecode(b"bad\xff\xfe.png")  # surrogate-escaped str of a non-UTF-8 name


@dataclass(frozen=True)
class Case:
    name: str  # what the case is, for test ids and docs
    path: Path
    expect: Expect


# ----------------------------------------------------------------------------------- writers


def write_ogg(path: Path, freq: float = 440.0, seconds: float = 1.0, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(freq, seconds, rate), rate, format="OGG", subtype="VORBIS")
    return path


def write_flac(path: Path, freq: float = 440.0, seconds: float = 1.0, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(freq, seconds, rate), rate, format="FLAC")
    return path


def write_mp3(path: Path, freq: float = 440.0, seconds: float = 1.0, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(freq, seconds, rate), rate, format="MP3", subtype="MPEG_LAYER_III")
    return path


def write_jpg(path: Path, colour: tuple[int, int, int] = (30, 120, 200), size=(48, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:] = colour
    arr[: size[1] // 2, : size[0] // 2] = (250, 250, 250)  # some structure for the codec
    Image.fromarray(arr).save(path, quality=85)
    return path


def write_webm(
    path: Path,
    seconds: float = 2.0,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    freq: float = 440.0,
    audio: bool = True,
) -> Path:
    """VP8 + Opus in WebM: the colour steps every second, a tone plays throughout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = 48000
    with av.open(str(path), "w", format="webm") as out:
        v = out.add_stream("libvpx", rate=fps)
        v.width, v.height = size
        v.pix_fmt = "yuv420p"
        a = out.add_stream("libopus", rate=rate) if audio else None
        if a is not None:
            a.layout = "mono"
        for i in range(int(seconds * fps)):
            arr = np.full((size[1], size[0], 3), (40 * (i // fps)) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            frame.time_base = fractions.Fraction(1, fps)
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
        if a is not None:
            encode_audio(out, a, tone(freq, seconds, rate), rate)
    return path


def write_audio_only_mp4(path: Path, seconds: float = 2.0, freq: float = 660.0) -> Path:
    """An .mp4 holding one AAC track and no video stream."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = 44100
    with av.open(str(path), "w", format="mp4") as out:
        a = out.add_stream("aac", rate=rate)
        a.layout = "mono"
        encode_audio(out, a, tone(freq, seconds, rate), rate)
    return path


def write_multichannel_wav(
    path: Path, channels: int = 6, rate: int = 192_000, seconds: float = 1.5
) -> Path:
    """One tone per channel (float32), e.g. 5.1 at 192 kHz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([tone(200.0 * (c + 1), seconds, rate, 0.3) for c in range(channels)], axis=1)
    sf.write(str(path), data, rate, subtype="FLOAT")
    return path


def write_float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """A 32-bit float wav of exactly these samples (NaN and inf survive the round trip)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(samples, np.float32), rate, subtype="FLOAT")
    return path


def write_silent_wav(
    path: Path, seconds: float, rate: int = 16000, chunk_seconds: float = 60.0
) -> Path:
    """A long all-zero 16-bit wav written in chunks, so making it never holds it in memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    total = round(seconds * rate)
    block = np.zeros(round(chunk_seconds * rate), np.int16)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as fh:
        done = 0
        while done < total:
            n = min(len(block), total - done)
            fh.write(block[:n])
            done += n
    return path


def write_huge_header_png(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A valid 8x8 PNG whose IHDR then claims ``width`` x ``height`` (with a correct CRC)."""
    write_png(path, (10, 200, 90), size=(8, 8))
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:20] = struct.pack(">I", width)
    data[20:24] = struct.pack(">I", height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def write_mp4_with_latin1_title(path: Path, title: bytes = b"Caf\xe9 \xff\xfe!") -> Path:
    """A healthy mp4 whose ``title`` tag holds bytes that are not UTF-8 (as old taggers write
    Latin-1): remuxed with a placeholder title of the same length, then patched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = write_mp4(path.with_name(path.name + ".src.mp4"), seconds=1.0, size=(64, 48))
    placeholder = b"T" * len(title)
    with av.open(str(plain)) as src, av.open(str(path), "w", format="mp4") as out:
        out.metadata["title"] = placeholder.decode("ascii")
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    plain.unlink()
    data = path.read_bytes()
    assert data.count(placeholder) == 1
    path.write_bytes(data.replace(placeholder, title))
    return path


def truncate_to(src: Path, dst: Path, size: int) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes()[:size])
    return dst


# ----------------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Recipe:
    """How to make one hostile file: ``make(dst, scratch)`` writes it at ``dst``."""

    name: str
    relpath: str
    expect: Expect
    make: Callable[[Path, Path], object]


GOOD_FILES: tuple[tuple[str, Callable[[Path], object]], ...] = (
    ("good/tone.wav", lambda p: write_wav(p, 330.0, 1.3)),
    ("good/tone.ogg", lambda p: write_ogg(p, 550.0, 1.2)),
    ("good/red.png", lambda p: write_png(p, (220, 20, 20))),
    ("good/photo.jpg", lambda p: write_jpg(p)),
    ("good/clip.mp4", lambda p: write_mp4(p, seconds=2.0, size=(64, 48))),
)


def write_good(root: Path) -> list[Path]:
    """A few healthy files that must be indexed whatever sits beside them."""
    paths = []
    for rel, make in GOOD_FILES:
        make(root / rel)
        paths.append(root / rel)
    return paths


def _noise_ogg(path: Path) -> Path:
    """Noise compresses badly, so the audio pages outweigh Vorbis's ~4 KB of headers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(7).standard_normal(3 * 16000).astype(np.float32) * 0.2
    sf.write(str(path), noise, 16000, format="OGG", subtype="VORBIS")
    return path


_SOURCES: dict[str, Callable[[Path], Path]] = {
    # the mp4 writer puts `moov` at the end, so any cut of it leaves nothing to decode
    "mp4": lambda p: write_mp4(p, seconds=2.0, size=(64, 48)),
    "webm": lambda p: write_webm(p, seconds=2.0),
    "ogg": _noise_ogg,
    "wav": lambda p: write_wav(p, seconds=2.0),
}


def truncation_source(scratch: Path, ext: str) -> Path:
    """The intact file that truncations of ``ext`` are cut from (made once per scratch dir)."""
    path = scratch / f"source.{ext}"
    if not path.exists():
        _SOURCES[ext](path)
    return path


def _truncated(ext: str, keep: int | float) -> Callable[[Path, Path], object]:
    def make(dst: Path, scratch: Path) -> Path:
        src = truncation_source(scratch, ext)
        size = keep if isinstance(keep, int) else int(src.stat().st_size * keep)
        return truncate_to(src, dst, size)

    return make


def _write_bytes(data: bytes) -> Callable[[Path, Path], object]:
    def make(dst: Path, scratch: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)

    return make


def _recipes() -> list[Recipe]:
    out: list[Recipe] = []
    for ext in _SOURCES:
        partial: Expect = "fail" if ext == "mp4" else "either"
        for label, keep, expect in (
            ("8b", 8, "fail"),
            ("30b", 30, "fail"),
            ("25pct", 0.25, partial),
            ("50pct", 0.5, partial),
            ("90pct", 0.9, partial),
        ):
            out.append(
                Recipe(
                    f"truncated {ext} at {label}",
                    f"truncated/cut-{label}.{ext}",
                    expect,  # type: ignore[arg-type]
                    _truncated(ext, keep),
                )
            )
    for ext in ("mp4", "webm", "wav", "ogg", "flac", "mp3", "png", "jpg"):
        out.append(Recipe(f"zero-byte .{ext}", f"empty/zero.{ext}", "fail", _write_bytes(b"")))
    text = b"This is plain text, not media.\n" * 20
    for ext in ("mp4", "wav", "png", "mp3"):
        out.append(Recipe(f"text named .{ext}", f"text/readme.{ext}", "fail", _write_bytes(text)))
    noisy = np.concatenate([tone(440.0, 1.0, 16000), np.full(800, np.nan, np.float32)])
    noisy[100:200] = np.inf
    noisy[300:400] = -np.inf
    noisy[500:600] = 3.0e38
    out += [
        Recipe(
            "PNG header claiming 100000x100000",
            "huge.png",
            "fail",
            lambda p, s: write_huge_header_png(p),
        ),
        Recipe(
            "video without audio",
            "mute.mp4",
            "index",
            lambda p, s: write_mp4(p, seconds=2.0, size=(64, 48), audio=False),
        ),
        Recipe(
            "mp4 with a non-UTF-8 title tag",
            "latin1-title.mp4",
            "index",
            lambda p, s: write_mp4_with_latin1_title(p),
        ),
        Recipe("mp4 with only AAC", "aac-only.mp4", "index", lambda p, s: write_audio_only_mp4(p)),
        Recipe(
            "6-channel 192 kHz wav",
            "surround.wav",
            "index",
            lambda p, s: write_multichannel_wav(p),
        ),
        Recipe("0.05 s wav", "blip.wav", "index", lambda p, s: write_wav(p, 880.0, 0.05)),
        Recipe(
            "0.05 s mp4 (one frame)",
            "blip.mp4",
            "index",
            lambda p, s: write_mp4(p, seconds=0.05, fps=20),
        ),
        Recipe(
            "float wav with NaN/inf/3e38 samples",
            "nan.wav",
            "index",
            lambda p, s: write_float_wav(p, noisy),
        ),
        Recipe("1 s of digital silence", "hush.wav", "index", lambda p, s: write_silent_wav(p, 1)),
        Recipe(
            "255-byte name",
            "n" * (255 - len(".wav")) + ".wav",
            "index",
            lambda p, s: write_wav(p, 500.0, 0.8),
        ),
        Recipe(
            "254-byte multibyte name",
            "é" * 125 + ".png",  # 250 + 4 bytes in UTF-8
            "index",
            lambda p, s: write_png(p, (5, 5, 250)),
        ),
    ]
    return out


RECIPES: tuple[Recipe, ...] = tuple(_recipes())


def build_corpus(root: Path, scratch: Path, recipes: tuple[Recipe, ...] = RECIPES) -> list[Case]:
    """Write every recipe's file under ``root``; good files are separate (``write_good``)."""
    cases = []
    for r in recipes:
        path = root / r.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        r.make(path, scratch)
        cases.append(Case(r.name, path, r.expect))
    return cases


def make_symlink_loop(folder: Path) -> list[Path]:
    """Two media-named links pointing at each other: stat() fails with ELOOP."""
    folder.mkdir(parents=True, exist_ok=True)
    a, b = folder / "loop-a.mp4", folder / "loop-b.mp4"
    a.symlink_to(b.name)
    b.symlink_to(a.name)
    return [a, b]
