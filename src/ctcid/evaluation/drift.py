"""Out-of-distribution warnings per field and per sample: is this field like the training fields?

A field from an unfamiliar scanner or site (other exposure, noise, staining, spot detection) is
counted by the model all the same, just wrongly. This module describes every field by a short
vector of features (:func:`feature_names`), learns where the training fields lie
(:func:`fit_reference`) and flags fields that lie far outside (:meth:`DriftReference.score`).

The features, per field:

* **image**, per channel ``c`` in the field's channel order: ``{c}_background`` (median pixel),
  ``{c}_noise`` (robust camera-noise sigma, see :func:`image_features`) and ``{c}_signal``
  (99.9th percentile minus the median: how bright the stained structures are);
* **cells**, from the field's per-nucleus table, as medians so that a patient rich in CTCs does not
  look like drift (the number of nuclei is not used: it varies by patient): ``nucleus_area``,
  ``dapi_mean``, ``cd45_score``, and ``cep8_spots``, the mean spot count of leukocytes
  (``cd45_score >= 1``; diploid, so about 2 while spot detection works; NaN without leukocytes);
* **model input**: ``input_{c}_mean`` and ``input_{c}_std``, the mean over the field's crops of each
  crop's channel mean and standard deviation, in raw counts. The model normalises every channel by
  a fixed affine map, and the distance below is invariant to per-feature affine maps, so raw crop
  statistics give the same score as normalised ones.

A field without nuclei has NaN cell and model-input features.

The score is the Mahalanobis distance (not squared) of a field's standardised features from the
reference fields, with the covariance estimated by Ledoit-Wolf shrinkage
(:class:`sklearn.covariance.LedoitWolf`), which stays well conditioned with few fields and
correlated features. Standardising (median, standard deviation) only conditions the shrinkage; the
distance itself is unchanged by any per-feature map ``a * x + b``. The flag threshold is a quantile
of *out-of-fold* distances of the reference fields (each scored by a reference fitted without it),
so that it is not as optimistic as in-sample distances would be.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, model_validator
from sklearn.covariance import LedoitWolf
from sklearn.model_selection import KFold

from ctcid.contracts import FIELD_SUFFIXES
from ctcid.errors import FieldReadError
from ctcid.raw.fields import read_field

DEFAULT_CHANNELS = ("DAPI", "CEP8", "CD45")
KEY_COLUMNS = ("sample", "field")
IMAGE_STATS = ("background", "noise", "signal")
CELL_FEATURES = ("nucleus_area", "dapi_mean", "cd45_score", "cep8_spots")
LEUKOCYTE_CD45 = 1.0  # cd45_score from which a cell counts as a leukocyte for ``cep8_spots``
SIGNAL_PERCENTILE = 99.9
MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation of a normal distribution
REASON_Z = 3.0  # a feature is named in drift_reason when its |standardised deviation| exceeds this
REASON_TOP = 3
# What a flagged field's largest deviation says: its imaging (scanner, stain, exposure: the image
# and model-input statistics) or its cells (a patient unlike the training patients, e.g. CTCs
# dominating the field), which a lab handles differently.
IMAGING, CELLS = "imaging", "cells"


def feature_names(channels: Sequence[str]) -> list[str]:
    """The field features in their fixed order: image statistics, cell statistics, model input."""
    image = [f"{c}_{stat}" for c in channels for stat in IMAGE_STATS]
    inputs = [f"input_{c}_{stat}" for c in channels for stat in ("mean", "std")]
    return [*image, *CELL_FEATURES, *inputs]


FIELD_FEATURES: tuple[str, ...] = tuple(feature_names(DEFAULT_CHANNELS))  # for the default channels


# --- features -------------------------------------------------------------------------------------


def image_features(image: np.ndarray, channels: Sequence[str]) -> dict[str, float]:
    """Background, noise and signal of every channel of a C x H x W field (every 2nd row/column).

    The noise is estimated from differences ``d`` of horizontally adjacent pixels:
    ``1.4826 * median(|d - median(d)|) / sqrt(2)``. Adjacent pixels share the background, its
    gradients and almost all of a cell's intensity, so ``d`` is mostly the difference of two noise
    values (variance ``2 sigma^2``, hence the ``sqrt(2)``); the few large differences at cell edges
    are outliers to the median absolute deviation, which makes the estimate robust to cells.
    """
    if image.ndim != 3 or image.shape[0] != len(channels):
        raise ValueError(f"expected a {len(channels)} x H x W field, got shape {image.shape}")
    out: dict[str, float] = {}
    for index, name in enumerate(channels):
        rows = image[index, ::2].astype(np.float32)  # every 2nd row, whole rows for the differences
        median, high = np.percentile(rows[:, ::2], [50.0, SIGNAL_PERCENTILE])
        diffs = np.diff(rows, axis=1).ravel()
        mad = np.median(np.abs(diffs - np.median(diffs))) if diffs.size else math.nan
        out[f"{name}_background"] = float(median)
        out[f"{name}_noise"] = float(MAD_TO_SIGMA * mad / math.sqrt(2.0))
        out[f"{name}_signal"] = float(high - median)
    return out


def cell_features(table: pd.DataFrame) -> dict[str, float]:
    """Medians of the per-nucleus table (NaN without nuclei) and the leukocytes' mean spot count."""
    if len(table) == 0:
        return dict.fromkeys(CELL_FEATURES, math.nan)
    cd45 = table["cd45_score"].to_numpy(dtype=np.float64, na_value=np.nan)
    spots = table["cep8_spots"].to_numpy(dtype=np.float64, na_value=np.nan)[cd45 >= LEUKOCYTE_CD45]
    return {
        "nucleus_area": float(table["area"].median()),
        "dapi_mean": float(table["dapi_mean"].median()),
        "cd45_score": float(np.nanmedian(cd45)) if np.isfinite(cd45).any() else math.nan,
        "cep8_spots": float(spots.mean()) if spots.size else math.nan,
    }


