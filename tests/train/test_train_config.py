"""Method presets and value validation with the CLI flag named."""

from __future__ import annotations

import pytest

from avsearch.errors import UsageError
from avsearch.train.config import OptionValueError, TrainConfig, for_method


def test_presets() -> None:
    sup = for_method("supervised")
    assert sup.use_lab and not (sup.use_cross_hard or sup.use_cross_soft or sup.use_dis)
    assert not sup.uses_unlabeled and not sup.progressive
    trip = for_method("triplet", labeled_ratio=0.1)
    assert trip.use_lab and trip.use_cross_hard and not trip.uses_unlabeled
    assert trip.labeled_ratio == 0.1 and trip.method == "triplet"
    psd = for_method("psd")
    assert all([psd.use_lab, psd.use_cross_hard, psd.use_cross_soft, psd.use_distill, psd.use_dis])
    assert psd.progressive and psd.uses_unlabeled
    ablated = for_method("psd", use_dis=False)
    assert not ablated.use_dis and ablated.use_cross_soft
    assert TrainConfig.from_dict(psd.to_dict()) == psd
    assert psd.replace(epochs=3).epochs == 3
    nce = for_method("infonce")
    assert nce.use_nce and nce.use_lab and nce.uses_unlabeled and not nce.progressive
    assert not (nce.use_cross_hard or nce.use_cross_soft or nce.use_distill or nce.use_dis)
    # the default model's recipe (bench/train_default.py)
    assert (nce.epochs, nce.batch_size, nce.lr, nce.lr_schedule) == (40, 256, 2e-3, "one-cycle")
    assert (nce.weight_decay, nce.nce_temperature, nce.classifier_scale) == (1e-4, 0.1, 16.0)
    assert for_method("infonce", epochs=3).epochs == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"labeled_ratio": 1.5}, "--labeled-ratio must be in [0, 1], got 1.5"),
        ({"labeled_ratio": 0.0}, "--labeled-ratio must be above 0 for --method psd"),
        ({"nce_temperature": 0.0}, "--nce-temperature must be a positive number"),
        ({"epochs": 0}, "--epochs must be an integer ≥ 1, got 0"),
        ({"batch_size": 1}, "--batch-size must be an integer ≥ 2"),
        ({"dim": 2.5}, "--dim must be an integer"),
        ({"lr": -1.0}, "--lr must be a positive number"),
        ({"temperature": 0}, "--temperature must be a positive number"),
        ({"margin": -0.1}, "--margin must be a number ≥ 0"),
        ({"dis_mode": "cosine"}, "--dis-mode must be one of decorrelation, paired"),
        ({"teacher": "frozen"}, "--teacher must be one of ema, snapshot"),
        ({"ema_decay": 1.0}, "--ema-decay must be in [0, 1)"),
        ({"labeled_floor": 0}, "--labeled-floor must be in (0, 1]"),
        ({"val_fraction": 1.0}, "--val-fraction must be in [0, 1)"),
        ({"seed": -1}, "--seed must be an integer ≥ 0"),
        ({"use_dis": 1}, "--use-dis must be true or false"),
        ({"soft_neg_threshold": 0.6}, "--soft-neg-threshold (0.6) must be below"),
        ({"nonsense": 1}, "unknown training option(s): nonsense"),
    ],
)
def test_validation_names_the_flag(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as err:
        for_method("psd", **overrides)
    assert message in str(err.value)
    assert err.value.exit_code == 2


def test_unknown_method() -> None:
    with pytest.raises(UsageError, match="--method must be one of psd, triplet, supervised, inf"):
        for_method("contrastive")
    with pytest.raises(UsageError, match="--method"):
        TrainConfig(method="contrastive")


def test_option_errors_can_be_renamed() -> None:
    with pytest.raises(OptionValueError) as err:
        for_method("psd", labeled_ratio=2)
    assert err.value.option == "labeled_ratio"
    assert str(err.value.named("train.labeled_ratio")) == (
        "train.labeled_ratio must be in [0, 1], got 2"
    )


@pytest.mark.parametrize("method", ["psd", "triplet", "supervised"])
def test_only_infonce_trains_without_labels(method: str) -> None:
    assert for_method("infonce", labeled_ratio=0.0).labeled_ratio == 0.0
    with pytest.raises(OptionValueError, match="--method infonce") as err:
        for_method(method, labeled_ratio=0.0)
    assert err.value.option == "labeled_ratio"


def test_everything_off_is_refused() -> None:
    with pytest.raises(UsageError, match="every loss is switched off"):
        for_method("supervised", use_lab=False)
