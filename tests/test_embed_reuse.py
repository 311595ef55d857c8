"""What `embed` does not redo: an unchanged folder loads no model weights (no backbone, no head,
no torch, no decoder), and a model with the same backbones but new heads takes the backbone
features from the feature cache (written by `embed` or by `train`) and decodes nothing.

A real AVModel on a model directory with two tiny registered backbones, so it runs in the fast
lane through the real code paths (model directory, fingerprint, heads, feature cache)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from avsearch import pipeline
from avsearch.config import EmbedConfig
from avsearch.encoders import backbones as backbones_mod
from avsearch.encoders import model_dir as md
from avsearch.encoders import registry
from avsearch.encoders.heads import HeadConfig, ProjectionHead
from avsearch.encoders.model import AVModel
from avsearch.encoders.tower import AudioInput, ImageInput
from avsearch.errors import ModelMismatchError
from avsearch.pipeline import MODEL_HASHES, EmbedSummary, run_embed
from avsearch.store.features import FEATURES_DB, CachedWindow, FeatureCache
from tests.mediagen import tone, write_mp4, write_png, write_wav
from tests.reliability.conftest import index_contents

RATE = 44100
AUDIO_DIM = 16
VISUAL_DIM = 12


class TinyAudio(nn.Module):
    """A tower: [B, samples] → [B, 16]: mean and mean |x| over 8 blocks."""

    name = "tiny-audio"
    modality = "audio"
    dim = AUDIO_DIM
    input = AudioInput(RATE, RATE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x[:, : x.shape[1] // 8 * 8].reshape(len(x), 8, -1)
        return torch.cat([blocks.mean(-1) * 10, blocks.abs().mean(-1) * 10], dim=1)

    def features(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self(torch.from_numpy(np.asarray(batch, np.float32))).numpy()


class TinyVisual(nn.Module):
    """A tower: [B, H, W, 3] uint8 → [B, 12]: the colour means of a 2x2 grid."""

    name = "tiny-visual"
    modality = "visual"
    dim = VISUAL_DIM
    input = ImageInput(224)

    def features(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(batch, np.float32) / 255.0)
        h, w = x.shape[1] // 2, x.shape[2] // 2
        cells = [x[:, i * h : (i + 1) * h, k * w : (k + 1) * w].mean((1, 2)) for i in (0, 1)
                 for k in (0, 1)]  # fmt: skip
        return torch.cat(cells, dim=1).numpy()


@pytest.fixture
def tiny_backbones(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Register the towers ``tiny-audio`` and ``tiny-visual`` (no weights files); counts how
    often each is built."""
    loads = {"audio": 0, "visual": 0}

    def builder(net: type[TinyAudio | TinyVisual]) -> Any:
        def build(path: Path | None) -> nn.Module:
            loads[net.modality] += 1
            return net()

        return build

    for net in (TinyAudio, TinyVisual):
        info = registry.BackboneInfo(
            net.name, net.modality, net.dim, net.input, "test", "test", builder(net)
        )
        monkeypatch.setitem(registry.BACKBONES, net.name, info)
    return loads


def make_model(path: Path, seed: int) -> Path:
    """A model directory on the tiny backbones with seeded random heads (1 s windows)."""
    torch.manual_seed(seed)
    heads = {
        "audio": ProjectionHead(HeadConfig(AUDIO_DIM, 8, 16, 0.0)),
        "visual": ProjectionHead(HeadConfig(VISUAL_DIM, 8, 16, 0.0)),
    }
    config = md.ModelConfig(
        name=f"tiny{seed}",
        embedding_dim=8,
        audio=md.TowerConfig("tiny-audio", heads["audio"].cfg),
        visual=md.TowerConfig("tiny-visual", heads["visual"].cfg),
        window_seconds=1.0,
    )
    md.save_model_dir(path, config, heads)  # type: ignore[arg-type]
    return path


def make_media(root: Path) -> Path:
    """A tone, a picture, a short video, and a wav whose second window is digital silence
    (and whose 0.6 s tail is a padded window)."""
    write_wav(root / "tone.wav", 440.0, 1.5, RATE)
    write_png(root / "red.png", (200, 30, 30))
    write_mp4(root / "clip.mp4", seconds=3.0, fps=5)
    x = np.zeros(int(RATE * 3.6), np.float32)
    x[:RATE] = tone(300.0, 1.0, RATE)
    x[2 * RATE :] = tone(500.0, 1.6, RATE)
    sf.write(str(root / "gap.wav"), x, RATE)
    return root


