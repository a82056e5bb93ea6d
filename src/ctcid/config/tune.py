"""The ``tune`` section: Optuna tuning of each backbone (docs/tuning.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ctcid.config.base import OPERATIONAL, Section
from ctcid.config.train import NATIVE_SIZE, TUNABLE, TrainParams


class Dimension(Section):
    """One searched hyper-parameter: a range ``low``/``high`` (``log`` for a log scale) or ``choices``.

    Ranges of integer keys (epochs, batch_size, patience, input_size) draw integers.
    """

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[bool | int | float | str] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Dimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices, or low and high (and log), not both")
            if not self.choices:
                raise ValueError("choices must not be empty")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"choices must not repeat, got {self.choices}")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices)")
        if self.low >= self.high:
            raise ValueError(f"low must be below high, got [{self.low:g}, {self.high:g}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low:g}")
        return self

    def candidates(self) -> list[bool | int | float | str]:
        """The values to check against train.<key>: every choice, or both ends of the range."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]  # type: ignore[list-item]


def _default_space() -> dict[str, Dimension]:
    return {
        "learning_rate": Dimension(low=1e-4, high=3e-3, log=True),
        "weight_decay": Dimension(low=1e-6, high=1e-2, log=True),
        "batch_size": Dimension(choices=[32, 64]),
        "epochs": Dimension(low=3, high=8),
        "input_size": Dimension(choices=[32, NATIVE_SIZE]),
        "intensity_jitter": Dimension(low=0.0, high=0.25),
        "negatives": Dimension(choices=["downsample", "class_weight", "resample"]),
        "init": Dimension(choices=["scratch", "pretrained", "registry"]),
    }


# specificity_at_sensitivity: pooled out-of-fold specificity at the operating threshold;
# worst_fold_specificity: the lowest fold's specificity at that threshold (with split.cv: sites, the
# worst unseen site); auc: mean fold AUC
TuneObjective = Literal["specificity_at_sensitivity", "worst_fold_specificity", "auc"]


class TuneParams(Section):
    """Optuna tuning of each backbone under the split's CV folds (docs/tuning.md)."""

    # specificity_at_sensitivity: pooled out-of-fold specificity at train.target_sensitivity (CV AUC
    # breaks ties); auc: mean fold AUC
    objective: TuneObjective = "specificity_at_sensitivity"
    # finished (complete or pruned) trials a backbone's study runs to, counting earlier runs and
    # other workers; 0: no tuning, train uses train.* as given
    n_trials: Annotated[int, Field(ge=0, le=100_000)] = 2
    # wall-clock budget of one 'ctcid tune' per backbone; a trial still running then is pruned
    timeout_s: Annotated[float, Field(gt=0.0, le=30 * 86400.0)] | None = 100.0
    # Optuna RDB storage: sqlite:///optuna.db (relative to the working directory) or
    # postgresql+psycopg://user@host/db, shared by workers on several machines
    storage: Annotated[str, Field(min_length=1), OPERATIONAL] = "sqlite:///optuna.db"
    study_prefix: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = "ctcid"
    # trial 0 of a new study: train.* as given (the untuned baseline every tuned trial must beat)
    baseline_trial: bool = True
    # known-good points of the space queued right after the baseline (Optuna's enqueue_trial):
    # each runs train.* with the point's values
    enqueue: list[dict[str, bool | int | float | str]] = Field(default_factory=list)
    # TPE draws this many trials at random before it models the search space
    startup_trials: Annotated[int, Field(ge=1, le=1000)] = 2
    # median: stop a trial whose running CV figure after a fold is below the median of the complete
    # trials at that fold; percentile: keep only trials in the top pruner_percentile % at that
    # fold (25 prunes more than median); hyperband; none
    pruner: Literal["median", "percentile", "hyperband", "none"] = "median"
    pruner_percentile: Annotated[float, Field(gt=0.0, lt=100.0)] = 25.0
    pruner_startup_trials: Annotated[int, Field(ge=0, le=1000)] = 2  # complete trials before pruning starts
    # a trial whose worker sends no heartbeat for 2x this is failed (worker killed) and retried
    heartbeat_s: Annotated[int, Field(ge=1, le=3600)] = 30
    space: dict[str, Dimension] = Field(default_factory=_default_space)

    @model_validator(mode="after")
    def _enqueued_in_space(self) -> TuneParams:
        for number, values in enumerate(self.enqueue):
            for key, value in values.items():
                dimension = self.space.get(key)
                if dimension is None:
                    raise ValueError(f"enqueue[{number}].{key}: not a key of tune.space")
                inside = (
                    value in dimension.choices
                    if dimension.choices is not None
                    else isinstance(value, int | float) and dimension.low <= value <= dimension.high  # type: ignore[operator]
                )
                if not inside:
                    raise ValueError(f"enqueue[{number}].{key} = {value!r}: outside tune.space.{key}")
        return self

    @field_validator("space")
    @classmethod
    def _space_fits_train(cls, space: dict[str, Dimension]) -> dict[str, Dimension]:
        for key, dimension in space.items():
            if key not in TUNABLE:
                raise ValueError(f"{key!r} cannot be tuned; tunable train keys: {', '.join(TUNABLE)}")
            if dimension.choices is None and key in ("augment", "negatives", "init"):
                raise ValueError(f"{key} takes choices, not a range")
            for value in dimension.candidates():
                _check_train_value(key, value)
        return space


_INTEGER_KEYS = ("epochs", "patience", "batch_size", "input_size")


def _check_train_value(key: str, value: object) -> None:
    """A searched value must be a valid ``train.<key>``: the same bounds as a hand-set one."""
    if key == "input_size" and value == NATIVE_SIZE:
        return
    if key in _INTEGER_KEYS:
        if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
            hint = " or 'native'" if key == "input_size" else ""
            raise ValueError(f"{key} = {value!r}: must be a whole number{hint}")
        value = int(value)
    try:
        TrainParams.model_validate({key: value})
    except ValidationError as error:
        raise ValueError(f"{key} = {value!r}: {error.errors()[0]['msg']} (as train.{key})") from None


