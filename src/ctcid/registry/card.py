"""The model card of a registered version (``reports/model_card.md``, logged with the version).

Written from :class:`~ctcid.registry.metadata.VersionFacts` only, so every number in it is one the
pipeline measured; the version number is not in it because the card is written before the
registry assigns one (the Models page shows both side by side).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ctcid.evaluation.tables import cutoff_table, patient_table, review_table
from ctcid.paths import REPORTS_DIR, SEGMENTATION_FILE
from ctcid.registry.metadata import CELL_METRICS, VersionFacts

GALLERY = "disagreements.png"  # beside the card: under reports/, and in the run's model_card/


def render(facts: VersionFacts, gallery: Path | None) -> str:
    info, test, cohort = facts.info, facts.test, facts.cohort
    chosen = "prior-corrected" if info.count_threshold is None else "fewest out-of-fold count errors"
    commit = facts.lineage.get("git_commit", "unknown (not a git checkout)")
    lines = [
        f"# Model card: ctcid {facts.backbone} CTC classifier",
        "",
        "## Intended use",
        "",
        "Research use only: finding and counting circulating tumour cells (CTCs) in imFISH images of",
        "blood (DAPI, CEP8, CD45), to study the method and compare models. **Not for diagnosis** or any",
        "clinical decision: it has not been validated on patient material by a regulated process.",
        "",
        "## Model",
        "",
        f"- backbone `{facts.backbone}`, initialisation `{info.init}`, input {info.input_size} px "
        f"(crops of {facts.crop_size} px resized), channels {', '.join(info.channels)}",
        f"- operating threshold {info.threshold:.4g}, chosen on out-of-fold predictions for "
        f"sensitivity {info.target_sensitivity:.2f}; counting threshold "
        f"{_num(facts.counting_threshold)} ({chosen}, for per-patient counts)",
        f"- final fit {info.epochs} epochs, seed {info.seed}; training run `{facts.run_id}`",
        f"- model file sha256 `{facts.model_sha256}`",
        "",
        "## Training data and provenance",
        "",
        f"- {cohort.source} data: {cohort.samples} patients, {cohort.detections} detected cells, "
        f"{cohort.labelled} labelled, {cohort.ctc} CTC ({100 * cohort.ctc_share:.1f} %)",
        f"- DVC hashes: raw `{facts.lineage.get('dvc.raw_md5', '-')}`, crops + manifest "
        f"`{facts.lineage.get('dvc.md5:data/segment', '-')}`, "
        f"split `{facts.lineage.get('dvc.md5:data/split', '-')}`",
        f"- params sha256 `{facts.params_sha256}`",
        "",
        "## Test metrics against the rule",
        "",
        f"Held-out test set: {test.get('cells')} labelled cells ({test.get('ctc')} CTC) from "
        f"{test.get('samples')} patients never seen in training. The CNN at its operating threshold,",
        "the rule (CD45-negative and 3 or more CEP8 spots) as segmentation measures it (its 0/1 calls",
        "have no AUC); 95 % intervals, resampling whole patients, in brackets.",
        "",
        f"| metric | {facts.backbone} | rule |",
        "|---|---|---|",
    ]
    for name in CELL_METRICS:
        lines.append(f"| {name} | {_with_ci(facts.metrics, name)} | {_with_ci(facts.rule, name)} |")
    cv = ", ".join(f"{k} {v:.3f}" for k, v in sorted(info.cv.items()) if isinstance(v, float))
    lines += [
        "",
        "Cross-validation over the training patients (fold means at threshold 0.5; objective.* on "
        "the out-of-fold predictions of every training cell, pooled, or the worst fold for "
        f"worst_fold_specificity): {cv or 'not recorded'}.",
        "",
        "## Per-patient endpoints",
        "",
        "CTCs counted per test patient over every detection, against the true count",
        f"(from {test.get('count_source', 'annotations')}); 95 % intervals resample patients. A lab calls",
        "a patient positive at a cut-off (>= 1, 3 or 5 CTCs per sample): sensitivity,",
        "specificity, PPV, NPV and Cohen's kappa of that call; limit of blank (CLSI EP17: the 95th",
        "percentile of counts in CTC-free patients); Passing-Bablok and Bland-Altman (CLSI EP09); the",
        "count error paired with the rule's on the same patients (docs/evaluation.md#endpoints).",
        "",
    ]
    models = {facts.backbone: facts.metrics, "rule": facts.rule}
    lines += patient_table(models)
    for cutoff in (1, 3, 5):
        lines += ["", *cutoff_table(models, cutoff)]
    lines += ["", "Review burden (candidates a reviewer confirms per patient):", "", *review_table(models)]
    lines += [
        "",
        "## Known limitations and failure cases",
        "",
        "- Trained and tested on one site's images"
        + (" from the ctcid simulator, not on patient material." if cohort.source == "simulated" else "."),
        "  Staining, optics and cameras of another lab shift intensities; check before trusting counts.",
        "- Cells are classified one crop at a time; a CTC missed by segmentation is never scored, so",
        f"  per-patient counts inherit segmentation's recall ({REPORTS_DIR.as_posix()}/{SEGMENTATION_FILE}).",
        "- Hard negatives (CD45-negative diploid cells, dim CD45 leukocytes, CD45-positive aneuploid",
        "  cells) and touching clusters cause most errors.",
    ]
    if gallery is not None:
        lines.append(f"- The test cells where model and truth disagree: [{gallery.name}]({GALLERY}).")
    lines += [
        "",
        "## How to reproduce",
        "",
        f"```\ngit checkout {commit}\nmake run            # dvc repro of params.yaml\n```",
        "",
        "Same commit, data, params and lock give the same bytes on the same CPU type "
        "(docs/reproducibility.md).",
        "",
    ]
    return "\n".join(lines)


def write(facts: VersionFacts, path: Path, gallery: Path | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(facts, gallery))
    return path


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _with_ci(model: dict[str, Any], name: str) -> str:
    value = _num(model.get("operating", {}).get(name))
    interval = model.get("ci95", {}).get(name)
    if interval and interval.get("low") is not None:
        return f"{value} ({_num(interval['low'])}-{_num(interval['high'])})"
    return value
