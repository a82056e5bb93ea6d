"""What every section of params.yaml shares: the strict base model, range types and checks."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Range = tuple[float, float]
IntRange = tuple[int, int]


class Operational:
    """Field metadata: this key changes how a step runs (workers, stores), never what it computes."""

    def __repr__(self) -> str:
        return "OPERATIONAL"


OPERATIONAL = Operational()


def is_operational(section: type[BaseModel], key: str) -> bool:
    return any(isinstance(m, Operational) for m in section.model_fields[key].metadata)


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or holds an invalid value."""


class Section(BaseModel):
    # extra="forbid" turns a misspelt key into an error instead of a silently ignored default.
    model_config = ConfigDict(extra="forbid", frozen=True)


def ordered(value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    if low > high:
        raise ValueError(f"range must be [low, high] with low <= high, got [{low}, {high}]")
    return value


def within(value: tuple[float, float], lowest: float, highest: float) -> tuple[float, float]:
    """An ordered [low, high] range inside [lowest, highest]."""
    if value[0] < lowest or value[1] > highest:
        raise ValueError(
            f"range must lie within [{lowest:g}, {highest:g}], got [{value[0]:g}, {value[1]:g}]"
        )
    return ordered(value)


def redact_url(url: str) -> str:
    """A database or server URL without its password, for messages, reports and files."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url