def input_features(crops: np.ndarray, channels: Sequence[str]) -> dict[str, float]:
    """Mean over the crops (N x C x S x S) of each crop's channel mean and std; NaN without crops."""
    if len(crops) == 0:
        return {f"input_{c}_{stat}": math.nan for c in channels for stat in ("mean", "std")}
    if crops.ndim != 4 or crops.shape[1] != len(channels):
        raise ValueError(f"expected N x {len(channels)} x S x S crops, got shape {crops.shape}")
    pixels = np.asarray(crops, dtype=np.float32).reshape(len(crops), len(channels), -1)
    means = pixels.mean(axis=2, dtype=np.float64).mean(axis=0)
    stds = pixels.std(axis=2, dtype=np.float64).mean(axis=0)
    out: dict[str, float] = {}
    for index, name in enumerate(channels):
        out[f"input_{name}_mean"] = float(means[index])
        out[f"input_{name}_std"] = float(stds[index])
    return out


def field_features(
    image: np.ndarray, table: pd.DataFrame, crops: np.ndarray, channels: Sequence[str]
) -> dict[str, float]:
    """All features of one field, in :func:`feature_names` order.

    ``table`` has one row per nucleus (columns ``area``, ``dapi_mean``, ``cd45_score``,
    ``cep8_spots``, as :func:`ctcid.segmentation.analysis.analyse_field` or the manifest give them)
    and ``crops`` the field's N x C x S x S crops.
    """
    found = image_features(image, channels) | cell_features(table) | input_features(crops, channels)
    return {name: found[name] for name in feature_names(channels)}


def field_path(raw_dir: Path, sample: str, field: str) -> Path:
    """``<raw>/<sample>/<field>.tif`` (or any suffix :func:`ctcid.raw.fields.iter_fields` accepts)."""
    sample_dir = Path(raw_dir) / sample
    for suffix in FIELD_SUFFIXES:
        if (sample_dir / f"{field}{suffix}").is_file():
            return sample_dir / f"{field}{suffix}"
    if sample_dir.is_dir():  # e.g. F000.TIF: iter_fields compares suffixes case-insensitively
        for path in sorted(sample_dir.iterdir()):
            if path.stem == field and path.suffix.lower() in FIELD_SUFFIXES:
                return path
    return sample_dir / f"{field}{FIELD_SUFFIXES[0]}"  # read_field reports it as not found


