"""The reader stage: a range of a long file is read after a seek (counted: decoded samples and
frames, not time) and gives the windows a whole decode gives there; the decode threads' events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf

from avsearch.media import decode
from avsearch.media.discover import MediaFile
from avsearch.media.segment import WindowSpec
from avsearch.stages.reader import DONE, FAIL, PIECE, Job, Reader, range_pieces
from tests.mediagen import encode_audio, encode_frames, write_png, write_wav

HOUR = 3600.0
RATE = 1000  # a low rate keeps the hour-long wav small (7 MB) and quick to write and decode


@pytest.fixture(scope="module")
def long_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    wav = root / "hour.wav"
    sf.write(str(wav), (0.3 * rng.standard_normal(int(HOUR * RATE))).astype(np.float32), RATE)
    video = root / "hour.mp4"  # 16x16 at 1 fps, a keyframe at least every 30 frames
    with av.open(str(video), "w") as out:
        v = out.add_stream("libx264", rate=1)
        v.width, v.height = 16, 16
        v.pix_fmt = "yuv420p"
        v.options = {"preset": "ultrafast", "g": "30"}
        encode_frames(out, v, HOUR, 1, (16, 16), colour_every=7.0)
    mkv = root / "hour.mkv"  # PCM in Matroska: PyAV's demuxer seeks by its cues
    with av.open(str(mkv), "w") as out:
        a = out.add_stream("pcm_s16le", rate=2 * RATE)
        a.layout = "mono"
        x = (0.3 * rng.standard_normal(int(HOUR * 2 * RATE))).astype(np.float32)
        encode_audio(out, a, x, 2 * RATE, step=4 * RATE)
    m4a = root / "minute.m4a"  # AAC (priming, overlapping transforms), resampled on reading
    with av.open(str(m4a), "w") as out:
        a = out.add_stream("aac", rate=22050)
        a.layout = "mono"
        encode_audio(out, a, (0.3 * rng.standard_normal(60 * 22050)).astype(np.float32), 22050)
    return {"wav": wav, "video": video, "mkv": mkv, "m4a": m4a}


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts what the decoders produce: audio samples (every chunk passes ``_drop``, before
    the samples ahead of a seek target are dropped) and video frames (``_frame_time``)."""
    counts = {"samples": 0, "frames": 0}
    real_drop, real_time = decode._drop, decode._frame_time

    def drop(chunk: np.ndarray, n: int) -> tuple[np.ndarray, int]:
        counts["samples"] += chunk.size
        return real_drop(chunk, n)

    def frame_time(*args: Any) -> float:
        counts["frames"] += 1
        return real_time(*args)

    monkeypatch.setattr(decode, "_drop", drop)
    monkeypatch.setattr(decode, "_frame_time", frame_time)
    return counts


def _whole(pieces: Iterator[decode.Piece], lo: float, hi: float) -> list[decode.Piece]:
    return [p for p in pieces if p.start < hi and max(p.end, p.start + 1e-6) > lo]


def _same_windows(got: list[decode.Piece], want: list[decode.Piece], atol: float) -> None:
    assert [(p.index, p.start, p.end) for p in got] == [(p.index, p.start, p.end) for p in want]
    assert got, "the range holds windows"
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a.data.astype(np.float32), b.data.astype(np.float32), atol=atol)


@pytest.mark.parametrize(
    ("name", "spec", "atol"),
    [
        ("wav", WindowSpec(2 * RATE, RATE), 0.0),  # soundfile, sample-exact seek
        ("wav", WindowSpec(3200, 1600), 1e-5),  # soundfile + resampler, from a common sample
        ("mkv", WindowSpec(4 * RATE, 2 * RATE), 0.0),  # PyAV
        ("m4a", WindowSpec(16000, 16000), 1e-4),  # PyAV, AAC, resampled
    ],
)
def test_a_two_second_range_an_hour_in_is_read_after_a_seek(
    long_media: dict[str, Path], decoded: dict[str, int], name: str, spec: WindowSpec, atol: float
) -> None:
    path = long_media[name]
    lo = (HOUR if name != "m4a" else 60.0) - 2.5
    hi = lo + 2.0
    part = list(range_pieces(path, "audio", spec, lo, hi, "audio"))
    seek_samples = decoded["samples"]
    whole = _whole(decode.audio_pieces(path, spec), lo, hi)
    whole_samples = decoded["samples"] - seek_samples
    _same_windows(part, whole, atol)
    # the range's windows, SEEK_PREROLL before them and a packet or so: not the hour before
    needed = (len(part) + 2) * spec.samples + decode.SEEK_PREROLL * spec.sample_rate + 4096
    assert seek_samples <= needed < whole_samples / 10


