"""The data contracts between pipeline steps, each defined once (docs/architecture.md).

* raw data: ``<raw>/<sample>/<field>.tif`` plus an optional ``annotations.csv`` per sample;
* the manifest: one row per detected cell, :data:`MANIFEST_SCHEMA` in column order, with the
  sample's site and its field's intensity levels;
* the crops: ``N x C x S x S`` uint16, row ``i`` is the manifest row with ``crop_index == i``;
* labels: the split's label source names a manifest column (:data:`LABEL_COLUMNS`);
* backbones: the five networks of the paper (:data:`BACKBONES`).

Steps read and write these only through this module, and the data gate builds its expectations
from the same schema, so a change of contract is one edit here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd

from ctcid.errors import CtcidError

# --- raw data -------------------------------------------------------------------------------------

FIELD_SUFFIXES = (".tif", ".tiff")
ANNOTATIONS_FILE = "annotations.csv"
# Optional ``<raw>/sites.csv`` (columns sample, site): where each sample was imaged. Samples it does
# not list, and every sample of a folder without it, belong to DEFAULT_SITE.
SITES_FILE = "sites.csv"
DEFAULT_SITE = "site0"
# Columns of annotations.csv, as the simulator writes them and 'ctcid ingest' checks them.
ANNOTATION_COLUMNS = (
    "sample", "field", "cell_id", "x", "y", "x0", "y0", "x1", "y1",
    "cell_type", "label", "cep8_copies", "cd45_status", "cluster_id",
)
# The subset that segmentation's ground-truth matching and the evaluation's counts need.
MATCHED_ANNOTATION_COLUMNS = (
    "field", "cell_id", "x", "y", "cell_type", "label", "cep8_copies", "cd45_status",
)
CTC_LABEL, NON_CTC_LABEL = "CTC", "non-CTC"  # values of the annotations' ``label`` column
CELL_TYPES = ("leukocyte", "ctc", "diploid_cd45neg", "aneuploid_cd45pos", "debris")
CD45_STATES = ("positive", "dim", "negative")

# --- the manifest ---------------------------------------------------------------------------------

STRING = pd.StringDtype()
BOX = ("x0", "y0", "x1", "y1")
# Each field's intensity levels per stain (ctcid.intensity): background and scale in counts, the
# same for every cell of the field; the model sees (crop - background) / scale.
STAINS = ("DAPI", "CEP8", "CD45")
BACKGROUND_COLUMNS = tuple(f"background_{stain.lower()}" for stain in STAINS)
SCALE_COLUMNS = tuple(f"scale_{stain.lower()}" for stain in STAINS)
MANIFEST_SCHEMA: dict[str, object] = {
    "cell_uid": STRING, "sample": STRING, "site": STRING, "field": STRING, "cell_idx": np.int32,
    "crop_index": np.int64,
    "x": np.float32, "y": np.float32, "x0": np.int32, "y0": np.int32, "x1": np.int32, "y1": np.int32,
    "field_height": np.int32, "field_width": np.int32,
    "area": np.float32, "perimeter": np.float32, "circularity": np.float32, "solidity": np.float32,
    "dapi_mean": np.float32, "dapi_integrated": np.float32, "cd45_score": np.float32,
    "cep8_spots": np.int16, "rule_label": np.int8,
    **{column: np.float32 for column in BACKGROUND_COLUMNS + SCALE_COLUMNS},
    "matched": bool,
    "true_cell_id": STRING, "true_cell_type": STRING, "true_cd45": STRING,
    "true_cep8": pd.Int16Dtype(), "true_label": pd.Int8Dtype(),
}
# Ground truth is unknown for unmatched detections and for data without annotations.
NULLABLE_COLUMNS = frozenset({"true_cell_id", "true_cell_type", "true_cd45", "true_cep8", "true_label"})
# The hand-made per-cell features that the rule and the feature baseline use.
FEATURE_COLUMNS = (
    "area", "perimeter", "circularity", "solidity",
    "dapi_mean", "dapi_integrated", "cd45_score", "cep8_spots",
)

LabelSource = Literal["truth", "rule"]
LABEL_COLUMNS: dict[str, str] = {"truth": "true_label", "rule": "rule_label"}

# --- crops and models -----------------------------------------------------------------------------

CROP_DTYPE = np.dtype(np.uint16)
Backbone = Literal["vgg16", "vgg19", "resnet18", "resnet50", "alexnet"]
BACKBONES: tuple[str, ...] = get_args(Backbone)
# scratch: random weights; pretrained: ImageNet weights from a local file; registry: the weights of
# the registered champion (fine-tuning, docs/tuning.md)
Init = Literal["scratch", "pretrained", "registry"]
# How a fit uses the training negatives (docs/tuning.md): downsample: the paper's one-off balanced
# draw; class_weight: every negative, loss weighted to balance; resample: a fresh balanced draw of
# negatives every epoch.
Negatives = Literal["downsample", "class_weight", "resample", "hard"]
# train.stem: torchvision's first layers, or ones fit for small crops (ctcid.model.backbones)
Stem = Literal["standard", "small"]
STEMS: tuple[str, ...] = ("standard", "small")


def schema_type_name(dtype: object) -> str:
    """The scalar type name a data check compares: ``str``, ``bool``, ``int8`` (nullable too), ..."""
    if isinstance(dtype, pd.StringDtype):
        return "str"
    if isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return np.dtype(dtype.numpy_dtype).name
    return np.dtype(dtype).name


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in MANIFEST_SCHEMA.items()})


def read_manifest(path: str | Path) -> pd.DataFrame:
    """The manifest written by 'ctcid segment'; a missing or damaged file is a CtcidError."""
    path = Path(path)
    if not path.is_file():
        raise CtcidError(f"{path}: manifest not found; run 'ctcid segment' (or 'dvc repro') first")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise CtcidError(f"{path}: cannot read the manifest ({error}); re-run 'ctcid segment'") from None


def open_crops(path: str | Path, check_shape: bool = True) -> np.ndarray:
    """The crops array, memory-mapped; a missing, damaged or mis-shaped file is a CtcidError.

    The data gate opens it unchecked, so that a wrong shape becomes a reported expectation.
    """
    path = Path(path)
    try:
        crops = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise CtcidError(f"{path}: no crops file; run 'ctcid segment' (or 'dvc repro') first") from None
    except (OSError, ValueError) as error:
        raise CtcidError(f"{path}: not a readable .npy array ({error}); re-run 'ctcid segment'") from None
    if check_shape and (crops.ndim != 4 or crops.shape[2] != crops.shape[3]):
        raise CtcidError(f"{path}: crops must be N x C x S x S, got shape {crops.shape}")
    return crops


def cell_labels(manifest: pd.DataFrame, source: LabelSource = "truth") -> pd.Series:
    """The label column chosen by ``split.label_source`` as nullable Int8 (NA = unlabelled)."""
    column = LABEL_COLUMNS[source]
    if column not in manifest.columns:
        raise CtcidError(
            f"manifest has no '{column}' column needed by split.label_source={source!r}; "
            "re-run 'ctcid segment' or choose the other label source"
        )
    labels = manifest[column].astype("Int8")
    bad = labels.dropna()
    bad = bad[~bad.isin([0, 1])]
    if len(bad):
        raise CtcidError(f"manifest column '{column}' holds values other than 0/1: {sorted(set(bad))[:5]}")
    return labels


def read_annotations(path: Path, needed: tuple[str, ...] = MATCHED_ANNOTATION_COLUMNS) -> pd.DataFrame:
    """One sample's annotations.csv, checked for the ``needed`` columns."""
    try:
        table = pd.read_csv(path, dtype={"field": str, "cell_id": str, "cluster_id": str})
    except (OSError, ValueError) as error:
        raise CtcidError(f"{path}: cannot read annotations ({error})") from None
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise CtcidError(f"{path}: annotations lack column(s) {', '.join(missing)}; see docs/architecture.md")
    return table
