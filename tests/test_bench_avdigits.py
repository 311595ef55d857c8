"""bench/avdigits.py on a tiny subset of the shared data: real files, playable videos."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from avsearch.encoders.audio_frontend import SAMPLE_RATE, WINDOW_SAMPLES
from avsearch.media.decode import WindowSpec, file_pieces
from tests.conftest import REPO, shared_path


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_avdigits", REPO / "bench" / "avdigits.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


def test_build_avdigits_writes_class_folders_and_playable_videos(tmp_path: Path) -> None:
    data = shared_path("data")
    builder = load_builder()
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
