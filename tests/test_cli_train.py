"""`avsearch train` and `avsearch eval --features` through the real CLI: modes, methods,
options refused where they do not apply, avsearch.yaml `train:`, and reproducibility (the
command recorded in config.yaml gives the same heads.safetensors, byte for byte)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from avsearch.cli import app
from tests.conftest import shared_path
from tests.mediagen import write_mp4, write_png, write_wav

runner = CliRunner()


def cli(*args: str) -> tuple[int, dict | None, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    data = json.loads(result.stdout) if "--json" in args and result.stdout.strip() else None
    return result.exit_code, data, result.stderr


def _features(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    a_centres = rng.normal(size=(classes, 16)) * 3
    v_centres = rng.normal(size=(classes, 24)) * 3
    audio = a_centres[labels] + rng.normal(size=(n, 16))
    visual = v_centres[labels] + rng.normal(size=(n, 24))
    return audio.astype(np.float32), visual.astype(np.float32), labels


@pytest.fixture
def h5_file(tmp_path: Path) -> Path:
    a, v, y = _features(240, 4, 0)
    split = np.array(["train"] * 180 + ["test"] * 60)
    path = tmp_path / "feats.h5"
    with h5py.File(path, "w") as fh:
        fh["audio"], fh["visual"], fh["label"] = a, v, y
        fh["split"] = split.astype("S")
    return path


def test_feature_mode_trains_and_evaluates(h5_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    code, summary, err = cli(
        "--json",
        "train",
        "--features",
        str(h5_file),
        "--epochs",
        "4",
        "--labeled-ratio",
        "0.5",
        "--out",
        str(out),
    )
    assert code == 0, err
    assert summary["mode"] == "features" and summary["epochs_run"] == 4
    assert summary["labeled_pairs"] < summary["pairs"]
    assert summary["test"]["map"] > 0.6  # 4 well separated classes; chance ≈ 0.25
    assert (out / "config.yaml").exists() and (out / "heads.safetensors").exists()
    code, report, _ = cli("--json", "eval", "--features", str(h5_file), "--model", str(out))
    assert code == 0 and report["map"] == pytest.approx(summary["test"]["map"], abs=1e-6)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--labeled-ratio", "1.5"], "--labeled-ratio must be in [0, 1], got 1.5"),
        (["--labeled-ratio", "0"], "--labeled-ratio must be above 0 for --method psd"),
        (["--method", "magic"], "--method must be one of psd, triplet, supervised, infonce"),
        (["--epochs", "0"], "--epochs must be an integer ≥ 1, got 0"),
        (["--sampler", "magic"], "--sampler must be one of random, balanced, got 'magic'"),
        (
            ["--sampler", "balanced", "--per-class", "0"],
            "--per-class must be an integer ≥ 1, got 0",
        ),
        (
            ["--sampler", "balanced", "--batch-size", "16", "--per-class", "9"],
            "--per-class must be at most half of --batch-size (8), so a batch holds 2 labels "
            "or more, got 9",
        ),
        (
            ["--method", "infonce", "--labeled-ratio", "0", "--sampler", "balanced"],
            "--sampler must be random with --labeled-ratio 0 (balanced batches need labels)",
        ),
    ],
)
def test_bad_options_are_usage_errors(h5_file: Path, tmp_path: Path, args, needle) -> None:
    code, _, err = cli("train", "--features", str(h5_file), "--out", str(tmp_path / "m"), *args)
    assert code == 2 and needle in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--method", "triplet", "--no-soft"],
            "--no-soft applies only to --method psd, not triplet",
        ),
        (
            ["--method", "infonce", "--no-soft"],
            "--no-soft applies only to --method psd, not infonce",
        ),
        (["--method", "infonce", "--teacher", "ema"], "--teacher applies only to --method psd"),
        (["--augment"], "--augment applies to media folders, not to a feature file (--features)"),
        (["--audio-backbone", "aisfx"], "--audio-backbone applies to media folders"),
        (["--labels", "x.csv"], "--labels applies to media folders"),
        (["--per-class", "4"], "--per-class applies only with --sampler balanced"),
        (
            ["--sampler", "random", "--per-class", "4"],
            "--per-class applies only with --sampler balanced",
        ),
    ],
)
def test_options_that_do_not_apply_are_refused(
    h5_file: Path, tmp_path: Path, args: list[str], line: str
) -> None:
    code, _, err = cli("train", "--features", str(h5_file), "--out", str(tmp_path / "m"), *args)
    assert code == 2 and line in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err  # one line naming the flag
    assert not (tmp_path / "m").exists()


def test_views_need_augment(tmp_path: Path, index_env: Path) -> None:
    (tmp_path / "media").mkdir()
    code, _, err = cli("train", str(tmp_path / "media"), "--views", "3")
    assert code == 2 and "--views applies only with --augment" in err


def test_yaml_train_section_is_checked_and_named(h5_file: Path, tmp_path: Path) -> None:
    conf = tmp_path / "avsearch.yaml"
    base = [
        "--config",
        str(conf),
        "train",
        "--features",
        str(h5_file),
        "--out",
        str(tmp_path / "m"),
    ]
    conf.write_text("train:\n  epoch: 3\n")
    code, _, err = cli(*base)
    assert code == 2 and f"{conf}: unknown key 'epoch' in section `train:`" in err
    assert "valid keys: method, labeled_ratio, labels, features, epochs," in err
    conf.write_text("train:\n  labeled_ratio: 1.5\n")
    code, _, err = cli(*base)
    assert code == 2 and f"train.labeled_ratio in {conf} must be in [0, 1], got 1.5" in err
    code, _, err = cli(*base, "--labeled-ratio", "2")  # a flag is named as a flag
    assert code == 2 and "--labeled-ratio must be in [0, 1], got 2.0" in err
    conf.write_text("train:\n  epochs: ten\n")
    code, _, err = cli(*base)
    assert code == 2 and f"train.epochs in {conf} must be an integer, got 'ten'" in err
    conf.write_text("train:\n  method: infonce\n  no_soft: true\n")
    code, _, err = cli(*base)
    assert code == 2 and f"train.no_soft in {conf} applies only to --method psd" in err
    conf.write_text("train:\n  per_class: 4\n")
    code, _, err = cli(*base)
    assert code == 2 and f"train.per_class in {conf} applies only with --sampler balanced" in err
    conf.write_text("train:\n  sampler: balanced\n  per_class: 100\n")
    code, _, err = cli(*base)
    assert code == 2 and f"train.per_class in {conf} must be at most half of" in err
    conf.write_text("epochs: 3\n")
    code, _, err = cli(*base)
    assert code == 2 and "unknown top-level key 'epochs'" in err and "`train:`" in err


def _heads(out: Path) -> bytes:
    return (out / "heads.safetensors").read_bytes()


def _training(out: Path) -> dict:
    return yaml.safe_load((out / "config.yaml").read_text())["training"]


def _rerun(command: str) -> tuple[int, dict | None, str]:
    argv = shlex.split(command)
    assert argv[:2] == ["avsearch", "train"]
    return cli("--json", *argv[1:])


def test_feature_mode_is_recorded_and_reproduced_byte_for_byte(
    h5_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "avsearch.yaml"
    conf.write_text("train:\n  method: infonce\n  epochs: 3\n  labeled_ratio: 0.5\n")
    out = tmp_path / "model"
    code, summary, err = cli("--json", "train", "--features", str(h5_file), "--batch-size", "32",
                             "--out", str(out))  # fmt: skip
    assert code == 0, err
    training = _training(out)
    # paths as given, every option explicit (avsearch.yaml's too), in the canonical order
    assert training["command"] == (
        f"avsearch train --features {h5_file} --method infonce --labeled-ratio 0.5 "
        f"--epochs 3 --batch-size 32 --dim 128 --seed 0 --sampler random --out {out}"
    )
    assert summary["command"] == training["command"]
    assert training["data"]["files"] == 1 and training["data"]["digest"].startswith("sha256:")
    assert summary["data"] == {k: training["data"][k] for k in ("files", "digest")}
    first = _heads(out)
    conf.unlink()  # the recorded command needs no avsearch.yaml
    code, again, err = _rerun(training["command"])
    assert code == 0, err
    assert _heads(out) == first and again["fingerprint"] == summary["fingerprint"]
    other = tmp_path / "other"
    code, _, err = _rerun(training["command"].replace(str(out), str(other)))
    assert code == 0 and _heads(other) == first, err


def test_infonce_learns_from_pairs_alone_in_feature_mode(h5_file: Path, tmp_path: Path) -> None:
    code, summary, err = cli("--json", "train", "--features", str(h5_file), "--method", "infonce",
                             "--labeled-ratio", "0", "--epochs", "6", "--batch-size", "32",
                             "--out", str(tmp_path / "m"))  # fmt: skip
    assert code == 0, err
    assert summary["labeled_pairs"] == 0
    assert 0 < summary["best_val_map"] <= 1  # held-out pairs, each its own class
    assert summary["test"]["map"] > 0.5  # pairs share a class: chance ≈ 0.25


def test_bad_feature_files_and_missing_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as fh:
        fh["audio"] = np.zeros((10, 4), np.float32)
        fh["visual"] = np.zeros((9, 4), np.float32)
        fh["label"] = np.zeros(10, np.int64)
    code, _, err = cli("train", "--features", str(bad), "--out", str(tmp_path / "m"))
    assert code == 2 and "Traceback" not in err
    code, _, err = cli("train", "--out", str(tmp_path / "m"))
    assert code == 2 and "--features" in err
    code, _, err = cli("eval", "--features", str(bad))
    assert code == 2 and "go together" in err


@pytest.mark.slow
def test_media_mode_model_works_with_embed(tmp_path: Path, index_env: Path) -> None:
    media = tmp_path / "media"
    for i in range(3):
        write_mp4(media / "low" / f"v{i}.mp4", seconds=2.5, freq=220.0 + 10 * i)
        write_mp4(media / "high" / f"v{i}.mp4", seconds=2.5, freq=2000.0 + 50 * i, colour_every=0.5)
    write_wav(media / "high" / "beep.wav", freq=2500.0)
    write_png(media / "low" / "pic.png")
    out = tmp_path / "model"
    args = ["--json", "train", str(media), "--epochs", "2", "--batch-size", "8", "--out", str(out)]
    code, summary, err = cli(*args)
    assert code == 0, err
    assert summary["mode"] == "media" and summary["classes"] == ["high", "low"]
    assert summary["media"]["decoded"] == 8 and summary["media"]["video_pairs"] >= 6
    code, again, _ = cli(*args[:-1], str(tmp_path / "model2"))
    assert code == 0 and again["media"]["decoded"] == 0 and again["media"]["from_cache"] == 8
    code, emb, err = cli("--json", "embed", str(media), "--model", str(out))
    assert code == 0 and emb["files"]["new"] == 8, err
    code, res, _ = cli("--json", "query", str(media / "high" / "beep.wav"))
    assert code == 0 and res["model"] == "model" and res["results"]


@pytest.mark.slow
def test_videos_without_labels_train_with_infonce(tmp_path: Path, index_env: Path) -> None:
    """--labeled-ratio 0: each video window's sound and frame are a pair, the others not."""
    media = tmp_path / "media"
    for i in range(3):
        write_mp4(media / f"v{i}.mp4", seconds=5.0, freq=300.0 * (i + 1), colour_every=0.5)
    args = ["--json", "train", str(media), "--method", "infonce", "--labeled-ratio", "0",
            "--audio-backbone", "aisfx", "--epochs", "2", "--batch-size", "8"]  # fmt: skip
    code, summary, err = cli(*args, "--out", str(tmp_path / "m"))
    assert code == 0, err
    assert summary["labeled_pairs"] == 0 and summary["media"]["video_pairs"] == 6
    code, _, err = cli(*args[:3], "--labeled-ratio", "0", "--out", str(tmp_path / "p"))
    assert code == 2 and "--labeled-ratio must be above 0 for --method psd" in err


