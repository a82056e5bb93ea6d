"""Ablation of the levers that teach a CNN the CTC criterion (issue 29), out of fold, one run.

Every lever is one change of ``train.*`` against the same baseline (params.yaml's train section,
with ``--set`` changes), on the same data (the pipeline's ``data/segment`` and ``data/split``),
the same seed and the same 5 folds. For each it prints and writes (``--out``, JSON):

* pooled out-of-fold AUC, sensitivity and specificity at the operating threshold (the highest
  reaching ``train.target_sensitivity``);
* the share of CTC-sized CD45-negative diploid cells (annotated ``diploid_cd45neg``, nuclear area
  at least the lower quartile of the CTCs') called CTC at that threshold;
* the "more CEP8 spots" and "CD45 ring" behaviour probes of the promotion gate, drawn from each
  fold's validation patients and scored by that fold's model: mean score shift and share moving
  the right way;
* per-patient count MAE of the training patients at the counting threshold chosen on these same
  out-of-fold predictions (optimistic by construction; the rule's on the same cells beside it);
* seconds per training epoch (mean over folds and epochs) and crops per epoch.

Usage::

    .venv/bin/python bench/bench_levers.py [--backbone resnet18] [--levers baseline,hard,...]
        [--set negatives=resample --set epochs=6] [--out reports/levers.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from ctcid.config.loader import load_params
from ctcid.config.train import TrainParams
from ctcid.contracts import open_crops, read_manifest
from ctcid.intensity import manifest_levels, standardise
from ctcid.metrics import binary_metrics, threshold_for_sensitivity
from ctcid.model.backbones import ModelSpec, model_input_size, spot_config
from ctcid.model.count_threshold import count_threshold
from ctcid.model.counterfactual import counterfactual_source
from ctcid.model.cv import fit_fold, fold_training_rows
from ctcid.model.dataset import CropBatches, load_labelled_crops, resize_crops
from ctcid.model.trainer import FitOptions, predict_scores
from ctcid.registry.behaviour import (
    check_cd45_ring_lowers_score,
    check_more_spots_raise_score,
    probes_from_crops,
)
from ctcid.split import read_split

# One change of train.* each against the baseline (params.yaml's train.* with --set changes; the
# CNN-alone rows of docs/results.md used --set negatives=downsample --set spot_features=false).
LEVERS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "hard": {"negatives": "hard"},
    "aux": {"aux_weight": 1.0},
    "counterfactuals": {"counterfactuals": 1.0},
    "gentle_shift": {"site_shift": {"spot_dimming": [0.95, 1.0], "blur_sigma": [0.0, 0.25]}},
    "native": {"input_size": "native"},
    "small_stem": {"input_size": "native", "stem": "small"},
    "all": {
        "negatives": "hard", "counterfactuals": 1.0, "aux_weight": 1.0, "input_size": "native",
        "site_shift": {"spot_dimming": [0.95, 1.0], "blur_sigma": [0.0, 0.25]},
    },
    # the fusion model (train.spot_features), with the paper's balanced draw and with hard negatives
    "spot_features": {"spot_features": True},
    "spot_hard": {"spot_features": True, "negatives": "hard"},
}
PROBES = 128


@dataclass
class LeverResult:
    lever: str
    auc: float
    sensitivity: float
    specificity: float
    lookalikes_called: float
    lookalikes: int
    spot_shift: float
    spot_share: float
    ring_shift: float
    ring_share: float
    patient_mae: float
    rule_patient_mae: float
    count_threshold: float
    seconds_per_epoch: float
    crops_per_epoch: float
    seconds: float


def merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in change.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) else value
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    return {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in items)}


def lookalike_mask(manifest: pd.DataFrame) -> np.ndarray:
    """CTC-sized CD45-negative diploid cells, by the annotations."""
    kind = manifest["true_cell_type"].astype(object).fillna("").to_numpy()
    area = manifest["area"].to_numpy()
    floor = np.percentile(area[kind == "ctc"], 25)
    return (kind == "diploid_cd45neg") & (area >= floor)


def epoch_size(data: Any, fold: Any, options: FitOptions, extend: Any) -> int:
    """Crops one training epoch of this fold steps through (after any counterfactuals)."""
    train = data.subset(fold_training_rows(fold, options.negatives))
    train = extend(train, 0) if extend is not None else train
    batches = CropBatches(
        train, options.batch_size, training=True, generator=torch.Generator().manual_seed(0),
        rebalance=options.negatives == "resample", hard=options.negatives == "hard",
    )
    return len(batches) * options.batch_size


def run_lever(
    name: str, config: TrainParams, params: Any, data_dir: Path, backbone: str, oof_dir: Path | None = None
) -> LeverResult:
    manifest = read_manifest(data_dir / "segment" / "manifest.parquet")
    split = read_split(data_dir / "split" / "split.json")
    crops = open_crops(data_dir / "segment" / "crops.npy")
    levels = manifest_levels(manifest, params.channels)
    threshold_cd45 = params.segment.cd45_threshold
    read = model_input_size(config.input_size, params.segment.crop_size, config.spot_features)
    data = load_labelled_crops(
        data_dir / "segment" / "crops.npy", manifest, split.train, split.label_source,
        read, levels if config.standardise else None, threshold_cd45,
    )
    spec = ModelSpec(
        backbone, config.init, read, config.weights_dir, stem=config.stem,
        spots=spot_config(params.channels, params.segment, config.spot_features, config.input_size),
    )
    options = FitOptions.from_params(config, params.seed, params.channels)
    extend = counterfactual_source(crops, manifest, levels if config.standardise else None, params, config)
    started = time.perf_counter()
    folds, spots, rings, epochs, sizes = [], [], [], [], []
    for number, fold in enumerate(split.folds):
        fitted, result = fit_fold(
            data, fold, number, len(split.folds), spec, options, extend=extend, show_progress=False
        )
        folds.append(result)
        epochs += [m.seconds for m in fitted.history]
        sizes.append(epoch_size(data, fold, options, extend))
        cells = manifest.iloc[fold.val_all].reset_index(drop=True)
        raw = np.asarray(crops[fold.val_all], dtype=np.float32)
        inputs = standardise(raw, levels.rows(fold.val_all)) if config.standardise else raw
        probes = probes_from_crops(
            inputs, cells.assign(crop_index=np.arange(len(cells))), params.channels, threshold_cd45,
            PROBES, params.seed + number,
        )

        def score(x: np.ndarray, model: Any = fitted.model) -> np.ndarray:
            return predict_scores(model, resize_crops(x, read))

        spots.append(check_more_spots_raise_score(score, probes["two_spots"], probes["more_spots"]).measured)
        ring = check_cd45_ring_lowers_score(score, probes["without_ring"], probes["with_ring"])
        rings.append(ring.measured)
    oof = pd.concat(
        [pd.DataFrame({"crop_index": f.crop_index, "y_true": f.y_true, "y_score": f.y_score}) for f in folds]
    ).reset_index(drop=True)
    if oof_dir is not None:
        oof_dir.mkdir(parents=True, exist_ok=True)
        oof.to_csv(oof_dir / f"{name}_oof.csv", index=False, float_format="%.6g")
    y_true, y_score = oof["y_true"].to_numpy(), oof["y_score"].to_numpy()
    operating = threshold_for_sensitivity(y_true, y_score, config.target_sensitivity)
    cells = binary_metrics(y_true, y_score, operating)
    rows = oof["crop_index"].to_numpy()
    looks = lookalike_mask(manifest)[rows]
    patients = manifest["sample"].astype(str).to_numpy()[rows]
    counting = count_threshold(oof, patients, operating=operating)
    rule = manifest["rule_label"].to_numpy()[rows]
    rule_counts = pd.Series(rule, index=patients).groupby(level=0).sum()
    true_counts = pd.Series(y_true, index=patients).groupby(level=0).sum()
    epochs_run = max(1, len(epochs))
    return LeverResult(
        lever=name,
        auc=cells.auc,
        sensitivity=cells.sensitivity,
        specificity=cells.specificity,
        lookalikes_called=float(np.mean(y_score[looks] >= operating)) if looks.any() else float("nan"),
        lookalikes=int(looks.sum()),
        spot_shift=float(np.mean([m.get("mean_shift", np.nan) for m in spots])),
        spot_share=float(np.mean([m.get("share", np.nan) for m in spots])),
        ring_shift=float(np.mean([m.get("mean_shift", np.nan) for m in rings])),
        ring_share=float(np.mean([m.get("share", np.nan) for m in rings])),
        patient_mae=counting.mae,
        rule_patient_mae=float(np.mean(np.abs(rule_counts - true_counts))),
        count_threshold=counting.threshold,
        seconds_per_epoch=float(np.sum(epochs) / epochs_run),
        crops_per_epoch=float(np.mean(sizes)),
        seconds=time.perf_counter() - started,
    )


def table(results: list[LeverResult]) -> str:
    head = (
        "| lever | AUC | sens | spec | look-alikes called | spot shift / share | ring shift / share "
        "| patient MAE (rule) | s/epoch | crops/epoch |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r.lever} | {r.auc:.4f} | {r.sensitivity:.3f} | {r.specificity:.4f} | "
        f"{r.lookalikes_called:.2f} (n={r.lookalikes}) | {r.spot_shift:+.2f} / {r.spot_share:.2f} | "
        f"{r.ring_shift:+.2f} / {r.ring_share:.2f} | {r.patient_mae:.2f} ({r.rule_patient_mae:.2f}) | "
        f"{r.seconds_per_epoch:.1f} | {r.crops_per_epoch:.0f} |"
        for r in results
    ]
    return "\n".join([head, *lines])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data", type=Path, help="folder with segment/ and split/")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--levers", default=",".join(LEVERS), help=f"comma-separated of {', '.join(LEVERS)}")
    parser.add_argument("--set", action="append", default=[], help="baseline change, key=value")
    parser.add_argument("--out", type=Path, default=Path("reports/levers.json"))
    parser.add_argument("--oof-dir", type=Path, default=None, help="write out-of-fold scores here")
    args = parser.parse_args()
    params = load_params(args.params)
    base = merged(params.train.model_dump(), parse_set(args.set))
    results: list[LeverResult] = []
    for name in args.levers.split(","):
        values = merged(base, LEVERS[name])
        if values.get("input_size") == "native":
            values["input_size"] = params.segment.crop_size
        config = TrainParams.model_validate(values)
        results.append(run_lever(name, config, params, args.data, args.backbone, args.oof_dir))
        print(table(results[-1:]).splitlines()[-1], flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"backbone": args.backbone, "baseline": args.set,
                                        "results": [asdict(r) for r in results]}, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
