import numpy as np
import pandas as pd

from ctcid.metrics import binary_metrics, calibration, patient_counts
from ctcid.plots import (
    plot_bland_altman,
    plot_confusion,
    plot_patient_counts,
    plot_reliability,
    plot_roc,
    write_confusion_csv,
    write_roc_csv,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def scores(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.2).astype(int)
    return y, np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)


def is_png(path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_figures_are_written_as_png(tmp_path):
    y, s = scores()
    roc = plot_roc({"resnet18": (y, s), "rule": (y, (s > 0.5).astype(float))}, tmp_path / "plots" / "roc.png")
    confusion = plot_confusion(binary_metrics(y, s), tmp_path / "confusion.png", "resnet18 test")
    samples = np.repeat(["A", "B", "C"], 100)
    counts = patient_counts(samples, (s >= 0.5).astype(int), {"A": 30, "B": 0, "C": 250})
    patients = plot_patient_counts(counts, tmp_path / "patients.png")
    assert all(is_png(p) for p in (roc, confusion, patients))


def test_agreement_and_reliability_figures_are_written_as_png(tmp_path):
    y, s = scores()
    samples = np.repeat(["A", "B", "C", "D"], 75)
    counts = patient_counts(samples, (s >= 0.5).astype(int), {"A": 12, "B": 0, "C": 30, "D": 5})
    bland_altman = plot_bland_altman(counts, tmp_path / "plots" / "bland_altman.png", "resnet18 test")
    # a single patient has no limits of agreement: the figure still renders
    single = patient_counts(["A"], [1], {"A": 3})
    one = plot_bland_altman(single, tmp_path / "bland_altman_one.png", "one patient")
    curves = {"resnet18": calibration(y, s), "rule": calibration(y, (s > 0.5).astype(float))}
    reliability = plot_reliability(curves, tmp_path / "plots" / "reliability.png", "test cells")
    assert all(is_png(p) for p in (bland_altman, one, reliability))


def test_roc_csv_is_numeric_and_monotone(tmp_path):
    y, s = scores()
    table = pd.read_csv(write_roc_csv(y, s, tmp_path / "roc.csv"))
    assert list(table.columns) == ["fpr", "tpr", "threshold"]
    assert np.isfinite(table.to_numpy()).all()
    assert (table[["fpr", "tpr"]].iloc[[0, -1]].to_numpy() == [[0, 0], [1, 1]]).all()
    assert table["fpr"].is_monotonic_increasing and table["tpr"].is_monotonic_increasing


def test_confusion_csv_has_one_row_per_cell(tmp_path):
    y, s = scores()
    pred = (s >= 0.5).astype(int)
    table = pd.read_csv(write_confusion_csv(y, pred, tmp_path / "confusion.csv"))
    assert list(table.columns) == ["actual", "predicted"]
    assert len(table) == len(y)
    tp = ((table["actual"] == "CTC") & (table["predicted"] == "CTC")).sum()
    assert tp == binary_metrics(y, s).tp