def test_a_range_of_an_hour_long_video_decodes_from_the_keyframe_before_it(
    long_media: dict[str, Path], decoded: dict[str, int]
) -> None:
    spec = WindowSpec(2 * RATE, RATE)
    lo, hi = HOUR - 7.5, HOUR - 3.0
    part = list(range_pieces(long_media["video"], "video", spec, lo, hi, "visual", 16))
    seek_frames = decoded["frames"]
    whole = _whole(decode.video_pieces(long_media["video"], spec, 16), lo, hi)
    _same_windows(part, whole, 0.0)
    assert [p.index for p in part] == [1796, 1797, 1798]
    assert seek_frames <= 30 + 8 and decoded["frames"] - seek_frames == HOUR


def test_a_seek_that_lands_late_decodes_from_the_start(
    long_media: dict[str, Path], decoded: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = WindowSpec(4 * RATE, 2 * RATE)
    monkeypatch.setattr(decode, "SEEK_PREROLL", -60.0)  # seeks a minute past the target
    part = list(range_pieces(long_media["mkv"], "audio", spec, 100.0, 104.0, "audio"))
    assert decoded["samples"] >= 100 * 2 * RATE  # decoded from the start (and dropped)
    monkeypatch.undo()
    _same_windows(part, _whole(decode.audio_pieces(long_media["mkv"], spec), 100.0, 104.0), 0.0)


def test_a_range_past_the_end_holds_nothing(long_media: dict[str, Path]) -> None:
    spec = WindowSpec(2 * RATE, RATE)
    for name, kind, modality in (("wav", "audio", "audio"), ("video", "video", "visual")):
        got = list(range_pieces(long_media[name], kind, spec, HOUR + 10, HOUR + 20, modality))
        assert got == [], name


# ------------------------------------------------------------------------------ decode threads


def _jobs(*paths: Path) -> list[Job]:
    kinds = {".wav": "audio", ".png": "image", ".mp4": "video"}
    return [Job(MediaFile(p, kinds[p.suffix], 0, 0), "new", f"d{i}") for i, p in enumerate(paths)]  # type: ignore[arg-type]


def test_every_job_ends_with_one_done_or_fail_and_cached_ones_are_not_decoded(
    tmp_path: Path,
) -> None:
    spec = WindowSpec(16000, 16000)
    jobs = _jobs(
        write_wav(tmp_path / "a.wav", seconds=2.0),
        write_png(tmp_path / "b.png"),
        tmp_path / "missing.wav",
        write_wav(tmp_path / "c.wav", seconds=1.0),
    )
    decoded: list[Path] = []

    def pieces(path: Path, *args: Any) -> Any:
        decoded.append(path)
        return decode.file_pieces(path, *args)

    from avsearch.store.features import CachedWindow

    held = [CachedWindow("audio", 0, 0.0, 1.0, np.ones(3, np.float32), False)]
    reader = Reader(
        jobs,
        spec,
        32,
        2,
        decode=pieces,
        cached=lambda job: held if job.digest == "d3" else None,  # d1: a cache miss after all
        hits={1, 3},
    )
    events = [e for e in reader if e is not None]
    ends = {j: kind for kind, j, _ in events if kind != PIECE}
    assert ends == {0: DONE, 1: DONE, 2: FAIL, 3: DONE}
    assert sorted(p.name for p in decoded) == ["a.wav", "b.png", "missing.wav"]
    assert [p for kind, j, p in events if kind == PIECE and j == 3] == held
    assert [p.index for kind, j, p in events if kind == PIECE and j == 0] == [0, 1]
