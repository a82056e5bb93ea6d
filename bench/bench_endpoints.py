"""How long the per-patient endpoints and their bootstraps take, vectorised against a plain loop.

The external and audit stages assess every scorer (champion, five backbones, GBM, rule) on every
cohort: the patient bootstrap of every endpoint, the patient-cluster bootstrap of the cell
metrics, the paired comparison with the rule. This script times one such assessment on a cohort
of the default same_site size (120 patients, ~300 detections each, 70 % labelled, ``--boot``
resamples) and the same statistics computed one resample at a time in Python (what a
straightforward implementation does), and prints the ratio. It also prints an estimate for a
whole default run: assessments x the measured time. One run, this machine; nothing is asserted.

    .venv/bin/python bench/bench_endpoints.py
    .venv/bin/python bench/bench_endpoints.py --patients 200 --boot 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ctcid.clinical import cluster_bootstrap_intervals, patient_endpoints
from ctcid.evaluation.endpoints import Truth, assess_patients, compare_with_rule
from ctcid.metrics import binary_metrics


def cohort(patients: int, per_patient: int, seed: int) -> tuple[Truth, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    samples = np.repeat([f"p{i:03d}" for i in range(patients)], per_patient)
    burden = rng.negative_binomial(0.6, 0.6 / (0.6 + 4.0), patients)  # heavy-tailed CTCs per patient
    y = np.zeros(samples.size, dtype=np.int64)
    for i, count in enumerate(burden):
        y[i * per_patient : i * per_patient + min(int(count), per_patient)] = 1
    scores = np.clip(y * 0.8 + rng.normal(0.1, 0.15, y.size), 0.0, 1.0)
    labelled = np.flatnonzero(rng.random(y.size) < 0.7)
    counts = {f"p{i:03d}": int(c) for i, c in enumerate(burden)}
    rule = (scores + rng.normal(0.0, 0.1, y.size) > 0.5).astype(np.float64)
    return Truth(labelled, y[labelled], samples, counts), scores, rule


def vectorised(truth: Truth, scores: np.ndarray, rule: np.ndarray, n_boot: int) -> None:
    assess_patients(truth, scores, 0.3, 0.9, n_boot, 1)
    compare_with_rule(truth, scores, 0.3, 0.9, rule, n_boot, 1)
    cluster_bootstrap_intervals(truth.y_true, scores[truth.labelled], truth.cell_patients, 0.3, n_boot, 1)


def looped(truth: Truth, scores: np.ndarray, n_boot: int) -> None:
    """The same resamples one at a time: patient endpoints and cluster-resampled cell metrics."""
    assert truth.counts is not None
    names = sorted(truth.counts)
    true = np.array([truth.counts[n] for n in names], dtype=np.float64)
    counted = {n: 0 for n in names}
    for sample, score in zip(truth.samples, scores, strict=True):
        counted[sample] += int(score >= 0.9)
    predicted = np.array([counted[n] for n in names], dtype=np.float64)
    cells = truth.cell_patients
    by_patient = {n: np.flatnonzero(cells == n) for n in names}
    y_score = scores[truth.labelled]
    rng = np.random.default_rng(1)
    for _ in range(n_boot):
        draw = rng.integers(0, len(names), len(names))
        patient_endpoints(true[draw], predicted[draw])
        rows = np.concatenate([by_patient[names[i]] for i in draw])
        binary_metrics(truth.y_true[rows], y_score[rows], 0.3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--per-patient", type=int, default=300)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--loop-boot", type=int, default=100, help="resamples timed in the loop (scaled up)")
    parser.add_argument("--assessments", type=int, default=9 * 8, help="scorers x cohorts of a default run")
    args = parser.parse_args()
    truth, scores, rule = cohort(args.patients, args.per_patient, 0)
    start = time.perf_counter()
    vectorised(truth, scores, rule, args.boot)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    looped(truth, scores, args.loop_boot)
    slow = (time.perf_counter() - start) * args.boot / args.loop_boot
    print(
        f"cohort: {args.patients} patients, {truth.samples.size} detections, "
        f"{truth.labelled.size} labelled"
    )
    print(f"vectorised, {args.boot} resamples: {fast:.2f} s per assessment")
    print(f"one resample at a time (timed {args.loop_boot}, scaled to {args.boot}): {slow:.1f} s")
    print(f"ratio: {slow / fast:.0f}x")
    print(f"a default run ({args.assessments} assessments): {fast * args.assessments:.0f} s vectorised, "
          f"{slow * args.assessments / 60:.0f} min looped")


if __name__ == "__main__":
    main()
