"""The search space of ``tune.space`` as Optuna suggestions, and a trial's values as ``train.*``.

A trial's parameters use the ``train.*`` key names, so MLflow shows every trial of every backbone
with the same keys and ``reports/tune/<backbone>.json`` can be applied to ``train`` unchanged.
``input_size: native`` stays a categorical value in Optuna (the crops as cut) and becomes
``segment.crop_size`` when applied. ``init`` choices whose weights are not at hand are dropped
before the study starts (see :func:`available_space`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from ctcid.config.train import NATIVE_SIZE, TrainParams, with_values
from ctcid.config.tune import Dimension

INTEGER_KEYS = frozenset({"epochs", "patience", "batch_size", "input_size"})


def suggest(trial: optuna.Trial, space: Mapping[str, Dimension]) -> dict[str, Any]:
    """One value per searched key, drawn by the study's sampler."""
    values: dict[str, Any] = {}
    for key, dimension in space.items():
        if dimension.choices is not None:
            values[key] = trial.suggest_categorical(key, dimension.choices)
        elif key in INTEGER_KEYS:
            values[key] = trial.suggest_int(key, int(dimension.low), int(dimension.high), log=dimension.log)
        else:
            values[key] = trial.suggest_float(key, dimension.low, dimension.high, log=dimension.log)
    return values


def apply(train: TrainParams, values: Mapping[str, Any], crop_size: int) -> TrainParams:
    """``train`` with a trial's values; ``input_size: native`` becomes the crop size."""
    return with_values(train, dict(values), crop_size)


def baseline(train: TrainParams, space: Mapping[str, Dimension], crop_size: int) -> dict[str, Any]:
    """``train.*`` as given, as values of the space: the untuned trial 0 of a new study.

    Keys whose configured value lies outside the space are left to the sampler.
    """
    values: dict[str, Any] = {}
    for key, dimension in space.items():
        value = getattr(train, key)
        if dimension.choices is not None:
            if key == "input_size" and value == crop_size and NATIVE_SIZE in dimension.choices:
                value = NATIVE_SIZE
            if value in dimension.choices:
                values[key] = value
        elif dimension.low <= value <= dimension.high:  # type: ignore[operator]
            values[key] = value
    return values


def available_space(
    space: Mapping[str, Dimension], init_available: Mapping[str, str | None]
) -> tuple[dict[str, Dimension], list[str]]:
    """The space without ``init`` choices that cannot be used here, and a note for each dropped one.

    ``init_available`` maps an init choice to None when usable, else to the reason it is not.
    """
    notes: list[str] = []
    result = dict(space)
    dimension = space.get("init")
    if dimension is not None and dimension.choices is not None:
        kept = []
        for choice in dimension.choices:
            reason = init_available.get(str(choice))
            if reason is None:
                kept.append(choice)
            else:
                notes.append(f"init {choice} left out of the search: {reason}")
        if not kept:
            kept = ["scratch"]
            notes.append("no init choice is usable; searching with init scratch")
        result["init"] = Dimension(choices=kept)
    return result, notes
