"""Fine-tuning from the registry's champion (``train.init: registry``) against training from scratch.

The question: a lab with a few labelled patients of its own - does starting from the champion,
trained on the large cohort, beat training the same network from random weights on the same data?
Needs a registered champion (``make run``). In one run:

1. **champion**: ``mlflow.model_name@champion`` from the tracking URI of ``--params`` (or
   ``--tracking-uri``); its backbone and input size come from the version's tags, its model.pt is
   downloaded, and it is refused if it trained on any patient of the new cohorts (no leak);
2. **cohorts**: ``ctcid simulate`` with another simulator seed (``--sim-seed``) and sample numbers
   the champion never saw: a small "lab" cohort of ``--train-patients`` (S1000..) and a separate
   test cohort of ``--test-patients`` (S2000..), both segmented with ``ctcid segment``;
3. **training**, per repeat (seed) and for ``init: scratch`` and ``init: registry`` alike: the
   champion's backbone and input size with the fixed ``train.*`` hyper-parameters of ``--params``;
   cross-validation over ``--folds`` patient folds of the lab cohort (the operating threshold from
   the out-of-fold predictions, at ``train.target_sensitivity``), a final fit on its training rows
   (``train.negatives``), and scores for every labelled cell of the test cohort;
4. **report**: test AUC, sensitivity and specificity at each model's own threshold with 95 %
   bootstrap intervals (positives and negatives resampled separately, as ``ctcid evaluate``), the
   CV objective and CV AUC, seconds; and a *paired* bootstrap of registry - scratch (the same
   resampled cells for both models) with its 95 % interval and the share of resamples <= 0.

The test intervals resample cells, as ctcid's own test metrics do; cells of one patient are not
independent, so they are somewhat narrower than patient-level intervals would be.

It prints rich tables and writes JSON to ``--out``. Nothing is logged to MLflow; the registry is
only read. Usage (from the repository root)::

    .venv/bin/python bench/bench_finetune.py                        # after 'make run'
    .venv/bin/python bench/bench_finetune.py --repeats 3 --epochs 8 --work /tmp/ft --keep
    .venv/bin/python bench/bench_finetune.py --params other.yaml --tracking-uri http://host:5000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from rich.console import Console
from rich.table import Table
from scipy.stats import rankdata

from ctcid.config.base import ConfigError
from ctcid.config.loader import load_params
from ctcid.config.params import Params
from ctcid.config.train import TrainParams
from ctcid.contracts import cell_labels, open_crops, read_manifest
from ctcid.errors import CtcidError
from ctcid.metrics import binary_metrics, bootstrap_intervals
from ctcid.model.backbones import ModelSpec
from ctcid.model.cv import cross_validate
from ctcid.model.dataset import LabelledCrops, load_labelled_crops, read_crops
from ctcid.model.train import final_fit, training_rows
from ctcid.model.trainer import FitOptions, predict_scores, resolve_device
from ctcid.model.transfer import NoChampion, find_champion
from ctcid.offline import go_offline
from ctcid.raw.simulate import sample_id
from ctcid.registry_client import CHAMPION, Champion
from ctcid.split import Fold, Split, balanced_class_weights, class_counts, downsample_majority, make_folds

CTCID = str(Path(sys.executable).with_name("ctcid"))
INITS = ("scratch", "registry")
METRICS = ("auc", "sensitivity", "specificity")
LABEL_SOURCE = "truth"  # simulated cohorts carry annotations: the lab's labels
RUN_FIRST = "run 'make run' first (it trains, registers and promotes a champion)"

# piped output (a log file) gets room for the tables instead of rich's 80 columns
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120)


# --- the champion ---------------------------------------------------------------------------------


def resolve_tracking_uri(uri: str, base: Path) -> str:
    """A relative ``sqlite:///file`` against ``base`` (the repository root under dvc), checked to exist.

    MLflow would create an empty database at a wrong path and then report no registered model,
    which hides the real mistake; any other URI is used as given.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    path = Path(uri[len(prefix) :])
    if not path.is_absolute():
        path = (base / path).resolve()
    if not path.is_file():
        raise NoChampion(f"no MLflow database at {path}; {RUN_FIRST}, or pass --tracking-uri")
    return f"{prefix}{path}"


