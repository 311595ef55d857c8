"""Tests for avsearch.encoders.registry (the only list of backbones) and
avsearch.encoders.backbones: composites and registered aliases, where weights are found,
building a tower held to its entry, the feature-cache key; and, on real speech, that a
registered composite is exactly its parts side by side."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from avsearch.encoders import registry as reg
from avsearch.encoders.backbones import Backbones
from avsearch.encoders.composite import CompositeTower
from avsearch.encoders.files import sha256_file
from avsearch.encoders.registry import BACKBONES, BackboneInfo, backbone_name, load_backbone
from avsearch.encoders.tower import AudioInput, ImageInput
from avsearch.errors import ModelError
from tests.conftest import shared_path

REPO = Path(__file__).resolve().parents[2]
AISFX_WEIGHTS = REPO / "models" / "backbones" / "aisfx" / "model.safetensors"


# ------------------------------------------------------------------------------- names
def test_every_backbone_is_declared_once_with_its_input_and_licence() -> None:
    atomic = {n for n, b in BACKBONES.items() if not b.parts}
    assert {"aisfx", "cepstra", "words", "soundnet", "efficientnet-lite0"} <= atomic
    assert BACKBONES["aisfx-words"].parts == ("aisfx", "words")
    assert BACKBONES["aisfx-cepstra"].parts == ("aisfx", "cepstra")
    for info in BACKBONES.values():
        assert info.licence and info.description
        want = AudioInput if info.modality == "audio" else ImageInput
        assert isinstance(info.input, want), info.name
    assert reg.names("visual") == ("efficientnet-lite0",)
    assert set(reg.names("audio")) | set(reg.names("visual")) == set(BACKBONES)


def test_a_composite_name_looks_up_as_the_sum_of_its_parts() -> None:
    both = BACKBONES["aisfx+words"]
    assert (both.name, both.modality, both.dim) == ("aisfx+words", "audio", 512 + 2048)
    assert both.parts == ("aisfx", "words") and both.input == BACKBONES["aisfx"].input
    assert both.licence == "aisfx: CC BY 4.0; words: Apache-2.0"
    assert "aisfx+words" in BACKBONES and "aisfx+words" not in list(BACKBONES)
    nested = BACKBONES["aisfx-words+soundnet"]  # a registered composite as a part
    assert nested.parts == ("aisfx", "words", "soundnet") and nested.dim == 512 + 2048 + 2425
    assert BACKBONES.get("nope") is None and BACKBONES.get("aisfx+nope") is None
    with pytest.raises(ModelError, match="unknown backbone 'nope'; known: aisfx,"):
        BACKBONES.lookup("nope")
    with pytest.raises(ModelError, match="mixes modalities"):
        BACKBONES.lookup("aisfx+efficientnet-lite0")
    with pytest.raises(ValueError, match="cannot register"):
        BACKBONES["a+b"] = BACKBONES["aisfx"]


def test_a_config_value_becomes_one_name() -> None:
    assert backbone_name("aisfx-words") == "aisfx-words"
    assert backbone_name(["aisfx", "words"]) == "aisfx+words"
    assert backbone_name(["aisfx"]) == "aisfx"
    for bad in ([], ["aisfx", ""], ["aisfx+words"], 3, None, "", {"a": 1}):
        with pytest.raises(ValueError):
            backbone_name(bad)


# ------------------------------------------------------------------------------- weights
def test_weights_come_from_the_caller_the_environment_or_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AVSEARCH_AISFX_WEIGHTS", raising=False)
    (default,) = reg.weights_files("aisfx")
    assert default.source == "default" and default.path == AISFX_WEIGHTS
    given = tmp_path / "given.safetensors"
    assert reg.weights_files("aisfx", given)[0].path == given
    assert reg.weights_files("aisfx", given)[0].source == "given"
    assert not reg.weights_files("aisfx", given)[0].present
    monkeypatch.setenv(reg.weights_env("aisfx"), str(tmp_path / "env.safetensors"))
    assert reg.weights_files("aisfx")[0].source == "env"
    assert reg.weights_env("efficientnet-lite0") == "AVSEARCH_EFFICIENTNET_LITE0_WEIGHTS"
    # in a composite the given file is the primary part's; cepstra has none to find
    files = reg.weights_files("aisfx-cepstra+soundnet", given)
    assert [(f.backbone, f.source) for f in files] == [("aisfx", "given"), ("soundnet", "default")]
    assert reg.weights_files("cepstra") == []


def test_the_key_names_every_part_and_its_weights_without_reading_pinned_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_hashing(path: Path) -> str:
        raise AssertionError(f"hashed {path}")

    monkeypatch.setattr(reg, "sha256_file", no_hashing)
    key = reg.weights_key("aisfx-words", primary_sha256="c1d1" * 16)
    assert key == "aisfx@c1d1c1d1c1d1c1d1+words@373916c2a52dffb7"
    assert reg.weights_key("aisfx+words", primary_sha256="c1d1" * 16) == key
    assert reg.weights_key("aisfx+cepstra", primary_sha256="ab" * 32) == (
        "aisfx@abababababababab+cepstra"
    )


def test_backbones_key_is_deterministic_and_shared_by_alias_and_list() -> None:
    a = Backbones("aisfx-words", audio_sha256="c1" * 32, visual_sha256="57" * 32)
    b = Backbones("aisfx+words", audio_sha256="c1" * 32, visual_sha256="57" * 32)
    key = a.key(102_400)
    assert key == b.key(102_400) == a.key(102_400)
    assert key == (
        "aisfx@c1c1c1c1c1c1c1c1+words@373916c2a52dffb7|efficientnet-lite0@5757575757575757|w102400"
    )
    assert a.key(102_400, 0.25).endswith("|w102400|t0.25")
    assert a.dim("audio") == 2560 and a.audio_input == AudioInput(44_100, 102_400)
    assert a.image_input == ImageInput(224)
    with pytest.raises(ModelError, match="is a visual backbone, not audio"):
        Backbones("efficientnet-lite0")
    with pytest.raises(ModelError, match="unknown backbone"):
        Backbones("nope")


def test_catalogue_lists_every_backbone_and_its_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(reg.weights_env("soundnet"), str(tmp_path / "absent.safetensors"))
    rows = {r["name"]: r for r in reg.catalogue()}
    assert list(rows) == list(BACKBONES)
    assert rows["cepstra"]["weights"] == [] and rows["cepstra"]["weights_present"]
    assert rows["soundnet"]["weights_present"] is False
    assert rows["soundnet"]["weights"][0]["path"] == str(tmp_path / "absent.safetensors")
    assert rows["aisfx-words"]["input"] == {"sample_rate": 44_100, "window_samples": 102_400}
    assert rows["efficientnet-lite0"]["input"] == {"image_size": 224}
    assert rows["aisfx-cepstra"]["parts"] == ["aisfx", "cepstra"]


# ------------------------------------------------------------------------------ building
class Echo(nn.Module):
    """A torch audio tower: per row the first ``dim`` samples, times a weight."""

    modality = "audio"

    def __init__(self, name: str, dim: int, rate: int = 16_000) -> None:
        super().__init__()
        self.name, self.dim, self.input = name, dim, AudioInput(rate, 1_600)
        self.scale = nn.Parameter(torch.ones(1))

    def features(self, batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(np.asarray(batch, np.float32)[:, : self.dim])
            return (x * self.scale).numpy()


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Registers ``echo-a`` (weights: a file under tmp_path) and ``echo-b`` (none)."""
    weights = tmp_path / "echo.bin"
    for name, dim, default in (("echo-a", 3, lambda: weights), ("echo-b", 2, None)):
        info = BackboneInfo(
            name,
            "audio",
            dim,
            AudioInput(16_000, 1_600),
            "test",
            "test",
            lambda path, name=name, dim=dim: Echo(name, dim),
            default,
            install_hint=f"make {name}",
        )
        monkeypatch.setitem(BACKBONES, name, info)
    return weights


