"""bench/avdigits.py on a tiny subset of the shared data: real files, playable videos.

Imported by module name (pytest puts bench/ on sys.path), never by file path."""

from __future__ import annotations

from pathlib import Path

import avdigits as builder
import numpy as np

from avsearch.encoders.audio_frontend import SAMPLE_RATE, WINDOW_SAMPLES
from avsearch.media.decode import WindowSpec, file_pieces
from tests.conftest import shared_path


def test_build_avdigits_writes_class_folders_and_playable_videos(tmp_path: Path) -> None:
    data = shared_path("data")
    out = tmp_path / "avdigits"
    paths = builder.build_avdigits(data, out, ["test"], seed=0, per_class=1)
    assert set(paths) == {"test/audio", "test/images", "test/videos"}
    for kind, ext in (("audio", ".wav"), ("images", ".png"), ("videos", ".mp4")):
        files = sorted(paths[f"test/{kind}"].rglob(f"*{ext}"))
        assert len(files) == 10, kind
        assert {f.parent.name for f in files} == {str(d) for d in range(10)}

    video = next(paths["test/videos"].joinpath("7").glob("*.mp4"))
    pieces = list(file_pieces(video, "video", WindowSpec(WINDOW_SAMPLES, SAMPLE_RATE)))
    audio = [p for p in pieces if p.modality == "audio"]
    visual = [p for p in pieces if p.modality == "visual"]
    assert len(audio) == 1 and len(visual) == 1
    assert np.abs(audio[0].data).max() > 0.01  # the spoken digit, not silence
    frame = visual[0].data
    assert frame.shape == (224, 224, 3) and frame.max() > 128 and frame.min() < 40  # a digit

    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.*")}
    builder.build_avdigits(data, out, ["test"], seed=0, per_class=1)  # nothing to redo
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.*")} == mtimes | {
        out / "avdigits.json": (out / "avdigits.json").stat().st_mtime_ns
    }
