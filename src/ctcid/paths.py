"""Default locations of stage inputs and outputs; dvc.yaml passes the same paths explicitly.

Every artefact's file name is spelt here once: the ``*_DIR`` and path-valued ``*_FILE`` constants are
default locations, the string constants are names inside a folder chosen at run time (the models
folder, the reports folder, an external cohort's folder).
"""

from dataclasses import dataclass
from pathlib import Path

# the segment stage's outputs (data/segment, and each external cohort's segment/)
CROPS_NAME = "crops.npy"
MANIFEST_NAME = "manifest.parquet"
QUARANTINE_NAME = "quarantine.csv"  # in the reports folder: fields segment could not use
SEGMENTATION_FILE = "segmentation.json"  # in the reports folder: segment's metrics
VALIDATION_FILE = "validation.json"  # in the reports folder: validate's metrics
# models/<backbone>/: the saved model and where its MLflow training run is
MODEL_FILE = "model.pt"
RUN_FILE = "run.json"
# per-backbone reports: <reports>/train/ and <reports>/tune/ hold <backbone>.json and <backbone>_oof.csv
TRAIN_REPORTS = "train"
TUNE_REPORTS = "tune"
TUNE_FIGURES = "figures"  # <reports>/tune/figures/<backbone>/
# in the reports folder: evaluate, register, promote, package and external
METRICS_FILE = "metrics.json"
TEST_PREDICTIONS_FILE = "test_predictions.csv"
REGISTRATION_FILE = "registration.json"
CARD_FILE = "model_card.md"  # also the file name inside the registered version
PROMOTION_FILE = "promotion.json"
PACKAGE_FILE = "package.json"
EXTERNAL_FILE = "external.json"
EXTERNAL_SUMMARY_FILE = "external.md"
AUDIT_FILE = "audit.json"  # the sealed cohorts, scored only by 'ctcid audit'
AUDIT_SUMMARY_FILE = "audit.md"
PREDICTIVE_VALUES_FILE = "predictive_values.csv"  # PPV and NPV per cut-off across prevalence, each scorer
# per patient: the true count, each scorer's count and its candidates flagged for review
PATIENT_COUNTS_FILE = "patient_counts.csv"
# inside one prepared external cohort, data/external/<name>/ (ctcid external-cohort)
COHORT_RAW = "raw"  # simulated cohorts only
COHORT_SEGMENT = "segment"
COHORT_REPORTS = "reports"
# a cohort's re-imaged specimens (external.cohorts.<name>.repeatability): raw/, segment/ and reports/
# inside, laid out as the cohort's own
COHORT_REPEATS = "repeats"

RAW_DIR = Path("data/raw")
# how simulated raw data was made (ctcid.raw.provenance), beside its sample folders
SIMULATION_FILE = "simulation.json"
SEGMENT_DIR = Path("data/segment")
CROPS_FILE = SEGMENT_DIR / CROPS_NAME
MANIFEST_FILE = SEGMENT_DIR / MANIFEST_NAME
SPLIT_DIR = Path("data/split")
SPLIT_NAME = "split.json"
SPLIT_FILE = SPLIT_DIR / SPLIT_NAME
MODELS_DIR = Path("models")
REPORTS_DIR = Path("reports")
QUARANTINE_FILE = REPORTS_DIR / QUARANTINE_NAME
# ingest keeps its own list: the segment stage rewrites QUARANTINE_FILE on every run
INGEST_QUARANTINE_FILE = REPORTS_DIR / "ingest_quarantine.csv"
# evaluate's drift reference (where the training fields lie), carried by the registered model
DRIFT_REFERENCE_FILE = "drift_reference.json"
EXTERNAL_DIR = Path("data/external")  # one prepared cohort per folder (ctcid external-cohort)
# written by 'ctcid retrain' outside DVC (a retrain is not a stage)
RETRAIN_SUMMARY_FILE = REPORTS_DIR / "retrain_summary.md"
RETRAIN_RECORD_FILE = REPORTS_DIR / "retrain.json"
# DVC's own files, from the repository root: the raw data's entry and the stages' record
RAW_DVC_FILE = Path("data/raw.dvc")
DVC_LOCK_FILE = Path("dvc.lock")


@dataclass(frozen=True)
class StageInputs:
    """The segment and split outputs that training and evaluation read."""

    crops: Path = CROPS_FILE
    manifest: Path = MANIFEST_FILE
    split: Path = SPLIT_FILE


def cohort_inputs(external_dir: Path, name: str) -> StageInputs:
    """The crops and manifest of a prepared external cohort (``ctcid external-cohort``); no split."""
    segment = Path(external_dir) / name / COHORT_SEGMENT
    return StageInputs(crops=segment / CROPS_NAME, manifest=segment / MANIFEST_NAME, split=Path())


def backbone_report(folder: Path, backbone: str) -> Path:
    """A backbone's train or tune report, ``<folder>/<backbone>.json`` (TRAIN_REPORTS, TUNE_REPORTS)."""
    return Path(folder) / f"{backbone}.json"


def backbone_oof(folder: Path, backbone: str) -> Path:
    """The out-of-fold predictions beside it, ``<folder>/<backbone>_oof.csv``."""
    return Path(folder) / f"{backbone}_oof.csv"
