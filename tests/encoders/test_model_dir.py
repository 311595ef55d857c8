import pickle
import re
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

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
    ("name", "audio"), [("default", "aisfx+soundnet"), ("speech", "aisfx-words")]
)
def test_shipped_models_load(name: str, audio: str) -> None:
    path = md.resolve_model_dir(name)
    cfg = md.load_config(path)
    assert cfg.name == name
    assert cfg.audio.backbone == audio and cfg.visual.backbone == "efficientnet-lite0"
    parts = cfg.audio.head.parts or (audio,)  # the default's head reads its aisfx part alone
    assert cfg.audio.head.in_dim == sum(BACKBONES[p].dim for p in parts)
    # every shipped model says which `avsearch train` command made it (and repeats it)
    command = cfg.training["command"]
    assert command.startswith("avsearch train ") and f"--out models/{name}" in command
    assert f"--audio-backbone {audio} " in command
    md.load_heads(path, cfg)


def test_a_composite_tower_is_a_list_in_config_yaml(tmp_path: Path) -> None:
    heads = {
        "audio": ProjectionHead(HeadConfig(720, 4, 8, 0.0)),
        "visual": ProjectionHead(HeadConfig(5, 4, 8, 0.0)),
    }
    config = md.ModelConfig(
        name="both",
        embedding_dim=4,
        audio=md.TowerConfig("aisfx+cepstra", heads["audio"].cfg),
        visual=md.TowerConfig("efficientnet-lite0", heads["visual"].cfg),
    )
    md.save_model_dir(tmp_path / "m", config, heads)  # type: ignore[arg-type]
    text = (tmp_path / "m" / "config.yaml").read_text()
    assert "backbone:\n  - aisfx\n  - cepstra\n" in text  # written as the list of its parts
    assert "backbone: efficientnet-lite0\n" in text
    assert md.load_config(tmp_path / "m") == config
    # a list in a hand-written config, a one-item list, the registered name: all load
    for value, want in (("[aisfx, words]", "aisfx+words"), ("[aisfx]", "aisfx"),
                        ("aisfx-words", "aisfx-words")):  # fmt: skip
        (tmp_path / "m" / "config.yaml").write_text(
            text.replace("backbone:\n  - aisfx\n  - cepstra\n", f"backbone: {value}\n")
        )
        assert md.load_config(tmp_path / "m").audio.backbone == want
    for bad in ("[]", "[aisfx, 3]", "[aisfx+words, soundnet]", "{a: b}"):
        (tmp_path / "m" / "config.yaml").write_text(
            text.replace("backbone:\n  - aisfx\n  - cepstra\n", f"backbone: {bad}\n")
        )
        with pytest.raises(ModelError, match="invalid model config"):
            md.load_config(tmp_path / "m")


# ------------------------------------------------------------------ safe loading


