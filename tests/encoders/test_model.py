"""AVModel reads its windowing and image size from what its towers declare, and a lazy model
imports no torch until it encodes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avsearch.encoders import model_dir as md
from avsearch.encoders.heads import HeadConfig, ProjectionHead
from avsearch.encoders.model import AVModel
from avsearch.encoders.registry import BACKBONES, BackboneInfo
from avsearch.encoders.tower import AudioInput, ImageInput


class Mean:
    """A numpy tower of either modality: the mean of each item, repeated ``dim`` times."""

    def __init__(self, name: str, modality: str, dim: int, input: AudioInput | ImageInput):
        self.name, self.modality, self.dim, self.input = name, modality, dim, input

    def features(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, np.float32).reshape(len(batch), -1).mean(1, keepdims=True)
        return np.repeat(x, self.dim, axis=1)


TOWERS = {
    "mean-audio": ("audio", 4, AudioInput(16_000, 8_000)),
    "mean-image": ("visual", 3, ImageInput(32)),
}


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name, (modality, dim, declared) in TOWERS.items():
        info = BackboneInfo(
            name, modality, dim, declared, "test", "test",
            lambda path, n=name, m=modality, d=dim, i=declared: Mean(n, m, d, i),
        )  # fmt: skip
        monkeypatch.setitem(BACKBONES, name, info)
    torch.manual_seed(0)
    heads = {"audio": ProjectionHead(HeadConfig(4, 2, 8, 0.0)),
             "visual": ProjectionHead(HeadConfig(3, 2, 8, 0.0))}  # fmt: skip
    config = md.ModelConfig(
        name="means",
        embedding_dim=2,
        audio=md.TowerConfig("mean-audio", heads["audio"].cfg),
        visual=md.TowerConfig("mean-image", heads["visual"].cfg),
    )
    md.save_model_dir(tmp_path / "m", config, heads)  # type: ignore[arg-type]
    return tmp_path / "m"


def test_windowing_and_image_size_are_the_towers_declared_inputs(model: Path) -> None:
    m = AVModel.load(model, lazy=True)
    assert (m.sample_rate, m.image_size) == (16_000, 32)
    spec = m.window_spec()
    assert (spec.samples, spec.sample_rate, spec.min_tail) == (8_000, 16_000, 0.5)
    assert m.window_spec(1.0, 0.25).samples == 16_000
    assert m.feature_key(spec) == "mean-audio|mean-image|w8000"
    audio = np.full((3, 8_000), 0.5, np.float32)
    np.testing.assert_allclose(m.features("audio", audio), 0.5)
    vectors = m.embed("visual", np.zeros((2, 32, 32, 3), np.uint8))
    assert vectors.shape == (2, 2)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert m.features("audio", np.zeros((0, 8_000), np.float32)).shape == (0, 4)
    assert m.audio_backbone.name == "mean-audio" and m.backbones.dim("visual") == 3
    # weights the user names by backbone reach the towers (a weightless tower ignores them)
    given = AVModel.load(model, lazy=True, user_weights={"mean-audio": model / "w.bin"})
    assert given.backbones.user_weights == {"mean-audio": model / "w.bin"}
    assert given.feature_key(spec) == m.feature_key(spec)


def test_a_lazy_shipped_model_declares_its_windows_without_torch() -> None:
    script = (
        "import json, sys\n"
        "from avsearch.encoders.model import AVModel\n"
        "m = AVModel.load('default', lazy=True)\n"
        "s = m.window_spec()\n"
        "out = [s.samples, s.sample_rate, m.image_size, m.backbones.dim('audio')]\n"
        "print(json.dumps([out, [x for x in ('torch', 'onnxruntime') if x in sys.modules]]))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [[102_400, 44_100, 224, 512 + 2425], []]  # aisfx+soundnet