def test_a_built_tower_is_frozen_and_held_to_its_entry(
    echo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelError, match="echo-a weights not found") as exc:
        load_backbone("echo-a")
    assert exc.value.hint == "make echo-a"
    echo.write_bytes(b"x")
    tower = load_backbone("echo-a")
    assert isinstance(tower, Echo) and not tower.training
    assert not any(p.requires_grad for p in tower.parameters())
    x = np.arange(20, dtype=np.float32).reshape(2, 10)
    both = load_backbone("echo-b+echo-a")
    assert isinstance(both, CompositeTower) and both.dim == 5
    np.testing.assert_array_equal(both.features(x), np.concatenate([x[:, :2], x[:, :3]], 1))

    wrong = BackboneInfo(
        "echo-c", "audio", 7, AudioInput(16_000, 1_600), "t", "t", lambda p: Echo("echo-c", 3)
    )
    monkeypatch.setitem(BACKBONES, "echo-c", wrong)
    with pytest.raises(ModelError, match=r"'echo-c': the tower is .*registry entry says"):
        load_backbone("echo-c")

    def broken(path: Path | None) -> Echo:
        raise RuntimeError("bad magic")

    monkeypatch.setitem(BACKBONES, "echo-a", BackboneInfo(
        "echo-a", "audio", 3, AudioInput(16_000, 1_600), "t", "t", broken, lambda: echo
    ))  # fmt: skip
    message = f"cannot load the echo-a backbone from {echo}: RuntimeError: bad magic"
    with pytest.raises(ModelError, match=re.escape(message)):
        load_backbone("echo-a")


