"""The rule is the floor: a challenger that counts worse per patient than the three-line rule, or
calls more CTC-free patients positive than it does, is no champion. And the spot check decides, at
its own raised bar."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ctcid.config.loader import parse_params
from ctcid.evaluation.evaluate import TestSet as Patients
from ctcid.evaluation.evaluate import evaluate_scores
from ctcid.registry.behaviour import SPOT_CHECK, check_all
from ctcid.registry.promote import Assessment, Decision, GateData, ModelInputs, PromoteConfig, assess, judge
from ctcid.registry.views import decision_table

MAE_LINE = "rule floor: count MAE - rule's <= 0.1"
BLANK_LINE = "rule floor: CTC-free called positive - rule's <= 0"
DETECTIONS = 20  # per patient
BLANK = (0, 4, 8)  # the CTC-free patients of the default test set


def patients(ctcs: list[int], rule_over: list[int]) -> Patients:
    """Patient k holds ``ctcs[k]`` CTCs among 20 labelled detections; the rule counts one more on
    every patient of ``rule_over`` (a non-CTC it calls positive) and is right elsewhere."""
    n = len(ctcs)
    samples = np.repeat([f"P{k:02d}" for k in range(n)], DETECTIONS)
    y = np.zeros(samples.size, dtype=np.int64)
    for k, count in enumerate(ctcs):
        y[k * DETECTIONS : k * DETECTIONS + count] = 1
    rule = y.astype(np.float64)
    rule[[DETECTIONS * k + DETECTIONS - 1 for k in rule_over]] = 1.0
    rows = np.arange(samples.size)
    return Patients(rows, y, rows, samples, {f"P{k:02d}": c for k, c in enumerate(ctcs)}, "annotations", rule)


@pytest.fixture(scope="module")
def tests_set() -> Patients:
    """12 patients, patient k with k % 4 CTCs (P00, P04, P08 are CTC-free); the rule over-counts
    P00, P03, P06, P09 by one: its MAE is 4/12, and it calls 1 of the 3 CTC-free patients positive."""
    return patients([k % 4 for k in range(12)], [0, 3, 6, 9])


def over_counting(tests: Patients, over: list[int]) -> np.ndarray:
    """Perfect scores, plus one non-CTC called CTC in every patient of ``over`` (one too many there)."""
    scores = tests.y_true.astype(np.float64)
    scores[[DETECTIONS * k + DETECTIONS // 2 for k in over]] = 1.0
    return scores


def assessment(version: str, scores: np.ndarray, tests: Patients) -> Assessment:
    return Assessment(version, evaluate_scores(f"v{version}", scores, tests, 0.5, 0.5, 200, 0), {}, {})


def config(**registry) -> PromoteConfig:
    params = parse_params(
        {
            "train": {"bootstrap": 50},
            "registry": {"behaviour_checks": False, "min_site_specificity": None, **registry},
        }
    )
    return PromoteConfig.project(params)


def lines(criteria) -> dict[str, object]:
    return {c.name: c for c in criteria}


def judged(scores: np.ndarray, tests: Patients, **registry) -> dict[str, object]:
    """The gate's lines for a challenger with these scores and no champion."""
    return lines(judge(config(**registry), assessment("2", scores, tests), None))


def test_the_defaults_turn_the_rule_floor_and_the_spot_check_on() -> None:
    policy = parse_params({}).registry
    assert policy.max_mae_over_rule == 0.1 and policy.max_blank_positive_over_rule == 0.0
    assert policy.spot_check_decides is True
    assert (policy.spot_min_shift, policy.spot_min_share) == (0.2, 0.9)
    assert (policy.behaviour_min_shift, policy.behaviour_min_share) == (0.05, 0.75)
    with pytest.raises(ValueError, match="max_mae_over_rule"):
        parse_params({"registry": {"max_mae_over_rule": -0.1}})


def test_a_challenger_the_rule_beats_per_patient_is_refused_with_what_to_do(tests_set) -> None:
    # one too many on every patient: MAE 1, the rule's 1/3
    worse = assessment("2", over_counting(tests_set, list(range(12))), tests_set)
    criteria = judge(config(), worse, None)
    floor = lines(criteria)[MAE_LINE]
    assert floor.passed is False
    assert floor.challenger.startswith("1.00 vs rule's 0.33: +0.67 [")
    assert ", p " in floor.challenger and "--force --reason" in floor.challenger
    # and every CTC-free patient positive, where the rule calls one of three
    blank = lines(criteria)[BLANK_LINE]
    assert blank.passed is False and blank.challenger.startswith("1.00 vs rule's 0.33 of 3 CTC-free")
    # a failed line blocks promotion: it is named in the refusal
    decision = Decision("refused", "m", "2", None, None, criteria)
    assert {MAE_LINE, BLANK_LINE} <= set(decision.failed)
    assert MAE_LINE in decision_table(decision).caption  # type: ignore[operator]
    # the other per-patient lines are unchanged: shown, not deciding
    assert lines(criteria)["patients: count MAE - rule's"].passed is None


