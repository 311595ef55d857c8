"""`avsearch train --finetune/--augment` in media mode, through the real CLI, and the model
directory it writes used by `embed --model DIR` and `query`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from avsearch.cli import _finetune_line, app
from avsearch.cli_progress import TrainProgress
from avsearch.encoders.finetune import BACKBONE_FILES
from avsearch.encoders.model_dir import load_config, sha256_file
from avsearch.encoders.registry import BACKBONES
from avsearch.train import for_method
from avsearch.train.finetune_run import STAGE1_DIR
from avsearch.train.run import _cache_sentence, _view_modalities
from tests.mediagen import write_png, write_wav

runner = CliRunner()

# three classes: a tone band and a colour each; 3 one-window sounds and 1 image per class
CLASSES = {
    "low": (300.0, (220, 20, 20)),
    "mid": (1200.0, (20, 200, 20)),
    "high": (4000.0, (20, 20, 220)),
}
N_FILES = 3 * (3 + 1)
FINETUNE = ["--finetune", "audio", "--unfreeze-blocks", "1", "--epochs", "2"]
FINETUNE += ["--finetune-epochs", "1", "--batch-size", "8"]


def cli(*args: str) -> tuple[int, dict | None, str, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    data = json.loads(result.stdout) if "--json" in args and result.stdout.strip() else None
    return result.exit_code, data, result.stdout, result.stderr


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ft-media")
    for name, (freq, colour) in CLASSES.items():
        for i in range(3):
            write_wav(root / name / f"s{i}.wav", freq=freq * (1 + 0.05 * i), seconds=1.0)
        write_png(root / name / "p.png", colour=colour)
    return root


@pytest.fixture(scope="module")
def first_run(media: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    work = tmp_path_factory.mktemp("ft-run")
    index, out = work / "index", work / "model"
    code, summary, _, err = cli(
        "--json", "--index", str(index), "train", str(media), *FINETUNE,
        "--augment", "--views", "2", "--always-finetune", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert summary is not None
    return index, out, summary


@pytest.mark.slow
def test_finetuned_model_works_with_embed_and_query(
    first_run: tuple[Path, Path, dict], media: Path, tmp_path: Path
) -> None:
    _, out, summary = first_run
    assert summary["mode"] == "media" and summary["classes"] == ["high", "low", "mid"]
    assert summary["epochs_run"] == 1  # the tails stage; the heads stage is in stage1-heads/
    ft = summary["finetune"]
    assert ft["modalities"] == ["audio"] and ft["unfreeze_blocks"] == 1 and ft["views"] == 2
    assert ft["bn_mode"] == "frozen" and ft["backbone_files"] == [BACKBONE_FILES["audio"]]
    assert (out / BACKBONE_FILES["audio"]).exists()
    assert not (out / BACKBONE_FILES["visual"]).exists()
    assert (out / STAGE1_DIR / "config.yaml").exists()
    config = load_config(out)
    assert config.audio.backbone_weights == BACKBONE_FILES["audio"]
    assert config.audio.backbone_sha256 == sha256_file(out / BACKBONE_FILES["audio"])
    assert config.audio.backbone_sha256 != sha256_file(BACKBONES["aisfx"].default_weights())
    assert config.visual.backbone_weights is None

    index = tmp_path / "embed-index"
    code, emb, _, err = cli(
        "--json", "--index", str(index), "embed", str(media), "--model", str(out)
    )
    assert code == 0 and emb is not None and emb["files"]["new"] == N_FILES, err
    query = media / "high" / "s0.wav"
    code, res, _, err = cli("--json", "--index", str(index), "query", str(query), "--top", "3")
    assert code == 0 and res is not None, err
    assert res["model"] == "model" and res["target"] == "visual" and res["results"]


@pytest.mark.slow
def test_eval_on_feature_files_refuses_a_finetuned_model(
    first_run: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    _, out, _ = first_run
    h5 = tmp_path / "feats.h5"
    rng = np.random.default_rng(0)
    with h5py.File(h5, "w") as fh:  # the right widths: only the backbone is wrong
        fh["audio"] = rng.normal(size=(8, 512)).astype(np.float32)
        fh["visual"] = rng.normal(size=(8, 1280)).astype(np.float32)
        fh["label"] = np.arange(8) % 2
        fh["split"] = np.array(["train", "test"] * 4).astype("S")
    code, _, _, err = cli("eval", "--features", str(h5), "--model", str(out))
    assert code == 2 and "fine-tuned audio backbone" in err and "Traceback" not in err, err


@pytest.mark.slow
def test_feature_cache_is_bypassed_for_the_finetuned_tower(
    first_run: tuple[Path, Path, dict], media: Path, tmp_path: Path
) -> None:
    index, _, summary = first_run
    m = summary["media"]
    assert m["files"] == N_FILES and m["decoded"] == N_FILES and m["views_decoded"] == N_FILES
    assert m["feature_cache"] == (
        "bypassed for the fine-tuned audio tower and the augmented visual tower (views recomputed)"
    )
    line = _finetune_line(SimpleNamespace(finetune=summary["finetune"], media=m))
    assert line.startswith("fine-tuning: audio backbone, last 1 block(s)")
    assert "2 view(s) per item (augmented)" in line and f"{N_FILES} files decoded again" in line

    # again on the same index, without augmentation: the cached features serve the visual
    # tower, the fine-tuned audio tower still needs its activations, so files are decoded
    code, again, _, err = cli(
        "--json", "--index", str(index), "train", str(media), *FINETUNE,
        "--out", str(tmp_path / "model2"),
    )  # fmt: skip
    assert code == 0 and again is not None, err
    m2 = again["media"]
    assert m2["from_cache"] == N_FILES and m2["decoded"] == 0
    assert m2["views_decoded"] == N_FILES
    assert m2["feature_cache"] == (
        "bypassed for the fine-tuned audio tower (views recomputed); used for the visual tower"
    )
    assert again["finetune"]["views"] == 1 and again["finetune"]["augment"] is False


def test_unfreeze_blocks_out_of_range_is_a_usage_error(tmp_path: Path, index_env: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    for finetune, blocks in (("audio", "99"), ("both", "5"), ("visual", "19")):
        code, _, _, err = cli(
            "train", str(folder), "--finetune", finetune, "--unfreeze-blocks", blocks,
            "--out", str(tmp_path / "m"),
        )  # fmt: skip
        assert code == 2 and "--unfreeze-blocks" in err and "Traceback" not in err, err
    code, _, _, err = cli("train", str(folder), "--finetune", "audio", "--bn", "sometimes")
    assert code == 2 and "--bn" in err


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--unfreeze-blocks", "2"], "--unfreeze-blocks only apply with --finetune"),
        (["--bn", "train", "--finetune-epochs", "2"], "--bn, --finetune-epochs only apply"),
        (["--finetune", "none", "--backbone-lr-scale", "0.5"], "--backbone-lr-scale only"),
        (["--views", "3"], "--views only applies with --augment"),
        (["--finetune", "audio", "--views", "3"], "--views only applies with --augment"),
    ],
)
def test_options_without_their_switch_are_refused(
    tmp_path: Path, index_env: Path, flags: list[str], needle: str
) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    code, _, _, err = cli("train", str(folder), *flags, "--out", str(tmp_path / "m"))
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("flags", [["--finetune", "audio"], ["--augment"]])
def test_feature_files_cannot_be_finetuned(tmp_path: Path, flags: list[str]) -> None:
    code, _, _, err = cli(
        "train", "--features", str(tmp_path / "x.h5"), *flags, "--out", str(tmp_path / "m")
    )
    assert code == 2 and "need media, not feature files" in err and "Traceback" not in err


def test_audio_backbone_needs_media(tmp_path: Path) -> None:
    code, _, _, err = cli(
        "train", "--features", str(tmp_path / "x.h5"), "--audio-backbone", "aisfx-cepstra",
        "--out", str(tmp_path / "m"),
    )  # fmt: skip
    assert code == 2 and "--audio-backbone applies to media folders" in err, err


@pytest.mark.slow
def test_cepstra_backbone_trains_finetunes_and_serves(media: Path, tmp_path: Path) -> None:
    """aisfx-cepstra through the real CLI: fine-tuning its aisfx tail (the template rides
    along packed after the activations), then embed and query with the model directory."""
    index, out = tmp_path / "index", tmp_path / "model"
    code, summary, _, err = cli(
        "--json", "--index", str(index), "train", str(media), *FINETUNE,
        "--audio-backbone", "aisfx-cepstra", "--always-finetune", "--out", str(out),
    )  # fmt: skip
    assert code == 0 and summary is not None, err
    config = load_config(out)
    assert config.audio.backbone == "aisfx-cepstra" and config.audio.head.in_dim == 720
    assert config.audio.backbone_weights == BACKBONE_FILES["audio"]
    assert "aisfx-cepstra (last 1 block(s) fine-tuned)" in config.description
    code, emb, _, err = cli(
        "--json", "--index", str(tmp_path / "e"), "embed", str(media), "--model", str(out)
    )
    assert code == 0 and emb is not None and emb["files"]["new"] == N_FILES, err
    code, res, _, err = cli(
        "--json", "--index", str(tmp_path / "e"), "query", str(media / "low" / "s0.wav")
    )
    assert code == 0 and res is not None and res["target"] == "visual" and res["results"], err


def test_progress_shows_views_and_both_stages() -> None:
    console = Console(file=io.StringIO(), force_terminal=True)
    with TrainProgress(console, enabled=True, epochs=2, tail_epochs=1) as progress:
        progress.file("discovered", {"files": 2})
        for name in ("a.wav", "b.png"):
            progress.file("file", {"path": name, "ok": True})
        progress.file("discovered", {"files": 2, "stage": "views"})
        progress.file("file", {"path": "a.wav", "ok": True})
        for epoch in (0, 1, 0):  # heads stage, then the tails stage starts over
            progress.epoch(SimpleNamespace(epoch=epoch, losses={"total": 1.0}, val=None))
    tasks = {t.fields["stage"]: (t.completed, t.total) for t in progress.progress.tasks}
    assert tasks == {"features": (2, 2), "views": (1, 2), "heads": (2, 2), "tails": (1, 1)}


@pytest.mark.parametrize(
    ("options", "sentence"),
    [
        ({}, "used for the audio and visual towers"),
        (
            {"augment": True},
            "bypassed for the augmented audio and visual towers (views recomputed)",
        ),
        (
            {"finetune": "visual"},
            "bypassed for the fine-tuned visual tower (views recomputed); used for the audio tower",
        ),
        (
            {"finetune": "both", "audio_backbone": "aisfx-cepstra"},
            "bypassed for the fine-tuned audio and visual towers (views recomputed)",
        ),
    ],
)
def test_cache_sentence(options: dict, sentence: str) -> None:
    cfg = for_method("psd", **options)
    assert _cache_sentence(cfg, _view_modalities(cfg)) == sentence