def champion_tags(params: Params) -> dict[str, str]:
    """The tags of the champion version, or NoChampion."""
    mlflow = params.mlflow
    client = MlflowClient(tracking_uri=mlflow.tracking_uri, registry_uri=mlflow.tracking_uri)
    try:
        version = client.get_model_version_by_alias(mlflow.model_name, CHAMPION)
    except MlflowException:
        raise NoChampion(
            f"{mlflow.model_name!r} has no {CHAMPION} at {mlflow.tracking_uri}; {RUN_FIRST}"
        ) from None
    return dict(version.tags)


def check_compatible(tags: dict[str, str], params: Params) -> None:
    """The new cohorts must look like the champion's: same channels and crop size."""
    channels = ",".join(params.channels)
    if tags.get("channels", channels) != channels:
        raise CtcidError(f"the champion reads channels {tags['channels']}, --params has {channels}")
    crop = str(params.segment.crop_size)
    if tags.get("crop_size", crop) != crop:
        raise CtcidError(
            f"the champion was trained on {tags['crop_size']} px crops, --params segments {crop} px "
            "crops: use the params file the champion was trained with"
        )


# --- the cohorts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cohort:
    name: str
    first: int
    count: int
    folder: Path

    @property
    def samples(self) -> list[str]:
        return [sample_id(n) for n in range(self.first, self.first + self.count)]

    @property
    def crops(self) -> Path:
        return self.folder / "segment" / "crops.npy"

    @property
    def manifest(self) -> Path:
        return self.folder / "segment" / "manifest.parquet"


def cohort_params(params: Params, sim_seed: int, workers: int | None, path: Path) -> Path:
    """``--params`` with the simulator seed replaced (and the worker counts, if asked), as a file."""
    update: dict[str, Any] = {"seed": sim_seed}
    if workers is not None:
        update["simulate"] = params.simulate.model_copy(update={"workers": workers})
        update["segment"] = params.segment.model_copy(update={"workers": workers})
    changed = params.model_copy(update=update)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(changed.model_dump(mode="json", by_alias=True), sort_keys=False))
    return path


def run_ctcid(what: str, *args: str) -> None:
    """One ``ctcid`` step as a subprocess, its summary lines echoed; exit 1 when it fails."""
    env = {**os.environ, "COLUMNS": "200"}  # rich lines unwrapped
    started = time.perf_counter()
    with console.status(f"{what} ..."):
        done = subprocess.run([CTCID, *args], capture_output=True, text=True, env=env, check=False)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip() and "━" not in line]
    if done.returncode != 0:
        console.print(f"[red]error:[/red] ctcid {args[0]} failed (exit {done.returncode}):")
        console.print("\n".join(lines[-30:]), highlight=False, markup=False)
        raise SystemExit(1)
    for line in lines[-3:]:
        console.print(f"  [dim]{line}[/dim]", highlight=False)
    console.print(f"  {what}: {time.perf_counter() - started:.1f} s", highlight=False)


def prepare_cohort(cohort: Cohort, params_file: Path) -> None:
    """Simulate and segment a cohort, unless the folder already holds this very cohort (``--work``)."""
    body = params_file.read_bytes()
    stamp = {"first": cohort.first, "count": cohort.count, "params": hashlib.sha256(body).hexdigest()}
    stamp_file = cohort.folder / "cohort.json"
    ready = stamp_file.is_file() and cohort.manifest.is_file() and cohort.crops.is_file()
    if ready and json.loads(stamp_file.read_text()) == stamp:
        console.print(f"{cohort.name} cohort: reusing {cohort.folder}", highlight=False)
        return
    shutil.rmtree(cohort.folder, ignore_errors=True)
    cohort.folder.mkdir(parents=True)
    raw, segment, reports = (str(cohort.folder / name) for name in ("raw", "segment", "reports"))
    last = sample_id(cohort.first + cohort.count - 1)
    console.print(
        f"{cohort.name} cohort: {cohort.count} patients {sample_id(cohort.first)}..{last}", highlight=False
    )
    run_ctcid(
        f"simulate {cohort.name}",
        "simulate",
        "--out",
        raw,
        "--first-sample",
        str(cohort.first),
        "--samples",
        str(cohort.count),
        "--params",
        str(params_file),
    )
    run_ctcid(
        f"segment {cohort.name}",
        "segment",
        "--raw",
        raw,
        "--out",
        segment,
        "--reports",
        reports,
        "--params",
        str(params_file),
    )
    stamp_file.write_text(json.dumps(stamp) + "\n")


