"""CPU smoke runs of the training loop on seeded synthetic features (each well under 1 s)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import clustered, tiny
from safetensors.torch import load_file

from avsearch.encoders.heads import HeadConfig
from avsearch.encoders.model_dir import ModelConfig, TowerConfig, load_config, load_heads
from avsearch.errors import UsageError
from avsearch.train.data import FeatureSet, mask_labels
from avsearch.train.loop import CHECKPOINT_DIR, LOG_NAME, EpochRecord, evaluate_heads, train


class Interrupt(Exception):
    pass


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "heads.safetensors"))


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def log_lines(out: Path) -> list[dict[str, object]]:
    lines = (out / LOG_NAME).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for r in records:
        r.pop("seconds")
    return records


@pytest.mark.parametrize("method", ["supervised", "triplet", "psd", "infonce"])
def test_smoke_lowers_loss_and_beats_chance(
    tmp_path: Path, train_set: FeatureSet, test_set: FeatureSet, method: str
) -> None:
    mask = mask_labels(train_set.labels, 0.25, seed=0)
    result = train(train_set, mask, tiny(method, epochs=6), tmp_path / method)
    first, last = result.history[0].losses, result.history[-1].losses
    assert last["lab"] < first["lab"]
    if method not in ("supervised", "infonce"):
        assert last["cross_hard"] < first["cross_hard"]
    if method == "psd":
        assert {"cross_soft", "sd", "dis"} <= set(last)
        assert result.history[-1].triplets["soft"] > 0
    if method == "infonce":
        assert last["nce"] < first["nce"] and set(last) == {"total", "lab", "nce"}
    report = evaluate_heads(
        result.audio_head,
        result.visual_head,
        test_set.audio,
        test_set.labels,
        test_set.visual,
        test_set.labels,
    )
    assert report.map > 0.5  # chance ≈ 0.25 for 4 balanced classes
    assert result.best_val_map is not None
    assert 0 <= result.best_epoch < 6


def test_same_seed_same_weights_other_seed_differs(tmp_path: Path, train_set: FeatureSet) -> None:
    mask = mask_labels(train_set.labels, 0.3, seed=0)
    train(train_set, mask, tiny("psd"), tmp_path / "a")
    train(train_set, mask, tiny("psd"), tmp_path / "b")
    train(train_set, mask, tiny("psd", seed=1), tmp_path / "c")
    assert_identical(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert log_lines(tmp_path / "a") == log_lines(tmp_path / "b")
    other = weights(tmp_path / "c")
    assert not torch.equal(
        other["audio.net.0.weight"], weights(tmp_path / "a")["audio.net.0.weight"]
    )


def test_training_leaves_global_rng_alone(tmp_path: Path, train_set: FeatureSet) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(train_set, mask_labels(train_set.labels, 0.5, 0), tiny("triplet", epochs=1), tmp_path)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(("teacher", "stop_after"), [("ema", 2), ("snapshot", 0), ("ema", 3)])
def test_resume_is_bit_identical(
    tmp_path: Path, train_set: FeatureSet, teacher: str, stop_after: int
) -> None:
    mask = mask_labels(train_set.labels, 0.3, seed=0)
    cfg = tiny("psd", teacher=teacher, epochs=5, dropout=0.2)
    full = train(train_set, mask, cfg, tmp_path / "full")

    def interrupt(record: EpochRecord) -> None:
        if record.epoch == stop_after:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(train_set, mask, cfg, tmp_path / "cut", progress=interrupt)
    assert not (tmp_path / "cut" / "heads.safetensors").exists()
    assert len(log_lines(tmp_path / "cut")) == stop_after + 1
    seen: list[int] = []
    resumed = train(
        train_set, mask, cfg, tmp_path / "cut", resume=True, progress=lambda r: seen.append(r.epoch)
    )
    assert seen == list(range(stop_after + 1, 5))
    assert_identical(weights(tmp_path / "full"), weights(tmp_path / "cut"))
    assert log_lines(tmp_path / "full") == log_lines(tmp_path / "cut")
    assert resumed.best_epoch == full.best_epoch
    assert resumed.fingerprint == full.fingerprint
    # resuming a finished run changes nothing
    again = train(train_set, mask, cfg, tmp_path / "cut", resume=True)
    assert again.fingerprint == full.fingerprint and len(again.history) == 5


def test_resume_with_other_options_is_refused(tmp_path: Path, train_set: FeatureSet) -> None:
    mask = mask_labels(train_set.labels, 0.3, seed=0)
    train(train_set, mask, tiny("triplet", epochs=2), tmp_path)
    with pytest.raises(UsageError, match="belongs to another run"):
        train(train_set, mask, tiny("triplet", epochs=2, margin=0.3), tmp_path, resume=True)
    # without --resume the old checkpoint is replaced
    train(train_set, mask, tiny("triplet", epochs=2, margin=0.3), tmp_path)


def test_early_stopping_keeps_best(tmp_path: Path, train_set: FeatureSet) -> None:
    mask = mask_labels(train_set.labels, 1.0, seed=0)
    cfg = tiny("triplet", epochs=40, patience=2, lr=0.05)
    result = train(train_set, mask, cfg, tmp_path)
    maps = [r.val["map"] for r in result.history if r.val is not None]
    assert result.best_val_map == max(maps)
    if result.stopped_early:
        assert len(result.history) < 40
        assert len(result.history) - 1 - result.best_epoch == 2


def test_model_dir_is_loadable_and_complete(tmp_path: Path, train_set: FeatureSet) -> None:
    mask = mask_labels(train_set.labels, 0.5, seed=0)
    val = clustered(40, seed=5)
    result = train(
        train_set, mask, tiny("psd", epochs=2), tmp_path, val=val, training_info={"data": "x"}
    )
    config = load_config(tmp_path)
    assert config.audio.backbone == "audio-features"
    assert config.embedding_dim == 8 and config.audio.head.in_dim == 12
    assert config.visual.head.in_dim == 16
    assert config.training["method"] == "psd"
    assert config.training["classes"] == [0, 1, 2, 3]
    assert config.training["data"] == "x"  # the caller's training_info
    assert config.training["counts"] == {"n_train": 240, "n_labeled": 120, "n_val": 40}
    audio, _ = load_heads(tmp_path, config)
    stored = weights(tmp_path)
    assert stored["classifier.weight"].shape == (4, 8)
    x = torch.from_numpy(val.audio)
    with torch.no_grad():
        assert torch.allclose(audio(x), result.audio_head(x))
    assert (tmp_path / CHECKPOINT_DIR / "state.json").is_file()
    records = log_lines(tmp_path)
    assert [r["epoch"] for r in records] == [0, 1]
    assert {"total", "lab", "cross_hard", "dis"} <= set(records[0]["losses"])  # type: ignore[arg-type]
    assert records[0]["val"] is not None


def test_template_backbones_are_checked(tmp_path: Path, train_set: FeatureSet) -> None:
    mask = mask_labels(train_set.labels, 0.5, seed=0)
    head = HeadConfig(1, 8)
    ok = ModelConfig(
        "feat", 8, TowerConfig("vggish-features", head), TowerConfig("inception-features", head)
    )
    train(train_set, mask, tiny("supervised", epochs=1), tmp_path / "ok", model_template=ok)
    assert load_config(tmp_path / "ok").audio.backbone == "vggish-features"
    registered = ModelConfig(
        "x", 8, TowerConfig("aisfx", head), TowerConfig("efficientnet-lite0", head)
    )
    with pytest.raises(
        UsageError, match="the audio features have 12 dimensions but backbone 'aisfx'"
    ):
        train(
            train_set,
            mask,
            tiny("supervised", epochs=1),
            tmp_path / "bad",
            model_template=registered,
        )


def test_bad_masks_are_usage_errors(tmp_path: Path, train_set: FeatureSet) -> None:
    n = len(train_set)
    with pytest.raises(UsageError, match="bool array"):
        train(train_set, np.ones(n, dtype=int), tiny(), tmp_path)
    with pytest.raises(UsageError, match="no pair is labeled: --method psd needs labels"):
        train(train_set, np.zeros(n, dtype=bool), tiny(), tmp_path)
    one_class = train_set.labels == 0
    with pytest.raises(UsageError, match="fewer than 2 classes"):
        train(train_set, one_class, tiny(val_fraction=0.0), tmp_path)


def test_no_validation_keeps_last_epoch(tmp_path: Path, train_set: FeatureSet) -> None:
    mask = mask_labels(train_set.labels, 0.5, seed=0)
    result = train(train_set, mask, tiny("triplet", epochs=3, val_fraction=0.0), tmp_path)
    assert result.best_val_map is None and result.best_epoch == 2
    assert all(r.val is None for r in result.history)


def test_model_dir_with_registered_backbones_loads_as_avmodel(tmp_path: Path) -> None:
    """Feature-mode training with the default towers' template gives an embed-ready model."""
    from avsearch.encoders.model import AVModel

    data = clustered(80, seed=2, dims=(512, 1280))
    head = HeadConfig(1, 8)
    template = ModelConfig(
        "avdigits-psd",
        8,
        TowerConfig("aisfx", head, backbone_sha256="0" * 64),
        TowerConfig("efficientnet-lite0", head),
        training={"script": "test"},
    )
    mask = mask_labels(data.labels, 0.5, 0)
    result = train(data, mask, tiny("triplet", epochs=1), tmp_path / "m", model_template=template)
    model = AVModel.load(tmp_path / "m")  # backbones load lazily: nothing heavy happens here
    assert model.dim == 8 and model.config.audio.backbone == "aisfx"
    assert model.config.audio.backbone_sha256 == "0" * 64  # the template's tower fields stay
    assert model.config.training["script"] == "test"
    out = model.project("visual", data.visual[:3])
    assert np.allclose(out, result.visual_head(torch.from_numpy(data.visual[:3])).detach().numpy())