@pytest.mark.slow
def test_media_mode_is_recorded_and_reproduced_byte_for_byte(tmp_path: Path) -> None:
    """The farm's real sounds and photos with a labels CSV: run, then run the command
    recorded in config.yaml on a fresh index (features decoded again): same bytes."""
    farm = shared_path("data", "farm")
    csv = tmp_path / "labels.csv"
    rows = [
        f"{p},{p.stem.removesuffix('s') if p.stem == 'chickens' else p.stem}"
        for p in sorted(farm.rglob("*.*"))
    ]
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "model"
    code, summary, err = cli(
        "--json", "--index", str(tmp_path / "i1"), "train", str(farm / "sounds"),
        str(farm / "images"), "--labels", str(csv), "--audio-backbone", "aisfx",
        "--method", "infonce", "--epochs", "3", "--batch-size", "16", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert summary["classes"] == sorted({r.rsplit(",", 1)[1] for r in rows})
    training = _training(out)
    assert training["command"] == (
        f"avsearch train {farm / 'sounds'} {farm / 'images'} --labels {csv} --method infonce "
        "--labeled-ratio 1.0 --epochs 3 --batch-size 16 --dim 128 --seed 0 --sampler random "
        f"--audio-backbone aisfx --no-augment --out {out}"
    )
    assert training["data"]["files"] == 18 and training["data"]["labels_sha256"]
    first = _heads(out)
    code, again, err = cli("--json", "--index", str(tmp_path / "i2"),
                           *shlex.split(training["command"])[1:])  # fmt: skip
    assert code == 0 and again["media"]["decoded"] == 18, err
    assert _heads(out) == first
    assert _training(out)["data"]["digest"] == training["data"]["digest"]


def _two_classes(media: Path) -> Path:
    """Class folders low/ and high/: two 1 s tones and a coloured picture each."""
    for name, freq, colour in (("low", 300.0, (220, 20, 20)), ("high", 3000.0, (20, 20, 220))):
        for i in range(2):
            write_wav(media / name / f"s{i}.wav", freq=freq * (1 + 0.05 * i), seconds=1.0)
        write_png(media / name / "p.png", colour=colour)
    return media


@pytest.mark.slow
def test_augmented_views_through_the_frozen_backbones(tmp_path: Path, index_env: Path) -> None:
    media = _two_classes(tmp_path / "media")
    out = tmp_path / "model"
    code, summary, err = cli("--json", "train", str(media), "--audio-backbone", "aisfx",
                             "--augment", "--views", "2", "--epochs", "2", "--batch-size", "4",
                             "--out", str(out))  # fmt: skip
    assert code == 0, err
    m = summary["media"]
    assert m["views"] == 2 and m["views_decoded"] == 6 and m["label_pairs"] == 4
    training = _training(out)
    assert "--audio-backbone aisfx --augment --views 2 --out" in training["command"]
    assert training["augmentation"]["views"] == 2
    assert "band-limit 0-4000 Hz" in training["augmentation"]["audio"]
    assert training["recipe"]["augment"] is True


def test_no_pairs_and_missing_csv_files(tmp_path: Path, index_env: Path) -> None:
    write_wav(tmp_path / "only-sounds" / "a" / "x.wav", seconds=1.0)
    code, _, err = cli("train", str(tmp_path / "only-sounds"), "--out", str(tmp_path / "m"))
    assert code == 2 and "no audio-visual pairs" in err
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nnot-there.wav,a\n")
    code, _, err = cli(
        "train", str(tmp_path / "only-sounds"), "--labels", str(csv), "--out", str(tmp_path / "m")
    )
    assert code == 2 and "do not exist" in err


@pytest.mark.slow
def test_corrupt_file_is_skipped_and_exit_code_is_partial(tmp_path: Path, index_env: Path) -> None:
    media = tmp_path / "media"
    for label, freq, colour in (("low", 300.0, (30, 30, 200)), ("high", 3000.0, (200, 30, 30))):
        write_wav(media / label / "a.wav", freq=freq)
        write_png(media / label / "a.png", colour=colour)
    (media / "high" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk" * 50)
    out = tmp_path / "model"
    args = ["--json", "train", str(media), "--epochs", "2", "--batch-size", "4", "--out", str(out)]
    code, summary, err = cli(*args)
    assert code == 4, err
    assert [Path(f["path"]).name for f in summary["media"]["failed"]] == ["broken.wav"]
    assert summary["pairs"] == 2 and (out / "config.yaml").exists()


def test_balanced_sampler_is_recorded_and_reproduced_byte_for_byte(
    h5_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    code, summary, err = cli("--json", "train", "--features", str(h5_file), "--method", "infonce",
                             "--epochs", "2", "--batch-size", "32", "--sampler", "balanced",
                             "--out", str(out))  # fmt: skip
    assert code == 0, err
    training = _training(out)
    assert "--seed 0 --sampler balanced --per-class 4 --out" in training["command"]
    assert training["recipe"]["sampler"] == "balanced" and training["recipe"]["per_class"] == 4
    first = _heads(out)
    code, again, err = _rerun(training["command"])
    assert code == 0, err
    assert _heads(out) == first and again["fingerprint"] == summary["fingerprint"]


@pytest.mark.slow
def test_the_audio_head_reads_the_parts_it_is_given(tmp_path: Path, index_env: Path) -> None:
    """--audio-head-parts aisfx of aisfx+cepstra: the head takes aisfx's 512 columns, the
    config says so, the command records it, and embed/query slice the same columns."""
    media = _two_classes(tmp_path / "media")
    out = tmp_path / "model"
    code, _, err = cli("train", str(media), "--audio-backbone", "aisfx+cepstra",
                       "--audio-head-parts", "aisfx", "--method", "infonce", "--epochs", "2",
                       "--batch-size", "4", "--out", str(out))  # fmt: skip
    assert code == 0, err
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["audio"]["head"]["parts"] == ["aisfx"]
    assert config["audio"]["head"]["in_dim"] == 512 and "parts" not in config["visual"]["head"]
    assert "--audio-backbone aisfx+cepstra --audio-head-parts aisfx" in _training(out)["command"]
    code, emb, err = cli("--json", "embed", str(media), "--model", str(out))
    assert code == 0 and emb["files"]["new"] == 6, err
    code, res, err = cli("--json", "query", str(media / "high" / "s0.wav"), "--top", "1")
    assert code == 0 and res["results"][0]["path"].endswith("p.png"), err
    code, _, err = cli("train", str(media), "--audio-backbone", "aisfx",
                       "--audio-head-parts", "soundnet", "--out", str(tmp_path / "x"))  # fmt: skip
    assert code == 2 and "audio_head_parts" in err.replace("-", "_"), err


@pytest.mark.slow
def test_a_bridged_model_learns_its_bridge_map_from_the_pairs(
    tmp_path: Path, index_env: Path
) -> None:
    """aisfx+soundnet on the farm's sounds and pictures (labels by name): train fits the
    correction of the bridge's audio side, records its penalty in the command, and the map
    brings each training sound's bridge vector closer to its animal's picture; the index's
    bridge vectors of sounds are the mapped ones. --bridge-map-alpha 0: no map."""
    if not (Path("models/backbones/soundnet/model.safetensors")).is_file():
        pytest.skip("soundnet weights are not converted (models/backbones/soundnet)")
    from avsearch.encoders.model import AVModel

    farm = shared_path("data", "farm")
    labels = tmp_path / "labels.csv"
    rows = [f"{p},{p.stem.rstrip('s')}" for p in sorted(farm.rglob("*.*"))]
    labels.write_text("path,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "model"
    code, summary, err = cli("--json", "train", str(farm), "--labels", str(labels),
                             "--audio-backbone", "aisfx+soundnet", "--audio-head-parts", "aisfx",
                             "--method", "infonce", "--epochs", "2", "--batch-size", "8",
                             "--out", str(out))  # fmt: skip
    assert code == 0, err
    assert (
        "--audio-head-parts aisfx --bridge-map-alpha 0.5 --bridge-memory-k 5 --no-augment"
        in (_training(out)["command"])
    )
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["bridge_map"]["alpha"] == 0.5 and config["bridge_map"]["dim"] == 58
    assert config["bridge_map"]["fitted_on"]["pairs"] == summary["media"]["label_pairs"]
    n_windows = summary["media"]["label_pairs"]  # (9 pictures, more sound windows: one each)
    want = {"parts": ["aisfx"], "windows": n_windows, "k": 5, "beta": 1.0}
    assert config["bridge_map"]["memory"] == want

    for name, extra in (
        ("map-only", ["--bridge-memory-k", "0"]),
        ("plain", ["--bridge-map-alpha", "0"]),
    ):
        code, _, err = cli("train", str(farm), "--labels", str(labels), "--audio-backbone",
                           "aisfx+soundnet", "--audio-head-parts", "aisfx", *extra, "--epochs",
                           "1", "--out", str(tmp_path / name))  # fmt: skip
        assert code == 0, err
    assert (
        "memory"
        not in yaml.safe_load((tmp_path / "map-only" / "config.yaml").read_text())["bridge_map"]
    )
    assert "bridge_map" not in yaml.safe_load((tmp_path / "plain" / "config.yaml").read_text())
    model = AVModel.load(tmp_path / "map-only")
    assert model.bridge is not None and model.bridge.audio_map is not None
    vecs = {}
    for name, ref in (
        ("full", out),
        ("mapped", tmp_path / "map-only"),
        ("plain", tmp_path / "plain"),
    ):
        index = tmp_path / f"index-{name}"
        code, _, err = cli("--index", str(index), "embed", str(farm), "--model", str(ref))
        assert code == 0, err
        vecs[name] = _bridge_vectors(index)
    (a_map, v_map), (a_plain, v_plain) = vecs["mapped"], vecs["plain"]
    a_full = vecs["full"][0]
    assert a_map.keys() == a_plain.keys() and v_map.keys() == v_plain.keys()
    for key, v in v_plain.items():  # pictures keep their vectors
        np.testing.assert_allclose(v_map[key], v, atol=1e-6)
    the_map = model.bridge.audio_map
    keys = sorted(a_plain)
    mapped = np.stack([a_map[k] for k in keys])
    plain = np.stack([a_plain[k] for k in keys])
    np.testing.assert_allclose(mapped, the_map.apply(plain), atol=1e-5)
    pictures = {Path(p).stem: v for (p, _), v in v_plain.items()}
    own = np.stack([pictures[Path(p).stem.rstrip("s")] for p, _ in keys])
    before = np.sum(plain * own, axis=1).mean()
    after = np.sum(mapped * own, axis=1).mean()
    full = np.sum(np.stack([a_full[k] for k in keys]) * own, axis=1).mean()
    assert full > after > before, (before, after, full)  # the memory: its own sounds' pictures
    # --augment: the map and its memory still read the windows as decoded (as embed does)
    code, _, err = cli("train", str(farm), "--labels", str(labels), "--audio-backbone",
                       "aisfx+soundnet", "--audio-head-parts", "aisfx", "--augment", "--views",
                       "2", "--epochs", "1", "--out", str(tmp_path / "aug"))  # fmt: skip
    assert code == 0, err
    from safetensors.numpy import load_file

    plain_map = load_file(str(out / "bridge_map.safetensors"))
    aug_map = load_file(str(tmp_path / "aug" / "bridge_map.safetensors"))
    assert plain_map.keys() == aug_map.keys()
    for key, value in plain_map.items():
        np.testing.assert_array_equal(aug_map[key], value)
    code, _, err = cli("train", str(farm), "--labels", str(labels), "--audio-backbone", "aisfx",
                       "--bridge-map-alpha", "1", "--out", str(tmp_path / "x"))  # fmt: skip
    assert code == 2 and "soundnet" in err, err
    code, _, err = cli("train", str(farm), "--labels", str(labels), "--audio-backbone",
                       "aisfx+soundnet", "--bridge-map-alpha", "0", "--bridge-memory-k", "3",
                       "--out", str(tmp_path / "x"))  # fmt: skip
    assert code == 2 and "bridge-map-alpha" in err, err


def _bridge_vectors(index: Path) -> tuple[dict, dict]:
    """Per modality, {(path, window start): bridge vector} of an index."""
    from avsearch.store.index import IndexStore

    out = []
    with IndexStore.open_existing(index) as store:
        for modality in ("audio", "visual"):
            ids, vecs = store.manifest.vectors(modality, 58, space="bridge")
            rows = store.manifest.segments_by_ids(ids.tolist())
            out.append(
                {(rows[i].path, rows[i].start): v for i, v in zip(ids.tolist(), vecs, strict=True)}
            )
    return out[0], out[1]