def labelled(manifest: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(manifest rows with a label, their 0/1 labels)."""
    labels = cell_labels(manifest, LABEL_SOURCE)
    rows = np.flatnonzero(labels.notna().to_numpy())
    return rows.astype(np.int64), labels.iloc[rows].to_numpy(dtype=np.int64)


def describe(manifest: pd.DataFrame) -> dict[str, Any]:
    rows, labels = labelled(manifest)
    samples = manifest["sample"].astype(str).to_numpy()[rows]
    return {
        "patients": int(manifest["sample"].nunique()),
        "cells": len(manifest),
        "labelled": int(rows.size),
        **class_counts(labels),
        "ctc_patients": int(np.unique(samples[labels == 1]).size),
    }


def cohort_split(manifest: pd.DataFrame, n_folds: int, seed: int) -> Split:
    """Every labelled cell of the lab cohort as training data, in ``n_folds`` patient folds.

    Not ``make_split``: it always holds out a test share of the patients (at least 5 %, met to
    the nearest fold of 1/20), which here would drop a lab patient or fail on a small cohort, while
    the test set of this experiment is the separate test cohort. The folds and the balanced rows
    are built as ``make_split`` builds them, from the same public pieces.
    """
    rows, labels = labelled(manifest)
    groups = manifest["sample"].astype(str).to_numpy()[rows]
    balanced = downsample_majority(labels, seed)
    in_balanced = np.zeros(rows.size, dtype=bool)
    in_balanced[balanced] = True
    folds, fold_counts = [], []
    for number, (train, val) in enumerate(make_folds(labels, groups, n_folds, seed)):
        bal_train, bal_val = train[in_balanced[train]], val[in_balanced[val]]
        for part, positions in (("train", bal_train), ("validation", bal_val)):
            counts = class_counts(labels[positions])
            if not counts["ctc"] or not counts["non_ctc"]:
                raise CtcidError(
                    f"fold {number} balanced {part} holds {counts['ctc']} CTC and {counts['non_ctc']} "
                    "non-CTC cells; lower --folds or add --train-patients"
                )
        folds.append(Fold(rows[bal_train], rows[bal_val], rows[train], rows[val]))
        fold_counts.append({"train": class_counts(labels[train]), "val": class_counts(labels[val])})
    return Split(
        by="sample",
        label_source=LABEL_SOURCE,
        seed=seed,
        test_size=0.0,
        train=rows,
        test=np.empty(0, dtype=np.int64),
        train_balanced=rows[balanced],
        folds=tuple(folds),
        class_weights=balanced_class_weights(labels[balanced]),
        counts={
            "train": class_counts(labels),
            "train_balanced": class_counts(labels[balanced]),
            "folds": fold_counts,
        },
    )


# --- training and scoring -------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    init: str
    seed: int
    threshold: float
    cv_objective: float
    cv_auc: float
    final_epochs: int
    seconds: float
    scores: np.ndarray  # CTC probability of every labelled test cell


def train_and_score(
    init: str,
    backbone: str,
    start_from: Path,
    config: TrainParams,
    seed: int,
    data: LabelledCrops,
    split: Split,
    test_images: torch.Tensor,
    device: torch.device,
    show_progress: bool,
) -> Outcome:
    """Cross-validate, fit on all training rows, score the test cohort: what 'ctcid train' does."""
    spec = ModelSpec(
        backbone, init, config.input_size, config.weights_dir, str(start_from) if init == "registry" else None
    )
    options = FitOptions.from_params(config, seed)
    started = time.perf_counter()
    cv = cross_validate(
        data,
        split.folds,
        spec,
        options,
        config.target_sensitivity,
        device=device,
        show_progress=show_progress,
    )
    final = data.subset(training_rows(split, config.negatives))
    model, _ = final_fit(
        final, spec, replace(options, epochs=cv.final_epochs), device, show_progress=show_progress
    )
    seconds = time.perf_counter() - started
    scores = predict_scores(model, test_images, max(config.batch_size, 256), device)
    return Outcome(
        init,
        seed,
        cv.threshold,
        cv.objective("specificity_at_sensitivity"),
        cv.auc,
        cv.final_epochs,
        seconds,
        scores,
    )


# --- statistics -----------------------------------------------------------------------------------


def _metric_draws(pos: np.ndarray, neg: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """AUC (Mann-Whitney, ties half), sensitivity and specificity of each resample (row)."""
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    return {
        "auc": (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg),
        "sensitivity": (pos >= threshold).mean(axis=1),
        "specificity": (neg < threshold).mean(axis=1),
    }


def paired_bootstrap(
    y_true: np.ndarray, scratch: Outcome, registry: Outcome, n_boot: int, seed: int, level: float = 0.95
) -> dict[str, dict[str, Any]]:
    """registry - scratch of each metric, each model at its own threshold, on the same resampled cells.

    Positives and negatives are resampled separately (class sizes fixed), as ``bootstrap_intervals``
    does, so no resample lacks CTCs. One rng draws the cells for both models: the interval is that
    of the difference, narrower than the two models' own intervals suggest when they err alike.
    """
    point = {
        name: getattr(binary_metrics(y_true, registry.scores, registry.threshold), name)
        - getattr(binary_metrics(y_true, scratch.scores, scratch.threshold), name)
        for name in METRICS
    }
    pos, neg = np.flatnonzero(y_true == 1), np.flatnonzero(y_true == 0)
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[np.ndarray]] = {name: [] for name in METRICS}
    chunk = max(1, 2_000_000 // max(1, y_true.size))  # bounds the resample matrices to ~16 MB each
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        pos_draw = pos[rng.integers(0, pos.size, size=(size, pos.size))]
        neg_draw = neg[rng.integers(0, neg.size, size=(size, neg.size))]
        ours = _metric_draws(registry.scores[pos_draw], registry.scores[neg_draw], registry.threshold)
        theirs = _metric_draws(scratch.scores[pos_draw], scratch.scores[neg_draw], scratch.threshold)
        for name in METRICS:
            diffs[name].append(ours[name] - theirs[name])
    tail = (1.0 - level) / 2.0 * 100.0
    result = {}
    for name in METRICS:
        values = np.concatenate(diffs[name]) if n_boot > 0 else np.empty(0)
        low, high = np.percentile(values, [tail, 100.0 - tail]) if values.size else (math.nan, math.nan)
        result[name] = {
            "difference": float(point[name]),
            "ci95": [float(low), float(high)],
            "share_at_or_below_0": float(np.mean(values <= 0)) if values.size else math.nan,
        }
    return result


def test_metrics(y_true: np.ndarray, outcome: Outcome, n_boot: int, seed: int) -> dict[str, Any]:
    metrics = binary_metrics(y_true, outcome.scores, outcome.threshold)
    intervals = bootstrap_intervals(y_true, outcome.scores, outcome.threshold, n_boot, seed)
    return {
        **{name: float(getattr(metrics, name)) for name in METRICS},
        **{f"{name}_ci95": list(intervals[name]) for name in METRICS},
        "confusion": {"tn": metrics.tn, "fp": metrics.fp, "fn": metrics.fn, "tp": metrics.tp},
    }


# --- output ---------------------------------------------------------------------------------------


def _ci(value: float, interval: list[float]) -> str:
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _signed(value: float, interval: list[float]) -> str:
    return f"{value:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}]"


def training_table(repeats: list[dict[str, Any]], target: float) -> Table:
    table = Table(title=f"cross-validation on the lab cohort (threshold: out-of-fold sensitivity {target})")
    for column in ("seed", "init", "CV objective", "CV AUC", "threshold", "final epochs", "seconds"):
        table.add_column(column, justify="left" if column == "init" else "right")
    for repeat in repeats:
        for init in INITS:
            row = repeat[init]
            table.add_row(
                str(repeat["seed"]),
                init,
                f"{row['cv_objective']:.3f}",
                f"{row['cv_auc']:.3f}",
                f"{row['threshold']:.4g}",
                str(row["final_epochs"]),
                f"{row['seconds']:.1f}",
            )
    return table


def test_table(repeats: list[dict[str, Any]]) -> Table:
    table = Table(title="test cohort, each model at its own threshold [95 % bootstrap interval]")
    for column in ("seed", "init", *METRICS):
        table.add_column(column, justify="left" if column == "init" else "right")
    for repeat in repeats:
        for init in INITS:
            test = repeat[init]["test"]
            table.add_row(
                str(repeat["seed"]), init, *(_ci(test[name], test[f"{name}_ci95"]) for name in METRICS)
            )
    return table


def difference_table(repeats: list[dict[str, Any]]) -> Table:
    table = Table(title="registry - scratch on the test cohort [95 % paired bootstrap interval]")
    for column in ("seed", *METRICS, "share of AUC resamples <= 0"):
        table.add_column(column, justify="right")
    for repeat in repeats:
        diff = repeat["difference"]
        table.add_row(
            str(repeat["seed"]),
            *(_signed(diff[name]["difference"], diff[name]["ci95"]) for name in METRICS),
            f"{diff['auc']['share_at_or_below_0']:.3f}",
        )
    return table


def across_seeds(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and SD over the repeats of each point estimate: the variance that training seeds add."""
    summary: dict[str, Any] = {}
    for init in INITS:
        values = {name: [r[init]["test"][name] for r in repeats] for name in METRICS}
        values["cv_objective"] = [r[init]["cv_objective"] for r in repeats]
        values["cv_auc"] = [r[init]["cv_auc"] for r in repeats]
        summary[init] = {
            k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1))} for k, v in values.items()
        }
    summary["difference"] = {
        name: {
            "mean": float(np.mean([r["difference"][name]["difference"] for r in repeats])),
            "sd": float(np.std([r["difference"][name]["difference"] for r in repeats], ddof=1)),
        }
        for name in METRICS
    }
    return summary


