"""What one pipeline stage may read of params.yaml: its :class:`StageConfig`.

A stage's entry point receives a StageConfig, never the whole :class:`~ctcid.config.params.Params`:
its fields are named after the sections (and top-level keys) of params.yaml it uses, each typed as
the whole section or as a :func:`view` of some of its keys. Reading anything else fails at once
(``AttributeError``), and tests/unit/test_stage_params.py checks that each stage's dvc.yaml
``params`` list is exactly what its StageConfig holds, less the :data:`OPERATIONAL` keys that
change no result (worker counts, where runs are tracked). So a params key can neither be read
without re-running the stage when it changes, nor re-run a stage that never reads it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, create_model

from ctcid.config.base import Section, is_operational


@functools.cache
def view(section: type[Section], *keys: str) -> type[Section]:
    """A section type holding only ``keys`` of ``section`` (same types, defaults and docs).

    The view has no validators of its own: it is filled from a section validated in full.
    """
    unknown = [key for key in keys if key not in section.model_fields]
    if unknown:
        raise ValueError(f"{section.__name__} has no keys {unknown}")
    fields: dict[str, Any] = {
        key: (section.model_fields[key].annotation, section.model_fields[key]) for key in keys
    }
    made = create_model(f"{section.__name__}[{', '.join(keys)}]", __base__=Section, **fields)
    made.__view_of__ = section  # type: ignore[attr-defined]
    return made


def section_of(kind: type[Section]) -> type[Section]:
    """The full section a view was cut from (a full section is its own)."""
    return getattr(kind, "__view_of__", kind)


class StageConfig(BaseModel):
    """The params one stage reads; subclass it with one field per section or top-level key."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    # field name -> params.yaml key, where Python needs another name (``validate`` is a BaseModel method)
    ALIASES: ClassVar[dict[str, str]] = {"validate_": "validate"}

    @classmethod
    def project(cls, params: BaseModel) -> Self:
        """This stage's part of a validated params object (or of a larger StageConfig)."""
        values = {}
        for name, field in cls.model_fields.items():
            value, kind = getattr(params, name), field.annotation
            if isinstance(kind, type) and issubclass(kind, Section) and type(value) is not kind:
                value = kind.model_validate(value.model_dump(include=set(kind.model_fields)))
            values[name] = value
        return cls.model_validate(values)

    @classmethod
    def _leaves(cls) -> Iterator[tuple[str, str | None, str, bool]]:
        """(field, key within its section or None, dotted params key, operational) of every key."""
        for name, field in cls.model_fields.items():
            key, kind = cls.ALIASES.get(name, name), field.annotation
            if isinstance(kind, type) and issubclass(kind, Section):
                full = section_of(kind)
                for inner in kind.model_fields:
                    yield name, inner, f"{key}.{inner}", is_operational(full, inner)
            else:
                yield name, None, key, False

    @classmethod
    def params_keys(cls) -> Iterator[tuple[str, bool]]:
        """Every params key this stage reads, dotted (``segment.crop_size``), and whether it is operational.

        A field typed as a section yields each of its keys; nested mappings such as
        ``train.site_shift`` count as one key, as DVC compares them.
        """
        for _, _, key, operational in cls._leaves():
            yield key, operational

    def result_values(self) -> dict[str, Any]:
        """The value of every key that can change this stage's results (not the operational ones)."""
        dumped = self.model_dump(mode="json")
        return {
            key: dumped[name] if inner is None else dumped[name][inner]
            for name, inner, key, operational in self._leaves()
            if not operational
        }