def embed(media: Path, index: Path, model: Path, **options: Any) -> EmbedSummary:
    return run_embed([media], index, EmbedConfig(model=str(model), batch_size=4, **options))


def forbid_loading(monkeypatch: pytest.MonkeyPatch, *, heads: bool = True) -> None:
    """Any backbone load, decode (and, with ``heads``, head load) now fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("loaded or decoded although nothing needed it")

    monkeypatch.setattr(registry, "load_backbone", refuse)
    monkeypatch.setattr(backbones_mod, "load_backbone", refuse)
    monkeypatch.setattr(pipeline, "file_pieces", refuse)
    if heads:
        monkeypatch.setattr(md, "load_heads", refuse)


# ------------------------------------------------------------------------------- re-runs
def test_an_unchanged_rerun_loads_no_backbone_no_head_and_decodes_nothing(
    tmp_path: Path, tiny_backbones: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_model(tmp_path / "model", 0)
    media = make_media(tmp_path / "media")
    first = embed(media, tmp_path / "index", model)
    assert (first.new, first.failed) == (4, 0)
    assert tiny_backbones == {"audio": 1, "visual": 1}
    assert (tmp_path / "index" / MODEL_HASHES).is_file()

    forbid_loading(monkeypatch)
    again = embed(media, tmp_path / "index", model)
    assert (again.unchanged, again.new, again.updated, again.failed) == (4, 0, 0, 0)
    assert again.total_segments == first.total_segments


def test_the_fingerprint_is_still_checked_and_its_hashes_follow_the_files(
    tmp_path: Path, tiny_backbones: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_model(tmp_path / "model", 0)
    media = make_media(tmp_path / "media")
    embed(media, tmp_path / "index", model)
    calls: list[Path] = []
    real = md.sha256_file
    monkeypatch.setattr(md, "sha256_file", lambda p: calls.append(p) or real(p))
    embed(media, tmp_path / "index", model)
    assert calls == []  # both model files' hashes came from the cache
    make_model(model, 1)  # new heads in the same directory: another model
    with pytest.raises(ModelMismatchError):
        embed(media, tmp_path / "index", model)
    assert {p.name for p in calls} == {"config.yaml", "heads.safetensors"}


def test_an_unchanged_rerun_imports_no_torch_and_no_decoder(
    tmp_path: Path, tiny_backbones: dict[str, int]
) -> None:
    model = make_model(tmp_path / "model", 0)
    media = make_media(tmp_path / "media")
    embed(media, tmp_path / "index", model)
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from avsearch.config import EmbedConfig\n"
        "from avsearch.pipeline import run_embed\n"
        f"s = run_embed([Path({str(media)!r})], Path({str(tmp_path / 'index')!r}), "
        f"EmbedConfig(model={str(model)!r}))\n"
        "heavy = ['torch', 'av', 'soundfile', 'PIL', 'onnxruntime']\n"
        "print(json.dumps([s.unchanged, [m for m in heavy if m in sys.modules]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(out) == [4, []]


# ------------------------------------------------------------------------ cached re-embed
def test_new_heads_on_the_same_backbones_reuse_the_features_and_decode_nothing(
    tmp_path: Path, tiny_backbones: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    media = make_media(tmp_path / "media")
    old, new = make_model(tmp_path / "old", 0), make_model(tmp_path / "new", 1)
    first = embed(media, tmp_path / "index", old)  # writes the feature cache
    assert first.silent_segments == 1
    fresh = embed(media, tmp_path / "fresh", new, write_features=False)  # decodes
    assert not (tmp_path / "fresh" / FEATURES_DB).exists()
    loads = dict(tiny_backbones)

    forbid_loading(monkeypatch, heads=False)
    again = embed(media, tmp_path / "index", new, rebuild=True)
    assert tiny_backbones == loads  # no backbone either
    assert (again.new, again.failed, again.failures) == (4, 0, [])
    for field in ("segments", "audio_segments", "visual_segments", "silent_segments"):
        assert getattr(again, field) == getattr(fresh, field), field
    assert again.media_seconds == pytest.approx(fresh.media_seconds)
    assert_same_index(tmp_path / "index", tmp_path / "fresh")


def test_features_cached_by_train_serve_embed(
    tmp_path: Path, tiny_backbones: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from avsearch.train.pairs import extract_features

    media = make_media(tmp_path / "media")
    model = AVModel.load(make_model(tmp_path / "model", 2))
    spec = model.window_spec()
    _, stats = extract_features([media], tmp_path / "index", model.backbones, spec, str)
    assert stats.decoded == 4
    fresh = embed(media, tmp_path / "fresh", model.directory, write_features=False)

    forbid_loading(monkeypatch, heads=False)
    again = embed(media, tmp_path / "index", model.directory)
    assert (again.new, again.silent_segments) == (4, fresh.silent_segments)
    assert_same_index(tmp_path / "index", tmp_path / "fresh")


def test_a_fresh_index_can_point_at_another_cache(
    tmp_path: Path, tiny_backbones: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    media = make_media(tmp_path / "media")
    model = make_model(tmp_path / "model", 0)
    embed(media, tmp_path / "index", model)
    forbid_loading(monkeypatch, heads=False)
    cache = str(tmp_path / "index" / FEATURES_DB)
    again = embed(media, tmp_path / "other", model, feature_cache=cache)
    assert again.new == 4
    assert_same_index(tmp_path / "index", tmp_path / "other")


def test_a_file_missing_from_the_cache_is_decoded_and_added(
    tmp_path: Path, tiny_backbones: dict[str, int]
) -> None:
    media = make_media(tmp_path / "media")
    model = make_model(tmp_path / "model", 0)
    embed(media, tmp_path / "index", model)
    write_wav(media / "late.wav", 880.0, 2.0, RATE)
    again = embed(
        media, tmp_path / "second", model, feature_cache=str(tmp_path / "index" / FEATURES_DB)
    )
    assert (again.new, again.failed) == (5, 0)
    cache = FeatureCache(tmp_path / "index" / FEATURES_DB)
    try:
        assert cache.count() == 5
    finally:
        cache.close()


def test_a_schema_1_cache_is_upgraded_and_its_unknown_silence_decoded_again(
    tmp_path: Path, tiny_backbones: dict[str, int]
) -> None:
    media = make_media(tmp_path / "media")
    model = make_model(tmp_path / "model", 0)
    embed(media, tmp_path / "index", model)
    path = tmp_path / "index" / FEATURES_DB
    conn = sqlite3.connect(path)  # make it look written by schema 1: no silence flags
    conn.execute("UPDATE features SET silent = NULL")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    from avsearch.store.features import features_problem

    assert features_problem(path) is None  # upgradable, not damaged
    again = embed(media, tmp_path / "index", model, rebuild=True)
    assert (again.new, again.silent_segments) == (4, 1)
    cache = FeatureCache(path)
    try:
        digests = {r[0] for r in cache.conn.execute("SELECT hash FROM done")}
        assert cache.complete(digests, next(iter(
            r[0] for r in cache.conn.execute("SELECT backbone FROM done")))) == digests  # fmt: skip
    finally:
        cache.close()


def test_feature_cache_round_trips_the_silence_flag(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / FEATURES_DB)
    try:
        v = np.arange(4, dtype=np.float32)
        cache.put("h", "k", [CachedWindow("audio", 0, 0.0, 1.0, v, True),
                             CachedWindow("audio", 1, 1.0, 1.5, v, False)])  # fmt: skip
        got = cache.get("h", "k")
        assert got is not None
        assert [(w.idx, w.start, w.end, w.silent) for w in got] == [
            (0, 0.0, 1.0, True),
            (1, 1.0, 1.5, False),
        ]
        assert cache.complete(["h", "x"], "k") == {"h"}
        assert cache.complete(["h"], "other") == set()
    finally:
        cache.close()


def assert_same_index(a: Path, b: Path) -> None:
    """Same files, same segments (modality, idx, start, end) exactly, vectors within 1e-5."""
    ca, cb = index_contents(a), index_contents(b)
    assert sorted(ca) == sorted(cb)
    for path in ca:
        assert [row for row, _ in ca[path]] == [row for row, _ in cb[path]], path
        for (_, va), (_, vb) in zip(ca[path], cb[path], strict=True):
            np.testing.assert_allclose(va, vb, atol=1e-5)
