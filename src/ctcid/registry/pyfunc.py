"""The registered model: an MLflow pyfunc that wraps ``model.pt`` with everything scoring needs.

``model.pt`` already carries the network, its per-channel normalisation (a layer of the model),
the input size, the channel order and the operating threshold; :mod:`ctcid.model.predict` resizes
crops exactly as training did. Wrapping that file, rather than exporting the network with MLflow's
pytorch flavour, keeps one scoring path for evaluation, the promotion gate and the service, and
loads without unpickling code (``torch.load(weights_only=True)``). docs/registry.md says more.

Input: crops as ``crops.npy`` holds them, ``N x C x S x S`` raw camera counts (any number type; JSON
lists too), channels in the model's order. Output: one row per crop, ``ctc_probability`` and
``ctc`` (the call at the operating threshold).
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from ctcid.errors import CtcidError

MODEL_ARTIFACT = "model"  # the model.pt file inside the MLflow model
# Logged as "model from code": MLflow stores this file and runs it on load, so loading a version
# unpickles nothing (no cloudpickled Python object in the registry).
MODEL_CODE = Path(__file__).with_name("served_model.py")
CARD_ARTIFACT = "model_card"
# What the model needs to run; the ctcid package itself is installed beside it (docs/registry.md).
_REQUIREMENTS = ("torch", "torchvision", "numpy", "pandas", "mlflow")


class CtcClassifier(mlflow.pyfunc.PythonModel):
    """CTC probability and call of each crop, by the saved ``model.pt`` of one backbone."""

    # No type hints on the MLflow hooks: MLflow would read them as an input schema and replace the
    # explicit tensor signature (a 4-d crop array is not a list of records). MLflow then warns once
    # per process ("Add type hints to the `predict` method"), inside its own warning filter.
    def load_context(self, context):  # noqa: ANN001
        from ctcid.model.predict import load_model
        from ctcid.model.trainer import default_device

        # CUDA when present: the service and 'ctcid predict' score on the GPU as training does
        self.loaded = load_model(context.artifacts[MODEL_ARTIFACT], default_device())

    @property
    def threshold(self) -> float:
        return self.loaded.info.threshold

    @property
    def count_threshold(self) -> float | None:
        """Its counting threshold (chosen on out-of-fold counts); None for models saved before it."""
        return self.loaded.info.count_threshold

    @property
    def standardise(self) -> bool:
        """Its input: crops standardised by their field's levels (ctcid.intensity), or raw counts."""
        return self.loaded.info.standardise

    def predict(self, context, model_input, params=None):  # noqa: ANN001
        from ctcid.model.predict import score_crops

        crops = as_crops(model_input, len(self.loaded.info.channels))
        scores = score_crops(self.loaded, crops).astype(np.float64)
        return pd.DataFrame({"ctc_probability": scores, "ctc": scores >= self.threshold})


def as_crops(values: Any, channels: int) -> np.ndarray:
    """``N x C x S x S`` float32 from an array or nested lists; a clear error for anything else."""
    try:
        crops = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise CtcidError("crops must be numbers shaped N x C x S x S") from None
    if crops.ndim != 4 or crops.shape[1] != channels or crops.shape[2] != crops.shape[3]:
        raise CtcidError(f"crops of shape {tuple(crops.shape)}: expected N x {channels} x S x S (square)")
    if not np.isfinite(crops).all():
        raise CtcidError("crops hold NaN or infinite values")
    return crops


def signature(channels: int, crop_size: int) -> ModelSignature:
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels, crop_size, crop_size))]),
        outputs=Schema([ColSpec("double", "ctc_probability"), ColSpec("boolean", "ctc")]),
    )


def pip_requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in _REQUIREMENTS]


def file_sha256(path: str | Path) -> str:
    """Content hash of a model file: the registry's key for 'this model is already registered'."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