def seeds_table(summary: dict[str, Any], n: int) -> Table:
    table = Table(title=f"over {n} seeds: mean +- SD of the point estimates")
    table.add_column("", justify="left")
    for column in ("test AUC", "sensitivity", "specificity", "CV objective", "CV AUC"):
        table.add_column(column, justify="right")
    for init in INITS:
        row = summary[init]
        table.add_row(
            init,
            *(f"{row[k]['mean']:.3f} +- {row[k]['sd']:.3f}" for k in (*METRICS, "cv_objective", "cv_auc")),
        )
    diff = summary["difference"]
    table.add_row(
        "registry - scratch", *(f"{diff[k]['mean']:+.3f} +- {diff[k]['sd']:.3f}" for k in METRICS), "", ""
    )
    return table


def verdict(repeats: list[dict[str, Any]]) -> str:
    lows = [r["difference"]["auc"]["ci95"][0] for r in repeats]
    highs = [r["difference"]["auc"]["ci95"][1] for r in repeats]
    if all(low > 0 for low in lows):
        return "[green]fine-tuning beats scratch on test AUC: every 95 % interval of the difference is > 0"
    if all(high < 0 for high in highs):
        return "[red]scratch beats fine-tuning on test AUC: every 95 % interval of the difference is < 0"
    return "[yellow]no clear winner on test AUC: a 95 % interval of the difference includes 0"