def field_feature_table(
    raw_dir: Path,
    manifest: pd.DataFrame,
    crops: np.ndarray,
    channels: Sequence[str],
    fields: pd.DataFrame | None = None,
    show_progress: bool = False,
) -> pd.DataFrame:
    """One row per field: ``sample``, ``field`` and the :func:`feature_names` features.

    Each field's image is read from ``raw_dir`` (:func:`field_path`); its cells are the manifest
    rows of that (sample, field) and its crops the rows ``crop_index`` of ``crops``. ``fields``
    (columns ``sample``, ``field``) chooses the fields, by default every field of the manifest; a
    chosen field without manifest rows gets image features and NaN for the rest.

    A field whose file cannot be read is left out of the table and listed in
    ``table.attrs["unreadable"]``: a list of ``{"sample", "field", "path", "reason"}`` dicts.
    """
    channels = list(channels)
    if fields is None:
        fields = manifest[list(KEY_COLUMNS)]
    keys = list(fields[list(KEY_COLUMNS)].astype(str).drop_duplicates().itertuples(index=False, name=None))
    groups = (
        manifest.groupby([manifest["sample"].astype(str), manifest["field"].astype(str)], sort=False).indices
        if len(manifest)
        else {}
    )
    empty_table = manifest.iloc[:0]
    rows: list[dict[str, object]] = []
    unreadable: list[dict[str, str]] = []
    from ctcid.parallel import progress_bar  # rich and cv2: not needed to score, e.g. when serving

    with progress_bar(disable=not show_progress) as progress:
        task = progress.add_task("drift features", total=len(keys))
        for sample, field in keys:
            path = field_path(raw_dir, sample, field)
            try:
                image = read_field(path, len(channels))
            except FieldReadError as error:
                unreadable.append(
                    {"sample": sample, "field": field, "path": str(path), "reason": error.reason}
                )
                progress.advance(task)
                continue
            positions = groups.get((sample, field))
            if positions is None:
                table, field_crops = empty_table, np.empty((0, len(channels), 1, 1), dtype=np.uint16)
            else:
                table = manifest.iloc[positions]
                field_crops = crops[np.sort(table["crop_index"].to_numpy(dtype=np.int64))]
            rows.append(
                {"sample": sample, "field": field} | field_features(image, table, field_crops, channels)
            )
            progress.advance(task)
    result = pd.DataFrame(rows, columns=[*KEY_COLUMNS, *feature_names(channels)])
    result.attrs["unreadable"] = unreadable
    return result


# --- the reference and the score ------------------------------------------------------------------


def _feature_columns(features: pd.DataFrame) -> list[str]:
    return [c for c in features.columns if c not in KEY_COLUMNS]


