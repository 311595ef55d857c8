"""Nothing non-finite enters the index: digital silence has no audio vector (counted), a
tower's non-finite output is refused and reported, a video's empty audio track keeps its
frames, and a silent query says why nothing matched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avsearch.config import EmbedConfig
from avsearch.media.decode import SILENCE_PEAK, WindowSpec, audio_pieces, file_pieces
from avsearch.pipeline import run_embed
from avsearch.store.index import IndexStore
from tests.conftest import shared_path
from tests.mediagen import tone, write_mkv_empty_audio, write_png

RATE = 44100
SPEC = WindowSpec(102400, RATE)


class NanModel:
    """A stand-in model: deterministic unit vectors, except NaN for audio windows whose peak
    is exactly 0.25 (a "tower bug" the writer must catch)."""

    name = "nan-model"
    fingerprint = "nan-model-1"
    dim = 8
    directory = Path("/nonexistent")
    image_size = 32

    def window_spec(self, window: float | None = None, min_tail: float = 0.5) -> WindowSpec:
        return WindowSpec(SPEC.samples, SPEC.sample_rate, min_tail)

    def embed(self, modality: str, batch: np.ndarray) -> np.ndarray:
        flat = batch.reshape(len(batch), -1).astype(np.float64)
        out = np.stack([np.ones(self.dim) + r[: self.dim] for r in flat])
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        if modality == "audio":
            out[np.isclose(np.abs(flat).max(axis=1), 0.25)] = np.nan
        return out.astype(np.float32)


def _vectors(index: Path) -> dict[str, np.ndarray]:
    with IndexStore.open_existing(index) as store:
        return {m: store.manifest.vectors(m, store.dim)[1] for m in ("audio", "visual")}


def test_silent_windows_are_flagged_by_the_decoder(tmp_path: Path) -> None:
    x = np.zeros(RATE * 6, np.float32)
    x[: RATE // 2] = tone(300, 0.5, RATE)
    sf.write(str(tmp_path / "a.wav"), x, RATE)
    pieces = list(audio_pieces(tmp_path / "a.wav", SPEC))
    assert [p.silent for p in pieces] == [False, True, True]
    quiet = np.full(RATE, SILENCE_PEAK * 2, np.float32)  # -114 dBFS: quiet, not silent
    sf.write(str(tmp_path / "q.wav"), quiet, RATE, subtype="FLOAT")
    assert [p.silent for p in audio_pieces(tmp_path / "q.wav", SPEC)] == [False]


def test_silence_gets_no_vector_and_nan_is_refused(tmp_path: Path) -> None:
    media = tmp_path / "m"
    media.mkdir()
    sf.write(str(media / "silence.wav"), np.zeros(47332, np.float32), RATE)
    sf.write(str(media / "tone.wav"), tone(440, 3.0, RATE), RATE)
    bad = np.concatenate([tone(440, 2.0, RATE), 0.25 * np.ones(RATE * 3, np.float32)])
    sf.write(str(media / "buggy.wav"), bad, RATE, subtype="FLOAT")
    write_png(media / "red.png")
    index = tmp_path / "index"
    summary = run_embed([media], index, EmbedConfig(), model=NanModel())  # type: ignore[arg-type]

    assert summary.new == 4 and summary.failed == 0
    assert summary.silent_segments == 1
    assert summary.silent_files == [str(media / "silence.wav")]
    [failure] = summary.failures
    assert failure.path == str(media / "buggy.wav") and "non-finite" in failure.reason
    vecs = _vectors(index)
    assert all(np.isfinite(v).all() for v in vecs.values())
    # tone: 2 windows; buggy: its first window (the NaN one is refused); no silence vector
    assert len(vecs["audio"]) == 3 and len(vecs["visual"]) == 1
    # the silent file is recorded, so a re-run does not decode it again
    again = run_embed([media], index, EmbedConfig(), model=NanModel())  # type: ignore[arg-type]
    assert again.unchanged == 4 and again.new == 0 and not again.failures


def test_video_with_an_empty_audio_track_keeps_its_frames(tmp_path: Path) -> None:
    video = write_mkv_empty_audio(tmp_path / "m" / "empty-audio.mkv", seconds=5.0)
    kinds = [(p.modality, p.index) for p in file_pieces(video, "video", SPEC, 32)]
    assert kinds == [("visual", 0), ("visual", 1)]
    summary = run_embed([tmp_path / "m"], tmp_path / "i", EmbedConfig(), model=NanModel())  # type: ignore[arg-type]
    assert summary.new == 1 and not summary.failures and summary.visual_segments == 2


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "avsearch", *args], cwd=cwd, capture_output=True, text=True
    )


@pytest.mark.slow
def test_silence_end_to_end_with_the_default_model(tmp_path: Path) -> None:
    """The issue's reproduction: silence beside a picture, embed, eval, query the silence."""
    farm = shared_path("data", "farm")
    media = tmp_path / "m"
    (media / "horse").mkdir(parents=True)
    (media / "silence").mkdir()
    sf.write(str(media / "silence" / "silence.wav"), np.zeros(47332, np.float32), RATE)
    sf.write(str(media / "silence" / "quiet.ogg"), np.zeros(RATE, np.float32), RATE)
    (media / "horse" / "horse.webp").write_bytes((farm / "images" / "horse.webp").read_bytes())
    (media / "horse" / "horse.ogg").write_bytes((farm / "sounds" / "horse.ogg").read_bytes())
    index = tmp_path / "index"

    run = _cli("--index", str(index), "--json", "embed", str(media), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["segments"]["silent"] >= 2 and out["failures"] == []
    assert sorted(Path(p["path"]).name for p in out["silent_files"]) == [
        "quiet.ogg",
        "silence.wav",
    ]
    assert all(np.isfinite(v).all() for v in _vectors(index).values())

    ev = _cli("--index", str(index), "--json", "eval", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["a2v_map"] == pytest.approx(1.0)

    q = _cli(
        "--index",
        str(index),
        "--json",
        "query",
        str(media / "silence" / "silence.wav"),
        cwd=tmp_path,
    )
    assert q.returncode == 0, q.stderr
    answer = json.loads(q.stdout)
    assert answer["results"] == [] and "silence" in answer["note"]
    human = _cli(
        "--index", str(index), "query", str(media / "silence" / "silence.wav"), cwd=tmp_path
    )
    assert human.returncode == 0 and "digital silence" in human.stderr

    hit = _cli(
        "--index", str(index), "--json", "query", str(media / "horse" / "horse.ogg"), cwd=tmp_path
    )
    assert json.loads(hit.stdout)["results"][0]["path"].endswith("horse.webp")


def test_query_hints_for_a_soundless_video_and_explains_a_silent_one(tmp_path: Path) -> None:
    from avsearch.config import QueryConfig
    from avsearch.errors import MediaError
    from avsearch.query import SilentQuery, encode_query
    from tests.mediagen import write_mp4

    mute = write_mp4(tmp_path / "mute.mp4", seconds=3.0, audio=False)
    with pytest.raises(MediaError, match="--target audio"):
        encode_query(NanModel(), mute, "video", "audio", QueryConfig())  # type: ignore[arg-type]
    empty = write_mkv_empty_audio(tmp_path / "empty.mkv", seconds=3.0)
    with pytest.raises(MediaError, match="--target audio"):
        encode_query(NanModel(), empty, "video", "audio", QueryConfig())  # type: ignore[arg-type]
    sf.write(str(tmp_path / "s.wav"), np.zeros(RATE * 3, np.float32), RATE)
    with pytest.raises(SilentQuery, match="digital silence"):
        encode_query(NanModel(), tmp_path / "s.wav", "audio", "audio", QueryConfig())  # type: ignore[arg-type]
    frames = encode_query(NanModel(), mute, "video", "visual", QueryConfig())  # type: ignore[arg-type]
    assert frames.shape == (1, 8) and np.isfinite(frames).all()
