"""Specificity of every trained backbone as one cohort is re-imaged at other exposures (docs/results.md).

    .venv/bin/python scripts/exposure_sweep.py RUN_DIR [--cohort same_site] [--out sweep.png]

RUN_DIR is a repository after ``dvc repro`` (``models/``, ``data/external/<cohort>/``). Every CTC
and ``--negatives`` non-CTC cells drawn at random (the field levels still come from all of a
field's drawn cells) are re-imaged as another exposure would give it: counts above the camera
offset times a factor (0.5-2.5x), then clipped to 16 bits; a model scores it the way it was
trained (standardised by the field levels that the re-imaged crops give, or as raw counts), at
its own operating threshold. A model that reads counts moves with the factor; a standardising one
should not. Prints a table and draws one line per backbone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ctcid.config.loader import load_params  # noqa: E402
from ctcid.contracts import BACKBONES, open_crops, read_manifest  # noqa: E402
from ctcid.intensity import Levels, estimate_levels  # noqa: E402
from ctcid.metrics import binary_metrics  # noqa: E402
from ctcid.model.predict import load_model, score_crops  # noqa: E402
from ctcid.paths import MODEL_FILE  # noqa: E402

FACTORS = (0.5, 0.75, 1.0, 1.5, 2.0, 2.5)


def reimaged(crops: np.ndarray, factor: float, offset: float) -> np.ndarray:
    return np.clip((crops.astype(np.float64) - offset) * factor + offset, 0, 65535).astype(np.uint16)


def field_levels_of(crops: np.ndarray, fields: np.ndarray) -> Levels:
    """Each crop's levels, estimated per field from that field's (re-imaged) crops."""
    background = np.empty((len(crops), crops.shape[1]), np.float32)
    scale = np.empty_like(background)
    for field in np.unique(fields):
        rows = np.flatnonzero(fields == field)
        background[rows], scale[rows] = estimate_levels(crops[rows])
    return Levels(background, scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--cohort", default="same_site")
    parser.add_argument("--out", type=Path, default=Path("exposure_sweep.png"))
    parser.add_argument("--negatives", type=int, default=2000, help="non-CTC cells drawn (all CTCs kept)")
    args = parser.parse_args()
    params = load_params(args.run / "params.yaml", {})
    segment = args.run / "data" / "external" / args.cohort / "segment"
    manifest = read_manifest(segment / "manifest.parquet")
    labels = manifest["true_label"]
    negatives = np.flatnonzero((labels == 0).fillna(False).to_numpy())
    negatives = np.random.default_rng(0).choice(negatives, min(args.negatives, negatives.size), replace=False)
    labelled = np.sort(np.concatenate([np.flatnonzero((labels == 1).fillna(False).to_numpy()), negatives]))
    y_true = manifest["true_label"].iloc[labelled].to_numpy(dtype=int)
    fields = (manifest["sample"].astype(str) + "/" + manifest["field"].astype(str)).to_numpy()[labelled]
    crops = np.asarray(open_crops(segment / "crops.npy")[labelled])
    table: dict[str, list[float]] = {}
    for backbone in BACKBONES:
        path = args.run / "models" / backbone / MODEL_FILE
        if not path.is_file():
            continue
        loaded = load_model(path)
        table[backbone] = []
        for factor in FACTORS:
            shown = reimaged(crops, factor, params.simulate.camera_offset)
            scores = score_crops(loaded, shown, levels=field_levels_of(shown, fields))
            table[backbone].append(binary_metrics(y_true, scores, loaded.info.threshold).specificity)
    print("| backbone | " + " | ".join(f"{f:g}x" for f in FACTORS) + " |")
    print("| --- |" + " --- |" * len(FACTORS))
    for backbone, values in table.items():
        print(f"| {backbone} | " + " | ".join(f"{100 * v:.1f}" for v in values) + " |")
    figure, axis = plt.subplots(figsize=(6, 4))
    for backbone, values in table.items():
        axis.plot(FACTORS, [100 * v for v in values], marker="o", label=backbone)
    axis.set_xlabel("exposure factor (1 = as imaged)")
    axis.set_ylabel("specificity at the operating threshold, %")
    axis.set_title(f"{args.cohort} re-imaged at other exposures: {args.run.name}")
    axis.legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=120)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
