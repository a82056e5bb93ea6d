"""The markdown tables of the endpoints (ctcid.evaluation.tables), read from real report dicts: the
evaluate stage's (metrics.json: ``operating`` / ``ci95``) and the external and audit steps'
(``cells`` / ``cells_ci95``, a label, repeatability), both through JSON as the files hold them."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from ctcid.evaluation import evaluate as evaluation  # its TestSet is no test class for pytest
from ctcid.evaluation.endpoints import Truth
from ctcid.evaluation.report import json_safe
from ctcid.evaluation.tables import (
    cell_table,
    cutoff_table,
    endpoint_sections,
    fmt,
    fmt_p,
    patient_table,
    repeatability_table,
    review_table,
    with_ci,
)
from ctcid.external.assess import RepeatCounts, assess
from ctcid.external.scoring import Scorer

POINT_CI = re.compile(r"^-?\d+\.\d+ \[-?\d+\.\d+, -?\d+\.\d+\]$")


def detections(seed: int = 0, patients: int = 12):
    """Every detection of ``patients`` patients: labels, a noisy model's scores, the rule's calls."""
    rng = np.random.default_rng(seed)
    samples = np.repeat([f"P{i:02d}" for i in range(patients)], rng.integers(5, 25, patients))
    y = (rng.random(samples.size) < 0.25).astype(np.int64)
    scores = np.clip(0.55 * y + rng.normal(0.25, 0.18, samples.size), 0, 1)
    rule = np.where(rng.random(samples.size) < 0.85, y, 1 - y).astype(np.float64)
    return samples, y, scores, rule


def through_json(models: dict) -> dict:
    return json.loads(json.dumps(json_safe(models)))


@pytest.fixture(scope="module")
def evaluated() -> dict:
    """metrics.json's ``models``: a model and the rule scored by evaluate_scores on a small test set."""
    samples, y, scores, rule = detections()
    rows = np.flatnonzero(np.arange(samples.size) % 5 != 0)  # every fifth detection unlabelled
    counts = {s: int(y[samples == s].sum()) for s in np.unique(samples)}
    tests = evaluation.TestSet(rows, y[rows], np.arange(samples.size), samples, counts, "annotations", rule)
    return through_json(
        {
            "resnet18": evaluation.evaluate_scores("resnet18", scores, tests, 0.35, 0.5, 100, 0).report(),
            "rule": evaluation.evaluate_scores("rule", rule, tests, 0.5, 0.5, 100, 0).report(),
        }
    )


@pytest.fixture(scope="module")
def assessed() -> dict:
    """external.json's (and audit.json's) ``models``: the same scored by assess, with re-imaged specimens."""
    samples, y, scores, rule = detections(seed=1)
    labelled = np.arange(samples.size)
    counts = {s: int(y[samples == s].sum()) for s in np.unique(samples)}
    truth = Truth(labelled, y, samples, counts)
    # three specimens imaged twice: the second image's scores a little off the first's
    first = np.isin(samples, ["P00", "P01", "P02"])
    images = np.concatenate([samples[first], np.char.add(samples[first].astype(str), "-r1")])
    specimens = {image: image.split("-")[0] for image in np.unique(images)}
    again = np.clip(scores[first] + np.random.default_rng(2).normal(0, 0.1, first.sum()), 0, 1)
    repeats = RepeatCounts(
        images,
        specimens,
        {"gbm": np.concatenate([scores[first], again]), "rule": np.concatenate([rule[first], rule[first]])},
    )
    scorers = {
        "gbm": Scorer("gbm", "gradient boosting (features)", scores, 0.35, 0.5),
        "rule": Scorer("rule", "rule (CD45- and CEP8 >= 3)", rule, 0.5, 0.5),
    }
    return through_json(
        {n: assess(s, truth, 100, 0, rule=rule, repeats=repeats).report() for n, s in scorers.items()}
    )


def rows(lines: list[str]) -> dict[str, list[str]]:
    """A markdown table's body rows by their first cell."""
    body = [line for line in lines if line.startswith("| ") and not line.startswith("| model")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in body]
    return {c[0]: c[1:] for c in cells}


def test_fmt_prints_a_dash_for_what_is_missing() -> None:
    assert [fmt(None), fmt(math.nan), fmt(math.inf), fmt(0.12345), fmt(2, 0), fmt("x")] == [
        "-", "-", "-", "0.123", "2", "x",
    ]
    assert with_ci({}, "endpoints", "mae") == "-"
    assert with_ci({"endpoints": {"mae": 1.5}}, "endpoints", "mae", 2) == "1.50"  # no interval: the point
    none_interval = {"endpoints": {"mae": 1.5}, "endpoints_ci95": {"mae": {"low": None, "high": None}}}
    assert with_ci(none_interval, "endpoints", "mae", 2) == "1.50"
    both = {"endpoints": {"mae": None}, "endpoints_ci95": {"mae": {"low": 0.5, "high": None}}}
    assert with_ci(both, "endpoints", "mae", 2) == "- [0.50, -]"


