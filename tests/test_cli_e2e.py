"""End-to-end: the real CLI over real media (made here, and the shared fixtures when present)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avsearch.cli import app
from tests.conftest import shared_path
from tests.mediagen import write_mp4, write_png, write_truncated, write_wav

pytestmark = pytest.mark.slow
runner = CliRunner()
RESULT_KEYS = {"rank", "score", "confidence", "path", "start", "end", "modality"}


def result_keys(out: dict) -> set[str]:
    """A hit's keys: ranked in another space than the heads' (the default model fuses the
    zero-shot bridge), it also gives its heads cosine, and its confidence is null."""
    return RESULT_KEYS | ({"heads_cosine"} if out["space"] != "heads" else set())


def cli(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    data = json.loads(result.stdout) if "--json" in args and result.stdout.strip() else None
    return result.exit_code, data, result.stderr


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    write_mp4(root / "videos" / "red-blue.mp4", seconds=5.0, freq=330.0)
    write_mp4(root / "videos" / "ünïcode clip.mp4", seconds=3.0, freq=880.0, colour_every=0.7)
    write_wav(root / "sounds" / "beep.wav", freq=1000.0, seconds=1.5)
    write_png(root / "pictures" / "red.png", (220, 20, 20))
    (root / "pictures" / "notes.txt").write_text("not media")
    write_truncated(root / "videos" / "red-blue.mp4", root / "broken" / "cut.mp4", keep=0.2)
    return root


def test_embed_query_incremental_and_errors(media: Path, index_env: Path, tmp_path: Path) -> None:
    code, out, err = cli("--json", "embed", str(media))
    assert code == 4, err  # finished, but one file could not be read
    assert out is not None and out["files"]["new"] == 4 and out["files"]["failed"] == 1
    assert out["failures"][0]["path"].endswith("cut.mp4") and out["failures"][0]["reason"]
    assert "cut.mp4" in err
    # 5 s video: 2 audio + 2 visual windows; 3 s video: 1 + 1 (+ a 0.68 s tail each);
    # 1.5 s wav: 1 audio; png: 1 visual
    assert out["segments"]["audio"] >= 4 and out["segments"]["visual"] >= 4
    assert (index_env / "manifest.sqlite").exists() and (index_env / "audio.faiss").exists()

    code, out, _ = cli("--json", "embed", str(media))
    assert code == 4
    assert out["files"]["unchanged"] == 4 and out["files"]["new"] == 0
    assert out["segments"]["encoded"] == 0

    # audio clip → pictures and video moments
    code, out, _ = cli("--json", "query", str(media / "sounds" / "beep.wav"), "--top", "5")
    assert code == 0
    assert out["target"] == "visual" and out["results"]
    assert set(out["results"][0]) == result_keys(out)
    assert [r["rank"] for r in out["results"]] == list(range(1, len(out["results"]) + 1))
    assert all(r["modality"] == "visual" for r in out["results"])
    paths = [r["path"] for r in out["results"]]
    assert len(paths) == len(set(paths)) == 3  # one hit per file: 2 videos + 1 picture
    scores = [r["score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)
    video_hit = next(r for r in out["results"] if r["path"].endswith(".mp4"))
    assert 0 <= video_hit["start"] < video_hit["end"]
    image_hit = next(r for r in out["results"] if r["path"].endswith(".png"))
    assert image_hit["start"] is None and image_hit["end"] is None

    # image → sounds; raw segments
    code, out, _ = cli("--json", "query", str(media / "pictures" / "red.png"), "--segments")
    assert code == 0 and out["target"] == "audio" and not out["grouped"]
    assert len(out["results"]) > len({r["path"] for r in out["results"]})
    # a video moment: its frames search the sounds
    code, out, _ = cli(
        "--json",
        "query",
        str(media / "videos" / "red-blue.mp4"),
        "--start",
        "2.4",
        "--end",
        "4.6",
        "--target",
        "audio",
    )
    assert code == 0 and out["query_modality"] == "visual" and out["target"] == "audio"

    # moved and deleted files
    (media / "sounds" / "beep.wav").rename(media / "pictures" / "beep-moved.wav")
    (media / "pictures" / "red.png").unlink()
    code, out, _ = cli("--json", "embed", str(media))
    assert out["files"]["moved"] == 1 and out["files"]["removed"] == 1
    assert out["segments"]["encoded"] == 0
    code, out, _ = cli(
        "--json",
        "query",
        str(media / "videos" / "red-blue.mp4"),
        "--target",
        "audio",
        "--top",
        "10",
    )
    assert any(r["path"].endswith("beep-moved.wav") for r in out["results"])

    code, out, _ = cli("--json", "index", "stats")
    assert code == 0 and out["files"] == 3 and out["vector_indexes"]["audio"]["up_to_date"]


def test_table_output_and_usage_errors(media: Path, index_env: Path) -> None:
    code, _, _ = cli("embed", str(media / "sounds"), str(media / "pictures"))
    assert code == 0
    result = runner.invoke(app, ["query", str(media / "sounds" / "beep.wav")])
    assert result.exit_code == 0 and "red.png" in result.stdout
    code, out, err = cli("--json", "query", str(media / "missing.wav"))
    assert code == 2 and "no such file" in err and out["exit_code"] == 2
    code, _, err = cli("query", str(media / "pictures" / "notes.txt"))
    assert code == 2 and "not a supported media file" in err
    code, _, err = cli("query", str(media / "sounds" / "beep.wav"), "--target", "smell")
    assert code == 2
    code, _, err = cli("embed", str(media / "nowhere"))
    assert code == 2 and "does not exist" in err


def test_no_index_and_other_model_are_exit_3(media: Path, index_env: Path, tmp_path: Path) -> None:
    code, _, err = cli("query", str(media / "sounds" / "beep.wav"))
    assert code == 3 and "avsearch embed" in err
    cli("embed", str(media / "sounds"))
    other = tmp_path / "other-model"
    from avsearch.encoders.model_dir import resolve_model_dir

    shutil.copytree(resolve_model_dir("default"), other)
    text = (other / "config.yaml").read_text().replace("name: default", "name: other")
    text = text.replace("../backbones/", str(resolve_model_dir("default").parent) + "/backbones/")
    (other / "config.yaml").write_text(text)
    code, _, err = cli("query", str(media / "sounds" / "beep.wav"), "--model", str(other))
    assert code == 3 and "built with model 'default'" in err
    code, _, err = cli("embed", str(media / "sounds"), "--model", str(other))
    assert code == 3 and "--rebuild" in err
    code, out, _ = cli("--json", "embed", str(media / "sounds"), "--model", str(other), "--rebuild")
    assert code == 0 and out["model"] == "other" and out["files"]["new"] == 1
    code, out, _ = cli("--json", "query", str(media / "sounds" / "beep.wav"), "--target", "audio")
    assert code == 0 and out["model"] == "other"


def test_interrupted_run_resumes_to_the_same_index(media: Path, tmp_path: Path) -> None:
    from avsearch.config import EmbedConfig
    from avsearch.encoders.model import AVModel
    from avsearch.pipeline import run_embed
    from avsearch.store.index import IndexStore

    shutil.rmtree(media / "broken")
    model = AVModel.load("default")
    cfg = EmbedConfig(commit_every=0.0, batch_size=1)

    class Dying:
        """The real model, killed (Ctrl-C) at its third encoder call."""

        def __init__(self) -> None:
            self.calls = 0

        def __getattr__(self, name: str):
            return getattr(model, name)

        def tick(self) -> None:
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt

        def embed(self, modality: str, batch, runs=None):
            self.tick()
            return model.embed(modality, batch, runs)

        def features(self, modality: str, batch, runs=None):  # (the call when features are kept)
            self.tick()
            return model.features(modality, batch, runs)

    crashed = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        run_embed([media], crashed, cfg, model=Dying())  # type: ignore[arg-type]
    resumed = run_embed([media], crashed, cfg, model=model)
    assert resumed.new + resumed.unchanged == 4
    clean = tmp_path / "clean"
    run_embed([media], clean, cfg, model=model)

    def content(root: Path) -> list[tuple]:
        with IndexStore.open_existing(root) as store:
            rows = store.manifest.conn.execute(
                'SELECT f.path, s.modality, s.idx, s.start, s."end", s.vector FROM segments s '
                "JOIN files f ON f.id = s.file_id ORDER BY f.path, s.modality, s.idx"
            ).fetchall()
            return [tuple(r) for r in rows]

    assert content(crashed) == content(clean)


def test_console_script_runs() -> None:
    exe = shutil.which("avsearch")
    cmd = [exe] if exe else [sys.executable, "-m", "avsearch"]
    proc = subprocess.run([*cmd, "--json", "models"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    names = [m["name"] for m in json.loads(proc.stdout)["models"]]
    assert "default" in names


def test_shared_fixtures_and_farm(index_env: Path) -> None:
    fixtures = shared_path("fixtures")
    farm = shared_path("data", "farm")
    code, out, err = cli("--json", "embed", str(fixtures), str(farm))
    assert code == 0, err
    assert out["files"]["new"] == 5 + 2 + 9 + 9 and out["files"]["failed"] == 0
    code, out, _ = cli("--json", "query", str(farm / "sounds" / "dog.ogg"), "--top", "5")
    assert code == 0 and out["target"] == "visual" and len(out["results"]) == 5
    assert out["space"] == "heads+bridge"  # the default model's audio tower has SoundNet
    assert all(set(r) == result_keys(out) for r in out["results"])
    # the answer, not only its shape: the bark finds the dog's photo first
    assert Path(out["results"][0]["path"]) == (farm / "images" / "dog.webp").resolve()
    # the heads know the bark, so the bridge weighs nothing and the heads' confidences hold
    assert out["fusion"]["bridge_weight"] == 0
    assert out["results"][0]["confidence"] > 0.5
    assert all(r["confidence"] is not None for r in out["results"])
    code, out, _ = cli("--json", "query", str(fixtures / "photos" / "sklearn_china.jpg"))
    assert code == 0 and out["target"] == "audio" and out["results"]
    assert all(r["start"] is not None and r["end"] > r["start"] for r in out["results"])


def test_bf16_embed_finds_the_same_answer(index_env: Path) -> None:
    """``embed --precision bf16`` (the aisfx and image networks in bfloat16): the bark still
    finds the dog's photo first, and the feature cache keeps its features apart."""
    import sqlite3

    farm = shared_path("data", "farm")
    code, out, err = cli("--json", "embed", str(farm), "--precision", "bf16")
    assert code == 0, err
    code, out, _ = cli("--json", "query", str(farm / "sounds" / "dog.ogg"), "--top", "3")
    assert code == 0
    assert Path(out["results"][0]["path"]) == (farm / "images" / "dog.webp").resolve()
    with sqlite3.connect(index_env / "features.sqlite") as conn:
        keys = {k for (k,) in conn.execute("SELECT DISTINCT backbone FROM done")}
    assert keys and all(k.endswith("|bf16") for k in keys)
    code, _, err = cli("--json", "embed", str(farm), "--precision", "fp16")
    assert code == 2 and "--precision must be fp32 or bf16" in err


def test_doctor_and_models(index_env: Path) -> None:
    code, out, _ = cli("--json", "doctor")
    assert code == 0 and out["ok"]
    names = {c["name"]: c for c in out["checks"]}
    assert names["codecs"]["ok"] and names["default model and backbone weights"]["ok"]
    assert not names["index"]["ok"] and not names["index"]["required"]  # no index yet: a warning
    code, out, _ = cli("--json", "models")
    backbones = {b["name"]: b for b in out["backbones"]}
    assert {"aisfx", "words", "aisfx-words", "efficientnet-lite0"} <= set(backbones)
    assert backbones["aisfx-words"]["parts"] == ["aisfx", "words"]
    assert backbones["aisfx-words"]["dim"] == 2560 and backbones["aisfx"]["weights_present"]
    assert backbones["efficientnet-lite0"]["input"] == {"image_size": 224}
    assert names["backbone words"]["ok"] or not names["backbone words"]["required"]