def test_the_margin_holds_and_a_challenger_that_ties_or_beats_the_rule_passes(tests_set) -> None:
    # over-counting 5 (none CTC-free) of 12 patients: MAE 5/12 against the rule's 4/12, +0.083 <= 0.1
    within = judged(over_counting(tests_set, [1, 2, 3, 5, 6]), tests_set)
    assert within[MAE_LINE].passed is True and within[BLANK_LINE].passed is True
    assert within[BLANK_LINE].challenger.startswith("0.00 vs rule's 0.33")
    # one more: +0.167 > 0.1
    beyond = judged(over_counting(tests_set, [1, 2, 3, 5, 6, 7]), tests_set)
    assert beyond[MAE_LINE].passed is False
    # the rule's own errors: a tie on both lines passes (margin 0 on the CTC-free patients)
    tie = judged(tests_set.rule.copy(), tests_set)
    assert tie[MAE_LINE].passed is True and tie[MAE_LINE].challenger.startswith("0.33 vs rule's 0.33: +0.00")
    assert tie[BLANK_LINE].passed is True
    perfect = judged(tests_set.y_true.astype(np.float64), tests_set)
    assert perfect[MAE_LINE].passed is True
    # a perfect count is no missing count: the guard-rail passes it (it once read 0.0 as "none")
    assert perfect["patient count MAE <= 3"].challenger == 0.0
    assert perfect["patient count MAE <= 3"].passed is True
    assert perfect[MAE_LINE].challenger.startswith("0.00 vs rule's 0.33: -0.33")


def test_calling_more_ctc_free_patients_positive_than_the_rule_is_refused(tests_set) -> None:
    # counts better than the rule overall (2 errors against 4), but on two of three CTC-free patients
    scores = over_counting(tests_set, [BLANK[0], BLANK[1]])
    both = lines(judge(config(), assessment("2", scores, tests_set), None))
    assert both[MAE_LINE].passed is True
    assert both[BLANK_LINE].passed is False and both[BLANK_LINE].challenger.startswith("0.67 vs rule's 0.33")
    assert "calls more CTC-free patients positive than the rule" in both[BLANK_LINE].challenger
    # a margin of one patient in three lets it through; null turns the line off
    assert lines(judge(config(max_blank_positive_over_rule=0.34), assessment("2", scores, tests_set), None))[
        "rule floor: CTC-free called positive - rule's <= 0.34"
    ].passed is True
    off = judge(config(max_blank_positive_over_rule=None), assessment("2", scores, tests_set), None)
    assert not any(c.name.startswith("rule floor: CTC-free") for c in off)
    assert all(c.passed is not False for c in off)


def test_a_null_margin_turns_the_count_floor_off(tests_set) -> None:
    worse = assessment("2", over_counting(tests_set, [1, 2, 3, 5, 6, 7, 9, 10, 11]), tests_set)
    assert lines(judge(config(), worse, None))[MAE_LINE].passed is False
    off = judge(config(max_mae_over_rule=None), worse, None)
    assert not any(c.name.startswith("rule floor: count MAE") for c in off)
    assert all(c.passed is not False for c in off)


def test_without_ctc_free_patients_the_blank_line_is_undecided_not_failed() -> None:
    tests = patients([1, 2, 3, 1, 2, 3], [0])
    scores = over_counting(tests, [1])
    blank = lines(judge(config(), assessment("2", scores, tests), None))[BLANK_LINE]
    assert blank.passed is None and "no CTC-free test patient" in blank.challenger


def test_the_champion_column_shows_its_own_numbers_against_the_rule(tests_set) -> None:
    champion = assessment("1", over_counting(tests_set, list(range(12))), tests_set)
    challenger = assessment("2", tests_set.y_true.astype(np.float64), tests_set)
    shown = lines(judge(config(), challenger, champion))
    assert shown[MAE_LINE].champion.startswith("1.00 vs rule's 0.33: +0.67")
    assert shown[BLANK_LINE].champion == "1.00 vs rule's 0.33"
    assert shown[MAE_LINE].passed is True and shown[BLANK_LINE].passed is True


