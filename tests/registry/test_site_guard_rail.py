"""The worst-site guard-rail: a model that wins at home and collapses at another site is refused.

The model is built to be fragile on purpose: it learned to call a cell CTC from the absence of CD45
alone (its positives are leukocyte-sized, 2-spot cells without CD45). On the home test set, where
every CTC is CD45-negative and every leukocyte CD45-positive, that cue is enough to pass the gate.
At a site whose CD45 stain failed, every leukocyte loses its ring and it calls them all CTCs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import BACKBONE, Candidate, MlflowServer, server_params

from ctcid.config.external import ExternalCohort
from ctcid.config.params import Params
from ctcid.evaluation.evaluate import evaluate_models
from ctcid.intensity import field_levels
from ctcid.model.backbones import ModelSpec
from ctcid.model.dataset import LabelledCrops, Normalisation, read_crops
from ctcid.model.predict import ModelInfo, save_model
from ctcid.model.train import write_run_file
from ctcid.model.trainer import FitOptions, fit, seed_everything
from ctcid.paths import MODEL_FILE, RUN_FILE, StageInputs, cohort_inputs
from ctcid.registry.promote import promote
from ctcid.registry.register import register_selected
from ctcid.tracking import open_experiment
from factory import BACKGROUND, CROP_SIZE, INPUT_SIZE, NOISE, draw_crop, draw_crops, make_manifest

SITE = "failed_cd45"


def _cd45_only_model(root, params: Params, inputs: StageInputs, raw_dir) -> Candidate:
    """AlexNet taught that 'no CD45 ring' means CTC, whatever the nucleus and its spots."""
    rng = np.random.default_rng(5)
    crops = np.stack(
        [draw_crop(CROP_SIZE, cell_type="leukocyte", cd45=i % 2 == 0, rng=rng) for i in range(96)]
    )
    labels = torch.tensor([i % 2 for i in range(96)])
    images = read_crops(crops, np.arange(len(crops)), INPUT_SIZE, field_levels(crops))
    data = LabelledCrops(images, labels, np.arange(len(crops)))
    seed_everything(0)
    normalisation = Normalisation.fit(images)
    options = FitOptions(4, 4, 16, 1e-3, 1e-4, False, 0.0, 0)
    spec = ModelSpec(BACKBONE, input_size=INPUT_SIZE)
    model = fit(spec.build(normalisation), data, None, options, show_progress=False).model
    info = ModelInfo(
        BACKBONE, "scratch", INPUT_SIZE, tuple(params.channels), normalisation, 0.5, 0.97, 4, 0,
        {"auc": 1.0}, standardise=True,
    )
    models = root / "models"
    save_model(models / BACKBONE / MODEL_FILE, model, info)
    client, experiment_id = open_experiment(params.mlflow)
    run_id = client.create_run(experiment_id, run_name="cd45-only").info.run_id
    client.set_terminated(run_id, "FINISHED")
    write_run_file(models / BACKBONE / RUN_FILE, run_id, experiment_id, params.mlflow)
    evaluate_models(params, inputs, models, root / "reports", raw_dir)
    return Candidate(models, root / "reports")


def _failed_stain_site(external, channels: list[str]) -> None:
    """Leukocytes and CTCs imaged where the CD45 stain failed: only background in that channel."""
    rng = np.random.default_rng(9)
    kinds = ["leukocyte"] * 40 + ["ctc"] * 8
    crops = draw_crops(kinds, CROP_SIZE, rng)
    cd45 = channels.index("CD45")
    crops[:, cd45] = np.clip(rng.normal(BACKGROUND, NOISE, crops[:, cd45].shape), 0, None).astype(np.uint16)
    files = cohort_inputs(external, SITE)
    files.crops.parent.mkdir(parents=True)
    np.save(files.crops, crops)
    make_manifest(true_cell_type=kinds, seed=9).to_parquet(files.manifest, index=False)


@pytest.fixture
def site_params(mlflow_server: MlflowServer, model_name: str) -> Params:
    params = server_params(mlflow_server.uri, model_name, min_site_specificity=0.9)
    cohorts = {
        SITE: ExternalCohort(seed=99),
        "never_prepared": ExternalCohort(seed=98),
        "held_out": ExternalCohort(seed=97, guard=False),  # reported by ctcid external, never gated
    }
    return params.model_copy(update={"external": params.external.model_copy(update={"cohorts": cohorts})})


def test_a_model_that_collapses_at_another_site_is_refused_and_the_rail_can_be_turned_off(
    tmp_path, site_params: Params, stage_inputs: StageInputs, raw_dir, mlflow_server: MlflowServer
) -> None:
    torch.set_num_threads(1)
    candidate = _cd45_only_model(tmp_path / "fragile", site_params, stage_inputs, raw_dir)
    external = tmp_path / "external"
    _failed_stain_site(external, site_params.channels)
    register_selected(site_params, stage_inputs, candidate.models, candidate.reports)

    decision = promote(site_params, stage_inputs, raw_dir, external_dir=external)

    by_name = {c.name: c for c in decision.criteria}
    assert decision.action == "refused", decision.criteria
    home = by_name["specificity >= 0.5"]
    assert home.passed and home.challenger >= 0.9  # at home, the CD45 cue is all it takes
    collapsed = by_name[f"specificity at {SITE} >= 0.9"]
    assert collapsed.passed is False and collapsed.challenger < 0.5
    missing = by_name["specificity at never_prepared >= 0.9"]
    assert missing.passed is False and "ctcid external-cohort --cohort never_prepared" in missing.challenger
    assert set(decision.failed) == {f"specificity at {SITE} >= 0.9", "specificity at never_prepared >= 0.9"}
    assert not any("held_out" in name for name in by_name)

    lenient = site_params.model_copy(
        update={"registry": site_params.registry.model_copy(update={"min_site_specificity": None})}
    )
    again = promote(lenient, stage_inputs, raw_dir, external_dir=external)
    assert again.action == "promoted" and not any(c.name.startswith("specificity at") for c in again.criteria)
