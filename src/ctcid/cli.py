"""The ``ctcid`` command: one subcommand per pipeline step, each a thin call into its module.

The CLI parses arguments, loads params once through :mod:`ctcid.config.loader` and hands them
to the step, whose entry point keeps only its stage's keys (:mod:`ctcid.config.stage`). What a
step's result looks like on the terminal is the step's own business (its ``report``/``views``
functions return rich tables or lines); the CLI prints them, tables on stdout and lines on stderr.
Errors the user can fix (:class:`CtcidError`, :class:`ConfigError`) are printed as one message
with exit status 1 (2 for configuration), never as a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from ctcid import paths
from ctcid.config.base import ConfigError, redact_url
from ctcid.config.loader import DEFAULT_PARAMS, load_params
from ctcid.config.params import Params
from ctcid.contracts import BACKBONES
from ctcid.errors import CtcidError
from ctcid.offline import go_offline
from ctcid.paths import StageInputs

app = typer.Typer(
    help="Find and count circulating tumour cells (CTCs) in imFISH images of blood.\n\n"
    "Each subcommand is one step of the DVC pipeline (see dvc.yaml); run 'dvc repro' to run them all.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


@app.callback()
def main() -> None:
    """Runs before every subcommand: no telemetry from the tools the steps drive."""
    go_offline()


ParamsOption = Annotated[
    Path,
    typer.Option("--params", "-p", help="Configuration file (see docs/configuration.md).", show_default=True),
]

CropsOption = Annotated[Path, typer.Option(help="Crops array written by 'ctcid segment'.")]
ManifestOption = Annotated[Path, typer.Option(help="Manifest written by 'ctcid segment'.")]
SplitOption = Annotated[Path, typer.Option(help="split.json written by 'ctcid split'.")]
TrainingManifestOption = Annotated[
    Path, typer.Option(help="The training manifest: the GBM baseline trains on its split rows.")
]
CohortsOption = Annotated[
    Path, typer.Option(help="Folder of the prepared cohorts ('ctcid external-cohort').")
]

F = TypeVar("F", bound=Callable[..., Any])


def read_params(path: Path = DEFAULT_PARAMS, environment: bool = True) -> Params:
    """Params for a command; ``environment`` False reads the file alone (nothing secret printed)."""
    try:
        return load_params(path, None if environment else {})
    except ConfigError as error:
        fail(error, 2)


def fail(error: Exception, status: int) -> NoReturn:
    """One line on stderr, no traceback, and ``status``: 1 for a CtcidError, 2 for configuration."""
    # one unbroken line: the terminal wraps it, and paths and commands in it stay whole for copying
    console.print(f"[red]error:[/red] {error}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(status) from None


def reports_errors(func: F) -> F:
    """Turn a CtcidError into a one-line message and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CtcidError as error:
            fail(error, 1)

    return wrapper  # type: ignore[return-value]


def _known_backbone(name: str) -> str:
    if name not in BACKBONES:
        fail(CtcidError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}"), 1)
    return name


def backbone_option(purpose: str) -> Any:
    """--backbone, checked against contracts.BACKBONES while the arguments are parsed."""
    return typer.Option(help=f"{purpose}: {', '.join(BACKBONES)}.", callback=_known_backbone)


@app.command("show-params")
def show_params(
    params: ParamsOption = DEFAULT_PARAMS,
    over: Annotated[
        list[Path] | None,
        typer.Option(
            help="An overlay applied on top of --params, key by key (repeatable, in order); e.g. "
            "'-p params.yaml --over configs/multisite.yaml' keeps params.yaml's cohorts."
        ),
    ] = None,
) -> None:
    """Validate a params file and print the full configuration, defaults filled in.

    The CTCID_* environment overrides (docs/configuration.md) are not applied: the output is what
    DVC reads as params.yaml, and it must not carry a deployment's secrets.
    """
    import yaml

    from ctcid.config.loader import merge_overlay, parse_params, read_raw

    if over:
        try:
            raw = read_raw(params)
            for overlay in over:
                raw = merge_overlay(raw, read_raw(overlay))
            config = parse_params(raw, f"{params} with {', '.join(map(str, over))}")
        except ConfigError as error:
            fail(error, 2)
    else:
        config = read_params(params, environment=False)
    typer.echo(yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False))


