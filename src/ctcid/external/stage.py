"""The ``external`` stage: every prepared cohort scored by every model and the rule, never trained on.

Per cohort (``data/external/<name>``, made by ``ctcid external-cohort``): cell metrics with
intervals, per-patient agreement (MAE, Lin's CCC, Bland-Altman, calls at >= 1 and >= 5 CTCs),
calibration, the counting threshold under other prevalences, drift of every field and sample
against the training fields, and a review gallery. Writes ``reports/external.json`` (DVC metrics),
``reports/external.md`` and ``reports/external/<name>/`` (tables and figures).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ctcid.errors import CtcidError
from ctcid.evaluation.drift import (
    DriftReference,
    field_feature_table,
    read_reference,
    sample_drift,
)
from ctcid.evaluation.evaluate import counting_threshold
from ctcid.external.assess import CohortResult, Truth, assess
from ctcid.external.cohort import Cohort, load_cohort
from ctcid.external.report import write_reports
from ctcid.external.scoring import (
    CHAMPION_NAME,
    RULE,
    Scorer,
    backbone_scorers,
    champion_scorer,
    rule_scorer,
    served_champion,
    true_counts,
)
from ctcid.external.settings import ExternalConfig
from ctcid.intensity import manifest_levels
from ctcid.parallel import progress_bar
from ctcid.raw.fields import iter_fields
from ctcid.serving.served import ServedModel
from ctcid.split import read_split


def evaluate_external(
    params: ExternalConfig,
    models_dir: Path,
    reports_dir: Path,
    external_dir: Path,
    split_path: Path,
    reference_path: Path,
    show_progress: bool = True,
) -> list[CohortResult]:
    """Score every cohort of ``external.cohorts``; write the reports (see the module docstring)."""
    params = ExternalConfig.project(params)  # only its keys, whatever the caller holds
    if not params.external.cohorts:
        raise CtcidError("external.cohorts is empty: nothing to validate on (docs/external.md)")
    champion = served_champion(params)
    reference = _reference(champion, reference_path)
    count_threshold = counting_threshold(read_split(split_path))
    results = []
    with progress_bar(disable=not show_progress) as progress:
        task = progress.add_task("external cohorts", total=len(params.external.cohorts))
        for name in params.external.cohorts:
            progress.update(task, description=f"external cohort {name}")
            cohort = load_cohort(external_dir / name)
            results.append(score_cohort(params, cohort, models_dir, champion, count_threshold, reference))
            progress.advance(task)
    write_reports(results, reports_dir, params)
    return results


def _reference(champion: ServedModel | None, path: Path) -> DriftReference:
    """The champion's own training reference when it carries one, else today's training data's."""
    if champion is not None and champion.drift is not None:
        return champion.drift
    try:
        reference = read_reference(path)
    except (OSError, ValueError) as error:
        raise CtcidError(f"{path}: no drift reference ({error}); run 'ctcid evaluate' (dvc repro)") from None
    if reference is None:
        raise CtcidError(
            f"{path}: evaluate found too few readable training fields to describe them; "
            "external validation needs the raw training fields (data/raw)"
        )
    return reference


def score_cohort(
    params: ExternalConfig,
    cohort: Cohort,
    models_dir: Path,
    champion: ServedModel | None,
    count_threshold: float,
    reference: DriftReference,
) -> CohortResult:
    manifest, crops = cohort.manifest, cohort.crops
    usable = _usable_fields(cohort)
    truth = _truth(cohort, usable)
    levels = manifest_levels(manifest, params.channels)
    scorers = backbone_scorers(params, models_dir, crops, levels, count_threshold)
    if champion is not None:
        champion_scores = champion_scorer(params, champion, models_dir, crops, levels, scorers)
        scorers = {CHAMPION_NAME: champion_scores, **scorers}
    scorers[RULE] = rule_scorer(manifest)
    n_boot, seed = params.external.bootstrap, params.seed
    assessments = {name: assess(scorer, truth, n_boot, seed) for name, scorer in scorers.items()}
    keys = pd.DataFrame(sorted(usable), columns=["sample", "field"])
    features = field_feature_table(cohort.raw_dir, manifest, crops, params.channels, fields=keys)
    fields = features.join(reference.score(features))
    samples = sample_drift(fields, reference.threshold).merge(
        _sample_counts(truth, scorers), on="sample", how="left"
    )
    return CohortResult(cohort, truth, assessments, fields, samples, reference)


def _usable_fields(cohort: Cohort) -> set[tuple[str, str]]:
    """Every raw field that segment did not quarantine."""
    return {
        (ref.sample, ref.field)
        for ref in iter_fields(cohort.raw_dir)
        if str(ref.path) not in cohort.quarantined
    }


def _truth(cohort: Cohort, usable: set[tuple[str, str]]) -> Truth:
    manifest = cohort.manifest
    labels = manifest["true_label"]
    labelled = np.flatnonzero(labels.notna().to_numpy())
    samples = sorted({sample for sample, _ in usable})
    return Truth(
        labelled=labelled,
        y_true=labels.iloc[labelled].to_numpy(dtype=np.int64),
        samples=manifest["sample"].astype(str).to_numpy(),
        counts=true_counts(cohort.raw_dir, samples, usable),
    )


def _sample_counts(truth: Truth, scorers: dict[str, Scorer]) -> pd.DataFrame:
    """Per sample: the annotated count and each scorer's count at its counting threshold."""
    names = sorted(truth.counts) if truth.counts is not None else sorted(set(truth.samples))
    table = pd.DataFrame({"sample": names})
    if truth.counts is not None:
        table["true_count"] = [truth.counts[n] for n in names]
    for name, scorer in scorers.items():
        counted = pd.Series(scorer.scores >= scorer.counting, index=truth.samples).groupby(level=0).sum()
        table[f"count_{name}"] = [int(counted.get(n, 0)) for n in names]
    return table