class _Payload:
    """Pickled, this would run ``touch <marker>`` on load: safe loaders must never do it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


def _with_backbone_weights(tmp_path: Path, value: str) -> Path:
    model = tmp_path / "m"
    md.save_model_dir(model, _config(), _heads(0))
    text = (model / "config.yaml").read_text()
    text = text.replace("backbone_weights: null", f"backbone_weights: {value!r}", 1)
    (model / "config.yaml").write_text(text)
    return model


def test_head_parts_are_a_list_in_config_yaml_and_absent_when_all(tmp_path: Path) -> None:
    """A head reading some parts of a composite tower: written as a list, read back as a
    tuple; a head reading everything writes no key (older configs stay byte-identical); the
    model slices those columns before the head."""
    import numpy as np

    from avsearch.encoders.model import AVModel

    heads = {
        "audio": ProjectionHead(HeadConfig(512, 4, 8, 0.0, parts=("aisfx",))),
        "visual": ProjectionHead(HeadConfig(5, 4, 8, 0.0)),
    }
    config = md.ModelConfig(
        name="parts",
        embedding_dim=4,
        audio=md.TowerConfig("aisfx+cepstra", heads["audio"].cfg),
        visual=md.TowerConfig("efficientnet-lite0", heads["visual"].cfg),
    )
    md.save_model_dir(tmp_path / "m", config, heads)  # type: ignore[arg-type]
    text = (tmp_path / "m" / "config.yaml").read_text()
    assert "parts:\n    - aisfx\n" in text and text.count("parts:") == 1
    assert md.load_config(tmp_path / "m") == config
    model = AVModel.load(tmp_path / "m")
    feats = np.random.default_rng(0).standard_normal((3, 720)).astype(np.float32)
    np.testing.assert_array_equal(model.head_columns("audio"), np.arange(512))
    assert model.head_columns("visual") is None
    with torch.inference_mode():
        want = heads["audio"].eval()(torch.from_numpy(feats[:, :512])).numpy()
    np.testing.assert_allclose(model.project("audio", feats), want, rtol=1e-6)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("/etc/passwd.safetensors", "absolute path"),
        ("~/w.safetensors", "absolute path"),
        ("../outside.safetensors", "'\\.\\.'"),
        ("sub/../../outside.safetensors", "'\\.\\.'"),
        ("audio_backbone.pth", "not a .safetensors file"),
    ],
)
def test_weights_outside_the_model_dir_or_not_safetensors_are_refused(
    tmp_path: Path, value: str, why: str
) -> None:
    model = _with_backbone_weights(tmp_path, value)
    with pytest.raises(ModelError, match=f"audio.backbone_weights .*{why}"):
        md.load_config(model)


def test_a_symlink_leading_out_of_the_model_dir_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.safetensors"
    save_file({"x": torch.zeros(1)}, str(outside))
    model = _with_backbone_weights(tmp_path, "audio_backbone.safetensors")
    (model / "audio_backbone.safetensors").symlink_to(outside)
    with pytest.raises(ModelError, match=r"audio.backbone_weights .*symbolic link leading out"):
        md.load_config(model)
    tower = md.TowerConfig("aisfx", HeadConfig(6, 4, 8, 0.0), "audio_backbone.safetensors")
    with pytest.raises(ModelError, match=r"audio.backbone_weights"):
        md.backbone_weights_path(model, tower, "audio")  # checked again where the file is opened


def test_a_weights_file_inside_the_model_dir_is_accepted(tmp_path: Path) -> None:
    model = _with_backbone_weights(tmp_path, "sub/audio_backbone.safetensors")
    (model / "sub").mkdir()
    save_file({"x": torch.zeros(1)}, str(model / "sub" / "audio_backbone.safetensors"))
    cfg = md.load_config(model)
    assert (
        md.backbone_weights_path(model, cfg.audio, "audio")
        == (model / "sub" / "audio_backbone.safetensors").resolve()
    )


def test_a_pickle_disguised_as_safetensors_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    model = tmp_path / "m"
    md.save_model_dir(model, _config(), _heads(0))
    with (model / "heads.safetensors").open("wb") as fh:
        pickle.dump(_Payload(marker), fh)
    with pytest.raises(ModelError, match=r"heads .*is a pickle .*refused"):
        md.load_heads(model, md.load_config(model))
    # a torch.save checkpoint (zip) under the backbone's name
    torch.save({"w": torch.zeros(2)}, model / "audio_backbone.safetensors")
    tower = md.TowerConfig("aisfx", HeadConfig(6, 4, 8, 0.0), "audio_backbone.safetensors")
    with pytest.raises(ModelError, match="aisfx backbone weights is a pickle"):
        md.backbone_weights_path(model, tower, "audio")
    # junk with a plausible frame still fails inside safetensors: a ModelError, not a traceback
    (model / "heads.safetensors").write_bytes(struct.pack("<Q", 4) + b"{xx}")
    with pytest.raises(ModelError, match="cannot read projection heads"):
        md.load_heads(model, md.load_config(model))
    assert not marker.exists()


def test_load_backbone_turns_any_weights_failure_into_model_error(tmp_path: Path) -> None:
    from avsearch.encoders.registry import load_backbone

    junk = tmp_path / "w.safetensors"
    junk.write_bytes(b"\x80\x04junk")
    for name in ("aisfx", "efficientnet-lite0"):
        with pytest.raises(ModelError, match=re.escape(str(junk))):
            load_backbone(name, junk)


def test_convert_reads_checkpoints_weights_only_and_never_runs_a_pickle(tmp_path: Path) -> None:
    from avsearch.encoders.convert import load_aisfx_checkpoint

    marker = tmp_path / "ran"
    evil = tmp_path / "checkpoint.pth"
    torch.save((_Payload(marker), {}), evil)
    with pytest.raises(ModelError, match="refused: not a weights-only"):
        load_aisfx_checkpoint(evil)
    assert not marker.exists()
