"""BentoML's stores as ctcid uses them: kept inside the project, one model per packaged version.

BentoML reads ``BENTOML_HOME`` once, when it is first imported, so :func:`use_bentoml_home` must run
before anything imports ``bentoml``; the CLI calls it first in every serving command. A served
model is found by its labels (registry version and model hash), so packaging the same champion
twice imports nothing new.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ctcid.config.serving import ServingParams
from ctcid.errors import CtcidError
from ctcid.serving.served import ServedModel

METADATA_KEY = "served"  # the BentoML model's metadata entry holding the ServedModel


class ServiceArgs(ServingParams):
    """The Bento's build arguments (``bentoml.use_arguments``): the limits and the model's tag."""

    model_tag: str


def use_bentoml_home(serving: ServingParams, root: Path | None = None) -> Path:
    """Point BentoML at ``serving.bentoml_home`` (under ``root``) unless BENTOML_HOME is set."""
    configured = os.environ.get("BENTOML_HOME")
    home = Path(configured) if configured else (root or Path.cwd()) / serving.bentoml_home
    home = home.resolve()
    if "bentoml" in sys.modules and not configured:
        from bentoml._internal.configuration.containers import BentoMLContainer

        if Path(BentoMLContainer.bentoml_home.get()).resolve() != home:
            raise CtcidError(f"BentoML was imported before its home was set to {home}")
    os.environ["BENTOML_HOME"] = str(home)
    return home


def bento_name(model_name: str) -> str:
    """BentoML tag names are lower case."""
    return model_name.lower()


def served_of(bento_model: Any) -> ServedModel:
    """The ServedModel stored in a BentoML model's metadata."""
    try:
        return ServedModel.model_validate(bento_model.info.metadata[METADATA_KEY])
    except (KeyError, ValueError) as error:
        raise CtcidError(
            f"BentoML model {bento_model.tag} was not packaged by 'ctcid package' ({error}); run it"
        ) from None


def listed(kind: str, name: str) -> list[Any]:
    """``bentoml.models.list`` / ``bentoml.bentos.list`` of a name; empty when there is none yet."""
    import bentoml

    store = bentoml.models if kind == "models" else bentoml.bentos
    try:
        return list(store.list(name))
    except bentoml.exceptions.NotFound:
        return []


def find_model(served: ServedModel) -> Any | None:
    """The BentoML model already packaged from this registry version and model file, if any."""
    for model in listed("models", bento_name(served.name)):
        labels = model.info.labels
        if (
            labels.get("registry_version") == served.version
            and labels.get("model_sha256") == served.model_sha256[:16]
        ):
            return model
    return None


def latest_bento(model_name: str) -> Any:
    """The newest Bento built for ``model_name`` by 'ctcid package'."""
    bentos = sorted(
        listed("bentos", f"{bento_name(model_name)}-service"),
        key=lambda b: b.info.creation_time,
        reverse=True,
    )
    if not bentos:
        raise CtcidError(
            f"no Bento of {model_name!r} in {os.environ.get('BENTOML_HOME')}; run 'ctcid package' "
            "(or 'make run') first"
        )
    return bentos[0]


def load_served(model_tag: str) -> tuple[ServedModel, Any]:
    """The packaged model as (what it is, its MLflow pyfunc), from the BentoML store."""
    import bentoml

    try:
        bento_model = bentoml.models.get(model_tag)
    except bentoml.exceptions.NotFound:
        raise CtcidError(
            f"no packaged model {model_tag} in {os.environ.get('BENTOML_HOME')}; run 'ctcid package'"
        ) from None
    return served_of(bento_model), bentoml.mlflow.load_model(bento_model)


def probabilities(pyfunc: Any, crops: np.ndarray) -> np.ndarray:
    """CTC probability of each crop by the packaged pyfunc (empty in, empty out)."""
    if len(crops) == 0:
        return np.empty(0, dtype=np.float64)
    return pyfunc.predict(np.ascontiguousarray(crops, dtype=np.float32))["ctc_probability"].to_numpy()