# Step subcommands follow, one per pipeline stage, in pipeline order.


@app.command("simulate")
@reports_errors
def simulate_command(
    out: Annotated[
        Path, typer.Option(help="Folder for the raw fields: <out>/<sample>/<field>.tif plus annotations.csv.")
    ] = paths.RAW_DIR,
    samples: Annotated[
        int | None, typer.Option(min=1, help="Number of samples to simulate (default: simulate.n_samples).")
    ] = None,
    first_sample: Annotated[
        int, typer.Option(min=0, help="Number of the first sample; 100 appends S0100.. to a 100-sample set.")
    ] = 0,
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="Worker processes, 0 = one per CPU core (default: simulate.workers)."),
    ] = None,
    preview: Annotated[
        Path | None,
        typer.Option(help="Also write a PNG of the field with the most CTCs, true CTCs outlined."),
    ] = None,
    sync: Annotated[
        bool,
        typer.Option(
            "--sync",
            help="Make <out> follow params.yaml: simulate it when missing, re-simulate it when it was "
            "drawn with another seed or simulate.* (saying which), else leave it; refuse when a lab's "
            "ingested samples are in the way (docs/data.md#provenance). make run does this.",
        ),
    ] = False,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Simulate imFISH fields (DAPI, CEP8, CD45) with per-cell ground truth (docs/simulator.md).

    <out>/simulation.json records the settings every sample was drawn with (docs/data.md#provenance).
    """
    import time

    from ctcid.raw.preview import preview_field
    from ctcid.raw.simulate import busiest_field, dataset_summary, simulate_dataset
    from ctcid.raw.sync import sync_raw

    config = read_params(params)
    start = time.perf_counter()
    if sync:
        if samples is not None or first_sample:
            raise CtcidError("--sync simulates simulate.n_samples from S0000: drop --samples, --first-sample")
        done, summaries = sync_raw(out, config, workers)
        console.print(done, soft_wrap=True, highlight=False)
        if not summaries:
            return
    else:
        summaries = simulate_dataset(config, out, samples, first_sample, workers)
    seconds, artefacts = time.perf_counter() - start, config.simulate.artefacts.enabled
    console.print(dataset_summary(summaries, out, seconds, artefacts), soft_wrap=True)
    if preview is not None:
        sample, field = busiest_field(summaries)
        outlined = preview_field(out / sample / f"{field.field}.tif", config.channels, preview)
        console.print(f"preview {sample}/{field.field}: {outlined} CTC outlined -> {preview}", soft_wrap=True)


@app.command("preview")
@reports_errors
def preview_command(
    field: Annotated[Path, typer.Argument(help="A raw field TIFF, e.g. data/raw/S0000/f000.tif.")],
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("reports/field_preview.png"),
    annotations: Annotated[
        Path | None, typer.Option(help="Ground truth to outline (default: annotations.csv beside the field).")
    ] = None,
    scale: Annotated[int, typer.Option(min=1, max=8, help="Enlargement factor of the image.")] = 2,
    crop: Annotated[
        str | None, typer.Option(help="Region X,Y,WIDTH,HEIGHT in field pixels (default: the whole field).")
    ] = None,
    all_cells: Annotated[bool, typer.Option(help="Outline non-CTC cells too (thin grey boxes).")] = False,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Write the false-colour composite of one raw field, true CTCs outlined and labelled."""
    from ctcid.raw.preview import preview_field

    config = read_params(params)
    region = None
    if crop:
        try:
            x, y, width, height = (int(v) for v in crop.split(","))
        except ValueError:
            raise CtcidError(f"--crop {crop!r}: expected four integers X,Y,WIDTH,HEIGHT") from None
        region = (x, y, width, height)
    outlined = preview_field(field, config.channels, out, annotations, scale, region, all_cells)
    console.print(f"{field}: {outlined} CTC outlined -> {out}", soft_wrap=True)


@app.command("ingest")
@reports_errors
def ingest_command(
    source: Annotated[
        Path, typer.Argument(help="Folder of one sample's images, or of one sub-folder of images per sample.")
    ],
    out: Annotated[Path, typer.Option(help="Raw data folder to add the fields to.")] = paths.RAW_DIR,
    sample: Annotated[
        str | None, typer.Option(help="Sample id for a single-sample folder (default: the folder's name).")
    ] = None,
    channel_map: Annotated[
        str | None,
        typer.Option(
            help="Per-channel file patterns, e.g. DAPI=*_dapi.tif,CEP8=*_cep8.tif,CD45=*_cd45.tif; "
            "'*' is the field id (default: DAPI=_dapi,CEP8=_cep8,CD45=_cd45, stem suffixes)."
        ),
    ] = None,
    quarantine: Annotated[
        Path, typer.Option(help="Report listing the files that could not be used.")
    ] = paths.INGEST_QUARANTINE_FILE,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Bring a lab's own images (multi-channel TIFF/OME-TIFF, or one TIFF/PNG per channel) into data/raw."""
    from ctcid.raw.ingest import ingest

    config = read_params(params)
    result = ingest(source, out, config.channels, sample, channel_map, quarantine)
    console.print(result.summary(out, quarantine), soft_wrap=True)
    if not result.written:
        raise CtcidError(f"nothing could be ingested from {source}; see the reasons in {quarantine}")


@app.command("segment")
@reports_errors
def segment_command(
    raw: Annotated[
        Path, typer.Option(help="Raw fields: <raw>/<sample>/<field>.tif, optional <sample>/annotations.csv.")
    ] = paths.RAW_DIR,
    out: Annotated[
        Path, typer.Option(help="Where to write crops.npy and manifest.parquet.")
    ] = paths.SEGMENT_DIR,
    reports: Annotated[
        Path,
        typer.Option(help="Where to write segmentation.json, quarantine.csv and the pictures."),
    ] = paths.REPORTS_DIR,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Find nuclei in every field, count CEP8 spots, score CD45, apply the rule and cut crops.

    Unusable fields are listed in <reports>/quarantine.csv; the step fails only when their share
    exceeds segment.quarantine_max_share.
    """
    from ctcid.segmentation.report import summary_line
    from ctcid.segmentation.stage import segment_stage

    summary = segment_stage(raw, out, reports, read_params(params))
    console.print(summary_line(summary), highlight=False)


@app.command("validate")
@reports_errors
def validate_command(
    manifest: ManifestOption = paths.MANIFEST_FILE,
    crops: CropsOption = paths.CROPS_FILE,
    quarantine: Annotated[
        Path, typer.Option(help="Fields 'ctcid segment' quarantined.")
    ] = paths.QUARANTINE_FILE,
    reports: Annotated[
        Path, typer.Option(help="Where to write validation.json and the Data Docs (<reports>/data_docs).")
    ] = paths.REPORTS_DIR,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Gate the segment outputs with Great Expectations; non-zero exit when any expectation fails.

    Run from the repository root (the GX context is gx/). docs/validation.md lists every check.
    """
    from ctcid.errors import GateFailed
    from ctcid.quality.gate import failure_table, run_gate, verdict

    config = read_params(params)
    report = run_gate(manifest, crops, quarantine, reports, config)
    if not report.success:
        console.print(failure_table(report))
        raise GateFailed(verdict(report, reports))
    console.print(verdict(report, reports), highlight=False)


@app.command("split")
@reports_errors
def split_command(
    manifest: ManifestOption = paths.MANIFEST_FILE,
    out: Annotated[
        Path, typer.Option(help="Where to write split.json (train/test/balanced indices and CV folds).")
    ] = paths.SPLIT_FILE,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Split the labelled cells into train and test, balance the training set and build CV folds."""
    from ctcid.split import split_stage, split_view

    Console().print(split_view(split_stage(manifest, out, read_params(params)), out))


@app.command("train")
@reports_errors
def train_command(
    backbone: Annotated[str, backbone_option("Backbone to train")],
    crops: CropsOption = paths.CROPS_FILE,
    manifest: ManifestOption = paths.MANIFEST_FILE,
    split: SplitOption = paths.SPLIT_FILE,
    out: Annotated[
        Path, typer.Option(help="Models folder; writes <out>/<backbone>/model.pt and run.json.")
    ] = paths.MODELS_DIR,
    reports: Annotated[
        Path, typer.Option(help="Reports folder; writes train/<backbone>.json and train/<backbone>_oof.csv.")
    ] = paths.REPORTS_DIR,
    tuned: Annotated[
        Path | None,
        typer.Option(
            help="Tune report (reports/tune/<backbone>.json from 'ctcid tune'): train its best trial's "
            "values, reusing that trial's cross-validation when it is exactly this configuration."
        ),
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Cross-validate one backbone, then fit and save the final model on all its training crops.

    Each fold is a nested MLflow run; the operating threshold comes from out-of-fold predictions.
    """
    from ctcid.model.train import summary_line, train_backbone

    config = read_params(params)
    result = train_backbone(config, backbone, StageInputs(crops, manifest, split), out, reports, tuned=tuned)
    console.print(summary_line(backbone, result), highlight=False)


@app.command("tune")
@reports_errors
def tune_command(
    backbone: Annotated[str, backbone_option("Backbone whose study to run")],
    crops: CropsOption = paths.CROPS_FILE,
    manifest: ManifestOption = paths.MANIFEST_FILE,
    split: SplitOption = paths.SPLIT_FILE,
    reports: Annotated[
        Path,
        typer.Option(help="Reports folder; writes tune/<backbone>.json and _oof.csv, and tune/figures/."),
    ] = paths.REPORTS_DIR,
    worker: Annotated[
        int,
        typer.Option(
            min=0,
            help="This worker's number when several share one study (tune.storage on PostgreSQL): "
            "0, 1, 2, ... on each machine, so their samplers draw different values.",
        ),
    ] = 0,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Tune one backbone with Optuna under the split's CV folds; every trial is a nested MLflow run.

    The study lives in tune.storage (SQLite by default) and resumes where it stopped: interrupt it
    (Ctrl+C) or kill it, run the same command again, and it continues to tune.n_trials finished
    trials. Workers on several machines share a study through a PostgreSQL tune.storage.
    'ctcid train --tuned reports/tune/<backbone>.json' then trains the best trial's values.
    """
    from ctcid.tuning.progress import TrialProgress, interrupted_line, quiet_tools
    from ctcid.tuning.report import outcome_summary
    from ctcid.tuning.tune import tune_backbone

    config = read_params(params)
    quiet_tools()
    try:
        with TrialProgress(backbone, config.tune.n_trials, console) as progress:
            outcome = tune_backbone(
                config,
                backbone,
                StageInputs(crops, manifest, split),
                reports,
                worker=worker,
                on_trial=progress,
            )
    except KeyboardInterrupt:
        console.print(interrupted_line(config.tune.storage), highlight=False)
        raise typer.Exit(130) from None
    console.print(outcome_summary(outcome, backbone), highlight=False)


@app.command("evaluate")
@reports_errors
def evaluate_command(
    models: Annotated[
        Path, typer.Option(help="Models folder with <backbone>/model.pt from 'ctcid train'.")
    ] = paths.MODELS_DIR,
    reports: Annotated[
        Path, typer.Option(help="Reports folder; writes metrics.json, test_predictions.csv and plots/.")
    ] = paths.REPORTS_DIR,
    crops: CropsOption = paths.CROPS_FILE,
    manifest: ManifestOption = paths.MANIFEST_FILE,
    split: SplitOption = paths.SPLIT_FILE,
    raw: Annotated[
        Path,
        typer.Option(
            help="Raw data folder; true per-patient CTC counts come from its <sample>/annotations.csv "
            "files, or from the labelled cells when they are missing."
        ),
    ] = paths.RAW_DIR,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Score the held-out test set with every trained backbone and the baselines; select on CV AUC."""
    from ctcid.evaluation.evaluate import evaluate_models
    from ctcid.evaluation.report import results_table, selection_line

    config = read_params(params)
    report = evaluate_models(config, StageInputs(crops, manifest, split), models, reports, raw)
    Console().print(results_table(report, reports))
    console.print(selection_line(report, config.tune.objective), highlight=False)


# The registry: register (a stage), promote (a stage and a command), rollback, models.

ModelNameOption = Annotated[
    str | None, typer.Option("--model-name", help="Registered model (default: mlflow.model_name).")
]


def _with_model_name(config: Params, model_name: str | None) -> Params:
    if model_name is None:
        return config
    return config.model_copy(update={"mlflow": config.mlflow.model_copy(update={"model_name": model_name})})


@app.command("register")
@reports_errors
def register_command(
    models: Annotated[
        Path, typer.Option(help="Models folder with <backbone>/model.pt and run.json.")
    ] = paths.MODELS_DIR,
    reports: Annotated[
        Path,
        typer.Option(help="Reports folder: reads metrics.json, writes model_card.md and registration.json."),
    ] = paths.REPORTS_DIR,
    crops: CropsOption = paths.CROPS_FILE,
    manifest: ManifestOption = paths.MANIFEST_FILE,
    split: SplitOption = paths.SPLIT_FILE,
    model_name: ModelNameOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Register the selected backbone as a new version of the MLflow model and alias it 'challenger'.

    The model is logged into its training run as an MLflow pyfunc with a signature, input example and
    model card; tags carry its metrics, data hashes and lineage. A model file registered before is
    reused, not registered again.
    """
    from ctcid.registry.register import register_selected
    from ctcid.registry.views import registration_line

    config = _with_model_name(read_params(params), model_name)
    done = register_selected(config, StageInputs(crops, manifest, split), models, reports)
    console.print(registration_line(done), highlight=False)


@app.command("promote")
@reports_errors
def promote_command(
    crops: CropsOption = paths.CROPS_FILE,
    manifest: ManifestOption = paths.MANIFEST_FILE,
    split: SplitOption = paths.SPLIT_FILE,
    raw: Annotated[Path, typer.Option(help="Raw data folder (true per-patient counts).")] = paths.RAW_DIR,
    record: Annotated[Path, typer.Option(help="Where to write the decision (DVC metrics).")] = (
        paths.REPORTS_DIR / paths.PROMOTION_FILE
    ),
    external: Annotated[
        Path,
        typer.Option(
            help="Prepared external cohorts (ctcid external-cohort): the worst-site guard-rail reads "
            "each cohort of external.cohorts here."
        ),
    ] = paths.EXTERNAL_DIR,
    force: Annotated[bool, typer.Option("--force", help="Promote even when the gate refuses.")] = False,
    reason: Annotated[
        str, typer.Option(help="Why, recorded with the decision (required with --force).")
    ] = "",
    strict: Annotated[
        bool, typer.Option(help="Exit non-zero when the gate refuses (--no-strict: record and exit 0).")
    ] = True,
    model_name: ModelNameOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """The gate: score challenger and champion on today's test set; move 'champion' if it passes.

    The policy is params.yaml's registry section (docs/registry.md). With no champion yet, a challenger
    that meets the guard-rails becomes champion. registry.min_site_specificity also asks for that
    specificity on every external cohort (the worst-site guard-rail; null turns it off).
    """
    from ctcid.errors import GateFailed
    from ctcid.registry.promote import promote
    from ctcid.registry.views import decision_table

    config = _with_model_name(read_params(params), model_name)
    decision = promote(config, StageInputs(crops, manifest, split), raw, force, reason, external)
    decision.write(record)
    if decision.criteria:
        Console().print(decision_table(decision))
    else:
        console.print(f"version {decision.challenger} is already champion; nothing to do", highlight=False)
    if decision.action == "refused" and strict:
        raise GateFailed(f"promotion refused: {'; '.join(decision.failed)} (recorded in {record})")


@app.command("external-cohort")
@reports_errors
def external_cohort_command(
    cohort: Annotated[str, typer.Option(help="Name of the cohort in external.cohorts.")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for the cohort (default: data/external/<cohort>).")
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Make one external cohort: simulate it (or read a lab's folder) and segment it (docs/external.md).

    Writes <out>/raw (simulated cohorts), <out>/segment (crops and manifest), <out>/reports
    (segmentation against the truth, quarantined fields) and <out>/cohort.json. Nothing is trained on it.
    """
    from ctcid.external.cohort import prepare_cohort
    from ctcid.external.report import cohort_line

    config = read_params(params)
    info = prepare_cohort(config, cohort, out or paths.EXTERNAL_DIR / cohort)
    console.print(cohort_line(info, out or paths.EXTERNAL_DIR / cohort), highlight=False)


@app.command("external")
@reports_errors
def external_command(
    models: Annotated[Path, typer.Option(help="Models folder with <backbone>/model.pt.")] = paths.MODELS_DIR,
    reports: Annotated[
        Path,
        typer.Option(
            help="Reports folder: writes external.json, external.md and external/<cohort>/; "
            "reads drift_reference.json from evaluate."
        ),
    ] = paths.REPORTS_DIR,
    external: CohortsOption = paths.EXTERNAL_DIR,
    split: SplitOption = paths.SPLIT_FILE,
    manifest: TrainingManifestOption = paths.MANIFEST_FILE,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Score every external cohort but the sealed ones with the champion, every model, the GBM and the rule.

    Per cohort: cell metrics with intervals over patients and McNemar against the rule; per patient,
    the count error (paired with the rule's), sensitivity, specificity, PPV, NPV and kappa at >= 1, 3
    and 5 CTCs, limit of blank, Passing-Bablok and Bland-Altman, with bootstrap intervals over
    patients; the review burden; calibration, drift flags and a review gallery (docs/external.md,
    docs/evaluation.md). Sealed cohorts are left to 'ctcid audit'.
    """
    from ctcid.external.report import cohort_table, drift_line
    from ctcid.external.stage import evaluate_external

    config = read_params(params)
    results = evaluate_external(
        config, models, reports, external, split, reports / paths.DRIFT_REFERENCE_FILE, manifest
    )
    for result in results:
        Console().print(cohort_table(result))
        console.print(drift_line(result), highlight=False)
    console.print(
        f"written: {reports / paths.EXTERNAL_FILE}, {reports / paths.EXTERNAL_SUMMARY_FILE}", highlight=False
    )


@app.command("audit")
@reports_errors
def audit_command(
    models: Annotated[Path, typer.Option(help="Models folder with <backbone>/model.pt.")] = paths.MODELS_DIR,
    reports: Annotated[
        Path,
        typer.Option(help="Reports folder: writes audit.json, audit.md and audit/<cohort>/."),
    ] = paths.REPORTS_DIR,
    external: CohortsOption = paths.EXTERNAL_DIR,
    split: SplitOption = paths.SPLIT_FILE,
    manifest: TrainingManifestOption = paths.MANIFEST_FILE,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Score the sealed cohorts (external.cohorts with sealed: true): the clean estimate.

    No decision reads a sealed cohort: not the promotion gate, not tuning, not model selection, not
    'ctcid external'. This step is its only reader and runs last; it writes the same tables as
    'ctcid external', stamped with the commit (docs/evaluation.md#what-each-cohort-may-influence).
    """
    from ctcid.audit.stage import audit
    from ctcid.external.report import cohort_table

    config = read_params(params)
    results = audit(config, models, reports, external, split, reports / paths.DRIFT_REFERENCE_FILE, manifest)
    for result in results:
        Console().print(cohort_table(result))
    console.print(
        f"written: {reports / paths.AUDIT_FILE}, {reports / paths.AUDIT_SUMMARY_FILE}", highlight=False
    )


@app.command("rollback")
@reports_errors
def rollback_command(
    reason: Annotated[str, typer.Option(help="Why, recorded with the decision.")] = "",
    record: Annotated[Path, typer.Option(help="Where to write the decision.")] = (
        paths.REPORTS_DIR / "promotion.json"
    ),
    model_name: ModelNameOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Move 'champion' back to the version it replaced; the demoted version is marked rolled back."""
    from ctcid.registry.promote import rollback
    from ctcid.registry.views import rollback_line

    config = _with_model_name(read_params(params), model_name)
    decision = rollback(config, reason)
    decision.write(record)
    console.print(rollback_line(decision), highlight=False)


@app.command("models")
@reports_errors
def models_command(
    limit: Annotated[int, typer.Option(min=1, help="Newest versions to show.")] = 20,
    model_name: ModelNameOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """List registered versions, newest first: aliases, backbone, test metrics, data hash, last decision."""
    from ctcid.registry.store import Registry
    from ctcid.registry.views import versions_table

    config = _with_model_name(read_params(params), model_name)
    registry = Registry(config.mlflow)
    registry.require()
    Console().print(versions_table(registry, limit))
    console.print(f"MLflow UI: {registry.ui_hint()}", highlight=False)


def _serving(params: Path, model_name: str | None) -> Params:
    """Params, with BentoML's store pointed at serving.bentoml_home before bentoml is imported."""
    from ctcid.serving.bento import use_bentoml_home

    config = _with_model_name(read_params(params), model_name)
    use_bentoml_home(config.serving)
    return config


@app.command("package")
@reports_errors
def package_command(
    reports: Annotated[Path, typer.Option(help="Where to write package.json.")] = paths.REPORTS_DIR,
    model_name: ModelNameOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Import the registry's champion into BentoML's store and build the service's Bento.

    The Bento holds serving/service.py, a wheel of this ctcid, requirements.lock and the serving
    params as build arguments. Packaging the same champion again imports nothing new.
    """
    from ctcid.serving.package import package

    config = _serving(params, model_name)
    done = package(config, reports)
    console.print(done.summary(), highlight=False)


@app.command("serve")
@reports_errors
def serve_command(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default serving.host, loopback).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default serving.port).")] = None,
    model_name: ModelNameOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Start the newest Bento built by 'ctcid package' and print its URL and a curl line.

    Loopback only unless --host names another interface: the service has no authentication.
    """
    from ctcid.serving import server
    from ctcid.serving.bento import latest_bento

    config = _serving(params, model_name)
    bento = latest_bento(config.mlflow.model_name)
    host, port = host or config.serving.host, port or config.serving.port
    console.print(f"serving Bento {bento.tag}\n{server.how_to_call(host, port)}", highlight=False)
    raise typer.Exit(server.run(server.serve_command(bento, host, port)))


@app.command("predict")
@reports_errors
def predict_command(
    fields: Annotated[list[Path], typer.Argument(help="Multi-channel TIFF fields of one sample.")],
    sample: Annotated[
        str | None, typer.Option(help="Sample name (default: the first field's folder name).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the CSV, JSON and overlays.")] = Path("predictions"),
    model_name: ModelNameOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Count CTCs in fields on disk with the packaged champion, as POST /count_sample would.

    Writes <sample>_cells.csv (one row per cell), <sample>.json and <field>_overlay.png per field.
    """
    from ctcid.serving.bento import ServiceArgs, latest_bento
    from ctcid.serving.predict import predict_fields, summary_lines

    config = _serving(params, model_name)
    bento = latest_bento(config.mlflow.model_name)
    served_as = ServiceArgs.model_validate(bento.info.args)  # the model and limits the service has
    name = sample or fields[0].resolve().parent.name
    done = predict_fields(fields, name, out, served_as.model_tag, served_as)
    console.print(summary_lines(done, out), highlight=False)


@app.command("retrain")
@reports_errors
def retrain_command(
    since: Annotated[
        str | None,
        typer.Option(help="Git revision whose dvc.lock to compare with (default: last retrain, else HEAD)."),
    ] = None,
    pull: Annotated[
        bool, typer.Option(help="Pull data and cached stage outputs from the DVC remote first.")
    ] = True,
    summary: Annotated[Path, typer.Option(help="Markdown summary to write.")] = paths.RETRAIN_SUMMARY_FILE,
    record: Annotated[Path, typer.Option(help="The same as JSON.")] = paths.RETRAIN_RECORD_FILE,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Retrain on new data: dvc pull, dvc repro (register and the gate are stages), then a summary.

    Add samples to data/raw and run 'dvc add data/raw' first (CI: a commit of data/raw.dvc).
    Killed half-way, it resumes where it stopped: finished stages and tuning trials are kept.

    Exit status: 0 a new champion was promoted and packaged; 3 the champion stays (nothing new,
    or the gate refused); 1 failed; 130 interrupted. Summary: reports/retrain_summary.md.
    """
    from rich.markdown import Markdown

    from ctcid.retrain.run import RetrainOptions, check_project, retrain

    check_project(Path("."))
    config = read_params(params)
    try:
        options = RetrainOptions(since=since, pull=pull, summary=summary, record=record)
        result = retrain(config, options, console)
    except KeyboardInterrupt:
        console.print("interrupted; run it again to resume (finished stages are kept)", highlight=False)
        raise typer.Exit(130) from None
    Console().print(Markdown(summary.read_text()))
    console.print(f"summary: {summary}; record: {record}", highlight=False)
    raise typer.Exit(result.exit_status)


HostOption = Annotated[str, typer.Option(help="Interface to listen on (loopback: no login).")]


@app.command("ui")
@reports_errors
def ui_command(
    host: HostOption = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    links_only: Annotated[bool, typer.Option("--links", help="Print the links and start nothing.")] = False,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Start the MLflow UI on the tracking database and print where the runs and the model are.

    The links open the 'ctcid' experiment's runs table in MLflow's training view (MLflow 3 would
    otherwise open its GenAI overview) and the registered model with its champion. With a tracking
    server (mlflow.tracking_uri http://...) nothing is started: the links point at the server.
    """
    from ctcid import pages

    config = read_params(params)
    links = pages.mlflow_links(config.mlflow, host, port)
    store = redact_url(config.mlflow.tracking_uri)
    console.print(f"MLflow UI ({store}):\n{links.lines()}", highlight=False, soft_wrap=True)  # whole URLs
    if links_only or pages.is_server(config.mlflow.tracking_uri):
        return
    console.print("starting mlflow ui; Ctrl+C stops it", highlight=False)
    pages.exec_server(pages.mlflow_ui_command(config.mlflow, host, port))


@app.command("dashboard")
@reports_errors
def dashboard_command(
    host: HostOption = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of optuna-dashboard.")] = 8080,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """List the Optuna studies of tune.storage, then open them in optuna-dashboard on loopback.

    One study per backbone, data and search configuration; the table marks the studies the
    current tune reports name (docs/tuning.md#storage-study-names-and-resumption).
    """
    from ctcid import pages

    config = read_params(params)
    command = pages.dashboard_command(config.tune.storage, host, port)
    rows = pages.studies(config.tune.storage, config.tune.study_prefix)
    if rows:
        Console().print(pages.study_table(rows))
        console.print(pages.STUDY_NAMES, highlight=False)
    else:
        storage = redact_url(config.tune.storage)
        console.print(f"no study in {storage} yet: run 'dvc repro' (tune)", highlight=False)
    url = f"http://{host}:{port}/dashboard"
    console.print(f"optuna-dashboard: {url} ; Ctrl+C stops it", highlight=False, soft_wrap=True)
    pages.exec_server(command)