def test_repair_labeled_redraws_partners_within_class_only() -> None:
    import tempfile

    import numpy as np

    from avsearch.train import FeatureSet, for_method
    from avsearch.train.export import check_template
    from avsearch.train.loop import _Run
    from avsearch.train.views import TrainData

    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    fs = FeatureSet(
        rng.normal(size=(60, 8)).astype(np.float32),
        rng.normal(size=(60, 6)).astype(np.float32),
        labels,
    )
    mask = np.arange(60) < 30  # first half labeled
    for repair in (True, False):
        cfg = for_method("psd", epochs=1, repair_labeled=repair, val_fraction=0.0)
        template = check_template(None, fs, cfg)
        run = _Run(TrainData.of(fs), mask, None, cfg, Path(tempfile.mkdtemp()), template, {})
        partner = run._partners(np.random.default_rng(1))
        assert np.array_equal(partner[30:], np.arange(30, 60))  # unlabeled keep their own
        assert np.array_equal(labels[partner], labels)  # same class always
        assert np.all(mask[partner[:30]])  # labeled pairs draw from labeled pairs only
        assert (not np.array_equal(partner[:30], np.arange(30))) == repair


def test_infonce_trains_without_any_label(
    tmp_path: Path, train_set: FeatureSet, test_set: FeatureSet
) -> None:
    """Own pairs as the only positives (CLIP): the pairs of the clustered data share a class,
    so retrieval by class beats chance; no classifier class; validation on held-out pairs
    (each its own class) picks the epoch kept."""
    cfg = tiny("infonce", labeled_ratio=0.0, epochs=6, batch_size=64)
    result = train(train_set, np.zeros(len(train_set), dtype=bool), cfg, tmp_path / "m")
    assert result.classes == [] and result.best_val_map is not None
    assert 0 < result.best_val_map <= 1
    vals = [r.val["map"] for r in result.history if r.val is not None]
    assert len(vals) == 6 and result.best_val_map == max(vals)
    assert result.best_epoch == int(np.argmax(vals))
    assert set(result.history[-1].losses) == {"total", "nce"}
    assert result.history[-1].losses["nce"] < result.history[0].losses["nce"]
    report = evaluate_heads(
        result.audio_head,
        result.visual_head,
        test_set.audio,
        test_set.labels,
        test_set.visual,
        test_set.labels,
    )
    assert report.map > 0.5  # chance ≈ 0.25
    audio_head, _ = load_heads(tmp_path / "m", load_config(tmp_path / "m"))
    assert torch.equal(audio_head.net[0].weight, result.audio_head.net[0].weight)
    assert weights(tmp_path / "m")["classifier.weight"].shape == (0, 8)


