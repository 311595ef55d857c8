from pathlib import Path

import pytest
import torch

from avsearch.encoders import model_dir as md
from avsearch.encoders.heads import HeadConfig, ProjectionHead
from avsearch.encoders.registry import BACKBONES
from avsearch.errors import ModelError


def _config(name: str = "tiny") -> md.ModelConfig:
    return md.ModelConfig(
        name=name,
        embedding_dim=4,
        audio=md.TowerConfig("aisfx", HeadConfig(6, 4, 8, 0.0)),
        visual=md.TowerConfig("efficientnet-lite0", HeadConfig(5, 4, 8, 0.0)),
        training={"recipe": {"seed": 1}},
    )


def _heads(seed: int) -> dict[str, ProjectionHead]:
    torch.manual_seed(seed)
    return {
        "audio": ProjectionHead(HeadConfig(6, 4, 8, 0.0)),
        "visual": ProjectionHead(HeadConfig(5, 4, 8, 0.0)),
    }


def test_roundtrip_gives_the_same_vectors(tmp_path: Path) -> None:
    heads = _heads(0)
    fp = md.save_model_dir(tmp_path / "m", _config(), heads)
    cfg = md.load_config(tmp_path / "m")
    assert cfg == _config()
    a, v = md.load_heads(tmp_path / "m", cfg)
    x = torch.randn(3, 6)
    assert torch.equal(a(x), heads["audio"].eval()(x))
    y = torch.randn(3, 5)
    assert torch.equal(v(y), heads["visual"].eval()(y))
    assert md.fingerprint(tmp_path / "m") == fp
    assert not list((tmp_path / "m").glob(".*tmp"))


def test_fingerprint_changes_with_weights_and_config(tmp_path: Path) -> None:
    fp1 = md.save_model_dir(tmp_path / "a", _config(), _heads(0))
    fp2 = md.save_model_dir(tmp_path / "b", _config(), _heads(1))
    fp3 = md.save_model_dir(tmp_path / "c", _config("other"), _heads(0))
    assert len({fp1, fp2, fp3}) == 3


def test_bad_model_dirs_raise_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model"):
        md.resolve_model_dir(str(tmp_path / "nothing"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.yaml").write_text("name: x\n")
    with pytest.raises(ModelError, match="invalid model config"):
        md.load_config(tmp_path / "bad")
    md.save_model_dir(tmp_path / "m", _config(), _heads(0))
    (tmp_path / "m" / "heads.safetensors").unlink()
    with pytest.raises(ModelError, match="missing"):
        md.load_heads(tmp_path / "m", md.load_config(tmp_path / "m"))


@pytest.mark.parametrize(
    ("name", "audio"), [("default", "aisfx-words"), ("cepstra", "aisfx-cepstra")]
)
def test_shipped_models_load(name: str, audio: str) -> None:
    path = md.resolve_model_dir(name)
    cfg = md.load_config(path)
    assert cfg.name == name
    assert cfg.audio.backbone == audio and cfg.visual.backbone == "efficientnet-lite0"
    assert cfg.audio.head.in_dim == BACKBONES[audio].dim
    assert cfg.training["script"].startswith("bench/train_default.py")
    # the backbone was chosen on held-out speakers; the figure travels with the model
    assert 0.0 < cfg.training["test_results"]["avdigits_loso_map_mean"] <= 1.0
    md.load_heads(path, cfg)
