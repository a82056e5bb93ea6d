"""tune.space as Optuna suggestions, train.* values in the space, and init choices that can be used."""

from __future__ import annotations

import optuna
import pytest

from ctcid.config.train import TrainParams
from ctcid.config.tune import Dimension
from ctcid.tuning.space import apply, available_space, baseline, suggest

CROP = 24


def space(**dimensions: dict) -> dict[str, Dimension]:
    return {key: Dimension(**value) for key, value in dimensions.items()}


def test_baseline_takes_train_values_that_lie_in_the_space() -> None:
    train = TrainParams(learning_rate=3e-4, negatives="class_weight", epochs=4, input_size=32, augment=False)
    searched = space(
        learning_rate={"low": 1e-4, "high": 3e-3, "log": True},
        negatives={"choices": ["downsample", "class_weight"]},
        epochs={"low": 3, "high": 8},
        input_size={"choices": [32, "native"]},
        augment={"choices": [True, False]},
    )
    assert baseline(train, searched, CROP) == {
        "learning_rate": 3e-4,
        "negatives": "class_weight",
        "epochs": 4,
        "input_size": 32,
        "augment": False,
    }


def test_an_input_size_equal_to_the_crop_size_is_native_when_offered() -> None:
    train = TrainParams(input_size=CROP)
    assert baseline(train, space(input_size={"choices": [32, "native"]}), CROP) == {"input_size": "native"}
    assert baseline(train, space(input_size={"choices": [CROP, 32]}), CROP) == {"input_size": CROP}
    assert baseline(train, space(input_size={"choices": [32, "native"]}), 40) == {}  # 24 is not offered


def test_train_values_outside_the_space_are_left_to_the_sampler() -> None:
    train = TrainParams(learning_rate=1e-2, negatives="resample", epochs=8)
    searched = space(
        learning_rate={"low": 1e-4, "high": 3e-3, "log": True},
        negatives={"choices": ["downsample", "class_weight"]},
        epochs={"low": 3, "high": 8},  # both ends belong to the range
    )
    assert baseline(train, searched, CROP) == {"epochs": 8}


def test_available_space_drops_init_choices_that_cannot_be_used_with_a_note_each() -> None:
    searched = space(
        init={"choices": ["scratch", "pretrained", "registry"]}, learning_rate={"low": 1e-4, "high": 1e-3}
    )
    reasons = {"scratch": None, "pretrained": "no ImageNet weights file /w/alexnet.pth", "registry": None}
    kept, notes = available_space(searched, reasons)
    assert kept["init"].choices == ["scratch", "registry"]
    assert kept["learning_rate"] == searched["learning_rate"]
    assert notes == ["init pretrained left out of the search: no ImageNet weights file /w/alexnet.pth"]
    assert searched["init"].choices == ["scratch", "pretrained", "registry"]  # the given space is untouched


def test_available_space_falls_back_to_scratch_when_no_init_choice_is_usable() -> None:
    searched = space(init={"choices": ["pretrained", "registry"]})
    reasons = {"scratch": None, "pretrained": "no weights", "registry": "no champion"}
    kept, notes = available_space(searched, reasons)
    assert kept["init"].choices == ["scratch"]
    assert notes == [
        "init pretrained left out of the search: no weights",
        "init registry left out of the search: no champion",
        "no init choice is usable; searching with init scratch",
    ]


def test_a_space_without_init_is_kept_as_it_is() -> None:
    searched = space(learning_rate={"low": 1e-4, "high": 1e-3})
    assert available_space(searched, {"scratch": None, "pretrained": "no weights"}) == (searched, [])


def test_suggest_draws_integers_for_integer_keys_and_floats_in_range() -> None:
    searched = space(
        learning_rate={"low": 1e-4, "high": 1e-2, "log": True},
        epochs={"low": 2, "high": 6},
        batch_size={"choices": [16, 32]},
        input_size={"choices": [16, "native"]},
        negatives={"choices": ["downsample", "resample"]},
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = suggest(study.ask(), searched)
        assert isinstance(values["epochs"], int) and 2 <= values["epochs"] <= 6
        assert isinstance(values["learning_rate"], float) and 1e-4 <= values["learning_rate"] <= 1e-2
        assert values["batch_size"] in (16, 32) and values["input_size"] in (16, "native")
        assert values["negatives"] in ("downsample", "resample")
    distributions = study.trials[0].distributions
    assert isinstance(distributions["epochs"], optuna.distributions.IntDistribution)
    assert distributions["learning_rate"].log is True


def test_apply_turns_native_into_the_crop_size_and_validates_as_train() -> None:
    train = TrainParams(input_size=32)
    config = apply(train, {"input_size": "native", "learning_rate": 1e-3}, CROP)
    assert (config.input_size, config.learning_rate, config.epochs) == (CROP, 1e-3, train.epochs)
    assert apply(train, {"input_size": 16}, CROP).input_size == 16
    with pytest.raises(ValueError, match="batch_size"):
        apply(train, {"batch_size": 1}, CROP)
