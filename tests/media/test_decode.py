from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avsearch.errors import MediaError
from avsearch.media.decode import (
    WindowSpec,
    audio_pieces,
    decode_query,
    file_pieces,
    load_image,
    video_pieces,
)
from tests.conftest import shared_path
from tests.mediagen import COLOURS, write_mp4, write_truncated, write_wav

SPEC = WindowSpec(samples=44100, sample_rate=44100, min_tail=0.5)  # 1 s windows


def test_wav_is_resampled_cut_and_padded(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "t.wav", seconds=2.6, rate=16000)
    pieces = list(audio_pieces(path, SPEC))
    assert [(p.index, p.start) for p in pieces] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert all(p.data.shape == (44100,) and p.data.dtype == np.float32 for p in pieces)
    assert pieces[-1].padded and pieces[-1].end == pytest.approx(2.6, abs=0.01)
    assert np.abs(pieces[-1].data[30000:]).max() == 0.0  # padding after 0.6 s
    assert np.abs(pieces[0].data).max() == pytest.approx(0.5, abs=0.02)


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    import soundfile as sf

    t = np.arange(44100) / 44100
    left = np.sin(2 * np.pi * 300 * t)
    sf.write(str(tmp_path / "s.flac"), np.stack([left, -left], 1), 44100)
    (piece,) = list(audio_pieces(tmp_path / "s.flac", SPEC))
    assert np.abs(piece.data).max() < 1e-3  # opposite channels cancel


def test_short_clip_is_one_padded_segment(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "short.wav", seconds=0.2)
    (piece,) = list(audio_pieces(path, SPEC))
    assert piece.padded and piece.end == pytest.approx(0.2, abs=0.01)


def test_video_gives_audio_and_the_centre_frame(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "v.mp4", seconds=4.0, fps=10)
    pieces = list(file_pieces(path, "video", SPEC))
    audio = [p for p in pieces if p.modality == "audio"]
    visual = [p for p in pieces if p.modality == "visual"]
    assert [p.index for p in audio] == [0, 1, 2, 3]
    assert [p.index for p in visual] == [0, 1, 2, 3]
    for p in visual:
        # colour changes every second; the frame at the centre (k + 0.5 s) has colour k
        expected = np.array(COLOURS[p.index])
        assert p.data.shape == (224, 224, 3)
        assert np.abs(p.data[112, 112].astype(int) - expected).max() < 40


def test_silent_video_gives_only_frames(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "mute.mp4", seconds=2.0, audio=False)
    assert {p.modality for p in file_pieces(path, "video", SPEC)} == {"visual"}


def test_truncated_and_garbage_files_raise_media_error(tmp_path: Path) -> None:
    good = write_mp4(tmp_path / "v.mp4", seconds=2.0)
    bad = write_truncated(good, tmp_path / "bad.mp4", keep=0.3)
    with pytest.raises(MediaError) as info:
        list(file_pieces(bad, "video", SPEC))
    assert info.value.path == bad
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really a wav file" * 10)
    with pytest.raises(MediaError):
        list(audio_pieces(junk, SPEC))
    img = tmp_path / "junk.png"
    img.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(MediaError):
        load_image(img)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (20, 40)


def test_query_range_selects_windows(tmp_path: Path) -> None:
    path = write_mp4(tmp_path / "v.mp4", seconds=4.0)
    pieces = decode_query(path, "video", SPEC, 1.2, 2.5, "visual")
    assert [p.index for p in pieces] == [1, 2]


def test_real_fixture_videos_decode() -> None:
    folder = shared_path("fixtures", "video")
    spec = WindowSpec(102400, 44100)
    for path in sorted(folder.iterdir()):
        pieces = list(file_pieces(path, "video", spec))
        assert {p.modality for p in pieces} == {"audio", "visual"}, path.name
    chaplin = list(video_pieces(folder / "chaplin.mp4", spec))
    assert [p.index for p in chaplin] == [0, 1, 2, 3]  # 9.64 s: the 0.35 s tail is dropped


def test_files_with_non_utf8_names_decode(tmp_path: Path) -> None:
    """soundfile cannot take such a name as str (it encodes it strictly); PyAV and Pillow can."""
    import os
    import shutil

    import soundfile as sf

    from tests.mediagen import write_png

    def bad(name: bytes) -> Path:
        return tmp_path / os.fsdecode(b"bad\xff\xfe" + name)

    shutil.copy(write_wav(tmp_path / "a.wav", seconds=1.2), bad(b".wav"))
    sf.write(str(tmp_path / "a.flac"), np.zeros(20000, np.float32) + 0.1, 16000)
    shutil.copy(tmp_path / "a.flac", bad(b".flac"))
    shutil.copy(write_mp4(tmp_path / "v.mp4", seconds=2.0), bad(b".mp4"))
    shutil.copy(write_png(tmp_path / "p.png"), bad(b".png"))
    assert len(list(file_pieces(bad(b".wav"), "audio", SPEC))) == 1
    assert len(list(file_pieces(bad(b".flac"), "audio", SPEC))) == 1
    kinds = [p.modality for p in file_pieces(bad(b".mp4"), "video", SPEC, 32)]
    assert kinds.count("audio") == 2 and kinds.count("visual") == 2
    assert load_image(bad(b".png")).size == (64, 48)
    ogg = shared_path("data", "farm", "sounds", "dog.ogg")
    shutil.copy(ogg, bad(b".ogg"))
    assert list(audio_pieces(bad(b".ogg"), SPEC))