def _json_ready(value: Any) -> Any:
    """NaN -> null, so the report is strict JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


# --- main -----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params file: simulator, segmentation, train.* and mlflow.* (default params.yaml)",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI holding the champion (default: mlflow.tracking_uri of "
        "--params, a relative sqlite path there read from the folder of --params; a relative one "
        "given here is read from the working directory)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        help="folder for the simulated cohorts (default: a temporary folder, removed "
        "unless --keep); a kept folder's cohorts are reused when unchanged",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports/finetune.json"),
        help="JSON report (default reports/finetune.json)",
    )
    parser.add_argument(
        "--train-patients", type=int, default=20, help="patients of the lab cohort (default 20)"
    )
    parser.add_argument(
        "--test-patients", type=int, default=40, help="patients of the test cohort (default 40)"
    )
    parser.add_argument("--train-first", type=int, default=1000, help="first sample number of the lab cohort")
    parser.add_argument("--test-first", type=int, default=2000, help="first sample number of the test cohort")
    parser.add_argument(
        "--sim-seed",
        type=int,
        default=2026,
        help="simulator seed of both cohorts (default 2026; the champion's cohort used the seed of --params)",
    )
    parser.add_argument("--folds", type=int, default=4, help="CV folds over the lab patients (default 4)")
    parser.add_argument("--epochs", type=int, help="most epochs per fit (default train.epochs)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="training seeds (seed, seed + 1000, ...), each with new folds (default 1)",
    )
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples (default train.bootstrap)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: train.threads)")
    parser.add_argument(
        "--workers", type=int, help="processes for simulate and segment (default simulate/segment.workers)"
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress of the fits")
    args = parser.parse_args()
    if args.train_patients < 2 or args.test_patients < 1 or args.folds < 2 or args.repeats < 1:
        parser.error("need --train-patients >= 2, --test-patients >= 1, --folds >= 2, --repeats >= 1")
    train_end, test_end = args.train_first + args.train_patients, args.test_first + args.test_patients
    if args.train_first < test_end and args.test_first < train_end:
        parser.error("the lab and test cohorts' sample numbers overlap; move --test-first")
    return args


def main() -> int:
    args = parse_args()
    go_offline()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the champion's download
    try:
        params = load_params(args.params)
    except ConfigError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="ctcid-finetune-"))
    try:
        return run(args, params, work)
    except NoChampion as error:
        console.print(f"[red]no champion to fine-tune:[/red] {error}", highlight=False)
        return 1
    except CtcidError as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        return 1
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            console.print(f"work folder kept: {work}", highlight=False)


def run(args: argparse.Namespace, params: Params, work: Path) -> int:
    # params.yaml's relative sqlite path is meant from the repository root (dvc's working directory)
    base = Path.cwd() if args.tracking_uri else args.params.resolve().parent
    uri = resolve_tracking_uri(args.tracking_uri or params.mlflow.tracking_uri, base)
    params = params.model_copy(update={"mlflow": params.mlflow.model_copy(update={"tracking_uri": uri})})
    lab = Cohort("lab", args.train_first, args.train_patients, work / "lab")
    test = Cohort("test", args.test_first, args.test_patients, work / "test")

    # the champion first: without one nothing else is worth minutes of simulation
    tags = champion_tags(params)
    check_compatible(tags, params)
    backbone = tags.get("backbone", "")
    champion: Champion = find_champion(params.mlflow, backbone, lab.samples + test.samples, work / "champion")
    saved = tags.get("input_size") or torch.load(champion.path, weights_only=True)["metadata"]["input_size"]
    input_size = int(saved)
    overrides: dict[str, Any] = {"input_size": input_size}
    if args.epochs:
        overrides["epochs"] = args.epochs
    config = TrainParams.model_validate({**params.train.model_dump(), **overrides})
    n_boot = config.bootstrap if args.bootstrap is None else args.bootstrap
    threads = args.threads or config.threads
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(config.device)
    console.print(
        f"champion {champion.describe()} at {uri}: {input_size} px inputs; fixed train.*: epochs "
        f"{config.epochs}, patience {config.patience}, batch {config.batch_size}, learning rate "
        f"{config.learning_rate:g}, negatives {config.negatives}; "
        f"{torch.get_num_threads()} threads on {device}",
        highlight=False,
    )

    params_file = cohort_params(params, args.sim_seed, args.workers, work / "params.yaml")
    prepare_cohort(lab, params_file)
    prepare_cohort(test, params_file)
    lab_manifest, test_manifest = read_manifest(lab.manifest), read_manifest(test.manifest)
    cohorts = {"lab": describe(lab_manifest), "test": describe(test_manifest)}
    for name, facts in cohorts.items():
        console.print(
            f"{name} cohort: {facts['patients']} patients, {facts['cells']} cells, {facts['ctc']} CTC and "
            f"{facts['non_ctc']} non-CTC labelled, CTCs in {facts['ctc_patients']} patients",
            highlight=False,
        )
    if cohorts["test"]["ctc"] == 0 or cohorts["test"]["non_ctc"] == 0:
        raise CtcidError("the test cohort lacks a class; raise --test-patients or change --sim-seed")
    if cohorts["lab"]["ctc_patients"] < args.folds:
        raise CtcidError(
            f"only {cohorts['lab']['ctc_patients']} lab patients have CTCs, fewer than --folds {args.folds}; "
            "lower --folds, raise --train-patients or change --sim-seed"
        )

    test_rows, y_test = labelled(test_manifest)
    test_images = read_crops(open_crops(test.crops), test_rows, input_size)
    repeats = []
    for repeat in range(args.repeats):
        seed = params.seed + 1000 * repeat  # fold k trains with seed + k: keep repeats apart
        split = cohort_split(lab_manifest, args.folds, seed)
        data = load_labelled_crops(lab.crops, lab_manifest, split.train, LABEL_SOURCE, input_size)
        outcomes = {}
        for init in INITS:
            console.rule(f"seed {seed}: init {init} ({repeat + 1}/{args.repeats})")
            outcomes[init] = train_and_score(
                init, backbone, champion.path, config, seed, data, split, test_images, device, not args.quiet
            )
            done = outcomes[init]
            console.print(
                f"{init}: CV objective {done.cv_objective:.3f}, CV AUC {done.cv_auc:.3f}, threshold "
                f"{done.threshold:.4g}, final fit {done.final_epochs} epochs, {done.seconds:.1f} s",
                highlight=False,
            )
        boot_seed = seed  # the same resamples for both models' own intervals, too
        repeats.append(
            {
                "seed": seed,
                "folds": split.counts["folds"],
                **{
                    init: {
                        "threshold": o.threshold,
                        "cv_objective": o.cv_objective,
                        "cv_auc": o.cv_auc,
                        "final_epochs": o.final_epochs,
                        "seconds": o.seconds,
                        "test": test_metrics(y_test, o, n_boot, boot_seed),
                    }
                    for init, o in outcomes.items()
                },
                "difference": paired_bootstrap(
                    y_test, outcomes["scratch"], outcomes["registry"], n_boot, boot_seed
                ),
            }
        )

    console.print(training_table(repeats, config.target_sensitivity))
    console.print(test_table(repeats))
    console.print(difference_table(repeats))
    summary = across_seeds(repeats) if len(repeats) > 1 else None
    if summary is not None:
        console.print(seeds_table(summary, len(repeats)))
    console.print(verdict(repeats))

    report = {
        "champion": {
            "model_name": champion.model_name,
            "version": champion.version,
            "run_id": champion.run_id,
            "backbone": backbone,
            "input_size": input_size,
            "tracking_uri": uri,
        },
        "settings": {
            "params": str(args.params),
            "sim_seed": args.sim_seed,
            "folds": args.folds,
            "bootstrap": n_boot,
            "label_source": LABEL_SOURCE,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "train": config.model_dump(mode="json", exclude={"backbones", "init"}),
            "lab_samples": [lab.samples[0], lab.samples[-1]],
            "test_samples": [test.samples[0], test.samples[-1]],
        },
        "cohorts": cohorts,
        "repeats": repeats,
        "across_seeds": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_json_ready(report), indent=1) + "\n")
    console.print(f"report: {args.out}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