def test_infonce_resume_is_bit_identical(tmp_path: Path, train_set: FeatureSet) -> None:
    """The one-cycle schedule (and Adam's β₁ with it) is a function of the step: a resumed run
    continues it exactly."""
    mask = mask_labels(train_set.labels, 0.5, seed=0)
    cfg = tiny("infonce", epochs=4, batch_size=32)
    train(train_set, mask, cfg, tmp_path / "full")

    def interrupt(record: EpochRecord) -> None:
        if record.epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(train_set, mask, cfg, tmp_path / "cut", progress=interrupt)
    train(train_set, mask, cfg, tmp_path / "cut", resume=True)
    assert_identical(weights(tmp_path / "full"), weights(tmp_path / "cut"))
    assert log_lines(tmp_path / "full") == log_lines(tmp_path / "cut")
    lrs = [r["lr"] for r in log_lines(tmp_path / "full")]
    assert lrs[0] == pytest.approx(cfg.lr / 25) and lrs[1] > lrs[3] > lrs[0]


def test_training_runs_deterministic_on_one_thread_and_restores(
    tmp_path: Path, train_set: FeatureSet
) -> None:
    seen: list[tuple[int, bool]] = []

    def look(record: EpochRecord) -> None:
        seen.append((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))

    torch.set_num_threads(2)
    try:
        train(
            train_set,
            mask_labels(train_set.labels, 0.5, 0),
            tiny(epochs=2),
            tmp_path,
            progress=look,
        )
        assert seen == [(1, True), (1, True)]
        assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(1)
