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

from ctcid.contracts import read_manifest
from ctcid.errors import CtcidError
from ctcid.evaluation.baselines import GBM, GbmBaseline, fit_gbm_baseline
from ctcid.evaluation.drift import (
    DriftReference,
    field_feature_table,
    read_reference,
    sample_drift,
)
from ctcid.evaluation.endpoints import Truth
from ctcid.external.assess import CohortResult, RepeatCounts, assess
from ctcid.external.cohort import Cohort, load_cohort
from ctcid.external.report import write_reports
from ctcid.external.scoring import (
    CHAMPION_NAME,
    RULE,
    Images,
    Scorer,
    backbone_scorers,
    champion_scorer,
    gbm_scorer,
    rule_scorer,
    served_champion,
    true_counts,
)
from ctcid.external.settings import ExternalConfig
from ctcid.intensity import manifest_levels
from ctcid.parallel import progress_bar
from ctcid.paths import MANIFEST_FILE
from ctcid.raw.fields import iter_fields
from ctcid.serving.served import ServedModel
from ctcid.split import counting_threshold, read_split
from ctcid.tracking import run_stamp


def evaluate_external(
    params: ExternalConfig,
    models_dir: Path,
    reports_dir: Path,
    external_dir: Path,
    split_path: Path,
    reference_path: Path,
    manifest_path: Path = MANIFEST_FILE,
    show_progress: bool = True,
) -> list[CohortResult]:
    """Score every cohort of ``external.cohorts`` but the sealed ones; write the reports.

    A sealed cohort is left to ``ctcid audit`` (:mod:`ctcid.audit`): reporting it here would put
    its numbers in front of whoever tunes the defaults.
    """
    params = ExternalConfig.project(params)  # only its keys, whatever the caller holds
    if not params.external.cohorts:
        raise CtcidError("external.cohorts is empty: nothing to validate on (docs/external.md)")
    names = params.external.open_names()
    if not names:
        raise CtcidError(
            "every cohort of external.cohorts is sealed: 'ctcid audit' scores those; add a cohort "
            "without 'sealed: true' to validate on (docs/external.md)"
        )
    results = score_cohorts(
        params, names, models_dir, external_dir, split_path, reference_path, manifest_path, show_progress
    )
    write_reports(results, reports_dir, params, stamp=run_stamp())
    return results


def score_cohorts(
    params: ExternalConfig,
    names: list[str],
    models_dir: Path,
    external_dir: Path,
    split_path: Path,
    reference_path: Path,
    manifest_path: Path,
    show_progress: bool = True,
) -> list[CohortResult]:
    """Every scorer (champion, backbones, GBM, rule) on each of the prepared cohorts ``names``."""
    champion = served_champion(params)
    reference = _reference(champion, reference_path)
    split = read_split(split_path)
    count_threshold = counting_threshold(split)  # for backbones saved without their own
    try:
        training = read_manifest(manifest_path)
    except CtcidError as error:
        raise CtcidError(f"{error}; the GBM baseline trains on it (ctcid segment, dvc repro)") from None
    gbm = fit_gbm_baseline(training, split, params.seed, params.train.target_sensitivity)
    results = []
    with progress_bar(disable=not show_progress) as progress:
        task = progress.add_task("cohorts", total=len(names))
        for name in names:
            progress.update(task, description=f"cohort {name}")
            cohort = load_cohort(external_dir / name)
            result = score_cohort(params, cohort, models_dir, champion, count_threshold, reference, gbm)
            results.append(result)
            progress.advance(task)
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
    gbm: GbmBaseline | None = None,
) -> CohortResult:
    """Every scorer on one cohort: the champion (if any), each backbone, the GBM (if given), the rule."""
    manifest, crops = cohort.manifest, cohort.crops
    usable = _usable_fields(cohort)
    truth = _truth(cohort, usable)
    images = Images(manifest, crops, manifest_levels(manifest, params.channels))
    again = cohort.repeats
    repeats = None if again is None else Images(
        again.manifest, again.crops, manifest_levels(again.manifest, params.channels)
    )
    scorers = backbone_scorers(params, models_dir, images, count_threshold, repeats)
    if champion is not None:
        champion_scores = champion_scorer(params, champion, models_dir, images, scorers, repeats)
        scorers = {CHAMPION_NAME: champion_scores, **scorers}
    if gbm is not None:
        scorers[GBM] = gbm_scorer(gbm, images, repeats)
    scorers[RULE] = rule_scorer(manifest, None if repeats is None else repeats.manifest)
    counts = None if again is None else repeat_counts(cohort, scorers)
    n_boot, seed, rule = params.external.bootstrap, params.seed, scorers[RULE].scores
    assessments = {
        name: assess(scorer, truth, n_boot, seed, rule=rule, repeats=counts)
        for name, scorer in scorers.items()
    }
    keys = pd.DataFrame(sorted(usable), columns=["sample", "field"])
    features = field_feature_table(cohort.raw_dir, manifest, crops, params.channels, fields=keys)
    fields = features.join(reference.score(features))
    samples = sample_drift(fields, reference.threshold).merge(
        _sample_counts(truth, scorers), on="sample", how="left"
    )
    return CohortResult(cohort, truth, assessments, fields, samples, reference)


def repeat_counts(cohort: Cohort, scorers: dict[str, Scorer]) -> RepeatCounts:
    """Each re-imaged specimen's detections on its original image and on its repeats.

    A specimen with a field segment could not use, on any of its images, is left out: its images
    would not count the same cells.
    """
    again = cohort.repeats
    assert again is not None
    repeat_samples = again.manifest["sample"].astype(str).to_numpy()
    specimens = {image: again.specimen(image) for image in np.unique(repeat_samples)}
    kept_out = {again.specimen(Path(path).parent.name) for path in again.quarantined}
    kept_out |= {Path(path).parent.name for path in cohort.quarantined}
    specimens = {image: s for image, s in specimens.items() if s not in kept_out}
    originals = sorted(set(specimens.values()))
    specimens.update({s: s for s in originals})
    main_samples = cohort.manifest["sample"].astype(str).to_numpy()
    main_rows = np.isin(main_samples, originals)
    repeat_rows = np.isin(repeat_samples, list(specimens))
    scores = {}
    for name, scorer in scorers.items():
        if scorer.repeat_scores is not None:
            scores[name] = np.concatenate([scorer.scores[main_rows], scorer.repeat_scores[repeat_rows]])
    images = np.concatenate([main_samples[main_rows], repeat_samples[repeat_rows]])
    return RepeatCounts(images, specimens, scores)


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
