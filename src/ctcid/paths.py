"""Default locations of stage inputs and outputs; dvc.yaml passes the same paths explicitly."""

from dataclasses import dataclass
from pathlib import Path

RAW_DIR = Path("data/raw")
SEGMENT_DIR = Path("data/segment")
CROPS_FILE = SEGMENT_DIR / "crops.npy"
MANIFEST_FILE = SEGMENT_DIR / "manifest.parquet"
SPLIT_FILE = Path("data/split/split.json")
MODELS_DIR = Path("models")
REPORTS_DIR = Path("reports")
QUARANTINE_FILE = REPORTS_DIR / "quarantine.csv"
# ingest keeps its own list: the segment stage rewrites QUARANTINE_FILE on every run
INGEST_QUARANTINE_FILE = REPORTS_DIR / "ingest_quarantine.csv"
# evaluate's drift reference (where the training fields lie), carried by the registered model
DRIFT_REFERENCE_FILE = "drift_reference.json"
EXTERNAL_DIR = Path("data/external")  # one prepared cohort per folder (ctcid external-cohort)
# written by 'ctcid retrain' outside DVC (a retrain is not a stage)
RETRAIN_SUMMARY_FILE = REPORTS_DIR / "retrain_summary.md"
RETRAIN_RECORD_FILE = REPORTS_DIR / "retrain.json"


@dataclass(frozen=True)
class StageInputs:
    """The segment and split outputs that training and evaluation read."""

    crops: Path = CROPS_FILE
    manifest: Path = MANIFEST_FILE
    split: Path = SPLIT_FILE


def cohort_inputs(external_dir: Path, name: str) -> StageInputs:
    """The crops and manifest of a prepared external cohort (``ctcid external-cohort``); no split."""
    segment = Path(external_dir) / name / "segment"
    return StageInputs(crops=segment / "crops.npy", manifest=segment / "manifest.parquet", split=Path())