def _standardiser(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature median and standard deviation, the latter floored against division by ~0."""
    center = np.median(rows, axis=0)
    spread = rows.std(axis=0, ddof=1) if len(rows) > 1 else np.zeros(rows.shape[1])
    return center, np.maximum.reduce([spread, 1e-6 * np.abs(center), np.full_like(center, 1e-9)])


def _distances(z: np.ndarray, location: np.ndarray, precision: np.ndarray) -> np.ndarray:
    diff = z - location
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", diff, precision, diff), 0.0))


class DriftReference(BaseModel):
    """Where the reference (training) fields lie in feature space, and when a field is too far.

    JSON-serialisable (``model_dump(mode="json")`` / ``model_validate``), so that it can travel in
    a registered model's metadata to the serving side. ``center`` and ``scale`` standardise each
    feature (``z = (x - center) / scale``); ``location`` and ``precision`` are the Ledoit-Wolf mean
    and inverse covariance of the standardised reference fields; a field is flagged when its
    distance exceeds ``threshold``, the ``quantile`` of the reference's out-of-fold distances.
    """

    model_config = ConfigDict(frozen=True)

    features: list[str]
    center: list[float]
    scale: list[float]
    location: list[float]
    precision: list[list[float]]
    threshold: float
    quantile: float
    n_fields: int

    @model_validator(mode="after")
    def _shapes_agree(self) -> DriftReference:
        p = len(self.features)
        lengths = {len(self.center), len(self.scale), len(self.location), len(self.precision)}
        if lengths != {p} or any(len(row) != p for row in self.precision):
            raise ValueError(
                f"drift reference: center, scale, location and precision must all have {p} features"
            )
        return self

    def standardise(self, features: pd.DataFrame) -> np.ndarray:
        """``(x - center) / scale`` of the reference's features (NaN stays NaN)."""
        missing = [c for c in self.features if c not in features.columns]
        if missing:
            raise ValueError(f"features lack column(s) {missing} of the drift reference")
        values = features[self.features].to_numpy(dtype=np.float64, na_value=np.nan)
        return (values - np.asarray(self.center)) / np.asarray(self.scale)

    def score(self, features: pd.DataFrame) -> pd.DataFrame:
        """``drift_score``, ``drift_flag``, ``drift_reason`` and ``drift_kind`` of every row, index kept.

        ``drift_score`` is the Mahalanobis distance ``sqrt((z - location) P (z - location)^T)``;
        ``drift_flag`` is ``drift_score > threshold``; ``drift_reason`` (empty unless flagged)
        names up to three features whose standardised deviation ``z`` is largest beyond 3, e.g.
        ``"CEP8_noise z=+6.1, input_CD45_mean z=-4.2"``, and the missing ones. A missing (NaN)
        feature is imputed at the reference location, so it adds nothing to the distance. Join
        the result to a feature table to get its ``sample`` column for :func:`sample_drift`.
        ``drift_kind`` (empty unless flagged) is :data:`CELLS` when the largest deviation is a cell
        statistic, else :data:`IMAGING`.
        """
        z = self.standardise(features)
        missing = np.isnan(z)
        location = np.asarray(self.location)
        z_filled = np.where(missing, location, z)
        score = _distances(z_filled, location, np.asarray(self.precision))
        flag = score > self.threshold
        reasons = [self._reason(z[i], missing[i]) if flag[i] else "" for i in range(len(features))]
        kinds = [self._kind(z[i], missing[i]) if flag[i] else "" for i in range(len(features))]
        return pd.DataFrame(
            {"drift_score": score, "drift_flag": flag, "drift_reason": reasons, "drift_kind": kinds},
            index=features.index,
        )

    def _kind(self, z: np.ndarray, missing: np.ndarray) -> str:
        if missing.all():
            return IMAGING
        largest = self.features[int(np.argmax(np.where(missing, -1.0, np.abs(z))))]
        return CELLS if largest in CELL_FEATURES else IMAGING

    def _reason(self, z: np.ndarray, missing: np.ndarray) -> str:
        size = np.where(missing, -1.0, np.abs(z))
        order = np.argsort(-size, kind="stable")
        named = [i for i in order[:REASON_TOP] if size[i] > REASON_Z]
        parts = [", ".join(f"{self.features[i]} z={z[i]:+.1f}" for i in named)]
        if not named and not missing.all():
            top = order[0]
            parts = [
                f"no single feature beyond |z|={REASON_Z:g}; largest {self.features[top]} z={z[top]:+.1f}"
            ]
        if missing.any():
            parts.append("missing: " + ", ".join(f for f, m in zip(self.features, missing, strict=True) if m))
        return "; ".join(p for p in parts if p)


def _fit(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    center, scale = _standardiser(rows)
    estimator = LedoitWolf().fit((rows - center) / scale)
    return center, scale, estimator.location_, estimator.precision_


def fit_reference(
    features: pd.DataFrame, quantile: float = 0.99, folds: int = 5, seed: int = 0
) -> DriftReference:
    """The drift reference of ``features``, one row per reference (training) field.

    The features are every column but ``sample`` and ``field``. Rows with any NaN (e.g. a field
    without nuclei or without leukocytes) are left out of the fit. The threshold is the
    ``quantile`` of out-of-fold distances: ``KFold(folds, shuffle=True, random_state=seed)``, the
    whole reference (standardisation and Ledoit-Wolf) fitted on the other folds scores each
    held-out fold. Needs at least ``max(folds, 5)`` complete rows, else ValueError.

    A feature that is constant over the reference gets a tiny scale (``max(std, 1e-6 |center|,
    1e-9)``), so any change of it later counts as drift.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    columns = _feature_columns(features)
    if not columns:
        raise ValueError("no feature columns to fit a drift reference on")
    values = features[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    rows = values[np.isfinite(values).all(axis=1)]
    needed = max(folds, 5)
    if len(rows) < needed:
        raise ValueError(
            f"a drift reference needs at least {needed} complete fields (no NaN feature), got "
            f"{len(rows)} of {len(values)}"
        )
    out_of_fold = np.empty(len(rows))
    for train, held_out in KFold(n_splits=folds, shuffle=True, random_state=seed).split(rows):
        center, scale, location, precision = _fit(rows[train])
        out_of_fold[held_out] = _distances((rows[held_out] - center) / scale, location, precision)
    center, scale, location, precision = _fit(rows)
    return DriftReference(
        features=columns,
        center=center.tolist(),
        scale=scale.tolist(),
        location=location.tolist(),
        precision=precision.tolist(),
        threshold=float(np.quantile(out_of_fold, quantile)),
        quantile=float(quantile),
        n_fields=len(rows),
    )


# --- per sample and in reports --------------------------------------------------------------------


def sample_drift(scored: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per ``sample`` of a scored field table (``sample``, ``drift_score``, ``drift_flag``).

    Columns ``sample``, ``fields``, ``fields_flagged``, ``drift_score`` (the mean of its fields'
    scores) and ``drift_flag`` (that mean ``> threshold``, normally the reference's field
    threshold): a sample drifts when its fields are shifted on average, not when one field is odd.
    """
    missing = [c for c in ("sample", "drift_score", "drift_flag") if c not in scored.columns]
    if missing:
        raise ValueError(f"scored fields lack column(s) {missing}; join the features' sample column first")
    grouped = scored.groupby("sample", sort=True)
    table = pd.DataFrame(
        {
            "fields": grouped.size().astype(np.int64),
            "fields_flagged": grouped["drift_flag"].sum().astype(np.int64),
            "drift_score": grouped["drift_score"].mean().astype(np.float64),
        }
    )
    table["drift_flag"] = table["drift_score"] > threshold
    return table.rename_axis("sample").reset_index()


def drift_summary(scored: pd.DataFrame) -> dict[str, float]:
    """``fields``, ``fields_flagged`` (all, and by :data:`IMAGING` and :data:`CELLS`),
    ``share_flagged`` and ``median_score``; NaN without fields."""
    n = len(scored)
    flagged = int(scored["drift_flag"].sum()) if n else 0
    kinds = scored["drift_kind"] if "drift_kind" in scored else pd.Series(dtype=str)
    return {
        "fields": float(n),
        "fields_flagged": float(flagged),
        f"fields_flagged_{IMAGING}": float((kinds == IMAGING).sum()),
        f"fields_flagged_{CELLS}": float((kinds == CELLS).sum()),
        "share_flagged": flagged / n if n else math.nan,
        "median_score": float(scored["drift_score"].median()) if n else math.nan,
    }


def write_reference(path: Path, reference: DriftReference | None) -> Path:
    """Write ``reference``, or ``null`` when there is none: a DVC output all the same."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("null\n" if reference is None else reference.model_dump_json(indent=1) + "\n")
    return path


def read_reference(path: Path) -> DriftReference | None:
    """The reference evaluate wrote; None when it wrote none (too few readable training fields)."""
    text = Path(path).read_text().strip()
    return None if text == "null" else DriftReference.model_validate_json(text)
