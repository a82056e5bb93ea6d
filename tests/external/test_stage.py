"""External cohorts end to end without a model: prepared for real (simulated and a lab's folder),
scored by the rule, checked for drift against reference fields, and reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctcid.config.loader import parse_params
from ctcid.config.params import Params
from ctcid.contracts import CTC_LABEL
from ctcid.errors import CtcidError
from ctcid.evaluation.drift import field_feature_table, fit_reference
from ctcid.external.cohort import load_cohort, prepare_cohort
from ctcid.external.report import write_reports
from ctcid.external.scoring import RULE
from ctcid.external.stage import evaluate_external, score_cohort
from ctcid.raw.simulate import simulate_dataset
from factory import written_pixels

SHIFT = {"exposure_range": [1.6, 2.0], "read_noise": 40.0, "background_counts": [400.0, 700.0]}


@pytest.fixture(scope="module")
def params(tmp_path_factory: pytest.TempPathFactory) -> Params:
    lab = tmp_path_factory.mktemp("lab")
    return parse_params(
        {
            "seed": 3,
            "simulate": {
                "n_samples": 4,
                "fields_per_sample": [1, 1],
                "field_size": 160,
                "ctc_burden_mean": 4.0,
                "ctc_burden_dispersion": 3.0,
                "background_cells_mean": 24.0,
                "workers": 1,
            },
            "segment": {"crop_size": 24, "workers": 1},
            "external": {
                "bootstrap": 50,
                "gallery": 4,
                "cohorts": {
                    "reference": {"seed": 11, "simulate": {"n_samples": 12}},
                    "same_site": {"seed": 12},
                    "second_site": {"seed": 13, "simulate": SHIFT},
                    "lab": {"folder": str(lab), "description": "a lab's folder"},
                },
            },
        }
    )


@pytest.fixture(scope="module")
def prepared(params: Params, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("external")
    lab = Path(str(params.external.cohorts["lab"].folder))
    simulate_dataset(
        params.for_cohort("same_site").model_copy(update={"seed": 14}), lab, 6, show_progress=False
    )
    (lab / "S0001" / "f000.tif").write_bytes(b"not a tiff")  # quarantined, its CTCs not in the truth
    for name in params.external.cohorts:
        prepare_cohort(params, name, root / name, show_progress=False)
    return root


@pytest.fixture(scope="module")
def results(params: Params, prepared: Path, tmp_path_factory: pytest.TempPathFactory):
    train = load_cohort(prepared / "reference")
    features = field_feature_table(train.raw_dir, train.manifest, train.crops, params.channels)
    reference = fit_reference(features, quantile=0.99, folds=4, seed=0)
    empty_models = tmp_path_factory.mktemp("models")
    return {
        name: score_cohort(params, load_cohort(prepared / name), empty_models, None, 0.5, reference)
        for name in ("same_site", "second_site", "lab")
    }


def test_a_simulated_cohort_is_written_with_its_own_seed_and_settings(prepared: Path) -> None:
    same, shifted = load_cohort(prepared / "same_site"), load_cohort(prepared / "second_site")
    assert json.loads((prepared / "second_site" / "cohort.json").read_text())["seed"] == 13
    assert same.info.source == "simulated" and len(same.manifest) == same.crops.shape[0] > 0
    # longer exposures and more autofluorescence: the shifted site's crops are brighter
    assert np.median(shifted.crops[:, 0]) > 1.3 * np.median(same.crops[:, 0])


def test_simulated_cohorts_name_their_patients_apart_and_keep_their_pixels(
    params: Params, prepared: Path, tmp_path: Path
) -> None:
    training = simulate_dataset(params, tmp_path / "training", workers=1, show_progress=False)
    names = {"training": {s.sample for s in training}}
    for name in ("reference", "same_site", "second_site"):
        cohort = load_cohort(prepared / name)
        folders = sorted(p.name for p in cohort.raw_dir.iterdir() if p.is_dir())
        expected = [f"{name}-S{k:04d}" for k in range(params.for_cohort(name).simulate.n_samples)]
        assert folders == expected
        assert set(cohort.manifest["sample"]) <= set(folders)
        names[name] = set(folders)
    # no patient name is shared by two cohorts, the training cohort included
    assert sum(len(n) for n in names.values()) == len(set().union(*names.values()))
    assert names["training"] == {f"S{k:04d}" for k in range(params.simulate.n_samples)}
    # only the names changed: sample k's pixels are those of its number without the prefix
    simulate_dataset(params.for_cohort("second_site"), tmp_path / "plain", workers=1, show_progress=False)
    plain = {f"second_site-{path}": pixels for path, pixels in written_pixels(tmp_path / "plain").items()}
    assert written_pixels(prepared / "second_site" / "raw") == plain
    # a lab's folder keeps its own names (here colliding with the training names; docs/external.md)
    lab = load_cohort(prepared / "lab")
    assert set(lab.manifest["sample"]) <= {f"S{k:04d}" for k in range(6)}


def test_the_rule_is_scored_against_the_annotated_counts_of_usable_fields(results) -> None:
    lab = results["lab"]
    assert set(lab.assessments) == {RULE}  # no trained model, no champion
    assert lab.cohort.info.source == "folder" and lab.cohort.info.fields_quarantined == 1
    annotations = pd.concat(
        pd.read_csv(path) for path in sorted(lab.cohort.raw_dir.glob("*/annotations.csv"))
    )
    usable = annotations[~((annotations["sample"] == "S0001") & (annotations["field"] == "f000"))]
    expected = usable[usable["label"] == CTC_LABEL].groupby("sample").size()
    table = lab.assessments[RULE].patients.table.set_index("sample")
    assert "S0001" not in table.index  # its only field is quarantined
    for sample, count in table["true_count"].items():
        assert count == expected.get(sample, 0)
    assert lab.samples["count_rule"].tolist() == table["predicted_count"].tolist()


def test_the_shifted_site_is_flagged_and_the_same_site_mostly_not(results) -> None:
    assert results["second_site"].fields["drift_flag"].all()
    assert results["second_site"].samples["drift_flag"].all()
    assert results["same_site"].fields["drift_flag"].mean() <= 0.25
    reasons = " ".join(results["second_site"].fields["drift_reason"])
    assert "_background" in reasons or "_noise" in reasons or "input_" in reasons


def test_reports_name_every_cohort_with_intervals(results, params: Params, tmp_path: Path) -> None:
    write_reports(list(results.values()), tmp_path, params)
    report = json.loads((tmp_path / "external.json").read_text())["cohorts"]
    assert set(report) == {"same_site", "second_site", "lab"}
    rule = report["same_site"]["models"][RULE]
    low, high = rule["patients_ci95"]["mae"]["low"], rule["patients_ci95"]["mae"]["high"]
    assert low <= rule["patients"]["mae"] <= high
    assert "calibration" not in rule  # 0/1 calls have no calibration to speak of
    assert report["second_site"]["drift"]["fields"]["share_flagged"] == 1.0
    summary = (tmp_path / "external.md").read_text()
    assert "## second_site" in summary and "Drift:" in summary
    for name in ("drift.png", "patients.csv", "drift_fields.csv", "bland_altman_rule.png", "predictions.csv"):
        assert (tmp_path / "external" / "lab" / name).stat().st_size > 0, name


def test_an_unknown_cohort_or_a_missing_folder_is_a_clear_error(params: Params, tmp_path: Path) -> None:
    with pytest.raises(CtcidError, match="no external cohort 'site_x'"):
        prepare_cohort(params, "site_x", tmp_path)
    moved = params.model_copy(
        update={
            "external": params.external.model_copy(
                update={
                    "cohorts": {
                        "lab": params.external.cohorts["lab"].model_copy(
                            update={"folder": str(tmp_path / "gone")}
                        )
                    }
                }
            )
        }
    )
    with pytest.raises(CtcidError, match="folder .*gone not found"):
        prepare_cohort(moved, "lab", tmp_path / "out")
    with pytest.raises(CtcidError, match="no prepared external cohort"):
        load_cohort(tmp_path / "nothing")


def test_the_stage_needs_cohorts_and_a_drift_reference(params: Params, tmp_path: Path) -> None:
    tracked = params.model_copy(
        update={"mlflow": params.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"})}
    )
    none = tracked.model_copy(update={"external": tracked.external.model_copy(update={"cohorts": {}})})
    args = (tmp_path / "models", tmp_path, tmp_path / "external", tmp_path / "split.json")
    with pytest.raises(CtcidError, match="external.cohorts is empty"):
        evaluate_external(none, *args, tmp_path / "drift_reference.json")
    # evaluate wrote 'null': too few readable training fields to describe
    (tmp_path / "drift_reference.json").write_text("null\n")
    with pytest.raises(CtcidError, match="too few readable training fields"):
        evaluate_external(tracked, *args, tmp_path / "drift_reference.json")
    with pytest.raises(CtcidError, match="no drift reference .*run 'ctcid evaluate'"):
        evaluate_external(tracked, *args, tmp_path / "missing.json")