def test_the_cell_table_prints_point_and_interval_and_no_auc_for_the_rule(evaluated: dict) -> None:
    lines = cell_table(evaluated)
    assert lines[0].startswith("| model | AUC | sensitivity | specificity | Brier |")
    assert lines[1] == "|" + "---|" * 6
    table = rows(lines)
    assert set(table) == {"resnet18", "rule"}
    model = evaluated["resnet18"]
    auc, low, high = model["operating"]["auc"], model["ci95"]["auc"]["low"], model["ci95"]["auc"]["high"]
    assert table["resnet18"][0] == f"{auc:.3f} [{low:.3f}, {high:.3f}]"
    assert all(POINT_CI.match(cell) for cell in table["resnet18"][:3])
    assert table["resnet18"][3] == f"{model['calibration']['brier']:.3f}"
    versus = model["versus_rule"]
    discordant = f"{versus['mcnemar_model_only']:.0f} / {versus['mcnemar_rule_only']:.0f}"
    assert table["resnet18"][4] == f"{discordant}, p {fmt_p(versus['mcnemar_p'])}"
    rule = table["rule"]
    assert rule[0] == "-"  # 0/1 calls have no AUC
    assert POINT_CI.match(rule[1]) and POINT_CI.match(rule[2])
    assert rule[3] == "-" and rule[4] == "-"  # no calibration, not paired with itself


def test_a_p_value_below_a_thousandth_is_not_printed_as_zero() -> None:
    assert fmt_p(0.0) == "< 0.001" and fmt_p(0.0004) == "< 0.001"
    assert fmt_p(0.04) == "0.040" and fmt_p(None) == "-"


def test_external_reports_are_read_by_their_labels_and_cell_keys(assessed: dict) -> None:
    table = rows(cell_table(assessed))
    assert set(table) == {"gradient boosting (features)", "rule (CD45- and CEP8 >= 3)"}
    gbm = assessed["gbm"]
    sensitivity = gbm["cells"]["sensitivity"]
    interval = gbm["cells_ci95"]["sensitivity"]
    assert table["gradient boosting (features)"][1] == (
        f"{sensitivity:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"
    )
    assert table["rule (CD45- and CEP8 >= 3)"][0] == "-"


def test_the_patient_table_pairs_each_model_with_the_rule(evaluated: dict) -> None:
    table = rows(patient_table(evaluated))
    model, versus = evaluated["resnet18"], evaluated["resnet18"]["versus_rule"]
    mae = model["endpoints"]["mae"]
    ci = model["endpoints_ci95"]["mae"]
    assert table["resnet18"][0] == f"{mae:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]"
    assert table["resnet18"][1] == (
        f"{versus['mae_difference']:.2f} [{versus['mae_difference_low']:.2f}, "
        f"{versus['mae_difference_high']:.2f}], p {versus['mae_difference_p']:.3f}"
    )
    assert table["rule"][1] == "-"
    assert POINT_CI.match(table["rule"][0])
    # a model without endpoints (no annotated counts) is left out, one whose endpoints are null prints '-'
    blank = {"mae": None, "ccc": None, "bias": None, "ba_low": None, "ba_high": None}
    lines = patient_table({**evaluated, "no_counts": {}, "blank": {"endpoints": blank}})
    table = rows(lines)
    assert "no_counts" not in table
    assert table["blank"][0] == "-" and table["blank"][3] == "- [-, -]"
    assert set(table["blank"]) == {"-", "- [-, -]"}


def test_a_cutoff_table_names_its_prevalence(evaluated: dict) -> None:
    for cutoff in (1, 3, 5):
        lines = cutoff_table(evaluated, cutoff)
        prevalence = evaluated["resnet18"]["endpoints"][f"prevalence_ge{cutoff}"]
        assert lines[0] == f"Call >= {cutoff} CTC per sample (prevalence {prevalence:.2f}):"
        assert lines[1] == ""
        table = rows(lines)
        assert set(table) == {"resnet18", "rule"} and len(table["rule"]) == 5
        values = evaluated["resnet18"]["endpoints"]
        assert table["resnet18"][0].startswith(fmt(values[f"sensitivity_ge{cutoff}"], 2))
    assert cutoff_table({"no_counts": {}}, 3)[0] == "Call >= 3 CTC per sample (prevalence -):"


def test_the_review_table_reads_the_review_burden(evaluated: dict) -> None:
    review = evaluated["resnet18"]["review"]
    table = rows(review_table(evaluated))
    assert table["resnet18"] == [
        f"{review['detections_median']:.0f}",
        f"{review['flagged_median']:.0f} [{review['flagged_q1']:.0f}, {review['flagged_q3']:.0f}]",
        f"{review['flagged_max']:.0f}",
        f"{review['flagged_share']:.3f}",
    ]
    assert rows(review_table({"none": {"review": {"patients": 0.0}}})) == {}


def test_repeatability_is_shown_only_when_a_model_has_it(evaluated: dict, assessed: dict) -> None:
    assert repeatability_table(evaluated) == []
    assert "Repeatability" not in "\n".join(endpoint_sections(evaluated))
    lines = repeatability_table(assessed)
    table = rows(lines)
    assert set(table) == {"gradient boosting (features)", "rule (CD45- and CEP8 >= 3)"}
    repeat = assessed["gbm"]["repeatability"]
    assert (repeat["n_specimens"], repeat["n_images"]) == (3, 6)
    assert table["gradient boosting (features)"][0] == (
        f"{fmt(repeat['sd'], 2)} [{fmt(repeat['sd_low'], 2)}, {fmt(repeat['sd_high'], 2)}]"
    )
    assert re.findall(r"\d+", table["gradient boosting (features)"][3]) == ["3", "6"]  # specimens, images
    assert "Repeatability" in "\n".join(endpoint_sections(assessed))


def test_the_sections_hold_every_table_once(evaluated: dict) -> None:
    page = endpoint_sections(evaluated)
    titles = [line for line in page if line.startswith("Call >= ")]
    assert [t.split(" CTC")[0] for t in titles] == ["Call >= 1", "Call >= 3", "Call >= 5"]
    assert page.count("Review burden:") == 1
    assert sum(line.startswith("| resnet18 |") for line in page) == 1 + 1 + 3 + 1
