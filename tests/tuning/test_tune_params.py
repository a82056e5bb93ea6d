"""tune.* in params.yaml: a search space must hold only values train.* accepts; errors name key and value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctcid.config.base import ConfigError
from ctcid.config.loader import load_params, parse_params


def space_error(space: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as error:
        parse_params({"tune": {"space": space}})
    return str(error.value)


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        (
            {"learning_rate": {"low": 1e-4, "high": 2.0}},
            "learning_rate = 2.0: Input should be less than or equal to 1",
        ),
        ({"epochs": {"low": 0, "high": 5}}, "epochs = 0"),
        ({"intensity_jitter": {"low": 0.0, "high": 0.9}}, "intensity_jitter = 0.9"),
        ({"batch_size": {"choices": [1, 32]}}, "batch_size = 1"),
        ({"negatives": {"choices": ["downsample", "sometimes"]}}, "negatives = 'sometimes'"),
        ({"init": {"choices": ["scratch", "imagenet"]}}, "init = 'imagenet'"),
        ({"input_size": {"choices": [32, "big"]}}, "input_size = 'big': must be a whole number or 'native'"),
    ],
)
def test_a_searched_value_train_would_reject_is_named_with_its_key(space: dict, expected: str) -> None:
    message = space_error(space)
    assert "tune.space" in message and expected in message
    key = next(iter(space))
    assert f"(as train.{key})" in message or "must be a whole number" in message


def test_an_unknown_key_lists_the_tunable_ones() -> None:
    message = space_error({"momentum": {"low": 0.1, "high": 0.9}})
    assert "'momentum' cannot be tuned" in message
    assert "tunable train keys: learning_rate, weight_decay" in message


@pytest.mark.parametrize("key", ["negatives", "init", "augment"])
def test_a_range_for_a_key_that_takes_choices(key: str) -> None:
    assert f"{key} takes choices, not a range" in space_error({key: {"low": 0, "high": 1}})


@pytest.mark.parametrize(
    ("dimension", "expected"),
    [
        ({"low": 0.0, "high": 1e-2, "log": True}, "a log range needs low > 0, got 0"),
        ({"low": -1e-3, "high": 1e-2, "log": True}, "a log range needs low > 0, got -0.001"),
        ({"low": 1e-3, "high": 1e-4}, "low must be below high, got [0.001, 0.0001]"),
        ({"low": 1e-3, "high": 1e-3}, "low must be below high"),
        ({"low": 1e-3}, "a range needs both low and high"),
        ({"choices": []}, "choices must not be empty"),
        ({"choices": [1e-3, 1e-3]}, "choices must not repeat"),
        ({"choices": [1e-3], "low": 1e-4, "high": 1e-2}, "give either choices, or low and high"),
    ],
)
def test_a_malformed_dimension_is_named(dimension: dict, expected: str) -> None:
    message = space_error({"weight_decay": dimension})
    assert "tune.space.weight_decay" in message and expected in message


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"epochs": {"low": 1.5, "high": 4}}, "epochs = 1.5: must be a whole number"),
        ({"batch_size": {"choices": [32, 48.5]}}, "batch_size = 48.5: must be a whole number"),
        ({"patience": {"choices": [True, 3]}}, "patience = True: must be a whole number"),
        ({"input_size": {"low": 16, "high": 32.5}}, "input_size = 32.5: must be a whole number"),
    ],
)
def test_integer_keys_take_whole_numbers(space: dict, expected: str) -> None:
    assert expected in space_error(space)


def test_valid_spaces_parse() -> None:
    params = parse_params(
        {
            "tune": {
                "space": {
                    "input_size": {"choices": [16, 32, "native"]},
                    "epochs": {"low": 2.0, "high": 6.0},  # whole numbers written as floats
                    "augment": {"choices": [True, False]},
                    "learning_rate": {"low": 1e-5, "high": 1.0, "log": True},  # both ends as train allows
                    "negatives": {"choices": ["downsample", "class_weight", "resample"]},
                }
            }
        }
    )
    space = params.tune.space
    assert space["input_size"].choices == [16, 32, "native"]
    assert (space["epochs"].low, space["epochs"].high) == (2.0, 6.0)
    assert set(parse_params({}).tune.space) >= {"learning_rate", "negatives", "init", "input_size"}


@pytest.mark.parametrize(
    ("tune", "key"),
    [
        ({"objective": "accuracy"}, "tune.objective"),
        ({"pruner": "asha"}, "tune.pruner"),
        ({"pruner_percentile": 100.0}, "tune.pruner_percentile"),
        ({"heartbeat_s": 0}, "tune.heartbeat_s"),
        ({"timeout_s": 0}, "tune.timeout_s"),
        ({"study_prefix": "my study"}, "tune.study_prefix"),
        ({"n_trials": -1}, "tune.n_trials"),
    ],
)
def test_other_tune_settings_are_checked(tune: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_params({"tune": tune})


def test_split_balance_says_where_it_moved(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("split:\n  balance: downsample\n")
    with pytest.raises(ConfigError) as error:
        load_params(path)
    message = str(error.value)
    assert message.startswith(f"{path}: invalid configuration")
    assert "split.balance moved to train.negatives (downsample | class_weight | resample)" in message
    assert "delete split.balance" in message


def test_train_negatives_and_registry_init_are_train_settings() -> None:
    train = parse_params({"train": {"negatives": "resample", "init": "registry"}}).train
    assert (train.negatives, train.init) == ("resample", "registry")
    with pytest.raises(ConfigError, match=r"train\.negatives = 'balanced'"):
        parse_params({"train": {"negatives": "balanced"}})


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        ({"epochs": 30}, "enqueue[0].epochs = 30: outside tune.space.epochs"),
        ({"negatives": "sometimes"}, "enqueue[0].negatives = 'sometimes': outside tune.space.negatives"),
        ({"momentum": 0.9}, "enqueue[0].momentum: not a key of tune.space"),
    ],
)
def test_an_enqueued_point_must_lie_in_the_space(point: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_params({"tune": {"enqueue": [point]}})
    assert expected in str(error.value)
