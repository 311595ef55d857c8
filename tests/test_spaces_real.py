"""Vector spaces end to end on real media with the real backbones: a model whose audio tower
includes soundnet (seeded heads) indexes the farm sounds and pictures; a sound finds pictures in
heads + bridge (its bridge vector is the soundnet objects of its windows), eval fuses the same
way; the native spaces fitted from the index's feature cache make a sound search sounds in
heads + native (or native alone) after a re-embed that decodes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avsearch.config import EmbedConfig, QueryConfig
from avsearch.encoders import model_dir as md
from avsearch.encoders.head_config import HeadConfig
from avsearch.encoders.registry import BACKBONES, primary_sha256
from avsearch.evaluate_index import evaluate_index
from avsearch.pipeline import run_embed
from avsearch.query import run_query
from avsearch.store.index import IndexStore
from avsearch.train.native import fit_native_for_model
from tests.conftest import REPO, shared_path

pytestmark = pytest.mark.slow

AUDIO = "aisfx+soundnet"


def _model(root: Path) -> Path:
    import torch
    from torch import nn

    from avsearch.encoders.heads import ProjectionHead

    if not (REPO / "models" / "backbones" / "soundnet" / "model.safetensors").is_file():
        pytest.skip("soundnet weights are not converted (models/backbones/soundnet)")
    torch.manual_seed(0)
    config = md.ModelConfig(
        name="bridged",
        embedding_dim=16,
        audio=md.TowerConfig(
            AUDIO, HeadConfig(BACKBONES[AUDIO].dim, 16, 32), None, primary_sha256(AUDIO)
        ),
        visual=md.TowerConfig(
            "efficientnet-lite0",
            HeadConfig(1280, 16, 32),
            None,
            primary_sha256("efficientnet-lite0"),
        ),
        fusion={"bridge": "gated", "low": 0.55, "high": 0.75, "weight": 4.0},
    )
    heads: dict[str, nn.Module] = {
        "audio": ProjectionHead(config.audio.head),
        "visual": ProjectionHead(config.visual.head),
    }
    md.save_model_dir(root, config, heads)
    return root


def test_bridge_and_native_spaces_on_real_media(tmp_path: Path) -> None:
    farm = shared_path("data", "farm")
    model = _model(tmp_path / "model")
    index = tmp_path / "index"
    summary = run_embed([farm], index, EmbedConfig(model=str(model)))
    assert summary.failed == 0 and summary.audio_segments > 0
    with IndexStore.open_existing(index) as store:
        assert store.slot_dim("audio", "bridge") == 58
        assert store.slot_dim("audio", "native") is None  # no native.safetensors yet
        assert store.manifest.segment_count("visual", "bridge") == summary.visual_segments

    dog = farm / "sounds" / "dog.ogg"
    cross = run_query(dog, index, QueryConfig(top=3))
    assert cross.space == "heads+bridge" and cross.fusion is not None
    assert cross.fusion["exact"] and 0.0 <= cross.fusion["bridge_weight"] <= 4.0
    assert len(cross.results) == 3 and all(h.modality == "visual" for h in cross.results)
    plain = run_query(dog, index, QueryConfig(top=3, no_bridge=True))
    assert plain.space == "heads" and plain.fusion is None
    # confidences come with fused hits only when the bridge weighed nothing: then they are
    # the heads' own, hit for hit
    if cross.fusion["bridge_weight"] == 0:
        assert [h.path for h in cross.results] == [h.path for h in plain.results]
        assert [h.confidence for h in cross.results] == [h.confidence for h in plain.results]
    else:
        assert all(h.confidence is None for h in cross.results)

    same = run_query(dog, index, QueryConfig(top=3, target="audio"))
    assert same.space == "heads" and "native" in (same.space_note or "")

    labels = tmp_path / "labels.csv"  # each farm animal by its file name
    rows = [f"{p},{p.stem}" for p in sorted(farm.rglob("*")) if p.is_file()]
    labels.write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    fused, heads = evaluate_index(index, labels), evaluate_index(index, labels, bridge=False)
    assert (fused.space, heads.space) == ("heads+bridge", "heads")
    assert fused.report.a2v_map != heads.report.a2v_map

    # native spaces fitted on the features embed cached; the re-embed decodes nothing
    fit_native_for_model(model, [farm], index)
    again = run_embed([farm], index, EmbedConfig(model=str(model), rebuild=True))
    assert again.new == summary.new and again.failed == 0
    same = run_query(dog, index, QueryConfig(top=3, target="audio"))
    assert same.space == "heads+native" and same.space_note is None
    assert same.fusion is not None and "native_weight" in same.fusion
    assert same.results[0].path.endswith("dog.ogg")  # the query file itself, first
    calibrated = run_query(dog, index, QueryConfig(top=3, target="audio", min_confidence=0.0))
    assert calibrated.space == "heads" and "--min-confidence" in (calibrated.space_note or "")
    assert all(h.confidence is not None for h in calibrated.results)
    alone = run_query(dog, index, QueryConfig(top=3, target="audio", space="native"))
    assert alone.space == "native" and alone.results[0].path.endswith("dog.ogg")
    assert alone.results[0].score == pytest.approx(1.0, abs=1e-4)
    with IndexStore.open_existing(index) as store:
        ids, vecs = store.manifest.vectors("audio", store.slot_dim("audio", "native") or 0,
                                           space="native")  # fmt: skip
        assert len(ids) == summary.audio_segments
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