# --- the spot check decides, at its own raised bar -------------------------------------------------

PROBES = 16
SIZE = 4  # px of the synthetic crops; channels DAPI, CEP8, CD45


class _Served:
    threshold = 0.5
    standardise = False


class _MarkerModel:
    """Scores from channel means: DAPI says CTC (0.3 -> 0.7), CEP8 raises the score by ``spot_gain``
    on ``spot_share`` of the cells, CD45 lowers it by 0.4. Turns and flips leave means alone."""

    def __init__(self, spot_gain: float, spot_share: float = 1.0) -> None:
        self.spot_gain, self.spot_share = spot_gain, spot_share

    def unwrap_python_model(self) -> _Served:
        return _Served()

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        dapi, cep8, cd45 = (batch[:, c].reshape(len(batch), -1).mean(axis=1) for c in range(3))
        reached = np.arange(len(batch)) < round(self.spot_share * len(batch))  # the cells spots move
        score = 0.3 + 0.4 * dapi + self.spot_gain * cep8 * reached - 0.4 * cd45
        return {"ctc_probability": np.clip(score, 0.0, 1.0)}


class _Registry:
    def __init__(self, model: _MarkerModel) -> None:
        self.model = model

    def load(self, version: object) -> _MarkerModel:
        return self.model


def probes() -> dict[str, np.ndarray]:
    plain = np.zeros((PROBES, 3, SIZE, SIZE), dtype=np.float32)
    with_ring, more_spots = plain.copy(), plain.copy()
    with_ring[:, 2], more_spots[:, 1] = 1.0, 1.0
    return {
        "mixed": plain, "without_ring": plain, "with_ring": with_ring,
        "two_spots": plain, "more_spots": more_spots,
    }


def spot_line(spot_gain: float, spot_share: float = 1.0, **registry) -> object:
    """The gate's spot-check line for a model, as promote() makes it: assess, then judge."""
    tests = patients([k % 4 for k in range(12)], [])
    crops = np.zeros((tests.detections.size, 3, SIZE, SIZE), dtype=np.float32)
    crops[:, 0] = tests.y_true[:, None, None]  # DAPI marks the CTCs: a perfect count
    data = GateData(tests, 0.5, {False: ModelInputs(crops, probes())}, {})
    params = config(behaviour_checks=True, **registry)
    version = SimpleNamespace(version="2", tags={})
    ours = assess(_Registry(_MarkerModel(spot_gain, spot_share)), version, params, data)  # type: ignore[arg-type]
    by_name = lines(judge(params, ours, None))
    assert by_name["behaviour: CD45 ring lowers the score"].passed is True  # the other check, unchanged
    assert by_name["behaviour: dihedral invariance"].passed is True
    return next(c for name, c in by_name.items() if name.startswith(f"behaviour: {SPOT_CHECK}"))


def test_the_spot_check_decides_at_its_raised_bar() -> None:
    # +0.1 on every probe: enough for behaviour_min_shift 0.05, not for spot_min_shift 0.2
    weak = spot_line(0.1)
    assert weak.name == f"behaviour: {SPOT_CHECK}" and weak.passed is False
    assert weak.challenger == "shift 0.10, share 1.00"
    strong = spot_line(0.3)
    assert strong.passed is True and strong.challenger == "shift 0.30, share 1.00"
    # a big shift on too few cells: 0.6 on 3 of 4 is 0.45 on average, but a share of 0.75 < 0.9
    assert spot_line(0.6, 0.75).passed is False
    # the thresholds are the keys: lowered, the weak one passes
    assert spot_line(0.1, spot_min_shift=0.05).passed is True
    # spot_check_decides: false shows the verdict in words and does not decide
    shown = spot_line(0.1, spot_check_decides=False)
    assert shown.name == f"behaviour: {SPOT_CHECK} (reported: fail)" and shown.passed is None


def test_check_all_takes_the_spot_limits_apart_from_the_others() -> None:
    model = _MarkerModel(0.1)

    def score(batch: np.ndarray) -> np.ndarray:
        return model.predict(batch)["ctc_probability"]

    shared = {o.name: o.passed for o in check_all(score, probes(), min_mean_shift=0.05, min_share=0.75)}
    assert shared[SPOT_CHECK] is True
    raised = {
        o.name: o.passed
        for o in check_all(
            score, probes(), min_mean_shift=0.05, min_share=0.75, spot_min_shift=0.2, spot_min_share=0.9
        )
    }
    assert raised[SPOT_CHECK] is False and raised["CD45 ring lowers the score"] is True