def test_a_user_given_file_must_have_the_configs_sha256(
    echo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    echo.write_bytes(b"x")
    mine = tmp_path / "mine.bin"
    mine.write_bytes(b"other weights")
    backbones = Backbones("echo-a", audio_weights=mine, audio_sha256="0" * 64)
    with pytest.raises(ModelError, match="differs from the model config's"):
        _ = backbones.audio
    user = {"echo-a": mine}
    with pytest.raises(ModelError, match="differs from the model config's"):
        _ = Backbones("echo-a", audio_sha256="0" * 64, user_weights=user).audio
    files = reg.weights_files("echo-b+echo-a", user=user)
    assert [(f.backbone, f.path, f.source) for f in files] == [("echo-a", mine, "user")]
    assert (
        Backbones("echo-a", user_weights=user)
        .key(1_600)
        .startswith(f"echo-a@{sha256_file(mine)[:16]}|")
    )
    monkeypatch.setenv(reg.weights_env("echo-a"), str(mine))
    with pytest.raises(ModelError, match="differs from the model config's"):
        _ = Backbones("echo-a", audio_sha256="0" * 64).audio
    monkeypatch.delenv(reg.weights_env("echo-a"))
    # the installed default is trusted (hashing it on every load is what the key avoids)
    tower = Backbones("echo-a", audio_sha256="0" * 64).audio
    assert tower.dim == 3
    assert Backbones("echo-a").features("audio", np.zeros((0, 1_600), np.float32)).shape == (0, 3)


# ------------------------------------------------------------------- real speech, real towers
@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Windows of real speech (FSDD) and of a real instrument, and one of silence."""
    from avsearch.media.decode import WindowSpec, audio_pieces

    if not AISFX_WEIGHTS.is_file():
        pytest.skip(f"{AISFX_WEIGHTS} missing: python -m avsearch.encoders.convert")
    spec = WindowSpec(102_400, 44_100)
    fsdd = shared_path("data", "fsdd")
    natural = shared_path("data", "natural", "accordion", "gcompris-instruments-accordion.ogg")
    files = [fsdd / "0_george_0.wav", fsdd / "7_theo_12.wav"]
    rows = [p.data for f in files for p in audio_pieces(f, spec)]
    rows += [p.data for p in audio_pieces(natural, spec)][:2]
    rows.append(np.zeros(102_400, np.float32))
    return np.stack(rows)


@pytest.mark.slow
@pytest.mark.parametrize("alias", ["aisfx-cepstra", "aisfx-words"])
def test_a_registered_composite_is_its_parts_side_by_side(alias: str, speech: np.ndarray) -> None:
    try:
        composite = Backbones(alias).features("audio", speech)
        listed = Backbones("+".join(BACKBONES[alias].parts)).features("audio", speech)
        parts = [load_backbone(p).features(speech) for p in BACKBONES[alias].parts]
    except ModelError as exc:  # the word model's package is not installed here
        pytest.skip(exc.message)
    assert composite.shape == (len(speech), BACKBONES[alias].dim)
    np.testing.assert_allclose(composite, np.concatenate(parts, axis=1), rtol=0, atol=1e-5)
    np.testing.assert_allclose(listed, composite, rtol=0, atol=1e-5)
    assert np.abs(composite[:-1, 512:]).max() > 0.01  # the second part is really there


def test_backbones_key_names_a_reduced_precision_only_where_a_part_runs_it() -> None:
    fp32 = Backbones("aisfx+soundnet", audio_sha256="c1" * 32, visual_sha256="57" * 32)
    bf16 = Backbones(
        "aisfx+soundnet", audio_sha256="c1" * 32, visual_sha256="57" * 32, precision="bf16"
    )
    assert bf16.key(102_400) == fp32.key(102_400) + "|bf16"
    assert "bf16" not in fp32.key(102_400)  # float32 keys are those of earlier versions
    assert reg.BACKBONES.lookup("aisfx").precisions == ("fp32", "bf16")
    assert reg.BACKBONES.lookup("soundnet").precisions == ("fp32",)
    with pytest.raises(ModelError, match="precision must be one of fp32, bf16"):
        Backbones("aisfx", precision="fp16")  # type: ignore[arg-type]


def test_the_registry_and_the_towers_agree_on_precisions() -> None:
    from avsearch.encoders.aisfx import AisfxBackbone
    from avsearch.encoders.efficientnet import EfficientNetLite0Backbone
    from avsearch.encoders.soundnet import SoundNetBackbone

    for name, cls in (
        ("aisfx", AisfxBackbone),
        ("efficientnet-lite0", EfficientNetLite0Backbone),
        ("soundnet", SoundNetBackbone),
    ):
        assert tuple(getattr(cls, "precisions", ("fp32",))) == reg.BACKBONES.lookup(name).precisions
