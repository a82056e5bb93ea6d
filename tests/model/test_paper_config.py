"""configs/paper.yaml runs: it validates as an overlay on params.yaml, and its train recipe (224 px,
standard stems, the CNN alone) trains one backbone through the real train stage on a tiny cohort.

The smoke test overrides only what a CPU run must: 1 epoch, patience 1, a dozen patients, the CPU and
a temporary MLflow store. It checks that the recipe runs, not what it learns.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from typer.testing import CliRunner

from ctcid.cli import app
from ctcid.config.loader import merge_overlay, parse_params, read_raw
from ctcid.config.params import Params
from ctcid.model.predict import load_model
from ctcid.model.train import train_backbone
from ctcid.paths import StageInputs
from ctcid.split import make_split, write_split
from ctcid.tuning.space import baseline
from factory import draw_cells, draw_crops, make_manifest

ROOT = Path(__file__).resolve().parents[2]
PARAMS, PAPER = ROOT / "params.yaml", ROOT / "configs" / "paper.yaml"
BACKBONE = "alexnet"  # the cheapest backbone at 224 px on CPU
PATIENTS = 12  # test set of ~2 patients by sample (test_size 0.2), >= 1 CTC patient in each of 5 folds
CELLS = ["ctc", "ctc", "leukocyte", "leukocyte", "diploid_cd45neg", "aneuploid_cd45pos"]  # per patient


def paper_raw() -> dict[str, Any]:
    """params.yaml with configs/paper.yaml merged over it: what 'ctcid show-params --over' validates."""
    return merge_overlay(read_raw(PARAMS), read_raw(PAPER))


def test_paper_overlay_validates_with_the_paper_settings_and_params_yaml_cohorts() -> None:
    paper = parse_params(paper_raw(), f"{PARAMS} with {PAPER}")
    base = parse_params(read_raw(PARAMS), str(PARAMS))
    train = paper.train
    assert (train.input_size, train.epochs, train.patience, train.batch_size) == (224, 40, 8, 64)
    assert (train.stem, train.spot_features, train.init, train.negatives) == (
        "standard", False, "scratch", "downsample"
    )
    assert (paper.simulate.n_samples, paper.segment.crop_size) == (776, 48)
    # the external and audit stages need cohorts, the sealed hold-out among them: params.yaml's
    assert paper.external.cohorts and paper.external.cohorts == base.external.cohorts
    assert any(cohort.sealed for cohort in paper.external.cohorts.values())
    # trial 0 of each study is train.* as given: no searched key's value is left to the sampler
    assert baseline(train, paper.tune.space, paper.segment.crop_size).keys() == paper.tune.space.keys()
    # the command the header of configs/paper.yaml gives prints the same configuration
    shown = CliRunner().invoke(app, ["show-params", "-p", str(PARAMS), "--over", str(PAPER)])
    assert shown.exit_code == 0, shown.output
    assert parse_params(yaml.safe_load(shown.output)) == paper


def tiny_cohort(root: Path, params: Params) -> StageInputs:
    """Crops at the paper's crop size, their manifest and the paper's split of them (factory cells)."""
    rng = np.random.default_rng(11)
    kinds = CELLS * PATIENTS
    samples = np.repeat([f"S{i:04d}" for i in range(PATIENTS)], len(CELLS))
    cells = draw_cells(kinds, rng)
    np.save(root / "crops.npy", draw_crops(cells, params.segment.crop_size, rng))
    manifest = make_manifest(cells=cells, seed=11, sample=samples)
    manifest.to_parquet(root / "manifest.parquet", index=False)
    write_split(make_split(manifest, params.split, params.seed), root / "split.json")
    return StageInputs(root / "crops.npy", root / "manifest.parquet", root / "split.json")


def test_paper_recipe_cross_validates_and_fits_one_backbone_at_224_px(tmp_path: Path) -> None:
    smoke = {
        "simulate": {"n_samples": PATIENTS},
        "train": {"epochs": 1, "patience": 1, "device": "cpu"},
        "mlflow": {
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "artifact_location": str(tmp_path / "mlruns"),
        },
    }
    params = parse_params(merge_overlay(paper_raw(), smoke), "paper.yaml, CPU smoke test")
    inputs = tiny_cohort(tmp_path, params)

    outputs = train_backbone(
        params, BACKBONE, inputs, tmp_path / "models", tmp_path / "reports", show_progress=False
    )

    folds = outputs.cv.folds
    assert len(folds) == params.split.n_folds == 5
    for fold in folds:
        assert 0.0 <= fold.metrics.auc <= 1.0, fold.metrics
        assert np.isfinite(fold.y_score).all() and ((fold.y_score >= 0) & (fold.y_score <= 1)).all()
    assert math.isfinite(outputs.cv.threshold)
    saved = load_model(outputs.model_path)
    assert (saved.info.backbone, saved.info.input_size, saved.info.stem) == (BACKBONE, 224, "standard")
    assert saved.info.spots is None and saved.info.epochs == 1
