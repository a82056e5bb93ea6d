"""The one place that reads params.yaml (and its overlays and environment overrides)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ctcid.config.base import ConfigError
from ctcid.config.params import Params

DEFAULT_PARAMS = Path("params.yaml")

# Where the shared infrastructure lives is a deployment's secret, not a result-changing parameter:
# these variables override params.yaml at run time (CI takes them from repository secrets), are
# never written back by 'ctcid show-params', and are no DVC params, so moving stores re-runs nothing.
ENVIRONMENT_OVERRIDES = {
    "CTCID_MLFLOW_TRACKING_URI": ("mlflow", "tracking_uri"),
    "CTCID_MLFLOW_ARTIFACT_LOCATION": ("mlflow", "artifact_location"),
    "CTCID_TUNE_STORAGE": ("tune", "storage"),
}


def _format_error(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        value = item.get("input", "<missing>")
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (value {value!r}); check the spelling against params.yaml")
        else:
            lines.append(f"  {key} = {value!r}: {item['msg']}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "<params>") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_error(source, error)) from None



def with_environment(raw: dict[str, Any], environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """``raw`` with :data:`ENVIRONMENT_OVERRIDES` applied, and the names of the variables used."""
    used = [name for name in ENVIRONMENT_OVERRIDES if environ.get(name, "").strip()]
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in raw.items()}
    for name in used:
        section, key = ENVIRONMENT_OVERRIDES[name]
        if not isinstance(merged.setdefault(section, {}), dict):
            continue  # a malformed section: validation names it
        merged[section][key] = environ[name].strip()
    return merged, used


def merge_overlay(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay``'s keys: mappings merge key by key, anything else (lists too) replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_overlay(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def read_raw(path: str | Path) -> dict[str, Any]:
    """A params file's YAML mapping, unvalidated; a ConfigError names the file otherwise."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read params file ({error.strerror})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    return raw


def load_params(path: str | Path = DEFAULT_PARAMS, environ: Mapping[str, str] | None = None) -> Params:
    """Read and validate a params file; raises ConfigError naming the bad key and value.

    ``environ`` (default ``os.environ``) may override the infrastructure keys named in
    :data:`ENVIRONMENT_OVERRIDES`; pass ``{}`` to read the file alone.
    """
    path = Path(path)
    raw, used = with_environment(read_raw(path), os.environ if environ is None else environ)
    source = f"{path} with {', '.join(used)} from the environment" if used else str(path)
    return parse_params(raw, source)
