import zlib
from pathlib import Path

import numpy as np
import pytest

from avsearch.encoders.backbones import Backbones
from avsearch.errors import UsageError
from avsearch.media.decode import WindowSpec
from avsearch.media.discover import MediaFile
from avsearch.store.features import CachedWindow
from avsearch.train.pairs import (
    UNLABELED,
    FileFeatures,
    add_views,
    build_pairs,
    extract_features,
)
from tests.mediagen import write_mp4, write_png, write_truncated, write_wav

SPEC = WindowSpec(44100, 44100)  # 1 s windows keep the test small


def _file(name: str, kind: str, label: str | None, windows: dict[str, int]) -> FileFeatures:
    """A file with ``windows[modality]`` windows whose vectors say where they come from."""
    rows = [
        CachedWindow(
            m, k, float(k), k + 1.0, np.full(3, zlib.crc32(f"{name}#{m}#{k}".encode()), np.float32)
        )
        for m, count in windows.items()
        for k in range(count)
    ]
    return FileFeatures(MediaFile(Path(f"/m/{name}"), kind, 1, 0), label, rows)  # type: ignore[arg-type]


def test_unlabeled_videos_give_unlabeled_pairs() -> None:
    files = [
        _file("v1.mp4", "video", None, {"audio": 3, "visual": 3}),
        _file("v2.mp4", "video", "dog", {"audio": 2, "visual": 2}),
        _file("s.wav", "audio", "dog", {"audio": 2}),
        _file("p.png", "image", "dog", {"visual": 1}),
        _file("x.wav", "audio", None, {"audio": 1}),  # a loose sound without label: unpaired
    ]
    pairs = build_pairs(files, seed=0)
    assert pairs.class_names == ["dog"]
    assert (pairs.video_pairs, pairs.unlabeled_pairs, pairs.label_pairs) == (5, 3, 2)
    assert pairs.unpaired == 1
    assert pairs.labels.tolist() == [UNLABELED] * 3 + [0] * 4
    assert pairs.known.tolist() == [False] * 3 + [True] * 4
    # a video window pairs its own sound and frame
    v1 = files[0].windows
    assert np.array_equal(pairs.audio[1], v1[1].vector) and np.array_equal(
        pairs.visual[1], v1[4].vector
    )


def test_videos_without_any_label_still_pair() -> None:
    pairs = build_pairs([_file("v.mp4", "video", None, {"audio": 4, "visual": 4})], seed=0)
    assert pairs.class_names == [] and pairs.unlabeled_pairs == 4 and not pairs.known.any()
    with pytest.raises(UsageError, match="too few pairs"):
        build_pairs([_file("v.mp4", "video", None, {"audio": 1, "visual": 1})])
    with pytest.raises(UsageError, match="no audio-visual pairs"):
        build_pairs([_file("s.wav", "audio", None, {"audio": 2})])


def _parent(path: Path) -> str | None:
    return None if path.parent.name == "unsorted" else path.parent.name


@pytest.mark.slow
def test_features_are_cached_and_pairs_built(tmp_path: Path) -> None:
    media = tmp_path / "media"
    write_mp4(media / "red" / "v.mp4", seconds=3.0)
    write_wav(media / "red" / "s.wav", seconds=2.0)
    write_wav(media / "blue" / "s.wav", freq=900, seconds=1.0)
    write_png(media / "blue" / "a.png", (20, 20, 200))
    write_png(media / "blue" / "b.png", (30, 30, 190))
    write_wav(media / "unsorted" / "x.wav", seconds=1.0)
    write_truncated(media / "red" / "v.mp4", media / "red" / "broken.mp4", keep=0.2)
    backbones = Backbones()
    files, stats = extract_features([media], tmp_path / "cache", backbones, SPEC, _parent)
    assert stats.decoded == 6 and len(stats.failures) == 1
    again, stats2 = extract_features([media], tmp_path / "cache", backbones, SPEC, _parent)
    assert stats2.decoded == 0 and stats2.from_cache == 6
    for a, b in zip(files, again, strict=True):
        assert all(
            np.array_equal(x.vector, y.vector) for x, y in zip(a.windows, b.windows, strict=True)
        )
    pairs = build_pairs(files, seed=0)
    assert pairs.class_names == ["blue", "red"]
    assert pairs.video_pairs == 3  # 3 one-second windows of the red video
    # the blue sound with each of the 2 blue pictures (every item of both sides is used, the
    # shorter side cycles); red has no loose image
    assert pairs.label_pairs == 2
    assert pairs.unpaired == 2 + 1  # red's 2 loose audio windows + the unlabelled sound
    assert pairs.audio.shape == (5, 512) and pairs.visual.shape == (5, 1280)
    assert {v.tobytes() for v in pairs.visual[3:]} == {  # both pictures, once each
        w.vector.tobytes() for f in files if f.file.kind == "image" for w in f.windows
    }


@pytest.mark.slow
def test_a_file_that_fails_the_views_pass_is_skipped(tmp_path: Path) -> None:
    media = tmp_path / "media"
    for name in ("a", "b", "c"):
        write_wav(media / "red" / f"{name}.wav", seconds=1.0)
    write_png(media / "red" / "p.png", (200, 20, 20))
    files, stats = extract_features([media], tmp_path / "cache", Backbones(), SPEC, _parent)
    assert len(files) == 4 and not stats.failures
    (media / "red" / "b.wav").write_bytes(b"not a wav any more")  # changed between passes
    seen: list[tuple[str, dict]] = []
    failures: list[tuple[str, str]] = []

    def encode(modality: str, batch: np.ndarray, seed: int) -> np.ndarray:
        return np.ones((len(batch), 2, 3), np.float32)

    decoded = add_views(
        files, ("audio",), encode, SPEC, progress=lambda e, d: seen.append((e, d)),
        failures=failures,
    )  # fmt: skip
    assert decoded == 4
    assert [Path(f.file.path).name for f in files] == ["a.wav", "c.wav", "p.png"]
    assert [Path(p).name for p, _ in failures] == ["b.wav"]
    assert ("file", {"path": str(media / "red" / "b.wav"), "ok": False}) in seen
    for f in files:
        for w in f.windows:
            assert w.vector.shape == ((2, 3) if w.modality == "audio" else (1, 1280))
